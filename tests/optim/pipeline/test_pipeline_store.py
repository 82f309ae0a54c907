"""Packed model files: every supported model comes back computing the same outputs, and the
payload size follows the codecs' formulas."""
import copy
import json
import math

import numpy as np
import pytest

import minnet
from minnet import nn
from minnet.models import lenet5, lenet_300_100
from optim import prune, quant
from optim.lowrank import factorize
from optim.graph import GraphModule, trace
from optim.graph.zoo import resnet_mnist
from optim.nas import build_cnn
from optim.pipeline.codecs import symbol_bits
from optim.pipeline.store import (build_module, encode_state, load_model, module_spec,
                                  packed_bytes, save_model)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)


def _outputs(model, x):
    model.eval()
    with minnet.no_grad():
        return model(minnet.Tensor(x)).data


def _round_trip(model, tmp_path, x):
    path = tmp_path / "model.npz"
    sizes = save_model(model, path, meta={"note": "test"})
    loaded, meta = load_model(path)
    assert meta == {"note": "test"}
    assert sizes["file_bytes"] == path.stat().st_size
    assert sizes["packed_bytes"] == packed_bytes(model)
    np.testing.assert_array_equal(_outputs(loaded, x), _outputs(model, x))
    return loaded, sizes


def _seeded(build, seed=0):
    minnet.manual_seed(seed)
    return build()


def test_float_models_round_trip_bit_exactly(tmp_path, images):
    model = _seeded(lambda: lenet5(batch_norm=True))
    rng = np.random.default_rng(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data[...] = rng.normal(size=m.bias.shape)
    model.train()
    model(minnet.Tensor(images))  # non-trivial running statistics
    loaded, sizes = _round_trip(model, tmp_path, images)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value)
    # dense arrays cost their bytes (float32 weights 4 each, the int64 batch counters 8)
    assert sizes["packed_bytes"] == sum(v.nbytes for v in model.state_dict().values())
    # an array of zeros costs nothing
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data[...] = 0
    assert packed_bytes(model) == sizes["packed_bytes"] - 4 * (6 + 16)


def test_pruned_model_keeps_its_masks_and_stores_kept_weights_only(tmp_path, images):
    model = _seeded(lenet5)
    masks = prune.prune_model(model, 0.9)
    loaded, sizes = _round_trip(model, tmp_path, images)
    for name, mask in masks.items():
        module_name, _, param = name.rpartition(".")
        np.testing.assert_array_equal(prune.get_mask(dict(loaded.named_modules())[module_name],
                                                     param), mask)
    kept = sum(int(m.sum()) for m in masks.values())
    bits = sum(math.ceil(m.size / 8) for m in masks.values())
    biases = sum(p.data.nbytes for n, p in model.named_parameters() if n.endswith("bias"))
    assert sizes["packed_bytes"] == 4 * kept + bits + biases


def test_shrunk_model_with_zeros_round_trips(tmp_path, images):
    model = _seeded(lenet_300_100)
    prune.prune_channels(model, 0.5)
    prune.prune_model(model, 0.8)
    small = prune.shrink(model)
    _round_trip(small, tmp_path, images)


def _converted(model, x, **config):
    prepared = quant.prepare(model, **config)
    quant.calibrate(prepared, x)
    return quant.convert(prepared)


@pytest.mark.parametrize("bits", [8, 5, 3])
def test_quantized_model_round_trips_and_stores_codes(tmp_path, images, bits):
    model = _converted(_seeded(lenet5), images, weight_bits=bits)
    loaded, sizes = _round_trip(model, tmp_path, images)
    stages = [m for m in loaded.modules() if isinstance(m, quant.QuantStage)]
    assert all(s.bias_quant is not None for s in stages)  # re-derived by convert
    entries, _ = encode_state(model)
    weights = [e for e in entries if e["name"].endswith("layer.parametrizations.weight.original")]
    assert weights and all(e["codec"] in ("fixed", "huffman") for e in weights)
    for entry in weights:
        n = math.prod(entry["shape"])
        fixed = math.ceil(n * bits / 8)
        # the cheaper of the fixed-width code and Huffman (codes + one byte per length)
        assert sum(length for _, length in entry["parts"]) <= fixed


def test_quantized_payload_matches_quantized_model_bytes(images):
    """Dense 8-bit codes: the payload is optim.quant's deployed size, less 4 bytes for each
    activation zero point that is 0 (stored as nothing) and with int64 zero points as 8."""
    model = _converted(_seeded(lenet5), images, weight_bits=8)
    entries, payload = encode_state(model)
    if any(e["codec"] == "huffman" for e in entries):
        pytest.skip("Huffman beat the fixed-width code on these weights")
    sizes = quant.quantized_model_bytes(model)
    zero_points = [m.zero_point for m in model.modules()
                   if isinstance(m, quant.FixedFakeQuantize) and m.axis is None]
    expected = sizes["total"] + sum(4 if np.any(z) else -4 for z in zero_points)
    assert len(payload) == expected


def test_sparse_codes_use_relative_indexing_and_round_trip(tmp_path, images):
    """Pruned, quantized weights: relative indexing (Deep Compression) beats the dense codes
    and the model still computes the same outputs."""
    model = _seeded(lenet5)
    prune.prune_model(model, 0.95)
    model = _converted(prune.remove_all(model), images, weight_bits=5)
    _round_trip(model, tmp_path, images)
    entries, _ = encode_state(model)
    fc1 = next(e for e in entries  # 400 x 120
               if e["name"] == "6.layer.parametrizations.weight.original")
    assert fc1["codec"] == "relative"
    assert sum(n for _, n in fc1["parts"]) < math.ceil(math.prod(fc1["shape"]) * 5 / 8) / 2


def test_weight_shared_model_round_trips(tmp_path, images):
    model = quant.share_weights(_seeded(lenet5), n_clusters=8)
    loaded, sizes = _round_trip(model, tmp_path, images)
    lookups = [m for m in model.modules() if isinstance(m, quant.SharedWeights)]
    assert len(lookups) == 5  # the convolutions and linears of LeNet-5
    # indices at ceil(log2 k) bits (or fewer, Huffman-coded), plus 8 float32 centroids and
    # the one-byte zero_pinned flag each; the zeroed originals store as nothing
    bound = sum(math.ceil(m.indices.size * symbol_bits(8) / 8) + 8 * 4 + 1 for m in lookups)
    biases = sum(m.bias.data.nbytes for m in model.modules()
                 if isinstance(m, (nn.Linear, nn.Conv2d)))
    assert sizes["packed_bytes"] <= bound + biases


def test_graph_module_round_trips(tmp_path, images):
    """A traced residual network with a symbolic batch, as a GraphModule: the loaded module has
    the same graph, trainable parameters and outputs, at another batch size too."""
    model = _seeded(lambda: resnet_mnist(8)).eval()
    graph_module = GraphModule(trace(model, images[:2], dynamic_axes={0: "N"}))
    loaded, _ = _round_trip(graph_module, tmp_path, images)
    np.testing.assert_array_equal(_outputs(loaded, images[:1]), _outputs(graph_module, images[:1]))
    assert [str(n) for n in loaded.graph.nodes] == [str(n) for n in graph_module.graph.nodes]
    assert [k for k, _ in loaded.named_parameters()] == \
        [k for k, _ in graph_module.named_parameters()]
    owner, leaf = graph_module._slots[next(iter(graph_module.graph.constants))]
    prune.apply_mask(owner, leaf, np.ones(getattr(owner, leaf).shape, bool))
    with pytest.raises(TypeError, match="remove_all_parametrizations"):
        save_model(graph_module, tmp_path / "masked.npz")


def test_factorized_and_residual_models_round_trip(tmp_path, images):
    model = _seeded(lenet5)
    factorize(model, ["7"], rank=12)
    _round_trip(model, tmp_path, images)
    arch = {"n_blocks": 2, "padding": "same", "channels_0": 4, "kernel_0": 3, "pool_0": "max",
            "channels_1": 4, "kernel_1": 3, "pool_1": "none", "skip_1": True,
            "channels_2": 4, "kernel_2": 3, "pool_2": "none", "skip_2": False,
            "channels_3": 4, "kernel_3": 3, "pool_3": "none", "skip_3": False,
            "activation": "relu", "fc_width": 16}
    _round_trip(_seeded(lambda: build_cnn(arch)), tmp_path, images)


def test_spec_is_json_and_rebuilds_the_structure():
    model = _seeded(lambda: lenet5(batch_norm=True))
    spec = json.loads(json.dumps(module_spec(model)))
    rebuilt = build_module(spec)
    assert module_spec(rebuilt) == spec
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}


def test_unsupported_modules_and_files_are_rejected(tmp_path):
    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="Custom"):
        module_spec(nn.Sequential(Custom()))
    with pytest.raises(ValueError, match="unknown module type"):
        build_module({"type": "Nope"})
    path = tmp_path / "state.npz"
    minnet.save(lenet5(), path)
    with pytest.raises(ValueError, match="not a packed model file"):
        load_model(path)
    spec = np.frombuffer(json.dumps({"format": "other/9"}).encode(), np.uint8)
    minnet.save({"spec": spec, "payload": np.zeros(0, np.uint8)}, path)
    with pytest.raises(ValueError, match="unsupported format"):
        load_model(path)


def test_file_is_deterministic(tmp_path):
    model = _seeded(lenet5)
    save_model(model, tmp_path / "a.npz")
    save_model(copy.deepcopy(model), tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()

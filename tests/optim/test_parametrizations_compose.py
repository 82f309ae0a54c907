"""One reparametrization mechanism: a pruning mask, weight sharing and fake quantization
compose on one weight (``minnet.nn.parametrize``), survive save/load, ``fit`` resume and the
packed store, and ``remove_all_parametrizations`` leaves a plain model computing the same."""
import numpy as np
import pytest

import minnet
from minnet import nn, optimizers
from minnet.nn import parametrize as P
from minnet.train import fit
from optim import prune
from optim.pipeline.store import load_model, save_model
from optim.quant import FakeQuantize, FixedFakeQuantize, SharedWeights
from optim.quant.observers import MinMaxObserver

X = np.random.default_rng(0).random((32, 1, 8, 8), dtype=np.float32)
Y = (X.reshape(32, -1).mean(axis=1) > 0.5).astype(np.int64)


def _model(seed=0):
    minnet.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64, 10))


def _mask(shape, seed=1):
    return np.random.default_rng(seed).random(shape) > 0.5


def _composed(seed=0, quantizer=None):
    """The conv weight pruned, then shared over 6 centroids, then fake-quantized per channel;
    the linear weight pruned and fake-quantized."""
    model = _model(seed)
    conv, linear = model[0], model[4]
    prune.apply_mask(conv, "weight", _mask(conv.weight.shape))
    P.register_parametrization(conv, "weight",
                               SharedWeights.cluster(conv.weight.data, 6, rng=0))
    P.register_parametrization(conv, "weight", quantizer() if quantizer else
                               FakeQuantize(MinMaxObserver(4, symmetric=True, axis=0)))
    prune.apply_mask(linear, "weight", _mask(linear.weight.shape, 2))
    P.register_parametrization(linear, "weight", quantizer() if quantizer else
                               FakeQuantize(MinMaxObserver(4, symmetric=True, axis=0)))
    return model


def _outputs(model, x=X):
    model.eval()
    with minnet.no_grad():
        return model(minnet.Tensor(x)).data


def test_the_chain_is_mask_then_lookup_then_quantizer():
    model = _composed()
    conv = model[0]
    mask, lookup, quantizer = P.parametrizations_of(conv, "weight")
    assert isinstance(mask, prune.parametrize.PruningMask) and isinstance(lookup, SharedWeights)
    shared = lookup.centroids.data[lookup.indices]
    assert np.all(shared[~mask.mask] == 0)  # pruned weights keep the pinned code 0 (value 0)
    assert len(np.unique(shared)) <= 6
    model.train()
    weight = conv.weight.data  # observes c[I] and fake-quantizes it
    # symmetric 4-bit codes [-8, 7], PyTorch's scale max|w| / ((qmax - qmin) / 2)
    step = np.abs(shared).reshape(4, -1).max(axis=1) / 7.5
    expected = np.clip(np.round(shared / step[:, None, None, None]), -8, 7) \
        * step[:, None, None, None]
    np.testing.assert_allclose(weight, expected, rtol=1e-6, atol=1e-7)
    assert np.all(weight[~mask.mask] == 0)


def test_composed_model_trains_with_zeros_kept_and_centroids_moving():
    model = _composed()
    lookup = P.parametrizations_of(model[0], "weight")[1]
    before = lookup.centroids.data.copy()
    fit(model, optimizers.Adam(model.parameters(), lr=1e-2), (X, Y), 2, batch_size=8,
        progress=False)
    assert not np.array_equal(lookup.centroids.data, before)
    assert np.all(model[0].weight.data[~_mask(model[0].parametrizations.weight.original.shape)]
                  == 0)
    assert np.all(model[4].weight.data[~_mask((10, 64), 2)] == 0)


def test_state_dict_save_and_load_are_bitwise(tmp_path):
    model = _composed()
    fit(model, optimizers.Adam(model.parameters(), lr=1e-2), (X, Y), 1, batch_size=8,
        progress=False)
    minnet.save(model, tmp_path / "composed.npz")
    fresh = _composed(seed=5)
    fresh.load_state_dict(minnet.load(tmp_path / "composed.npz"))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value, err_msg=key)
    np.testing.assert_array_equal(_outputs(fresh), _outputs(model))


def test_fit_resumed_after_epoch_one_is_bitwise_the_uninterrupted_run(tmp_path):
    def train(epochs, path, resume=False, seed=0):
        model = _composed(seed)
        fit(model, optimizers.Adam(model.parameters(), lr=1e-2), (X, Y), epochs,
            batch_size=8, checkpoint_path=path, resume=resume, progress=False)
        return model

    full = train(2, tmp_path / "full.npz")
    train(1, tmp_path / "cut.npz")
    resumed = train(2, tmp_path / "cut.npz", resume=True, seed=3)
    assert full.state_dict().keys() == resumed.state_dict().keys()
    for key, value in full.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)


def test_remove_all_parametrizations_gives_a_plain_model_with_identical_outputs():
    model = _composed()
    fit(model, optimizers.Adam(model.parameters(), lr=1e-2), (X, Y), 1, batch_size=8,
        progress=False)
    expected = _outputs(model)
    plain = P.remove_all_parametrizations(model)
    assert not any(P.is_parametrized(m) for m in plain.modules())
    assert all(type(p) is nn.Parameter for p in plain.parameters())
    assert sorted(plain.state_dict()) == ["0.bias", "0.weight", "4.bias", "4.weight"]
    np.testing.assert_array_equal(_outputs(plain), expected)


def test_the_packed_store_keeps_the_chain_and_the_outputs(tmp_path):
    def frozen():
        return FixedFakeQuantize(np.full(4 if not frozen.linear else 10, 0.05, np.float32),
                                 np.zeros(4 if not frozen.linear else 10, np.int64), -8, 7,
                                 axis=0)

    frozen.linear = False
    model = _model()
    conv, linear = model[0], model[4]
    prune.apply_mask(conv, "weight", _mask(conv.weight.shape))
    P.register_parametrization(conv, "weight", SharedWeights.cluster(conv.weight.data, 6, rng=0))
    P.register_parametrization(conv, "weight", frozen())
    frozen.linear = True
    prune.apply_mask(linear, "weight", _mask(linear.weight.shape, 2))
    P.register_parametrization(linear, "weight", frozen())
    sizes = save_model(model, tmp_path / "composed.npz")
    loaded, _ = load_model(tmp_path / "composed.npz")
    kinds = [[type(p).__name__ for p in P.parametrizations_of(m, "weight")]
             for m in (loaded[0], loaded[4])]
    assert kinds == [["PruningMask", "SharedWeights", "FixedFakeQuantize"],
                     ["PruningMask", "FixedFakeQuantize"]]
    np.testing.assert_array_equal(_outputs(loaded), _outputs(model))
    # the linear's kept weights are 4-bit codes, the conv's original stores as nothing
    assert sizes["packed_bytes"] < 64 * 10 * 4 // 4


def test_masks_of_the_wrong_shape_or_on_a_missing_parameter_are_refused():
    layer = nn.Linear(3, 2, bias=False)
    with pytest.raises(ValueError, match="mask"):
        prune.apply_mask(layer, "weight", np.ones(3, bool))
    with pytest.raises(ValueError, match="'bias'"):
        prune.apply_mask(layer, "bias", np.ones(2, bool))
    assert not P.is_parametrized(layer)

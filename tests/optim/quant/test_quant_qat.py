"""Quantization-aware training: fake-quant modules, prepare_qat, training and freezing."""
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minnet
from minnet import functional as F
from minnet import nn, optimizers
from minnet.train import fit
from optim.quant import (
    FakeQuantize,
    FixedFakeQuantize,
    IntegerModel,
    LSQFakeQuantize,
    MinMaxObserver,
    QuantStage,
    convert,
    fake_quantize,
    int_range,
    lsq_initial_step,
    prepare_qat,
    qparams,
    ste_mask,
)

from test_quant_ptq import images, run, tiny_cnn


def test_prepare_qat_structure_and_trainable_steps():
    qat = prepare_qat(tiny_cnn(), weight_bits=2)
    assert qat.training and not qat.frozen
    stages = [m for m in qat if isinstance(m, QuantStage)]
    assert len(stages) == 3 and [s.relu for s in stages] == [True, True, False]
    assert all(isinstance(s.weight_quant, LSQFakeQuantize) for s in stages)
    assert all(isinstance(s.output_quant, FakeQuantize) for s in stages)
    steps = {id(s.weight_quant.step) for s in stages}
    assert steps <= {id(p) for p in qat.parameters()}
    assert [s.weight_quant.step.shape for s in stages] == [(3,), (4,), (5,)]


@pytest.mark.parametrize("bits", [2, 4])
def test_lsq_weight_steps_initialised_from_the_weights(bits):
    model = tiny_cnn()
    qat = prepare_qat(model, weight_bits=bits)
    run(qat, images(4))
    qmax = int_range(bits)[1]
    np.testing.assert_allclose(qat[1].weight_quant.step.data,
                               lsq_initial_step(model[0].weight.data, qmax, axis=0), rtol=1e-6)


@given(bits=st.integers(2, 8), seed=st.integers(0, 2**16))
def test_ste_weight_gradient_is_masked_float_gradient(bits, seed):
    # y = x fq(W)^T with fq from the current per-channel range: dL/dW = mask * G^T x
    rng = np.random.default_rng(seed)
    layer = nn.Linear(6, 3, bias=False)
    layer.weight.data = rng.normal(size=(3, 6)).astype(np.float32)
    qat = prepare_qat(nn.Sequential(layer), weight_bits=bits, weight_method="ste",
                      weight_only=True)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    upstream = rng.normal(size=(4, 3)).astype(np.float32)
    qat(minnet.Tensor(x)).backward(upstream)
    w = nn.parametrize.original(qat[0].layer, "weight")
    qmin, qmax = int_range(bits)
    scale, zero_point = qparams(w.data.min(axis=1), w.data.max(axis=1), qmin, qmax, True)
    mask = ste_mask(w.data, scale, zero_point, qmin, qmax, axis=0)
    np.testing.assert_allclose(w.grad, mask * (upstream.T @ x), rtol=1e-5, atol=1e-5)


def test_fake_quantize_observes_in_training_and_freezes_in_eval():
    fq = FakeQuantize(MinMaxObserver(8, signed=False))
    fq(minnet.Tensor(np.array([0.0, 1.0], np.float32)))
    fq(minnet.Tensor(np.array([0.0, 2.0], np.float32)))
    fq.eval()
    out = fq(minnet.Tensor(np.array([0.0, 3.0], np.float32)))
    scale, zero_point = qparams(0.0, 2.0, 0, 255)
    np.testing.assert_array_equal(out.data, fake_quantize(np.array([0.0, 3.0], np.float32),
                                                          scale, zero_point, 0, 255))
    frozen = fq.frozen()
    assert isinstance(frozen, FixedFakeQuantize) and frozen.scale == pytest.approx(scale)


@pytest.mark.parametrize("weight_method, activation_method", [
    ("lsq", "ste"), ("ste", "ste"), ("lsq", "lsq"), ("ste", "lsq")])
def test_convert_preserves_the_eval_function(weight_method, activation_method):
    # 16-bit activations: no int32 bias quantization is added, so freezing changes nothing
    qat = prepare_qat(tiny_cnn(), weight_bits=4, activation_bits=16,
                      weight_method=weight_method, activation_method=activation_method)
    x = images()
    run(qat, x)  # training mode: observers and LSQ steps see data
    qat.eval()
    frozen = convert(qat)
    assert frozen.frozen and not frozen.training and qat.training is False
    np.testing.assert_array_equal(run(frozen, x), run(qat, x))


def test_qat_trains_and_runs_as_integers():
    x = images(64)
    y = (x.reshape(64, -1).mean(axis=1) > 0.5).astype(np.int64)
    qat = prepare_qat(tiny_cnn(), weight_bits=2)
    history = fit(qat, optimizers.Adam(qat.parameters(), lr=1e-2), (x, y), 2, batch_size=16,
                  progress=False)
    assert np.all(np.isfinite(history["train_loss"]))
    steps = [m.step.data for m in qat.modules() if isinstance(m, LSQFakeQuantize)]
    assert len(steps) == 3 and all(np.all(s > 0) for s in steps)
    converted = convert(qat)
    with minnet.no_grad():
        simulated = converted(minnet.Tensor(x)).data.argmax(axis=1)
    predicted = IntegerModel(converted).predict(x)
    assert np.mean(predicted == simulated) >= 0.9


@pytest.mark.parametrize("error, message, call", [
    (ValueError, "weight_method", lambda: prepare_qat(tiny_cnn(), weight_method="xnor")),
    (ValueError, "activation_method", lambda: prepare_qat(tiny_cnn(), activation_method="x")),
    (ValueError, "weight_bits", lambda: prepare_qat(tiny_cnn(), weight_bits=20)),
    (ValueError, "seen no data", lambda: convert(prepare_qat(tiny_cnn()))),
    (TypeError, "observer", lambda: FakeQuantize("minmax")),
])
def test_errors_name_the_argument(error, message, call):
    with pytest.raises(error, match=message):
        call()


def test_convert_uses_the_range_of_the_final_weights():
    qat = prepare_qat(tiny_cnn(), weight_bits=4, weight_method="ste")
    run(qat, images())
    stage = qat[1]
    nn.parametrize.original(stage.layer, "weight").data *= 2  # an optimizer step after forward
    frozen = convert(qat)[1].weight_quant
    w = stage.float_weight().reshape(3, -1)
    scale, _ = qparams(w.min(axis=1), w.max(axis=1), *int_range(4), symmetric=True)
    np.testing.assert_allclose(frozen.scale, scale, rtol=1e-6)


def test_lsq_step_pushed_below_zero_is_projected_back_to_eps():
    quant = LSQFakeQuantize(4)
    x = minnet.tensor(np.linspace(-1, 1, 16, dtype=np.float32))
    quant(x)
    quant.step.data[...] = -0.5  # as an optimizer step overshooting would leave it
    out = quant(x)
    assert quant.step.data.item() == np.finfo(np.float32).eps
    assert np.all(np.isfinite(out.data))


# ---- exact save / resume of a QAT model --------------------------------------------------


def _labels(x):
    return (x.reshape(len(x), -1).mean(axis=1) > 0.5).astype(np.int64)


def _train_step(qat, optimizer, x):
    optimizer.zero_grad()
    F.cross_entropy(qat(minnet.Tensor(x)), _labels(x)).backward()
    optimizer.step()


def _trained_qat(weight_method, steps=3):
    """A 4-bit QAT model (moving-average activation observers) after ``steps`` SGD steps on
    batches of different ranges, so each observer's running range is not any batch's own."""
    qat = prepare_qat(tiny_cnn(), weight_bits=4, weight_method=weight_method)
    optimizer = optimizers.SGD(qat.parameters(), lr=0.05)
    for k in range(steps):
        _train_step(qat, optimizer, (k + 1) * images(8, seed=k))
    return qat


def _observer_ranges(qat):
    return [(m.observer.min, m.observer.max) for m in qat.modules()
            if isinstance(m, FakeQuantize) and not m.track_current]


def _through_minnet_io(state, path):
    minnet.save(state, path)
    return minnet.load(path)


def _through_np_savez(state, path):
    np.savez(path, **state)
    with np.load(path, allow_pickle=False) as archive:
        return dict(archive)


@pytest.mark.parametrize("weight_method", ["ste", "lsq"])
@pytest.mark.parametrize("round_trip", [lambda state, path: state, _through_minnet_io,
                                        _through_np_savez], ids=["dict", "minnet.io", "np.savez"])
def test_loaded_qat_model_evaluates_and_trains_on_exactly(weight_method, round_trip, tmp_path):
    trained = _trained_qat(weight_method)
    state = round_trip(trained.state_dict(), tmp_path / "qat.npz")
    fresh = prepare_qat(tiny_cnn(seed=1), weight_bits=4, weight_method=weight_method)
    fresh.load_state_dict(state)
    x = 3 * images(8, seed=9)  # a range no observer has seen: eval must not re-observe
    trained.eval(), fresh.eval()
    np.testing.assert_array_equal(run(fresh, x), run(trained, x))
    trained.train(), fresh.train()
    for model in (trained, fresh):
        _train_step(model, optimizers.SGD(model.parameters(), lr=0.05), x)
    for (name, a), (_, b) in zip(trained.named_parameters(), fresh.named_parameters()):
        np.testing.assert_array_equal(b.data, a.data, err_msg=name)
    ranges = _observer_ranges(trained)
    assert len(ranges) == 4
    for (lo_a, hi_a), (lo_b, hi_b) in zip(ranges, _observer_ranges(fresh)):
        np.testing.assert_array_equal(lo_b, lo_a)
        np.testing.assert_array_equal(hi_b, hi_a)
    for key, value in trained.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value, err_msg=key)


def test_moving_average_continues_from_the_loaded_range():
    trained = _trained_qat("ste")
    fresh = prepare_qat(tiny_cnn(), weight_bits=4, weight_method="ste")
    fresh.load_state_dict(trained.state_dict())
    head = fresh[0]
    saved_min, saved_max = head.observer_min.copy(), head.observer_max.copy()
    x = images(8, seed=9)
    run(fresh, x)  # training mode: one moving-average update of the input range
    c = head.observer.averaging_constant
    np.testing.assert_allclose(head.observer.min, saved_min + c * (x.min() - saved_min), rtol=1e-6)
    np.testing.assert_allclose(head.observer.max, saved_max + c * (x.max() - saved_max), rtol=1e-6)


@pytest.mark.parametrize("weight_method", ["ste", "lsq"])
def test_state_of_an_unrun_qat_model_loads_strictly(weight_method):
    unrun = prepare_qat(tiny_cnn(), weight_bits=4, weight_method=weight_method).state_dict()
    assert not any(key.endswith(("scale", "observer_min")) for key in unrun)
    fresh = prepare_qat(tiny_cnn(seed=1), weight_bits=4, weight_method=weight_method)
    assert fresh.load_state_dict(unrun) == ([], [])
    reference = prepare_qat(tiny_cnn(), weight_bits=4, weight_method=weight_method)
    x = images(8)
    np.testing.assert_array_equal(run(fresh, x), run(reference, x))  # both observe afresh
    trained = _trained_qat(weight_method)
    fresh.load_state_dict(trained.state_dict())  # a trained state into a model that has run


def test_wrong_shape_ordinary_state_still_raises_naming_the_key():
    state = _trained_qat("lsq").state_dict()
    key = "1.layer.parametrizations.weight.0.initialized"
    state[key] = np.zeros(2, dtype=bool)
    with pytest.raises(ValueError, match=re.escape(key) + r": checkpoint \(2,\)"):
        prepare_qat(tiny_cnn(), weight_bits=4).load_state_dict(state)


@pytest.mark.parametrize("weight_method", ["ste", "lsq"])
def test_fit_resumed_after_epoch_one_equals_an_uninterrupted_qat_run(weight_method, tmp_path):
    x = images(16, seed=3)
    data = (x, _labels(x))

    def train(epochs, path, resume=False, seed=0):
        qat = prepare_qat(tiny_cnn(seed=seed), weight_bits=4, weight_method=weight_method)
        fit(qat, optimizers.Adam(qat.parameters(), lr=1e-2), data, epochs, batch_size=8,
            checkpoint_path=path, resume=resume, progress=False)
        return qat

    full = train(2, tmp_path / "full.npz")
    train(1, tmp_path / "cut.npz")
    resumed = train(2, tmp_path / "cut.npz", resume=True, seed=1)
    full_state, resumed_state = full.state_dict(), resumed.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key, value in full_state.items():
        np.testing.assert_array_equal(resumed_state[key], value, err_msg=key)

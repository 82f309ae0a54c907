"""BinaryConnect, binary (XNOR-Net scale) and ternary (TWN) weights in QAT and on the integer
engine."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet import nn, optimizers
from minnet.train import fit
from optim.quant import (
    BinaryFakeQuantize,
    IntegerModel,
    QuantStage,
    binary_connect,
    binary_connect_mask,
    convert,
    prepare_qat,
    straight_through,
)

from quant_helpers import float_arrays
from test_quant_ptq import images, run, tiny_cnn


@given(w=float_arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5), 3.0))
def test_binary_connect_is_sign(w):
    """w_b = +1 where w >= 0 and -1 where w < 0 (Courbariaux et al. 2015, eq. 1)."""
    wb = binary_connect(w)
    assert set(np.unique(wb)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(wb[w > 0], 1)
    np.testing.assert_array_equal(wb[w < 0], -1)
    np.testing.assert_array_equal(wb[w == 0], 1)


def test_binary_connect_gradient_is_clipped_ste():
    """dL/dw = dL/dw_b * 1[|w| <= 1], the derivative of htanh (BNN eq. 4), bound inclusive."""
    w = minnet.tensor(np.array([-1.5, -1.0, -0.2, 0.0, 0.7, 1.0, 1.2]), requires_grad=True)
    upstream = np.arange(1.0, 8.0)
    straight_through(w, binary_connect(w.data), binary_connect_mask(w.data)).backward(upstream)
    np.testing.assert_array_equal(w.grad, upstream * [0, 1, 1, 1, 1, 1, 0])
    quantizer = BinaryFakeQuantize(scaled=False).eval()
    w2 = minnet.tensor(w.data.copy(), requires_grad=True)
    out = quantizer(w2.reshape(7, 1))
    np.testing.assert_array_equal(out.data.ravel(), [-1, -1, -1, 1, 1, 1, 1])
    out.backward(upstream.reshape(7, 1))
    np.testing.assert_array_equal(w2.grad, w.grad)


def test_training_clips_weights_to_the_unit_interval():
    """BinaryConnect's clip: after a forward pass in training mode the real-valued weights lie
    in [-1, 1]; in eval mode they are left alone."""
    data = np.array([[-3.0, 0.5], [2.0, -0.25]], np.float32)
    w = nn.Parameter(data.copy())
    BinaryFakeQuantize().eval()(w)
    np.testing.assert_array_equal(w.data, data)
    BinaryFakeQuantize().train()(w)
    np.testing.assert_array_equal(w.data, np.clip(data, -1, 1))


@pytest.mark.parametrize("ternary", [False, True])
@given(seed=st.integers(0, 2**16))
def test_binary_ternary_scale_is_least_squares_for_its_codes(ternary, seed):
    """Per output channel, alpha minimises ||W_o - alpha T_o||^2 for the chosen codes:
    alpha = <W_o, T_o> / <T_o, T_o> (an independent closed form)."""
    w = np.random.default_rng(seed).uniform(-1, 1, size=(4, 3, 2)).astype(np.float64)
    codes, alpha = BinaryFakeQuantize(ternary=ternary).codes_and_scale(w)
    assert set(np.unique(codes)) <= ({-1, 0, 1} if ternary else {-1, 1})
    for o in range(4):
        t = codes[o].astype(np.float64)
        best = (w[o] * t).sum() / max((t * t).sum(), 1)
        np.testing.assert_allclose(alpha[o], best, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["binary", "ternary", "binary_connect"])
def test_binary_and_ternary_qat_run_as_integers(method):
    """Train a few steps, convert, and run on the integer engine: weight codes are the
    int8 {-1, 0, 1} codes of the quantizer, and the integer model agrees with the simulated
    one."""
    x = images(64)
    y = (x.reshape(64, -1).mean(axis=1) > 0.5).astype(np.int64)
    qat = prepare_qat(tiny_cnn(), weight_method=method)
    history = fit(qat, optimizers.Adam(qat.parameters(), lr=1e-2), (x, y), 2, batch_size=16,
                  progress=False)
    assert np.all(np.isfinite(history["train_loss"]))
    stages = [m for m in qat if isinstance(m, QuantStage)]
    assert all(np.abs(s.float_weight()).max() <= 1 for s in stages)
    converted = convert(qat)
    integer = IntegerModel(converted)
    for op, stage in zip([op for op in integer.ops if hasattr(op, "w_q")],
                         [m for m in converted if isinstance(m, QuantStage)]):
        codes, _ = stage.weight_quant.codes_and_scale(stage.float_weight())
        np.testing.assert_array_equal(op.w_q, codes)
        allowed = {-1, 0, 1} if method == "ternary" else {-1, 1}
        assert set(np.unique(op.w_q)) <= allowed
    simulated = run(converted, x).argmax(axis=1)
    assert np.mean(integer.predict(x) == simulated) >= 0.9


def test_converted_binary_stage_uses_the_final_weights():
    """convert() recomputes the binary scale from the weights after the last update."""
    qat = prepare_qat(tiny_cnn(), weight_method="binary")
    run(qat, images(4))
    stage = qat[1]
    nn.parametrize.original(stage.layer, "weight").data *= 0.5  # an update after the forward
    frozen = convert(qat)[1]
    np.testing.assert_allclose(frozen.weight_quant.scale,
                               np.abs(stage.float_weight()).mean(axis=(1, 2, 3)), rtol=1e-6)

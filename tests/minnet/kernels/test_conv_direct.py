"""Convolution without a column matrix (``minnet.kernels.conv_direct``) and the algorithm
registry of ``minnet.kernels.conv``: every algorithm equals the direct definition over drawn
strides, paddings, dilations and groups; the choice is applicable and of least cost; the
deferred columns equal im2col."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels.cases import conv_cases, random_array
from kernels.test_conv_kernels import brute_force_conv2d
from minnet.kernels import conv as K
from minnet.kernels import conv_direct as D
from minnet.kernels.backend import use_backend
from minnet.kernels.im2col import im2col

needs_tiles = pytest.mark.skipif(not D.HAVE_TILES, reason="needs Numba and an AVX-512 CPU")
TOLERANCE = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-10, atol=1e-12)}
seeds = st.integers(0, 2**16)
# up to 3 groups of up to 20 output channels: several 16-lane vectors and 6-row tiles
wide_cases = conv_cases(max_batch=3, max_group_channels=20)


def _inputs(case, dtype, seed):
    return random_array(case.x_shape, dtype, seed), random_array(case.w_shape, dtype, seed + 1)


@given(case=conv_cases(), seed=seeds)
def test_taps_reference_matches_definition(case, seed):
    x, w = _inputs(case, np.float64, seed)
    np.testing.assert_allclose(D.conv2d_taps_numpy(x, w, *case.geometry),
                               brute_force_conv2d(x, w, *case.geometry), rtol=1e-10, atol=1e-12)


@needs_tiles
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm", ["direct", "indirect"])
@given(case=wide_cases, seed=seeds)
def test_tile_algorithms_equal_reference(algorithm, dtype, case, seed):
    if algorithm == "direct":
        case = case._replace(stride=(1, 1))
    x, w = _inputs(case, dtype, seed)
    fast = getattr(D, f"conv2d_{algorithm}_tiles")(x, w, *case.geometry)
    assert fast.dtype == dtype and fast.flags.c_contiguous
    np.testing.assert_allclose(fast, D.conv2d_taps_numpy(x, w, *case.geometry), **TOLERANCE[dtype])


def test_direct_rejects_stride():
    x, w = np.zeros((1, 1, 5, 5), np.float32), np.zeros((2, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="stride"):
        D.conv2d_direct_tiles(x, w, (2, 1), (0, 0), (1, 1), 1)


@pytest.mark.parametrize("name", ["numpy", pytest.param("numba", marks=needs_tiles)])
@given(case=wide_cases, seed=seeds)
def test_registry_algorithms_agree_where_applicable(name, case, seed):
    x, w = _inputs(case, np.float64, seed)
    expected = brute_force_conv2d(x, w, *case.geometry)
    with use_backend(name):
        ran = [a for a in K.CONV_ALGORITHMS if K.applicable(a, w.shape, *case.geometry,
                                                            dtype=x.dtype)]
        assert "im2col" in ran
        for algorithm in ran:
            y, cols = K.CONV_ALGORITHMS[algorithm](x, w, *case.geometry)
            np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
            if isinstance(cols, K.Columns):
                cols = cols.materialize()
            np.testing.assert_array_equal(cols, im2col(x, w.shape[2:], *case.geometry[:3]))


@given(case=wide_cases, dtype=st.sampled_from([np.float32, np.float64]))
def test_choice_is_applicable_and_cheapest(case, dtype):
    chosen = K.choose_algorithm(case.x_shape, case.w_shape, *case.geometry, dtype=dtype)
    costs = {a: D.conv_cost(a, case.x_shape, case.w_shape, *case.geometry, dtype=dtype)
             for a in K.CONV_ALGORITHMS
             if K.applicable(a, case.w_shape, *case.geometry, dtype=dtype)}
    assert chosen in costs and costs[chosen] == min(costs.values())


def test_applicability_rules():
    args = ((16, 6, 5, 5), (1, 1), (0, 0), (1, 1), 1)
    with use_backend("numpy"):
        assert [a for a in K.CONV_ALGORITHMS if K.applicable(a, *args)] == ["im2col"]
    assert not K.applicable("direct", (16, 6, 5, 5), (2, 2), (0, 0), (1, 1), 1)
    assert not K.applicable("indirect", *args, dtype=np.float16)
    with pytest.raises(ValueError, match="winograd"):
        K.applicable("winograd", *args)


def test_cost_counts_padding_waste():
    """LeNet-5's layers: 6 channels fill 6 of 16 channel lanes (indirect pays 16 / 6), while
    28 of 32 padded columns are useful (direct pays 32 / 28); a conv of 16 channels fills
    the lanes exactly. Each tile call also pays its set-up."""
    useful, setup = 1 * 6 * 28 * 28 * 25, D.TILE_CALL_COST
    assert D.conv_cost("indirect", (1, 1, 28, 28), (6, 1, 5, 5), (1, 1), (2, 2), (1, 1), 1) \
        == pytest.approx(setup + useful * 16 / 6, rel=0.01)
    assert D.conv_cost("direct", (1, 1, 28, 28), (6, 1, 5, 5), (1, 1), (2, 2), (1, 1), 1) \
        == setup + useful * 32 // 28
    assert D.conv_cost("indirect", (6, 6, 14, 14), (16, 6, 5, 5), (1, 1), (0, 0), (1, 1), 1) \
        == setup + 6 * 16 * 100 * 150


@pytest.mark.parametrize("batch, expected",
                         [(1, ("im2col", "im2col")), (64, ("direct", "indirect"))])
def test_lenet5_choice_by_batch(batch, expected):
    """Per-call set-up keeps im2col at batch 1; at batch 64 the tile algorithms' fewer
    lane-MACs win (where they are applicable)."""
    layers = [((batch, 1, 28, 28), (6, 1, 5, 5), (2, 2)),
              ((batch, 6, 14, 14), (16, 6, 5, 5), (0, 0))]
    with use_backend("numba" if D.HAVE_TILES else "numpy"):
        chosen = tuple(K.choose_algorithm(x, w, (1, 1), p, (1, 1), 1) for x, w, p in layers)
    assert chosen == (expected if D.HAVE_TILES else ("im2col", "im2col"))


@needs_tiles
def test_weight_grad_from_deferred_columns_equals_im2col():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((20, 3, 3, 2))
    geometry = ((1, 1), (1, 0), (1, 2), 1)
    y, cols = K.CONV_ALGORITHMS["indirect"](x, w, *geometry)
    assert isinstance(cols, K.Columns)
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(K.conv2d_weight_grad(g, cols, w.shape, 1),
                               K.conv2d_weight_grad(g, cols.materialize(), w.shape, 1))


@needs_tiles
@pytest.mark.parametrize("algorithm", ["direct", "indirect"])
def test_tile_algorithms_match_torch(algorithm):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((4, 6, 14, 14)), rng.standard_normal((16, 6, 5, 5))
    y = getattr(D, f"conv2d_{algorithm}_tiles")(x, w, (1, 1), (2, 2), (1, 1), 1)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=2)
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-10, atol=1e-10)

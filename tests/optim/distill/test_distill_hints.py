"""FitNets hints and attention transfer: definitions, laws, gradients, PyTorch."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet import nn
from optim.distill import attention_map, attention_transfer_loss, hint_loss, hint_regressor


def arrays(shape, bound=3.0):
    return hnp.arrays(np.float64, shape, elements=st.floats(-bound, bound, allow_nan=False))


feature_shapes = hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4)


@st.composite
def feature_map_pairs(draw):
    """(student (N, C_s, H, W), teacher (N, C_t, H, W)) float64 activations."""
    n, h, w = (draw(st.integers(1, 3)) for _ in range(3))
    c_s, c_t = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return draw(arrays((n, c_s, h, w))), draw(arrays((n, c_t, h, w)))


# ---- hints --------------------------------------------------------------------------------


@given(data=st.data(), shape=feature_shapes)
def test_hint_loss_definition(data, shape):
    """Romero et al. 2015 eq. 3 in the paper's letters: u the teacher's hint output, r(v) the
    student's guided output after the regressor; (1/N) Σ_i ½‖u_i − r(v_i)‖²."""
    r_v, u = data.draw(arrays(shape)), data.draw(arrays(shape))
    squared = ((u - r_v) ** 2).reshape(shape[0], -1).sum(axis=1)
    np.testing.assert_allclose(float(hint_loss(r_v, u).data), np.mean(0.5 * squared), rtol=1e-12)
    np.testing.assert_allclose(float(hint_loss(r_v, u, reduction="mean").data),
                               0.5 * np.mean((u - r_v) ** 2), rtol=1e-12)


@given(data=st.data(), shape=feature_shapes)
def test_hint_loss_gradient(data, shape):
    u, v = data.draw(arrays(shape)), data.draw(arrays(shape))
    assert minnet.gradcheck(lambda a: hint_loss(a, v), [u])
    student, teacher = minnet.Tensor(u, requires_grad=True), minnet.Tensor(v, requires_grad=True)
    hint_loss(student, teacher).backward()
    np.testing.assert_allclose(student.grad, (u - v) / shape[0], rtol=1e-12, atol=1e-15)
    assert teacher.grad is None


@given(student=st.tuples(st.integers(1, 3), st.integers(2, 6), st.integers(2, 6)),
       data=st.data())
def test_regressor_maps_to_teacher_shape(student, data):
    c_s, h_s, w_s = student
    teacher = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, h_s)),
               data.draw(st.integers(1, w_s)))
    regressor = hint_regressor(student, teacher)
    x = minnet.Tensor(np.ones((2,) + student, dtype=np.float32))
    assert regressor(x).shape == (2,) + teacher
    assert isinstance(regressor, nn.Identity) == (student == teacher)


def test_vector_regressor_is_linear_and_equal_shapes_need_none():
    regressor = hint_regressor((800,), (84,))
    assert isinstance(regressor, nn.Linear) and regressor.weight.shape == (84, 800)
    assert isinstance(hint_regressor((5, 4, 4), (5, 4, 4)), nn.Identity)


@pytest.mark.parametrize("student, teacher, match", [
    ((3, 4, 4), (3, 5, 4), "spatially smaller"),
    ((12,), (3, 2, 2), "numbers of axes"),
    ((3, 4), (2, 4), "vectors"),
])
def test_regressor_rejects_impossible_shapes(student, teacher, match):
    with pytest.raises(ValueError, match=match):
        hint_regressor(student, teacher)


def test_hint_loss_rejects_mismatched_shapes_and_reductions():
    with pytest.raises(ValueError, match="student_features of shape"):
        hint_loss(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="reduction"):
        hint_loss(np.zeros((2, 3)), np.zeros((2, 3)), reduction="sum")


# ---- attention transfer -------------------------------------------------------------------


@given(pair=feature_map_pairs(), scale=st.floats(0.1, 10.0), p=st.sampled_from([1.0, 2.0, 4.0]),
       seed=st.integers(0, 2**16))
def test_attention_map_laws(pair, scale, p, seed):
    a, _ = pair
    assume(np.all(np.abs(a).reshape(len(a), -1).max(axis=1) > 1e-3))
    q = attention_map(a, p).data
    n, c, h, w = a.shape
    assert q.shape == (n, h * w) and np.all(q >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-12)
    # invariant to a positive rescaling of the activations and to the order of the channels
    np.testing.assert_allclose(attention_map(scale * a, p).data, q, rtol=1e-9, atol=1e-15)
    permuted = a[:, np.random.default_rng(seed).permutation(c)]
    np.testing.assert_allclose(attention_map(permuted, p).data, q, rtol=1e-12, atol=1e-15)
    # brute force: channel sum of |A|^p, flattened, over its L2 norm
    energy = (np.abs(a) ** p).sum(axis=1).reshape(n, -1)
    np.testing.assert_allclose(q, energy / np.linalg.norm(energy, axis=1, keepdims=True),
                               rtol=1e-9, atol=1e-15)


@given(pair=feature_map_pairs(), scale=st.floats(0.1, 10.0))
def test_attention_transfer_loss_laws(pair, scale):
    s, t = pair
    n, _, h, w = s.shape
    loss = float(attention_transfer_loss(s, t).data)
    # unit vectors with non-negative entries are at most sqrt(2) apart
    assert -1e-15 <= loss <= 2.0 / (h * w) + 1e-12
    swapped = float(attention_transfer_loss(t, s).data)
    np.testing.assert_allclose(loss, swapped, rtol=1e-9, atol=1e-15)
    assume(np.all(np.abs(t).reshape(n, -1).max(axis=1) > 1e-3))
    assert float(attention_transfer_loss(scale * t, t).data) <= 1e-20


@given(pair=feature_map_pairs())
def test_attention_transfer_loss_gradient(pair):
    s, t = pair
    # keep away from the kink of |a| at 0 and from all-zero maps
    s = np.where(np.abs(s) < 0.05, 0.05, s)
    assert minnet.gradcheck(lambda a: attention_transfer_loss(a, t), [s], atol=1e-6)


@given(pair=feature_map_pairs())
def test_attention_transfer_matches_authors_formula_in_torch(pair):
    torch = pytest.importorskip("torch")
    s, t = pair
    s = np.where(np.abs(s) < 0.05, 0.05, s)

    def at(x):
        return torch.nn.functional.normalize(x.pow(2).mean(1).view(x.size(0), -1))

    theirs = torch.tensor(s, requires_grad=True)
    expected = (at(theirs) - at(torch.tensor(t))).pow(2).mean()
    expected.backward()
    ours = minnet.Tensor(s.copy(), requires_grad=True)
    loss = attention_transfer_loss(ours, t)
    loss.backward()
    np.testing.assert_allclose(float(loss.data), expected.item(), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-7, atol=1e-13)


def test_attention_transfer_rejects_spatial_mismatch():
    with pytest.raises(ValueError, match="spatial size"):
        attention_transfer_loss(np.ones((2, 3, 4, 4)), np.ones((2, 3, 2, 2)))
    with pytest.raises(ValueError, match="4-D"):
        attention_transfer_loss(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="p must be"):
        attention_map(np.ones((1, 1, 2, 2)), p=0.0)

"""Hypothesis strategies and small models shared by the optim.prune tests."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet import nn

FLOAT_DTYPES = st.sampled_from([np.float32, np.float64])
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6)


def float_arrays(shape, dtype=np.float64, bound=10.0, unique=False):
    """Finite arrays of ``shape`` (values exactly representable in float32)."""
    elements = st.floats(-bound, bound, width=32, allow_subnormal=False)
    return hnp.arrays(dtype, shape, elements=elements, unique=unique)


@st.composite
def amounts(draw, n):
    """An amount for ``n`` entries: an int count in [0, n] or a float fraction in [0, 1]."""
    if draw(st.booleans()):
        return draw(st.integers(0, n))
    return draw(st.floats(0.0, 1.0))


def expected_count(amount, n):
    """The number of entries ``amount`` prunes, by the torch rule (round half to even)."""
    return amount if isinstance(amount, int) else round(amount * n)


def forward(model, x):
    """Eval-mode forward pass without a graph, as an ndarray."""
    model.eval()
    with minnet.no_grad():
        return model(minnet.Tensor(x)).data


def randomize_batch_norm(model, rng):
    """Give every BatchNorm random running statistics and affine parameters."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.running_mean[...] = rng.normal(size=c)
            m.running_var[...] = rng.uniform(0.5, 2.0, size=c)
            m.weight.data[...] = rng.normal(size=c)
            m.bias.data[...] = rng.normal(size=c)

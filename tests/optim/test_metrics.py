"""Parameter, MAC, byte and latency accounting against hand counts."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet import models, nn
from optim import metrics
from optim.quant import prepare, prepare_qat, share_weights


def test_count_params_of_lenets_matches_the_literature():
    # LeNet-300-100: 784*300+300 + 300*100+100 + 100*10+10; LeNet-5 (28x28, pad 2): 61,706
    assert metrics.count_params(models.lenet_300_100()) == 266_610
    assert metrics.count_params(models.lenet5()) == 61_706


def test_count_params_trainable_only_skips_frozen():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    assert metrics.count_params(model, trainable_only=True) == 4 * 2 + 2


@given(batch=st.integers(1, 3), n_in=st.integers(1, 9), n_out=st.integers(1, 9))
def test_linear_macs_are_in_times_out_per_sample(batch, n_in, n_out):
    assert metrics.macs(nn.Linear(n_in, n_out), (batch, n_in)) == batch * n_in * n_out


@given(c_in=st.sampled_from([2, 4]), c_out=st.sampled_from([2, 4]), k=st.integers(1, 3),
       stride=st.integers(1, 2), padding=st.integers(0, 1), groups=st.sampled_from([1, 2]))
def test_conv_macs_equal_a_brute_force_count(c_in, c_out, k, stride, padding, groups):
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, groups=groups)
    h = w = 6
    brute = 0
    for _ in range(c_out):
        for i in range(0, h + 2 * padding - k + 1, stride):
            for j in range(0, w + 2 * padding - k + 1, stride):
                brute += (c_in // groups) * k * k
    assert metrics.macs(conv, (1, c_in, h, w)) == brute


def test_lenet5_macs_by_hand():
    conv1, conv2 = 6 * 28 * 28 * 25, 16 * 10 * 10 * 6 * 25
    pools, relus = 6 * 14 * 14 * 4 + 16 * 5 * 5 * 4, 6 * 28 * 28 + 16 * 10 * 10 + 120 + 84
    fcs = 400 * 120 + 120 * 84 + 84 * 10
    assert metrics.macs(models.lenet5(), (1, 1, 28, 28)) == conv1 + conv2 + pools + relus + fcs


def test_macs_leave_the_model_as_it_was():
    model = models.lenet5(batch_norm=True)
    before = model.state_dict()
    metrics.macs(model, (2, 1, 28, 28))
    assert model.training
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks for m in model.modules())


def test_model_bytes_counts_float32_parameters_and_buffers():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    params = (3 * 4 + 4 + 4 + 4) * 4
    buffers = 4 * 4 * 2 + 8
    assert metrics.model_bytes(model, include_buffers=False) == params
    assert metrics.model_bytes(model) == params + buffers


def test_latency_is_positive_and_validates():
    model = models.lenet_300_100()
    assert metrics.latency(model, np.zeros((1, 1, 28, 28), np.float32), repeats=3) > 0
    with pytest.raises(ValueError, match="repeats"):
        metrics.latency(model, np.zeros((1, 784), np.float32), repeats=0)
    with pytest.raises(ValueError, match="input_shape"):
        metrics.macs(model, (1, 0))


def test_model_bytes_counts_a_shared_layer_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert metrics.model_bytes(model) == metrics.model_bytes(shared) == (16 + 4) * 4


def test_quantized_and_shared_models_count_the_macs_of_their_float_view():
    """QuantStage and shared weights run their layer with replaced weights: they count as
    that layer (and a fused ReLU), so the total equals the float model's."""
    model = models.lenet5()
    expected = metrics.macs(model, (2, 1, 28, 28))
    assert metrics.macs(share_weights(model, n_clusters=4), (2, 1, 28, 28)) == expected
    assert metrics.macs(prepare_qat(model, weight_method="ste"), (2, 1, 28, 28)) == expected
    assert metrics.macs(prepare(model), (2, 1, 28, 28)) == expected


@pytest.mark.parametrize("seed", range(6))
def test_macs_equal_the_graph_work_of_the_traced_model(seed):
    """One definition per op: metrics.macs and the graph's node_work (which the cost model
    reads) give the same count, BatchNorm and residual adds included."""
    from optim.graph import trace
    from optim.graph.ops import node_work
    from optim.graph.zoo import random_model, residual_cnn
    model, shape = (models.lenet5(batch_norm=True), (2, 1, 28, 28)) if seed == 0 else \
        (residual_cnn(), (2, 1, 28, 28)) if seed == 1 else random_model(seed)
    graph = trace(model, np.zeros(shape, np.float32))
    assert metrics.macs(model, shape) == sum(node_work(n, graph.types) for n in graph.nodes)

"""The per-layer report: counts against optim.metrics and hand counts."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import minnet
from minnet import nn
from optim.metrics import count_params, macs
from optim.prune import apply_mask, format_report, layer_report, magnitude_mask


@given(seed=st.integers(0, 1000), batch=st.integers(1, 3), amount=st.floats(0, 1),
       padding=st.integers(0, 1))
def test_report_counts_match_metrics_and_nonzeros(seed, batch, amount, padding):
    minnet.manual_seed(seed)
    side = 6 - 2 + 2 * padding
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=padding), nn.Flatten(),
                          nn.Linear(3 * side * side, 4))
    dense = layer_report(model, (batch, 2, 6, 6))
    assert sum(r["macs"] for r in dense) == macs(model, (batch, 2, 6, 6))
    assert sum(r["params"] for r in dense) == count_params(model)
    apply_mask(model[2], "weight", magnitude_mask(model[2].weight.data, amount))
    conv, linear = layer_report(model, (batch, 2, 6, 6))
    nnz = np.count_nonzero(model[2].weight.data)
    assert linear["nonzero"] == nnz + 4 and linear["nonzero_macs"] == batch * nnz
    assert linear["sparsity"] == 1 - nnz / model[2].weight.size
    assert conv["nonzero_macs"] == conv["macs"] == batch * side * side * 3 * 2 * 3 * 3
    table = format_report([conv, linear])
    assert table.count("\n") == 4 and "| total |" in table and f"{linear['params']:,}" in table

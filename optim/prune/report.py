"""Per-layer pruning report: shape, parameters, non-zeros, sparsity and MACs.

MACs follow ``optim.metrics``: a Linear costs in·out per sample, a Conv2d (C_in/groups)·k_h·k_w
per output element. ``nonzero_macs`` counts only the multiplications by non-zero weights
(what a sparse kernel performs): nnz(W) per sample for a Linear, nnz(W)·H_out·W_out for a
Conv2d (groups=1 counted per output channel's own weights). Test:
``tests/optim/prune/test_prune_report.py``.
"""
from __future__ import annotations

import numpy as np

from minnet import nn
from optim.metrics import forward_with_hooks

from .parametrize import effective_weight


def layer_report(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    """One row per Linear/Conv2d of ``model`` for an input of ``input_shape`` (batch included):
    ``name, type, shape, params, nonzero, sparsity, macs, nonzero_macs``."""
    rows: list[dict] = []
    hooks = {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue

        def hook(m, args, out, name=name):
            w = effective_weight(m, "weight")
            bias = 0 if m.bias is None else m.bias.size
            per_position = out.size // out.shape[1]  # samples (× output positions for conv)
            rows.append({"name": name, "type": type(m).__name__, "shape": tuple(w.shape),
                         "params": w.size + bias, "nonzero": int(np.count_nonzero(w)) + bias,
                         "sparsity": float(1 - np.count_nonzero(w) / w.size),
                         "macs": per_position * w.size,
                         "nonzero_macs": per_position * int(np.count_nonzero(w))})
        hooks[module] = hook
    forward_with_hooks(model, input_shape, hooks)
    return rows


def format_report(rows: list[dict]) -> str:
    """A markdown table of ``layer_report`` rows with a total line."""
    lines = ["| layer | type | weight shape | params | non-zero | sparsity | MACs "
             "| non-zero MACs |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['type']} | {'×'.join(map(str, r['shape']))} | "
                     f"{r['params']:,} | {r['nonzero']:,} | {100 * r['sparsity']:.1f} % | "
                     f"{r['macs']:,} | {r['nonzero_macs']:,} |")
    params = sum(r["params"] for r in rows)
    nonzero = sum(r["nonzero"] for r in rows)
    weights = sum(int(np.prod(r["shape"])) for r in rows)
    pruned = sum(int(np.prod(r["shape"])) * r["sparsity"] for r in rows)
    lines.append(f"| total | | | {params:,} | {nonzero:,} | "
                 f"{100 * pruned / max(weights, 1):.1f} % | {sum(r['macs'] for r in rows):,} | "
                 f"{sum(r['nonzero_macs'] for r in rows):,} |")
    return "\n".join(lines)

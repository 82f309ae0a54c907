"""Mutation testing of the formula modules: does each module's own test set fail when one
operator, constant or returned value of the module is changed?

Regenerate docs/mutation.md (every module, about an hour on one core)::

    CI=true MINNET_BACKEND=numpy nice -n 19 python scripts/mutation.py

``python scripts/mutation.py optim.prune.schedules`` re-runs one module and keeps the other
modules' last results (docs/mutation.json). ``--list MODULE`` prints the mutants only.

Mutations (AST, one at a time): arithmetic and augmented-assignment operator swaps, comparison
boundary and (in)equality swaps, ``and``<->``or``, dropped unary ``-``/``not``/``~``, integer and
float constants ±1 (0<->1, ``True``<->``False``), a returned value replaced by ``None``, and
a non-constant index or slice bound off by one. Code inside ``raise``, f-strings, docstrings,
annotations, decorators and ``warnings.warn`` is left alone (messages, not formulas), and so
is the ``copy=`` flag of NumPy calls (it decides whether a result is copied, not its values).

How a mutant is tested, without writing any file: the project and the test dependencies are
imported once; per mutant the runner forks, the child executes the mutated source in the
loaded module's namespace, re-points every name in every loaded module that referred to an old
function or class of it, and runs pytest on the module's test files (``TESTS`` below) with
``-x``; a failing run kills the mutant. A mutant on a line that the unmutated test run never
executes survives without being run. Each run has a time limit (twice the unmutated run plus
20 s); a mutant that hits it counts as killed (an endless loop is a detected change).

A surviving mutant that no test can tell apart from the original is listed in ``EQUIVALENT``
with the reason; the score is killed / (mutants - equivalent). Functions that choose a
measurement's workload or time budget, not a formula, are listed in ``NOT_FORMULAS`` with the
reason and not mutated (a test may not time anything).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import datetime
import importlib
import json
import os
import pkgutil
import signal
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "mutation.json")
REPORT = os.path.join(ROOT, "docs", "mutation.md")
COMMAND = "CI=true MINNET_BACKEND=numpy nice -n 19 python scripts/mutation.py"

_Q = "tests/optim/quant/"
_P = "tests/optim/prune/"
_N = "tests/optim/nas/"
_G = "tests/optim/graph/"
_O = "tests/minnet/ops/"
_T = "tests/optim/"

# module -> the test files that state its laws (its docstring examples always run too)
TESTS = {
    "optim.prune.schedules": [_P + "test_prune_schedules.py",
                              _P + "test_prune_schedules_by_hand.py"],
    "optim.quant.affine": [_Q + "test_quant_affine.py", _Q + "test_quant_validation.py"],
    "optim.graph.cost": [_G + "test_graph_cost.py", _G + "test_graph_roofline.py",
                         _G + "test_graph_cost_features.py"],
    "optim.quant.calibration": [_Q + "test_quant_calibration_by_hand.py",
                                _Q + "test_quant_calibration.py",
                                _Q + "test_quant_calibration_edges.py"],
    "optim.quant.ranges": [_Q + "test_quant_ranges.py", _Q + "test_quant_affine.py",
                           _Q + "test_quant_lowbit_by_hand.py"],
    "optim.quant.rounding": [_Q + "test_quant_rounding.py", _Q + "test_quant_lowbit_by_hand.py"],
    "optim.quant.observers": [_Q + "test_quant_observers.py", _Q + "test_quant_histogram_l2.py",
                              _Q + "test_quant_validation.py",
                              _Q + "test_quant_observer_ranges_by_hand.py",
                              _Q + "test_quant_observers_by_hand.py",
                              _Q + "test_quant_calibration.py", _Q + "test_quant_torch.py",
                              _Q + "test_quant_qat.py"],
    "optim.quant.requant": [_Q + "test_quant_requant.py", _Q + "test_quant_int_gemm.py",
                            _Q + "test_quant_lowbit_by_hand.py"],
    "optim.quant.fixed_point": [_Q + "test_quant_lowbit.py", _Q + "test_quant_validation.py",
                                _Q + "test_quant_lowbit_by_hand.py"],
    "optim.quant.pow2": [_Q + "test_quant_lowbit.py", _Q + "test_quant_validation.py",
                         _Q + "test_quant_lowbit_by_hand.py"],
    "optim.quant.binary": [_Q + "test_quant_lowbit.py", _Q + "test_quant_binary_qat.py",
                           _Q + "test_quant_lowbit_by_hand.py"],
    "optim.quant.sharing": [_Q + "test_quant_sharing_by_hand.py", _Q + "test_quant_sharing.py"],
    "optim.quant.huffman": [_Q + "test_quant_huffman.py", _Q + "test_quant_lowbit_by_hand.py"],
    "optim.prune.scores": [_P + "test_prune_scores_by_hand.py", _P + "test_prune_scores.py",
                           _P + "test_prune_hessian.py", _P + "test_prune_feature_maps.py"],
    "optim.prune.criteria": [_P + "test_prune_criteria_by_hand.py", _P + "test_prune_model.py",
                             _P + "test_prune_grasp.py", _P + "test_prune_feature_maps.py"],
    "optim.prune.masks": [_P + "test_prune_masks_by_hand.py", _P + "test_prune_masks.py"],
    "optim.distill.soft": ["tests/optim/distill/test_soft_by_hand.py",
                           "tests/optim/distill/test_distill_kd.py"],
    "optim.distill.hints": [_T + "test_small_laws_by_hand.py",
                            "tests/optim/distill/test_distill_hints.py"],
    "optim.lowrank.svd": ["tests/optim/lowrank/test_svd_by_hand.py",
                          "tests/optim/lowrank/test_lowrank_svd.py"],
    "optim.nas.pareto": [_N + "test_pareto_by_hand.py",
                         _N + "test_nas_pareto.py"],
    "optim.nas.nsga2": [_N + "test_nsga2_by_hand.py", _N + "test_nas_strategies.py"],
    "optim.nas.gp": [_N + "test_gp_by_hand.py", _N + "test_nas_gp.py"],
    "optim.nas.bayesian": [_N + "test_bayesian_by_hand.py", _N + "test_nas_strategies.py"],
    "optim.nas.hyperband": [_N + "test_nas_schedules_by_hand.py", _N + "test_nas_hyperband.py"],
    "optim.nas.evolution": [_N + "test_nas_schedules_by_hand.py", _N + "test_nas_strategies.py"],
    "optim.graph.fold": [_T + "test_small_laws_by_hand.py", _G + "test_graph_passes.py"],
    "optim.graph.memory": [_G + "test_graph_memory_by_hand.py", _G + "test_graph_memory.py"],
    "minnet.ops.conv": [_O + "test_conv_by_hand.py",
                        _O + "test_conv.py"],
    "minnet.ops.elementwise": [_O + "test_elementwise.py", _O + "test_function_defaults.py"],
    "minnet.ops.linalg": [_O + "test_linalg_by_hand.py", _O + "test_linalg.py",
                          _O + "test_function_defaults.py"],
    "minnet.ops.loss": [_T + "test_small_laws_by_hand.py", _O + "test_loss.py",
                        _O + "test_function_defaults.py"],
    "minnet.ops.norm": [_O + "test_norm.py", _O + "test_function_defaults.py"],
    "minnet.ops.pool": [_O + "test_pool_by_hand.py", _O + "test_pool.py",
                        _O + "test_function_defaults.py"],
    "minnet.ops.reduce": [_O + "test_reduce_by_hand.py", _O + "test_reduce.py",
                          _O + "test_function_defaults.py"],
    "minnet.ops.resize": [_O + "test_resize.py"],
    "minnet.ops.shape": [_O + "test_shape.py", _O + "test_function_defaults.py"],
}

# module -> {mutant key: why no test can tell the mutant from the original}
NOT_FORMULAS: dict[str, dict[str, str]] = {
    "optim.graph.cost": {
        name: "chooses the synthetic nodes or the timing budget of the calibration, which only "
              "benchmarks measure" for name in
        ("_conv_cases", "_linear_cases", "_other_cases", "_single_node", "_timed_rows",
         "calibrate", "time_callable", "measure_peaks")},
}

EQUIVALENT: dict[str, dict[str, str]] = {
    "optim.graph.cost": {
        "<module>: 6 -> 7":
            "MIN_SAMPLES is read only by calibrate, a measurement function (NOT_FORMULAS)",
        "cost_features: x.size // x.shape[-1] -> x.size / x.shape[-1]":
            "x.size is a multiple of x.shape[-1]: the true quotient equals the floor quotient",
    },
    "optim.quant.calibration": {
        "_xlogx: 1.0 -> 2.0": "the placeholder inside log for v = 0, multiplied by v = 0",
        "kl_divergences_nvidia: 1.0 -> 2.0":
            "log of the placeholder for an empty last bin: multiplied by its outliers, 0 "
            "unless the candidate is infinite (masked)",
        "kl_divergences_nvidia: 1.0 -> 2.0 #2":
            "the ratio placeholder of an empty chunk: its mass is 0 (or the candidate is "
            "infinite and masked), so its log is multiplied by 0",
        "kl_divergences_nvidia: 1 -> 0 #17":
            "max(support, 0) divides by 0 only where support is 0, and np.where then takes the "
            "placeholder",
        "kl_divergences_nvidia: 1.0 -> 2.0 #3":
            "the log placeholder of infinite candidates, which np.where replaces by inf",
        "kl_threshold_nvidia: divergences <= best + 1e-12 * max(1.0, abs(best)) -> "
        "divergences < best + 1e-12 * max(1.0, abs(best))":
            "the tolerance is positive, so the minimum itself passes either comparison",
        "kl_divergences_nvidia: n >= h.size -> n > h.size":
            "at n = K the general branch builds the same one-bin chunks (the empty ones add 0): "
            "equal within 1e-14 absolute on 300 random 256-bin histograms",
        "kl_divergences_nvidia: last_kept > 0 -> last_kept >= 0 #2":
            "adds the outliers to an empty last bin's chunk only where they are 0 or the "
            "candidate is infinite (masked)",
        "kl_divergences_mxnet: 1 -> 0 #7":
            "max(support, 0) divides by 0 only in chunks whose P entries are all 0, where "
            "np.where(p != 0, ...) takes 0",
        "SignedHistogram.update: peak > 0 -> peak >= 0":
            "a zero peak gives the width 0 / bins = 0, the value an unset row already has",
        "SignedHistogram.update: 1.0 -> 2.0":
            "the placeholder width of rows that have seen only zeros, whose magnitudes are 0 "
            "and land in bin 0 whatever the width",
        **{f"SignedHistogram.update: {m}":
           "after a merge the new peak needs ceil(peak / w) > capacity / 2 bins, at least the "
           "merged count, so any smaller value is overridden by the max that follows"
           for m in ("(self.n_bins[c] + 1) // 2 -> (self.n_bins[c] + 1) / 2",
                     "self.n_bins[c] + 1 -> self.n_bins[c] - 1", "1 -> 0 #5", "2 -> 3 #2")},
    },
    "optim.quant.sharing": {
        "nearest_centroid: 1 -> 0":
            "with one centroid the general path gives the same zeros: the clip to [1, 0] "
            "yields 0, and both neighbours are that centroid",
        "kmeans_codebook: 1 -> 0 #2":
            "max(sizes, 0) divides by 0 only for empty clusters, whose result np.where "
            "discards",
    },
    "optim.quant.observers": {
        "histogram_l2_search: alpha < beta -> alpha <= beta":
            "adds one step only when alpha and beta meet exactly; the (alpha + 1e-5) and "
            "(beta - 1e-5) quantile bins then cross, and the move is clamped to bins the "
            "search already reached: no (start, end) changed on 200 random histograms run "
            "to the end with both conditions (PyTorch's loop uses alpha < beta)",
        "histogram_l2_search: error > best -> error >= best":
            "stopping on an equal error differs only when a move keeps the L2 error exactly; "
            "a move changes the destination bin width, and no move of 400 random small "
            "histograms (zeros included) kept it: both conditions gave the same range",
    },
    "optim.graph.memory": {
        "peak_live_bytes: 2 -> 3": "one more trailing zero in the load array",
        "plan_memory: 0 -> 1 #3":
            "without reuse every buffer gets the same span, and identical spans overlap "
            "whatever their start",
        "plan_memory: 1 -> 0 #4":
            "without reuse every buffer gets the same span, and identical spans overlap "
            "whatever their end (>= the start)",
    },
    "optim.nas.pareto": {
        "pareto_front: -1 -> 1":
            "the scan order is lexicographic either way (last objective first instead of "
            "first), and any lexicographic order puts a dominating row before those it "
            "dominates",
        "non_dominated_sort: -1 -> 1":
            "rows of front i are dominated only by rows of earlier fronts, so a removed row's "
            "count is never decremented back to 0",
        "hypervolume_2d: points < reference -> points <= reference":
            "a point on the reference's boundary bounds a slice of zero width or height",
        "hypervolume_2d: 0 -> 1":
            "inside.shape[1] is 2, so the early return is skipped, but no point inside gives "
            "an empty front and a sum of 0.0 anyway",
        "hypervolume_2d: 1 -> 0 #3":
            "rows of a Pareto front with equal f1 are duplicates, so the secondary sort key "
            "changes nothing",
    },
    "optim.distill.soft": {
        "<module>: 1e+18 -> 1e+18": "1e18 + 1 rounds to 1e18 in float64",
        "<module>: 17 -> 18":
            "one more series term, at most 1/20! ≈ 4e-19 of x^2 for |x| <= 1, below float64's "
            "resolution of the sum",
        "_SoftKL.forward: np.max(np.abs(e), axis=1) <= 1.0 -> np.max(np.abs(e), axis=1) < 1.0":
            "at max |e| = 1 exactly both branches are accurate to rounding",
        "_SoftKL.forward: 0.0 -> 1.0":
            "the placeholder fed to the series in rows that take the other branch; np.where "
            "discards those results",
    },
    "optim.lowrank.svd": {
        "energy_rank: 1 -> 0 #2":
            "the spectrum is non-increasing, so its first squared value is 0 only when the "
            "total is",
        "decompose: lam > rcond * max(lam.max(), 0.0) -> lam >= rcond * max(lam.max(), 0.0)":
            "differs only for an eigenvalue exactly at the threshold",
        "budget_rank: (budget - fixed_params) // params_per_rank -> "
        "(budget - fixed_params) / params_per_rank":
            "int(min(q, max_rank)) truncates a positive quotient as floor division does, and a "
            "quotient below 1 is refused either way",
    },
    "optim.nas.gp": {
        "expected_improvement: std > 0 -> std >= 0":
            "where std = 0 the final np.where takes max(gain, 0), whatever divisor the "
            "discarded branch used",
        "expected_improvement: 1.0 -> 2.0":
            "the divisor placeholder where std = 0, whose result np.where replaces by the gain",
    },
    "optim.nas.nsga2": {
        "nsga2_survival: room <= 0 -> room < 0":
            "with no room left a further front contributes argsort(...)[:0], nothing",
        "NSGA2.__init__: 0 -> 1":
            "the rank array before the first population is never read: survival replaces it",
        "NSGA2.__init__: 0 -> 1 #2":
            "the crowding array before the first population is never read: survival replaces it",
    },
    "minnet.ops.elementwise": {
        "Pow.backward: a > 0 -> a >= 0 #2":
            "the inner placeholder condition: where a = 0 it makes log(0) = -inf, which the "
            "outer np.where(a > 0, ..., 0) discards",
        "Pow.backward: 1 -> 0 #3":
            "the log placeholder for a <= 0, whose result the outer np.where discards",
    },
    "optim.prune.scores": {
        "fpgm_scores: 1 -> 0 #4": "the distance matrix is symmetric: its row sums are its "
                                  "column sums",
    },
    "optim.prune.criteria": {
        "_check_data: 0 -> 1 #2": "len(data[1]) == 0 is len(data[0]) == 0: the lengths were "
                                  "checked equal just before",
        **{f"{fn}: 256 -> 257": "the batch size only splits the data into chunks whose "
           "gradients or activations are summed or concatenated: the same totals up to float "
           "rounding" for fn in ("mean_gradients", "flat_gradient", "hessian_diagonals",
                                 "activations", "activations_and_gradients")},
    },
    "minnet.ops.resize": {
        **{f"linear_taps: {m}": "every coordinate mode maps into [-0.5, in - 0.5) or "
           "[0, in - 1], so a looser upper clamp only lets c in (in - 1, in): both taps are "
           "then in - 1 with weights summing to 1, the clamped value up to rounding"
           for m in ("in_size - 1 -> in_size + 1", "1 -> 0")},
        "_is_identity: 0 -> 1":
            "the identity test is a fast path: comparing index.shape[1] (1 or 2 taps) with the "
            "input size only detects identity less often (the same cases when the size is 1 or "
            "2 and the rest holds), and the general path gives the same values",
    },
    "minnet.ops.norm": {
        **{f"channel_window_sum: {m}":
           "offsets of magnitude C or more select no channel (lo >= hi), so clamping the "
           "offsets at C instead of C - 1 adds nothing"
           for m in ("channels - 1 -> channels + 1", "1 -> 0 #2",
                     "channels - 1 -> channels + 1 #2", "1 -> 0 #3")},
        "channel_window_sum: lo < hi -> lo <= hi": "lo = hi adds an empty slice",
        "BatchNorm.forward: x.size // x.shape[1] -> x.size / x.shape[1]":
            "x.size is a multiple of x.shape[1]: the true quotient equals the floor quotient",
        "BatchNorm.backward: g.size // g.shape[1] -> g.size / g.shape[1]":
            "g.size is a multiple of g.shape[1]: the true quotient equals the floor quotient",
        "BatchNorm.forward: 1 -> 0 #8":
            "max(n - 1, 0) differs only at n = 1, which F.batch_norm refuses in training",
    },
    "minnet.ops.linalg": {
        "MatMul.backward: 1 -> 0 #10":
            "a is 1-D in this branch, so a.shape[0] is a.shape[-1]",
    },
    "minnet.ops.pool": {
        "_window_args: kernel_size[0] // 2 -> kernel_size[0] / 2":
            "padding is an integer, and no integer lies in (k // 2, k / 2]",
        "_window_args: kernel_size[1] // 2 -> kernel_size[1] / 2":
            "padding is an integer, and no integer lies in (k // 2, k / 2]",
    },
    "optim.quant.fixed_point": {
        "qformat_range: 32 -> 33":
            "a signed format of 33 bits has m + n = 32 > 31 and an unsigned one of 33 bits "
            "m + n = 33: the m + n <= 31 check refuses both anyway",
    },
    "optim.quant.pow2": {
        "pow2_quantize: 0 -> 1 #2":
            "the placeholder exponent of values flushed to zero: np.where(kept, ..., 0) "
            "discards it",
    },
    "optim.quant.requant": {
        "quantize_multiplier: 0 -> 1 #2":
            "M0 is 0 or at least 2^30, never 1; and for M = 0 frexp's exponent already makes "
            "the shift 0",
        "quantize_multiplier: m0 // 2 -> m0 / 2":
            "only the carry value 2^31 is halved: 2^30 exactly, as int or float",
        "rounding_right_shift: x < 0 -> x <= 0":
            "differs only at x = 0, whose remainder 0 is never above the threshold",
        "rounding_right_shift: 0 -> 1":
            "x < 1 differs from x < 0 only at x = 0 (integers), whose remainder is 0",
    },
    "optim.quant.affine": {
        "qparams: (qmin + qmax + 1) // 2 -> (qmin + qmax + 1) / 2":
            "the value goes into an int64 array: for the non-negative sums of this branch "
            "(qmin >= 0) truncation equals floor division",
        "_rounded_steps: 1 -> 0":
            "the clip bound one step beyond the range only keeps huge values finite; the "
            "result is clamped to [qmin, qmax] afterwards, so a bound at the range edge gives "
            "the same codes",
        "_rounded_steps: 1 -> 0 #2":
            "as the lower bound: the upper clip bound at the range edge gives the same clamped "
            "codes",
    },
}

# ---- mutation operators --------------------------------------------------------------------

_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
          ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
          ast.LShift: ast.RShift, ast.RShift: ast.LShift, ast.BitAnd: ast.BitOr,
          ast.BitOr: ast.BitAnd, ast.BitXor: ast.BitOr}
_CMPOP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
          ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
          ast.In: ast.NotIn, ast.NotIn: ast.In}
_BOOLOP = {ast.And: ast.Or, ast.Or: ast.And}
_UNARY = (ast.USub, ast.Not, ast.Invert)


def _new_constant(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return {0: 1, 1: 0}.get(value, value + 1) if isinstance(value, int) else value + 1.0
    return None


def _is_docstring(node, parent):
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


def _is_warning_call(node):
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "warn")


def _skipped_children(node):
    """Children of ``node`` that hold no formula (annotations, decorators, __all__)."""
    skip = []
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        skip += node.decorator_list + ([node.returns] if node.returns else [])
    if isinstance(node, ast.ClassDef):
        skip += node.decorator_list
    if isinstance(node, ast.arg) and node.annotation is not None:
        skip.append(node.annotation)
    if isinstance(node, ast.AnnAssign):
        skip.append(node.annotation)
    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                            for t in node.targets):
        skip.append(node.value)
    if isinstance(node, ast.keyword) and node.arg == "copy":
        skip.append(node.value)  # whether NumPy copies, never which values
    return skip


def _walk(tree):
    """(index, node, parent, qualname, in_function) for every node, in a fixed order,
    without descending into code that holds no formula."""
    out = []

    def visit(node, parent, qual, in_function):
        index = len(out)
        out.append((index, node, parent, qual, in_function))
        if isinstance(node, (ast.Raise, ast.JoinedStr, ast.Assert)) or _is_warning_call(node) \
                or _is_docstring(node, parent):
            return
        skip = {id(n) for n in _skipped_children(node)}
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            inner = f"{qual}.{node.name}" if qual else node.name
        else:
            inner = qual
        for child in ast.iter_child_nodes(node):
            if id(child) in skip:
                continue
            body = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and child in node.body
            visit(child, node, inner, in_function or body)

    visit(tree, None, "", False)
    return out


def _replace(parent, old, new):
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
                    return
    raise LookupError("node not found in its parent")


def _plus_one(expr):
    return ast.BinOp(left=expr, op=ast.Add(), right=ast.Constant(1))


def _sites(node, parent):
    """The mutations possible at ``node``: (kind, argument) pairs."""
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOP:
        yield "binop", None
    elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP:
        yield "augop", None
    elif isinstance(node, ast.Compare):
        for k, op in enumerate(node.ops):
            if type(op) in _CMPOP:
                yield "cmpop", k
    elif isinstance(node, ast.BoolOp):
        yield "boolop", None
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, _UNARY):
        yield "unary", None
    elif isinstance(node, ast.Constant) and _new_constant(node.value) is not None:
        yield "const", None
    elif isinstance(node, ast.Return) and node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None):
        yield "return", None
    elif isinstance(node, ast.Slice):
        for field in ("lower", "upper"):
            bound = getattr(node, field)
            if bound is not None and not isinstance(bound, (ast.Constant, ast.UnaryOp)):
                yield "slice", field
    elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
            and isinstance(node.slice, (ast.Name, ast.BinOp)):
        yield "index", None


def _apply(node, parent, kind, arg):
    """Mutate ``node`` in place (or in its parent); return the node that now stands there."""
    if kind in ("binop", "augop", "boolop"):
        table = _BOOLOP if kind == "boolop" else _BINOP
        node.op = table[type(node.op)]()
    elif kind == "cmpop":
        node.ops[arg] = _CMPOP[type(node.ops[arg])]()
    elif kind == "unary":
        _replace(parent, node, node.operand)
        return node.operand
    elif kind == "const":
        node.value = _new_constant(node.value)
    elif kind == "return":
        node.value = ast.Constant(None)
    elif kind == "slice":
        setattr(node, arg, _plus_one(getattr(node, arg)))
    elif kind == "index":
        node.slice = _plus_one(node.slice)
    return node


def _short(node):
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= 70 else text[:67] + "..."


def mutants(source: str):
    """Every mutant of ``source``: dicts with key, lines, in_function and how to rebuild it."""
    tree = ast.parse(source)
    found, seen = [], {}
    for index, node, parent, qual, in_function in _walk(tree):
        for kind, arg in _sites(node, parent):
            clone = copy.deepcopy(node)
            shell = ast.Module(body=[ast.Expr(clone)], type_ignores=[]) \
                if isinstance(clone, ast.expr) else ast.Module(body=[clone], type_ignores=[])
            holder = shell.body[0]
            before = _short(clone)
            after = _short(_apply(clone, holder if holder is not clone else shell, kind, arg))
            key = f"{qual or '<module>'}: {before} -> {after}"
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:
                key += f" #{seen[key]}"
            found.append({"key": key, "index": index, "kind": kind, "arg": arg,
                          "lines": [node.lineno, node.end_lineno], "line": node.lineno,
                          "in_function": in_function})
    return found


def mutated_code(source: str, filename: str, mutant: dict):
    tree = ast.parse(source)
    _, node, parent, _, _ = _walk(tree)[mutant["index"]]
    _apply(node, parent, mutant["kind"], mutant["arg"])
    ast.fix_missing_locations(tree)
    return compile(tree, filename, "exec", dont_inherit=True)


# ---- running ---------------------------------------------------------------------------------

def _preload():
    """Import minnet, optim and the optional oracles once, before any fork."""
    for extra in ("torch", "onnx", "onnxruntime"):
        with contextlib.suppress(Exception):
            importlib.import_module(extra)
    import _pytest
    import minnet
    import optim
    for package in (minnet, optim):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.endswith(".__main__"):
                with contextlib.suppress(Exception):
                    importlib.import_module(info.name)
    for info in pkgutil.walk_packages(_pytest.__path__, "_pytest."):
        with contextlib.suppress(Exception):
            importlib.import_module(info.name)
    # hypothesis scans every loaded module for constants once; do it before forking
    from hypothesis.internal.conjecture import providers
    providers._get_local_constants()


def _install(module: types.ModuleType, code) -> None:
    """Run ``code`` in ``module``'s namespace and re-point every loaded module's names that
    referred to the module's old functions and classes."""
    old = dict(vars(module))
    exec(code, vars(module))  # noqa: S102 - the mutant under test
    moved = {id(value): vars(module)[name] for name, value in old.items()
             if isinstance(value, (types.FunctionType, type)) and vars(module).get(name)
             is not value and getattr(value, "__module__", None) == module.__name__}
    for other in list(sys.modules.values()):
        namespace = getattr(other, "__dict__", None)
        if not isinstance(namespace, dict) or other is module:
            continue
        for name, value in list(namespace.items()):
            if id(value) in moved:
                namespace[name] = moved[id(value)]
            elif isinstance(value, dict) and not name.startswith("__"):
                for k, v in list(value.items()):
                    if id(v) in moved:
                        value[k] = moved[id(v)]


def _tracer(filename: str, lines: set):
    def local(frame, event, arg):
        if event == "line":
            lines.add(frame.f_lineno)
        return local

    def outer(frame, event, arg):
        return local if frame.f_code.co_filename == filename else None
    return outer


def _child(module_name, code, tests, trace_file, storage):
    os.setpgid(0, 0)
    os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = storage
    sys.dont_write_bytecode = True
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    import pytest
    module = sys.modules[module_name]
    try:
        if code is not None:
            _install(module, code)
    except BaseException:
        os._exit(3)
    lines: set[int] = set()
    if trace_file:
        import threading
        tracer = _tracer(module.__file__, lines)
        threading.settrace(tracer)
        sys.settrace(tracer)
    status = pytest.main([*tests, "-x", "-q", "-p", "no:cacheprovider",
                          "-p", "no:unraisableexception",
                          "-p", "no:threadexception", "-W", "ignore",
                          f"--rootdir={ROOT}"])
    if trace_file:
        sys.settrace(None)
        with open(trace_file, "w") as f:
            json.dump(sorted(lines), f)
    os._exit(int(status))


def _run(module_name, code, tests, timeout, trace_file=None, storage=None):
    """'killed', 'survived' or 'timeout' (and the seconds taken) for one forked test run."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            _child(module_name, code, tests, trace_file, storage)
        finally:
            os._exit(4)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > timeout:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - start
        time.sleep(0.05)
    code = os.waitstatus_to_exitcode(status)
    return ("survived" if code == 0 else "killed"), time.monotonic() - start


def test_paths(module_name):
    doctest = f"tests/test_doctests.py::test_docstring_examples[{module_name}]"
    return [os.path.join(ROOT, doctest)] + [os.path.join(ROOT, p) for p in TESTS[module_name]]


def run_module(module_name, log=print):
    module = importlib.import_module(module_name)
    filename = module.__file__
    with open(filename, encoding="utf-8") as f:
        source = f.read()
    tests = test_paths(module_name)
    storage = tempfile.mkdtemp(prefix="mutation-hypothesis-")
    trace_file = os.path.join(storage, "lines.json")
    status, baseline = _run(module_name, None, tests, 1800, trace_file, storage)
    if status != "survived":
        raise RuntimeError(f"the unmutated tests of {module_name} do not pass ({status})")
    with open(trace_file) as f:
        executed = set(json.load(f))
    timeout = 2 * baseline + 20
    log(f"{module_name}: unmutated run {baseline:.1f} s, limit {timeout:.0f} s")
    results = []
    for mutant in mutants(source):
        if not _mutated(module_name, mutant["key"]):
            continue
        covered = not mutant["in_function"] or any(
            line in executed for line in range(mutant["lines"][0], mutant["lines"][1] + 1))
        if covered:
            code = mutated_code(source, filename, mutant)
            status, seconds = _run(module_name, code, tests, timeout, storage=storage)
        else:
            status, seconds = "not covered", 0.0
        results.append({"key": mutant["key"], "line": mutant["line"], "status": status})
        log(f"  {status:11s} {seconds:5.1f}s L{mutant['line']} {mutant['key']}")
    return {"tests": TESTS[module_name], "unmutated_seconds": round(baseline, 1),
            "date": datetime.date.today().isoformat(), "mutants": results}


# ---- report ----------------------------------------------------------------------------------

def _mutated(module_name, key):
    """Whether the mutant ``key`` lies outside the module's ``NOT_FORMULAS`` functions."""
    return key.split(":")[0].split(".")[0] not in NOT_FORMULAS.get(module_name, {})


def summary(module_name, result):
    equivalent = EQUIVALENT.get(module_name, {})
    rows = [r for r in result["mutants"] if _mutated(module_name, r["key"])]
    killed = sum(r["status"] in ("killed", "timeout") for r in rows)
    eq = [r for r in rows if r["status"] not in ("killed", "timeout") and r["key"] in equivalent]
    survived = [r for r in rows if r["status"] not in ("killed", "timeout")
                and r["key"] not in equivalent]
    judged = len(rows) - len(eq)
    score = killed / judged if judged else 1.0
    return {"mutants": len(rows), "killed": killed, "equivalent": eq, "survived": survived,
            "score": score}


def write_report(results):
    lines = [
        "# Mutation testing of the formula modules",
        "",
        "Generated by `" + COMMAND + "` (one module: add its name;",
        "the runner and its module -> test-file table are `scripts/mutation.py`). A mutant is one",
        "changed operator, constant, returned value or index; it is killed when the module's",
        "test files (and its docstring examples) fail. Score = killed / (mutants - equivalent);",
        "the goal is at least 90 % per module.",
        "",
        "| module | run on | mutants | killed | equivalent | survived | score |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    details = []
    for name in TESTS:
        if name not in results:
            lines.append(f"| `{name}` | not run | | | | | |")
            continue
        s = summary(name, results[name])
        lines.append(f"| `{name}` | {results[name].get('date', '')} | {s['mutants']} "
                     f"| {s['killed']} | {len(s['equivalent'])} "
                     f"| {len(s['survived'])} | {100 * s['score']:.1f} % |")
        if s["equivalent"] or s["survived"]:
            details += ["", f"### `{name}`", ""]
            for r in s["equivalent"]:
                why = EQUIVALENT[name][r["key"]]
                details.append(f"- equivalent, line {r['line']}: `{r['key']}`: {why}")
            for r in s["survived"]:
                details.append(f"- {r['status']}, line {r['line']}: `{r['key']}`")
    lines += ["", "## Not mutated (not formulas)", ""]
    lines += [f"- `{module}.{name}`: {why}" for module, names in NOT_FORMULAS.items()
              for name, why in names.items()]
    lines += ["", "## Equivalent and surviving mutants"] + details
    with open(REPORT, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _merge_result(name, result):
    """Store one module's result, re-reading the file so that runs in parallel keep each other's."""
    results = {}
    if os.path.exists(RESULTS):
        with open(RESULTS, encoding="utf-8") as f:
            results = json.load(f)
    results[name] = result
    partial = RESULTS + f".{os.getpid()}"
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    os.replace(partial, RESULTS)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="modules to run (default: all of TESTS)")
    parser.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite docs/mutation.md from docs/mutation.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    for name in args.modules:
        if name not in TESTS:
            parser.error(f"module {name!r} is not in the test table")
    names = args.modules or list(TESTS)
    if args.list:
        for name in names:
            with open(importlib.import_module(name).__file__, encoding="utf-8") as f:
                for m in mutants(f.read()):
                    if _mutated(name, m["key"]):
                        print(f"{name} L{m['line']} {m['key']}")
        return 0
    results = {}
    if os.path.exists(RESULTS):
        with open(RESULTS, encoding="utf-8") as f:
            results = json.load(f)
    if not args.report_only:
        os.chdir(tempfile.mkdtemp(prefix="mutation-"))
        _preload()
        for name in names:
            result = run_module(name, log=lambda text: print(text, flush=True))
            results = _merge_result(name, result)
    write_report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

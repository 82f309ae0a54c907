"""Pictures of a search (matplotlib, an optional extra): the Pareto front and best-so-far curves.

The figures are drawn on a plain ``matplotlib.figure.Figure`` (no pyplot state, no display
needed) and saved as PNG atomically.
"""
from __future__ import annotations

import io
import os
from typing import Mapping

import numpy as np
from numpy.typing import ArrayLike

from minnet.io import atomic_write

from .history import History
from .pareto import pareto_front

__all__ = ["best_so_far", "objective_values", "plot_front", "plot_best_so_far"]

LINESTYLES = ("-", "--", ":", "-.")  # one per history, so overlapping curves stay visible


def best_so_far(values: ArrayLike) -> np.ndarray:
    """Running minimum of a sequence of objective values, NaN (failed trials) skipped.

    .. math:: b_t = \\min \\{ v_s : s \\le t,\\ v_s \\text{ not NaN} \\}

    NaN until the first number. Tested by
    ``tests/optim/nas/test_nas_plots.py::test_best_so_far_is_the_prefix_minimum``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    return np.fmin.accumulate(values) if values.size else values.copy()


def objective_values(history: History, objective: int = 0) -> np.ndarray:
    """Objective ``objective`` of every trial in id order; NaN for failed and invalid trials."""
    return np.array([r.objectives[objective] if r.status == "ok" else np.nan
                     for r in history.records], dtype=np.float64)


def _figure():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install matplotlib "
                          "(or the project's 'plot' extra)") from error
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def _check_histories(histories: Mapping[str, History]) -> None:
    if not isinstance(histories, Mapping) or not histories:
        raise ValueError(f"histories must be a non-empty mapping label -> History, got {histories!r}")
    for label, history in histories.items():
        if not isinstance(history, History):
            raise TypeError(f"histories[{label!r}] must be a History, got {type(history).__name__}")


def plot_front(histories: Mapping[str, History], path: str | os.PathLike, x: int = 1, y: int = 0,
               xlabel: str = "MACs per image", ylabel: str = "validation error",
               references: Mapping[str, tuple[float, float]] | None = None, logx: bool = True):
    """Scatter every successful trial of each history in the plane of objectives ``x`` and
    ``y`` and draw its Pareto front (``pareto_front`` over those two objectives) as a
    staircase; ``references`` maps a label to an ``(x, y)`` point drawn as a star (e.g.
    LeNet-5). Saves a PNG at ``path`` and returns the figure.

    Tested by ``tests/optim/nas/test_nas_plots.py::test_front_plot_draws_the_pareto_front``.
    """
    _check_histories(histories)
    figure = _figure()
    axes = figure.add_subplot()
    for k, (label, history) in enumerate(histories.items()):
        points = np.array([[r.objectives[x], r.objectives[y]] for r in history.ok()]).reshape(-1, 2)
        dots = axes.scatter(points[:, 0], points[:, 1], s=12, alpha=0.35)
        if len(points):
            front = points[pareto_front(points)]
            front = front[np.lexsort((front[:, 1], front[:, 0]))]
            axes.step(front[:, 0], front[:, 1], where="post", marker="o", color=dots.get_facecolor()[0],
                      alpha=1.0, linestyle=LINESTYLES[k % len(LINESTYLES)],
                      label=f"{label}: front of {len(front)}", gid=f"front:{label}")
    for label, (rx, ry) in (references or {}).items():
        axes.scatter([rx], [ry], marker="*", s=160, color="black", zorder=3)
        axes.annotate(label, (rx, ry), textcoords="offset points", xytext=(6, 6))
    if logx:
        from matplotlib import ticker
        axes.set_xscale("log")
        axes.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.xaxis.set_major_formatter(ticker.EngFormatter())
        axes.xaxis.set_minor_formatter(ticker.NullFormatter())
    axes.set(xlabel=xlabel, ylabel=ylabel, title="Pareto front (all objectives minimised)")
    axes.grid(alpha=0.3)
    axes.legend()
    _save(figure, path)
    return figure


def plot_best_so_far(histories: Mapping[str, History], path: str | os.PathLike, objective: int = 0,
                     ylabel: str = "best validation error so far", logy: bool = False):
    """One curve per history: ``best_so_far`` of objective ``objective`` against the number of
    trials. Saves a PNG at ``path`` and returns the figure.

    Tested by ``tests/optim/nas/test_nas_plots.py::test_best_so_far_plot_has_one_curve_per_strategy``.
    """
    _check_histories(histories)
    figure = _figure()
    axes = figure.add_subplot()
    for k, (label, history) in enumerate(histories.items()):
        curve = best_so_far(objective_values(history, objective))
        axes.plot(np.arange(1, len(curve) + 1), curve, label=label, gid=f"best:{label}",
                  linestyle=LINESTYLES[k % len(LINESTYLES)])
    if logy:
        axes.set_yscale("log")
    axes.set(xlabel="trials", ylabel=ylabel, title="Best so far per strategy")
    axes.grid(alpha=0.3)
    axes.legend()
    _save(figure, path)
    return figure

"""Objectives of an architecture on the bundled MNIST: validation error, params, MACs, latency.

The validation split is carved from the 4,000 training images (``stratified_split``); the
test split is left for the final report. Each trial trains its model from scratch with one
recipe (``train_model``) for a small number of epochs, which is also the resource that
Hyperband and successive halving vary.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np

import minnet
from minnet import nn, optimizers
from minnet.data import load_mnist
from minnet.train import evaluate, fit
from optim import metrics

from .build import build_cnn
from .strategy import Trial, check_positive_int

__all__ = ["OBJECTIVES", "stratified_split", "mnist_splits", "train_model", "measure",
           "MnistObjectives"]

#: Objective names understood by ``measure`` and ``MnistObjectives``, all minimised.
OBJECTIVES = ("error", "params", "macs", "latency")

# minnet's generator (initialisation) is process-global: trials run on threads of one
# process are trained one at a time so each sees only its own seed.
_TRAINING = threading.Lock()


def stratified_split(y: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` of a per-class split of the labels ``y``.

    For each class :math:`c` with :math:`n_c` samples, its indices are shuffled by a
    generator seeded with ``seed`` and the last :math:`\\operatorname{round}(f\\,n_c)` go to
    ``val``; both index arrays are sorted. Every class keeps its share in both parts
    (stratified hold-out, as scikit-learn's ``train_test_split(stratify=y)``). Tested by
    ``tests/optim/nas/test_nas_objectives.py::test_stratified_split_partitions_each_class``.
    """
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y must be a non-empty 1-D array of labels, got shape {y.shape}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"fraction must be a number in (0, 1), got {fraction!r}")
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        val.append(members[len(members) - round(fraction * len(members)):])
    val = np.sort(np.concatenate(val))
    return np.setdiff1d(np.arange(y.size), val), val


@lru_cache(maxsize=4)
def mnist_splits(val_fraction: float = 0.2, limit: int | None = None, seed: int = 0,
                 subset: str = "5k", root: str | None = None
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (x, y), "val": (x, y)}`` from the MNIST training images (cached per process):
    the bundled ``subset="5k"`` or the ``"full"`` set under ``root`` (``load_mnist``'s).

    ``limit``: keep only that many training images (a seeded random subset) before
    splitting, for quick runs. The arrays are shared between calls: do not modify them.
    """
    x, y = load_mnist("train", subset, root)
    if limit is not None:
        limit = check_positive_int(limit, "limit", high=len(y))
        keep = np.sort(np.random.default_rng(seed).permutation(len(y))[:limit])
        x, y = x[keep], y[keep]
    train, val = stratified_split(y, val_fraction, seed)
    return {"train": (x[train], y[train]), "val": (x[val], y[val])}


def train_model(model: nn.Module, data: tuple[np.ndarray, np.ndarray], epochs: int, *,
                lr: float = 1e-3, batch_size: int = 64, seed: int = 0) -> nn.Module:
    """Train ``model`` in place with the search's recipe and return it: Adam(``lr``),
    cross-entropy, mini-batches of ``batch_size`` shuffled by ``seed``, the learning rate
    annealed to 0 by a cosine over ``epochs`` (``minnet.train.fit``). Tested by
    ``tests/optim/nas/test_nas_objectives.py::test_training_does_not_depend_on_the_global_seed``."""
    optimizer = optimizers.Adam(model.parameters(), lr=lr)
    scheduler = optimizers.CosineAnnealingLR(optimizer, T_max=epochs)
    fit(model, optimizer, data, epochs, batch_size=batch_size, scheduler=scheduler, seed=seed,
        progress=False)
    return model


def measure(model: nn.Module, data: tuple[np.ndarray, np.ndarray],
            objectives: Sequence[str] = OBJECTIVES, latency_repeats: int = 10) -> dict[str, float]:
    """The named objectives of a trained ``model`` on ``data = (x, y)``.

    ``error`` is :math:`1 - \\text{accuracy}` on ``data``; ``params`` and ``macs`` (per
    image) come from ``optim.metrics``; ``latency`` is the median time in seconds of one
    forward pass on a single image (``optim.metrics.latency``), a measurement that varies
    between runs. Tested by
    ``tests/optim/nas/test_nas_objectives.py::test_objectives_are_reproducible_and_match_metrics``.
    """
    x, y = data
    values: dict[str, float] = {}
    for name in objectives:
        if name == "error":
            values[name] = 1.0 - evaluate(model, (x, y))["accuracy"]
        elif name == "params":
            values[name] = float(metrics.count_params(model))
        elif name == "macs":
            values[name] = float(metrics.macs(model, (1,) + x.shape[1:]))
        elif name == "latency":
            values[name] = metrics.latency(model, x[:1], repeats=latency_repeats)
        else:
            raise ValueError(f"unknown objective {name!r}; choose from {OBJECTIVES}")
    return values


def _epochs(resource: Any, default: int) -> int:
    if resource is None:
        return default
    if isinstance(resource, float) and resource.is_integer():
        resource = int(resource)
    return check_positive_int(resource, "trial.resource (epochs)")


class MnistObjectives:
    """``evaluate(trial)`` for ``search``: build ``trial.arch``, train it on the training part
    of the split, return the requested objectives measured on the validation part.

    The model is initialised and trained with ``seed``, so an architecture gets the same
    objectives whichever trial, worker or process evaluates it; the number of epochs is
    ``trial.resource`` when a multi-fidelity strategy sets it, else ``epochs``. Holds only
    settings (the data is loaded in each process), so it pickles cheaply to worker processes.
    ``subset`` and ``root`` choose the MNIST images as ``load_mnist`` does.
    Tested by ``tests/optim/nas/test_nas_objectives.py::test_objectives_are_reproducible_and_match_metrics``.
    """

    def __init__(self, build: Callable[[dict], nn.Module] = build_cnn,
                 objectives: Sequence[str] = ("error", "macs"), epochs: int = 2, *,
                 lr: float = 1e-3, batch_size: int = 64, val_fraction: float = 0.2,
                 limit: int | None = None, seed: int = 0, latency_repeats: int = 10,
                 subset: str = "5k", root: str | None = None):
        if not callable(build):
            raise TypeError(f"build must be callable, got {build!r}")
        objectives = tuple(objectives)
        unknown = [name for name in objectives if name not in OBJECTIVES]
        if not objectives or unknown:
            raise ValueError(f"objectives must be a non-empty selection of {OBJECTIVES}, got {objectives!r}")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        self.build, self.objectives = build, objectives
        self.epochs = check_positive_int(epochs, "epochs")
        self.lr, self.batch_size = float(lr), check_positive_int(batch_size, "batch_size")
        self.val_fraction, self.limit, self.seed = val_fraction, limit, check_positive_int(seed, "seed", low=0)
        self.latency_repeats = check_positive_int(latency_repeats, "latency_repeats")
        self.subset, self.root = subset, None if root is None else str(root)
        self.data()  # validates val_fraction and limit now, not in every trial

    def __repr__(self) -> str:
        return (f"MnistObjectives({getattr(self.build, '__name__', self.build)!r}, "
                f"{self.objectives}, epochs={self.epochs}, limit={self.limit}, seed={self.seed}, "
                f"subset={self.subset!r})")

    def data(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The ``mnist_splits`` this evaluator trains and validates on."""
        return mnist_splits(self.val_fraction, self.limit, self.seed, self.subset, self.root)

    def trained(self, arch: dict, epochs: int | None = None,
                data: tuple[np.ndarray, np.ndarray] | None = None) -> nn.Module:
        """``build(arch)`` trained with the recipe for ``epochs`` (default ``self.epochs``) on
        ``data`` (default the training part)."""
        epochs = self.epochs if epochs is None else check_positive_int(epochs, "epochs")
        with _TRAINING:
            minnet.manual_seed(self.seed)
            model = self.build(arch)
            return train_model(model, self.data()["train"] if data is None else data, epochs,
                               lr=self.lr, batch_size=self.batch_size, seed=self.seed)

    def __call__(self, trial: Trial) -> list[float]:
        model = self.trained(trial.arch, _epochs(trial.resource, self.epochs))
        values = measure(model, self.data()["val"], self.objectives, self.latency_repeats)
        return [values[name] for name in self.objectives]

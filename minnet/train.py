"""Training and evaluation loops with progress bars, per-epoch history and exact resume.

``fit`` checkpoints after every epoch (model, optimizer, scheduler, epoch, history and the
global RNG state, all in one npz written atomically). Each epoch's shuffling derives from
``(seed, epoch)`` alone, so a run killed after epoch k and resumed with ``resume=True`` ends
with parameters bitwise equal to an uninterrupted run
(``tests/minnet/test_train.py::test_resume_after_sigkill_is_bitwise_identical``).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

import minnet
from minnet import functional as F
from minnet import random as mrandom
from minnet.data import DataLoader
from minnet.io import load, save
from minnet.nn import Module

LossFn = Callable[[minnet.Tensor, np.ndarray], minnet.Tensor]
_HISTORY_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")


def check_data(name: str, data) -> tuple[np.ndarray, np.ndarray]:
    """``data`` as a pair of equal-length, non-empty arrays (x, y); errors name ``name``."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (x, y) of arrays, got {type(data).__name__}")
    x, y = (np.asarray(a) for a in data)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{name}: x and y must be non-empty and of equal length, "
                         f"got {len(x)} and {len(y)}")
    return x, y


def _show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else bool(progress)


def evaluate(model: Module, data, batch_size: int = 256, loss_fn: LossFn = F.cross_entropy) -> dict:
    """Mean loss and accuracy of ``model`` on ``data = (x, y)`` in eval mode, without a graph."""
    x, y = check_data("data", data)
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    try:
        with minnet.no_grad():
            for xb, yb in DataLoader(x, y, batch_size=batch_size):
                logits = model(minnet.Tensor(xb))
                total_loss += float(loss_fn(logits, yb, reduction="sum").data)
                correct += int((logits.data.argmax(axis=1) == yb).sum())
    finally:
        model.train(was_training)
    return {"loss": total_loss / len(x), "accuracy": correct / len(x)}


def checkpoint_state(model, optimizer, scheduler, epoch: int, history: dict) -> dict:
    """The flat npz-ready training state: model., optimizer., scheduler. and history. sections,
    the epoch count and the global RNG state (read back by ``load_checkpoint``)."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update({f"optimizer.{k}": v for k, v in optimizer.state_dict().items()})
    if scheduler is not None:
        state.update({f"scheduler.{k}": v for k, v in scheduler.state_dict().items()})
    state.update({f"history.{k}": np.asarray(v, dtype=np.float64) for k, v in history.items()})
    state["epoch"] = np.asarray(epoch, dtype=np.int64)
    state["rng_state"] = mrandom.get_rng_state()
    return state


def _section(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_checkpoint(path: str, model: Module, optimizer=None, scheduler=None) -> tuple[int, dict]:
    """Restore a checkpoint written by ``fit``; returns (epochs completed, history)."""
    state = load(path)
    model.load_state_dict(_section(state, "model."))
    if optimizer is not None:
        optimizer.load_state_dict(_section(state, "optimizer."))
    if scheduler is not None:
        scheduler.load_state_dict(_section(state, "scheduler."))
    mrandom.set_rng_state(state["rng_state"])
    history = {k: v.tolist() for k, v in _section(state, "history.").items()}
    return int(state["epoch"]), history


def fit(model: Module, optimizer, train_data, epochs: int, *, batch_size: int = 64,
        loss_fn: LossFn = F.cross_entropy, val_data=None, scheduler=None, seed: int = 0,
        checkpoint_path: str | os.PathLike | None = None, resume: bool = False,
        progress: bool | None = None) -> dict[str, list[float]]:
    """Train ``model`` for ``epochs`` epochs of mini-batch steps on ``train_data = (x, y)``.

    Each step: ``loss_fn(model(x_batch), y_batch).backward()``, ``optimizer.step()``; the
    scheduler (if any) steps once per epoch. Returns the history: per epoch the mean training
    loss and accuracy, validation loss and accuracy (NaN without ``val_data``), the learning rate
    and the wall time. With ``checkpoint_path`` the state is saved after every epoch, and
    ``resume=True`` continues from that file when it exists.
    """
    x, y = check_data("train_data", train_data)
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs a checkpoint_path")
    history = {k: [] for k in _HISTORY_KEYS}
    start_epoch = 0
    minnet.manual_seed(seed)
    if resume and os.path.exists(checkpoint_path):
        start_epoch, history = load_checkpoint(checkpoint_path, model, optimizer, scheduler)
    loader = DataLoader(x, y, batch_size=batch_size, shuffle=True, seed=seed)
    show = _show_progress(progress)
    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()
        model.train()
        loader.set_epoch(epoch)
        loss_sum, correct = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not show, leave=False)
        for xb, yb in bar:
            logits = model(minnet.Tensor(xb))
            loss = loss_fn(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.data) * len(yb)
            correct += int((logits.data.argmax(axis=1) == yb).sum())
            bar.set_postfix(loss=f"{float(loss.data):.4f}", refresh=False)
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        val = evaluate(model, val_data, loss_fn=loss_fn) if val_data is not None else None
        record = {"train_loss": loss_sum / len(x), "train_accuracy": correct / len(x),
                  "val_loss": val["loss"] if val else float("nan"),
                  "val_accuracy": val["accuracy"] if val else float("nan"),
                  "lr": lr, "seconds": time.perf_counter() - started}
        for key, value in record.items():
            history[key].append(value)
        if show:
            tqdm.write(f"epoch {epoch + 1}/{epochs}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in record.items() if np.isfinite(v)))
        if checkpoint_path is not None:
            save(checkpoint_state(model, optimizer, scheduler, epoch + 1, history), checkpoint_path)
    return history

"""Training and evaluation loops with progress bars, per-epoch history and exact resume.

``fit`` checkpoints after every epoch (model, optimizer, scheduler, epoch, history, the global
RNG state and the run's fingerprint, all in one npz written atomically). Each epoch's
shuffling derives from ``(seed, epoch)`` alone, so a run killed after epoch k and resumed with
``resume=True`` ends with parameters bitwise equal to an uninterrupted run
(``tests/minnet/test_train.py::test_resume_after_sigkill_is_bitwise_identical``).

Reliability rules (``tests/adversarial/test_minnet_state.py``):

- a checkpoint is checked whole (every section, the epoch, the history, the RNG state) before
  anything is restored, so a bad file leaves model, optimizer, scheduler and RNG unchanged;
- ``resume=True`` refuses a checkpoint written by a run with other settings (seed, data,
  batch size, epochs, loss, optimizer and scheduler settings, model layout: the
  *fingerprint*), naming what differs, unless ``allow_changes`` permits it;
- a non-finite loss or gradient stops training with ``NonFiniteError`` naming the epoch, the
  batch and the step, before the optimizer steps on it (as Keras's ``TerminateOnNaN``
  callback stops a run); ``on_nonfinite="skip"`` leaves such batches out instead. A
  checkpoint with non-finite parameters or optimizer state is never written.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Collection, Mapping
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

import minnet
from minnet import functional as F
from minnet import random as mrandom
from minnet.data import DataLoader
from minnet.io import load, save
from minnet.nn import Module

__all__ = ["fit", "evaluate", "check_data", "checkpoint_state", "load_checkpoint",
           "run_fingerprint", "NonFiniteError", "CheckpointError", "ResumeMismatchError",
           "FINGERPRINT_FIELDS"]

LossFn = Callable[[minnet.Tensor, np.ndarray], minnet.Tensor]
_HISTORY_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")
_SECTIONS = ("model.", "optimizer.", "scheduler.", "history.")
_SCALARS = ("epoch", "rng_state", "fingerprint")

#: What a run's fingerprint records; ``fit(..., allow_changes=...)`` names these.
FINGERPRINT_FIELDS = ("seed", "epochs", "batch_size", "train_data", "val_data", "loss_fn",
                      "optimizer", "scheduler", "model")
_MAX_FINGERPRINT_BYTES = 1 << 20


class NonFiniteError(ValueError):
    """Training produced a non-finite loss, gradient or parameter; the message names where."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be restored (missing or malformed section); nothing was
    restored from it."""


class ResumeMismatchError(ValueError):
    """The checkpoint was written by a run with other settings; ``differences`` maps each
    differing fingerprint field to ``(checkpoint value, this run's value)``."""

    def __init__(self, message: str, differences: dict[str, tuple[Any, Any]]):
        super().__init__(message)
        self.differences = differences


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


# ---- fingerprint ------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (numbers, strings, lists, dicts), or None if it is not
    made of such values."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        items = [_jsonable(v) for v in value]
        return None if any(i is None and v is not None for i, v in zip(items, value)) else items
    if hasattr(value, "lr_at"):  # a scheduler nested in another (SequentialLR)
        return _scheduler_settings(value)
    return None


def _scheduler_settings(scheduler) -> dict | None:
    if scheduler is None:
        return None
    settings = {"type": type(scheduler).__name__}
    for key, value in sorted(vars(scheduler).items()):
        if key.startswith("_") or key in ("optimizer", "last_epoch", "base_lrs"):
            continue
        plain = _jsonable(value)
        if plain is not None:
            settings[key] = plain
    return settings


def _data_digest(data) -> dict | None:
    if data is None:
        return None
    digest = {}
    for name, array in zip(("x", "y"), check_data("data", data)):
        flat = np.ascontiguousarray(array).reshape(-1)
        digest[name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                        "sha256": hashlib.sha256(flat.view(np.uint8)).hexdigest()}
    return digest


def run_fingerprint(model: Module, optimizer, train_data, epochs: int, *, batch_size: int,
                    seed: int, loss_fn: LossFn = F.cross_entropy, val_data=None,
                    scheduler=None) -> dict:
    """What determines a ``fit`` run, as JSON data with the fields ``FINGERPRINT_FIELDS``:
    seed, epochs, batch size, SHA-256 / shape / dtype of the data arrays, the loss function's
    qualified name, the optimizer's type and per-group hyperparameters, the scheduler's type
    and settings, and the model's state_dict keys, shapes and dtypes. Computed before
    training starts (the scheduler changes the rates afterwards). Test:
    ``tests/adversarial/test_minnet_state.py::test_resume_with_other_settings_is_refused``.
    """
    groups = [{"params": len(group["params"]),
               **{k: _jsonable(v) for k, v in sorted(group.items()) if k != "params"}}
              for group in optimizer.param_groups]
    fingerprint = {
        "seed": int(seed), "epochs": int(epochs), "batch_size": int(batch_size),
        "train_data": _data_digest(train_data), "val_data": _data_digest(val_data),
        "loss_fn": f"{getattr(loss_fn, '__module__', '')}."
                   f"{getattr(loss_fn, '__qualname__', type(loss_fn).__name__)}",
        "optimizer": {"type": type(optimizer).__name__, "param_groups": groups},
        "scheduler": _scheduler_settings(scheduler),
        "model": [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()],
    }
    return json.loads(json.dumps(fingerprint))  # exactly what a checkpoint gives back


def _encode_json(data: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(data, sort_keys=True).encode(), dtype=np.uint8).copy()


def _decode_fingerprint(path, array: np.ndarray) -> dict:
    if array.dtype != np.uint8 or array.ndim != 1 or array.size > _MAX_FINGERPRINT_BYTES:
        raise CheckpointError(f"{path}: 'fingerprint' must be a 1-D uint8 array of at most "
                              f"{_MAX_FINGERPRINT_BYTES} bytes, got {array.dtype} of shape "
                              f"{array.shape}")
    try:
        decoded = json.loads(array.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: 'fingerprint' is not UTF-8 JSON: {err}") from err
    if not isinstance(decoded, dict):
        raise CheckpointError(f"{path}: 'fingerprint' must be a JSON object, got "
                              f"{decoded!r:.100}")
    return decoded


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "..."


def _compare_fingerprints(path, saved: dict, current: dict, completed: int,
                          allow_changes: bool | Collection[str]) -> None:
    """Raise ``ResumeMismatchError`` unless ``saved`` equals ``current`` outside
    ``allow_changes``. ``epochs`` is the one field compared by an inequality: the state after
    ``completed`` epochs does not depend on the total (what does, such as a schedule's length,
    is in the scheduler's settings), so a run may be extended but not cut below the epochs the
    checkpoint has completed (it would return a model trained longer than asked)."""
    allowed = set() if allow_changes is False else set(allow_changes)
    differences = {field: (saved.get(field), current[field]) for field in FINGERPRINT_FIELDS
                   if field != "epochs" and saved.get(field) != current[field]
                   and field not in allowed}
    if completed > current["epochs"] and "epochs" not in allowed:
        differences["epochs"] = (saved.get("epochs"), current["epochs"])
    if differences:
        lines = "; ".join(f"{field}: checkpoint {_short(old)}, this run {_short(new)}"
                          for field, (old, new) in differences.items())
        if "epochs" in differences:
            lines += f" (the checkpoint has completed {completed} epochs)"
        raise ResumeMismatchError(
            f"{path} was written by a run with other settings ({lines}); start a new "
            f"checkpoint, or pass allow_changes={sorted(differences)!r} (or True) to resume "
            f"anyway", differences)


def _check_allow_changes(allow_changes) -> None:
    if isinstance(allow_changes, bool):
        return
    if isinstance(allow_changes, str) or not isinstance(allow_changes, Collection):
        raise TypeError(f"allow_changes must be a bool or a collection of field names, got "
                        f"{allow_changes!r}")
    unknown = sorted(set(allow_changes) - set(FINGERPRINT_FIELDS))
    if unknown:
        raise ValueError(f"allow_changes names unknown fields {unknown}; the fields are "
                         f"{list(FINGERPRINT_FIELDS)}")


# ---- checkpoints ------------------------------------------------------------------------
def _first_nonfinite(state: Mapping[str, np.ndarray]) -> str | None:
    for key, value in state.items():
        value = np.asarray(value)
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            return key
    return None


def checkpoint_state(model, optimizer, scheduler, epoch: int, history: dict,
                     fingerprint: dict | None = None) -> dict:
    """The flat npz-ready training state: model., optimizer., scheduler. and history. sections,
    the epoch count, the global RNG state and (if given) the run's fingerprint, read back by
    ``load_checkpoint``. Raises ``NonFiniteError`` naming the first non-finite array of the
    model, optimizer or scheduler state: such a state is never checkpointed."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update({f"optimizer.{k}": v for k, v in optimizer.state_dict().items()})
    if scheduler is not None:
        state.update({f"scheduler.{k}": v for k, v in scheduler.state_dict().items()})
    bad = _first_nonfinite(state)
    if bad is not None:
        raise NonFiniteError(f"{bad} holds non-finite values after epoch {epoch}; the "
                             f"checkpoint is not written")
    state.update({f"history.{k}": np.asarray(v, dtype=np.float64) for k, v in history.items()})
    state["epoch"] = np.asarray(epoch, dtype=np.int64)
    state["rng_state"] = mrandom.get_rng_state()
    if fingerprint is not None:
        state["fingerprint"] = _encode_json(fingerprint)
    return state


def _section(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _prepare(path, name: str, target, section: dict) -> Callable[[], Any] | None:
    """``target``'s validated loader of ``section`` (None if ``target`` cannot check without
    applying: then its ``load_state_dict`` runs first when the checkpoint is applied)."""
    prepare = getattr(target, "prepare_load_state_dict", None)
    if prepare is None:
        return None
    try:
        return prepare(section)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the {name} section cannot be restored: {err}") from err


def load_checkpoint(path: str | os.PathLike, model: Module, optimizer=None, scheduler=None, *,
                    history_keys: Collection[str] | None = None, fingerprint: dict | None = None,
                    allow_changes: bool | Collection[str] = False) -> tuple[int, dict]:
    """Restore a checkpoint written by ``fit`` (or ``checkpoint_state``); returns (epochs
    completed, history).

    Everything is checked before anything is restored: the keys (only the ``model.``,
    ``optimizer.``, ``scheduler.``, ``history.`` sections and ``epoch``, ``rng_state``,
    ``fingerprint``), ``epoch`` (a non-negative integer scalar), the history (1-D real arrays
    of ``epoch`` entries, with exactly ``history_keys`` if given), the RNG state
    (``minnet.random.decode_rng_state``), the model, optimizer and scheduler sections (their
    ``prepare_load_state_dict``) and, if ``fingerprint`` is given, that the saved fingerprint
    equals it outside ``allow_changes``. Raises ``minnet.io.UnreadableFileError`` for an
    unreadable file, ``CheckpointError`` for a bad section and ``ResumeMismatchError`` for a
    different run — all ``ValueError`` — and then nothing was restored. An optimizer without
    ``prepare_load_state_dict`` (a wrapper) is loaded first, so an error there also leaves
    the rest unchanged. Test:
    ``tests/adversarial/test_minnet_state.py::test_bad_checkpoint_restores_nothing``.
    """
    _check_allow_changes(allow_changes)
    state = load(path)
    unknown = sorted(k for k in state if k not in _SCALARS and not k.startswith(_SECTIONS))
    if unknown:
        raise CheckpointError(f"{path}: unexpected keys {unknown[:10]}")
    for key in ("epoch", "rng_state"):
        if key not in state:
            raise CheckpointError(f"{path}: the checkpoint has no {key!r}")
    epoch = state["epoch"]
    if epoch.ndim != 0 or epoch.dtype.kind not in "iu" or epoch < 0:
        raise CheckpointError(f"{path}: 'epoch' must be a non-negative integer scalar, got "
                              f"{epoch.dtype} of shape {epoch.shape}")
    epoch = int(epoch)
    history = _section(state, "history.")
    if history_keys is not None and set(history) != set(history_keys):
        raise CheckpointError(f"{path}: the history has keys {sorted(history)}, expected "
                              f"{sorted(history_keys)}")
    for key, values in history.items():
        if values.dtype.kind not in "iuf" or values.shape != (epoch,):
            raise CheckpointError(f"{path}: 'history.{key}' must be {epoch} real numbers (one "
                                  f"per epoch), got {values.dtype} of shape {values.shape}")
    try:
        mrandom.decode_rng_state(state["rng_state"])
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
    if fingerprint is not None and allow_changes is not True:
        if "fingerprint" not in state:
            raise ResumeMismatchError(
                f"{path} has no run fingerprint (written by another program or version), so "
                f"its settings cannot be checked; pass allow_changes=True to resume anyway",
                {})
        saved = _decode_fingerprint(path, state["fingerprint"])
        _compare_fingerprints(path, saved, fingerprint, epoch, allow_changes)
    targets = [("model", model, _section(state, "model."))]
    if optimizer is not None:
        targets.append(("optimizer", optimizer, _section(state, "optimizer.")))
    if scheduler is not None:
        targets.append(("scheduler", scheduler, _section(state, "scheduler.")))
    prepared = [(name, target, section, _prepare(path, name, target, section))
                for name, target, section in targets]
    for name, target, section, commit in prepared:
        if commit is None:
            try:
                target.load_state_dict(section)
            except (TypeError, ValueError) as err:
                raise CheckpointError(f"{path}: the {name} section cannot be restored: "
                                      f"{err}") from err
    for _, _, _, commit in prepared:
        if commit is not None:
            commit()
    mrandom.set_rng_state(state["rng_state"])
    return epoch, {k: v.astype(np.float64).tolist() for k, v in history.items()}


# ---- the loop ---------------------------------------------------------------------------
def _buffer_copies(model: Module) -> list[tuple[Module, str, np.ndarray | None]]:
    """Copies of every module's buffers (running statistics and the like: small arrays that
    a forward pass in training mode may update), to undo a batch that is not used."""
    return [(module, name, None if array is None else array.copy())
            for module in model.modules() for name, array in module._buffers.items()]


def _restore_buffers(copies) -> None:
    for module, name, array in copies:
        module._buffers[name] = array


def _first_nonfinite_grad(model: Module) -> str | None:
    for name, p in model.named_parameters():
        if p.grad is not None and not np.isfinite(p.grad).all():
            return name
    return None


def fit(model: Module, optimizer, train_data, epochs: int, *, batch_size: int = 64,
        loss_fn: LossFn = F.cross_entropy, val_data=None, scheduler=None, seed: int = 0,
        checkpoint_path: str | os.PathLike | None = None, resume: bool = False,
        allow_changes: bool | Collection[str] = False, on_nonfinite: str = "raise",
        progress: bool | None = None, train_step: Callable | None = None
        ) -> dict[str, list[float]]:
    """Train ``model`` for ``epochs`` epochs of mini-batch steps on ``train_data = (x, y)``.

    Each step: ``loss_fn(model(x_batch), y_batch).backward()``, ``optimizer.step()``; the
    scheduler (if any) steps once per epoch. Returns the history: per epoch the mean training
    loss and accuracy, validation loss and accuracy (NaN without ``val_data``), the learning rate
    and the wall time. With ``checkpoint_path`` the state is saved after every epoch, and
    ``resume=True`` continues from that file when it exists.

    Parameters (beyond the above)
    -----------------------------
    allow_changes : with ``resume=True``, the fingerprint fields (``FINGERPRINT_FIELDS``) that
        may differ from the run that wrote the checkpoint, or True for all; by default any
        difference raises ``ResumeMismatchError`` naming the fields. ``epochs`` alone may grow
        without it (a run can be extended), but not drop below the epochs completed.
    on_nonfinite : ``"raise"`` (default): a non-finite loss or gradient raises
        ``NonFiniteError`` naming the epoch, batch and step before the optimizer steps;
        ``"skip"``: that batch is left out (no step; a ``RuntimeWarning`` per epoch counts the
        skipped batches, and the epoch's means are over the batches kept). Either way the
        module buffers the batch's forward pass changed (BatchNorm's running statistics)
        are restored, so the model is as it was before that batch.
    train_step : ``train_step(x_batch, y_batch) -> (loss, logits)`` computing the loss and
        leaving every parameter's gradient in its ``.grad`` instead of the eager forward and
        backward (``loss_fn`` is then not called), e.g. the compiled step of
        ``optim.graph.compile_training``; the optimizer steps on those gradients as usual.

    Tests: ``tests/minnet/test_train.py``, ``tests/adversarial/test_minnet_state.py``.
    """
    x, y = check_data("train_data", train_data)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs a checkpoint_path")
    if on_nonfinite not in ("raise", "skip"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
    _check_allow_changes(allow_changes)
    loader = DataLoader(x, y, batch_size=batch_size, shuffle=True, seed=seed)
    fingerprint = (run_fingerprint(model, optimizer, (x, y), epochs, batch_size=batch_size,
                                   seed=seed, loss_fn=loss_fn, val_data=val_data,
                                   scheduler=scheduler)
                   if checkpoint_path is not None else None)
    history = {k: [] for k in _HISTORY_KEYS}
    start_epoch = 0
    minnet.manual_seed(seed)
    if resume and os.path.exists(checkpoint_path):
        start_epoch, history = load_checkpoint(
            checkpoint_path, model, optimizer, scheduler, history_keys=_HISTORY_KEYS,
            fingerprint=fingerprint, allow_changes=allow_changes)
    show = _show_progress(progress)
    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()
        model.train()
        loader.set_epoch(epoch)
        loss_sum, correct, counted, skipped = 0.0, 0, 0, 0
        # one iter() per epoch: tqdm.auto's bar calls iter() on what it wraps when built,
        # which on the loader itself would advance its epoch
        bar = tqdm(iter(loader), total=len(loader), desc=f"epoch {epoch + 1}/{epochs}",
                   disable=not show, leave=False)
        for batch, (xb, yb) in enumerate(bar):
            buffers = _buffer_copies(model)
            if train_step is None:
                logits = model(minnet.Tensor(xb))
                loss = loss_fn(logits, yb)
                value, scores = float(loss.data), logits.data
            else:
                value, scores = train_step(xb, yb)
            problem = None if math.isfinite(value) else f"loss {value}"
            if problem is None:
                if train_step is None:
                    optimizer.zero_grad()
                    loss.backward()
                bad = _first_nonfinite_grad(model)
                problem = None if bad is None else f"gradient of {bad!r}"
            if problem is not None:
                _restore_buffers(buffers)  # undo the forward pass (running statistics)
                if on_nonfinite == "raise":
                    raise NonFiniteError(
                        f"non-finite {problem} in epoch {epoch + 1}/{epochs}, batch {batch} "
                        f"(0-based, samples of batch_size {batch_size}), step "
                        f"{epoch * len(loader) + batch + 1}; the optimizer did not step on it "
                        f"(pass on_nonfinite='skip' to leave such batches out)")
                optimizer.zero_grad()
                skipped += 1
                continue
            optimizer.step()
            loss_sum += value * len(yb)
            correct += int((scores.argmax(axis=1) == yb).sum())
            counted += len(yb)
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        if skipped:
            warnings.warn(f"epoch {epoch + 1}/{epochs}: skipped {skipped} of {len(loader)} "
                          f"batches with a non-finite loss or gradient", RuntimeWarning,
                          stacklevel=2)
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        val = evaluate(model, val_data, loss_fn=loss_fn) if val_data is not None else None
        record = {"train_loss": loss_sum / counted if counted else float("nan"),
                  "train_accuracy": correct / counted if counted else float("nan"),
                  "val_loss": val["loss"] if val else float("nan"),
                  "val_accuracy": val["accuracy"] if val else float("nan"),
                  "lr": lr, "seconds": time.perf_counter() - started}
        for key, value in record.items():
            history[key].append(value)
        if show:
            tqdm.write(f"epoch {epoch + 1}/{epochs}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in record.items() if np.isfinite(v)))
        if checkpoint_path is not None:
            save(checkpoint_state(model, optimizer, scheduler, epoch + 1, history, fingerprint),
                 checkpoint_path)
        else:
            bad = _first_nonfinite(model.state_dict())
            if bad is not None:
                raise NonFiniteError(f"{bad} holds non-finite values after epoch "
                                     f"{epoch + 1}/{epochs}")
    return history

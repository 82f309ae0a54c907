r"""Training a student against a frozen teacher: soft targets, hints and attention transfer.

Per mini-batch the objective is

.. math::
    \mathcal{L} = \alpha\, \mathcal{L}_{KD}(s, t; T) + (1 - \alpha)\, \mathrm{CE}(s, y)
    + \gamma \sum_{(a, b) \in \text{hints}} \mathcal{L}_{HT}\big(r_{ab}(u_a), v_b\big)
    + \beta' \sum_{(a, b) \in \text{attention}} \mathcal{L}_{AT}(u_a, v_b)

where :math:`u_a` is the output of the student's submodule named ``a``, :math:`v_b` the
teacher's named ``b`` (both read by forward hooks), :math:`r_{ab}` a learnable regressor
(``hint_regressor``), :math:`\mathcal{L}_{HT}` the hint loss in its per-feature ``"mean"``
form and :math:`\beta' = \beta/2` the attention weight (Hinton et al. 2015; Romero et al.
2015; Zagoruyko & Komodakis 2017). The teacher runs in eval mode under ``no_grad``; its
outputs can be cached once per training set, since they do not change.

``Distiller`` is a Module whose submodules are the student and the regressors (the teacher is
held outside, so it is neither trained nor saved): ``distiller.parameters()`` is what the
optimizer needs, and ``state_dict()`` what a checkpoint stores. ``fit`` mirrors
``minnet.train.fit``: progress bars, per-epoch history, a checkpoint after every epoch and an
exact resume (``tests/optim/distill/test_distill_distiller.py``).
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from functools import reduce
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

import minnet
from minnet import functional as F
from minnet import nn
from minnet.data import DataLoader
from minnet.io import save
from minnet.train import check_data, checkpoint_state, evaluate, load_checkpoint

from ._checks import check_temperature, check_weight
from .features import named_submodules, record_features
from .hints import attention_transfer_loss, hint_loss, hint_regressor
from .soft import kd_loss

Pairs = Mapping[str, str] | Sequence[tuple[str, str]] | None
_PARTS = ("kd_loss", "ce_loss", "hint_loss", "attention_loss")


def _pairs(name: str, pairs: Pairs) -> list[tuple[str, str]]:
    """``{student_name: teacher_name}`` or ``[(student_name, teacher_name), ...]`` as a list."""
    if pairs is None:
        return []
    items = list(pairs.items()) if isinstance(pairs, Mapping) else list(pairs)
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2
                and all(isinstance(n, str) for n in item)):
            raise TypeError(f"{name} must map student submodule names to teacher submodule "
                            f"names, got the entry {item!r}")
    return items


class TeacherOutputs:
    """The teacher's logits (N, C) and the hooked features ``{name: array (N, ...)}`` for a
    batch or a whole dataset; ``take(index)`` selects rows."""

    def __init__(self, logits: np.ndarray, features: dict[str, np.ndarray]):
        self.logits, self.features = logits, features

    def take(self, index: np.ndarray) -> TeacherOutputs:
        return TeacherOutputs(self.logits[index], {k: v[index] for k, v in self.features.items()})


class Distiller(nn.Module):
    """Distil ``teacher`` into ``student`` with soft targets, optional hints and attention.

    Parameters
    ----------
    student, teacher : Modules mapping a batch to logits (N, C) of the same shape.
    T : temperature of the soft targets (> 0).
    alpha : weight of the soft loss in [0, 1]; the labels' cross entropy gets ``1 - alpha``.
    hints : ``{student_submodule: teacher_submodule}`` pairs for FitNets hints; a regressor is
        created when the two outputs differ in shape, which needs ``input_shape``.
    hint_weight : :math:`\\gamma`, the weight of each hint loss.
    attention : ``{student_submodule: teacher_submodule}`` pairs of 4-D outputs with the same
        spatial size, for attention transfer.
    attention_weight : :math:`\\beta / 2`; default 500 (:math:`\\beta = 10^3`, as the paper).
    cache_teacher : compute the teacher's outputs once per training set instead of per batch
        (valid because the data are not augmented; uses memory for hooked features).
    input_shape : shape of one input without the batch axis, e.g. ``(1, 28, 28)``; needed only
        when there are hints, to size the regressors.

    >>> distiller = Distiller(student, teacher, T=4.0, alpha=0.9)    # doctest: +SKIP
    >>> opt = minnet.optimizers.Adam(distiller.parameters(), lr=1e-3)   # doctest: +SKIP
    >>> history = distiller.fit(opt, (x, y), epochs=20, val_data=(x_test, y_test))  # doctest: +SKIP
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, *, T: float = 4.0,
                 alpha: float = 0.9, hints: Pairs = None, hint_weight: float = 1.0,
                 attention: Pairs = None, attention_weight: float = 500.0,
                 cache_teacher: bool = False, input_shape: tuple[int, ...] | None = None):
        super().__init__()
        for role, model in (("student", student), ("teacher", teacher)):
            if not isinstance(model, nn.Module):
                raise TypeError(f"{role} must be a minnet.nn.Module, got {type(model).__name__}")
        self.student = student
        object.__setattr__(self, "teacher", teacher)  # not a submodule: never trained or saved
        self.T = check_temperature(T)
        self.alpha = check_weight("alpha", alpha, high=1.0)
        self.hint_weight = check_weight("hint_weight", hint_weight)
        self.attention_weight = check_weight("attention_weight", attention_weight)
        self.hints = _pairs("hints", hints)
        self.attention = _pairs("attention", attention)
        pairs = self.hints + self.attention
        self._student_names = list(dict.fromkeys(a for a, _ in pairs))
        self._teacher_names = list(dict.fromkeys(b for _, b in pairs))
        named_submodules(student, self._student_names, "student")
        named_submodules(teacher, self._teacher_names, "teacher")
        self.cache_teacher = bool(cache_teacher)
        self._cache: tuple[str, TeacherOutputs] | None = None
        self.regressors = nn.ModuleList(self._make_regressors(input_shape))

    def _make_regressors(self, input_shape) -> list[nn.Module]:
        if not self.hints:
            return []
        if input_shape is None:
            raise ValueError("hints need input_shape (one input's shape without the batch axis) "
                             "to size their regressors")
        dtype = next(iter(self.student.parameters())).dtype
        x = np.zeros((2,) + tuple(input_shape), dtype=dtype)
        modes = self.student.training, self.teacher.training
        try:
            self.student.eval()
            with minnet.no_grad(), record_features(self.student, self._student_names) as s_out:
                self.student(minnet.Tensor(x))
            teacher = self.teacher_outputs(x)
        finally:
            self.student.train(modes[0])
            self.teacher.train(modes[1])
        return [hint_regressor(s_out[a].shape[1:], teacher.features[b].shape[1:], dtype=dtype)
                for a, b in self.hints]

    def forward(self, x):
        return self.student(x)

    # ---- teacher ------------------------------------------------------------------------
    def teacher_outputs(self, x: np.ndarray, batch_size: int = 256) -> TeacherOutputs:
        """The teacher's logits and hooked features for inputs ``x``, computed in eval mode
        under ``no_grad`` in batches (the teacher's mode is restored afterwards)."""
        was_training = self.teacher.training
        self.teacher.eval()
        logits, features = [], {name: [] for name in self._teacher_names}
        try:
            with minnet.no_grad(), record_features(self.teacher, self._teacher_names) as out:
                for (xb,) in DataLoader(np.asarray(x), batch_size=batch_size):
                    logits.append(self.teacher(minnet.Tensor(xb)).data)
                    for name in self._teacher_names:
                        features[name].append(out[name].data)
        finally:
            self.teacher.train(was_training)
        return TeacherOutputs(np.concatenate(logits),
                              {name: np.concatenate(v) for name, v in features.items()})

    def _cached_teacher_outputs(self, x: np.ndarray) -> TeacherOutputs:
        """The teacher's outputs on the whole training set, recomputed only when ``x`` changes
        (identified by a SHA-256 of its bytes and shape)."""
        content = np.ascontiguousarray(x).tobytes() + repr(x.shape).encode()
        digest = hashlib.sha256(content).hexdigest()
        if self._cache is None or self._cache[0] != digest:
            self._cache = (digest, self.teacher_outputs(x))
        return self._cache[1]

    # ---- loss ---------------------------------------------------------------------------
    def loss(self, x: Any, y: Any, teacher: TeacherOutputs | None = None
             ) -> tuple[minnet.Tensor, minnet.Tensor, dict[str, float]]:
        """The objective on one batch: ``(loss, student_logits, parts)`` where ``parts`` holds
        the unweighted ``kd_loss``, ``ce_loss``, ``hint_loss`` and ``attention_loss`` (NaN for an
        unused term). ``teacher`` defaults to a fresh ``teacher_outputs(x)``."""
        x = np.asarray(x.data if isinstance(x, minnet.Tensor) else x)
        if teacher is None:
            teacher = self.teacher_outputs(x)
        with record_features(self.student, self._student_names) as s_out:
            logits = self.student(minnet.Tensor(x))
        terms: dict[str, tuple[float, minnet.Tensor]] = {}
        if self.alpha > 0:
            terms["kd_loss"] = (self.alpha, kd_loss(logits, teacher.logits, self.T))
        if self.alpha < 1:
            terms["ce_loss"] = (1.0 - self.alpha, F.cross_entropy(logits, y))
        if self.hints:
            terms["hint_loss"] = (self.hint_weight, reduce(F.add, [
                hint_loss(r(s_out[a]), teacher.features[b], reduction="mean")
                for (a, b), r in zip(self.hints, self.regressors)]))
        if self.attention:
            terms["attention_loss"] = (self.attention_weight, reduce(F.add, [
                attention_transfer_loss(s_out[a], teacher.features[b]) for a, b in self.attention]))
        total = reduce(F.add, [F.mul(term, weight) for weight, term in terms.values()])
        parts = {name: float(terms[name][1].data) if name in terms else float("nan")
                 for name in _PARTS}
        return total, logits, parts

    # ---- training loop ------------------------------------------------------------------
    def fit(self, optimizer, train_data, epochs: int, *, batch_size: int = 64, val_data=None,
            scheduler=None, seed: int = 0, checkpoint_path: str | os.PathLike | None = None,
            resume: bool = False, progress: bool | None = None) -> dict[str, list[float]]:
        """Train the student (and regressors) for ``epochs`` epochs on ``train_data = (x, y)``.

        As ``minnet.train.fit``: shuffling from ``(seed, epoch)``, one scheduler step per
        epoch, validation of the student on ``val_data`` (cross entropy and accuracy), a
        checkpoint after every epoch at ``checkpoint_path`` and ``resume=True`` to continue
        from it (readable by ``minnet.train.load_checkpoint(path, distiller, ...)``). The
        history adds the mean unweighted ``kd_loss``, ``ce_loss``, ``hint_loss`` and
        ``attention_loss`` per epoch to fit's keys.
        """
        x, y = check_data("train_data", train_data)
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        if resume and checkpoint_path is None:
            raise ValueError("resume=True needs a checkpoint_path")
        history = {k: [] for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy",
                                   "lr", "seconds") + _PARTS}
        start_epoch = 0
        minnet.manual_seed(seed)
        if resume and os.path.exists(checkpoint_path):
            start_epoch, history = load_checkpoint(checkpoint_path, self, optimizer, scheduler)
        cached = self._cached_teacher_outputs(x) if self.cache_teacher else None
        loader = DataLoader(x, y, np.arange(len(x)), batch_size=batch_size, shuffle=True, seed=seed)
        show = sys.stderr.isatty() if progress is None else bool(progress)
        for epoch in range(start_epoch, epochs):
            started = time.perf_counter()
            self.train()
            loader.set_epoch(epoch)
            sums = dict.fromkeys(("train_loss",) + _PARTS, 0.0)
            correct = 0
            # iter() once: tqdm.auto's bar calls iter() when built, advancing a bare loader
            bar = tqdm(iter(loader), total=len(loader), desc=f"distill {epoch + 1}/{epochs}",
                       disable=not show, leave=False)
            for xb, yb, index in bar:
                teacher = cached.take(index) if cached is not None else self.teacher_outputs(xb)
                loss, logits, parts = self.loss(xb, yb, teacher)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                for key, value in (("train_loss", float(loss.data)), *parts.items()):
                    sums[key] += value * len(yb)
                correct += int((logits.data.argmax(axis=1) == yb).sum())
                bar.set_postfix(loss=f"{float(loss.data):.4f}", refresh=False)
            lr = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            val = evaluate(self.student, val_data) if val_data is not None else None
            record = {key: total / len(x) for key, total in sums.items()}
            record.update(train_accuracy=correct / len(x),
                          val_loss=val["loss"] if val else float("nan"),
                          val_accuracy=val["accuracy"] if val else float("nan"),
                          lr=lr, seconds=time.perf_counter() - started)
            for key in history:
                history[key].append(record[key])
            if show:
                tqdm.write(f"epoch {epoch + 1}/{epochs}: " + ", ".join(
                    f"{k} {v:.4f}" for k, v in record.items() if np.isfinite(v)))
            if checkpoint_path is not None:
                save(checkpoint_state(self, optimizer, scheduler, epoch + 1, history),
                     checkpoint_path)
        return history

"""The record of a search: one entry per trial, saved atomically as JSON, exported as CSV.

JSON layout::

    {"format": "optim.nas.history", "version": 1, "strategy": "NSGA2", "seed": 0,
     "batch_size": 20, "genes": ["n_blocks", ...],
     "trials": [{"id": 0, "batch": 0, "arch": {...}, "resource": null, "status": "ok",
                 "objectives": [0.12, 35000.0], "error": null,
                 "duration": 1.5, "finished": 1700000000.0}, ...]}

``status`` is "ok", "failed" (evaluate raised or returned non-finite or wrongly sized
objectives; ``error`` says why) or "invalid" (the architecture broke the space's constraints
and was not evaluated). ``duration`` (seconds spent in evaluate) and ``finished`` (Unix time)
are the timings; everything else is the *outcome*, identical for identical seeded searches.
Tested by ``tests/optim/nas/test_nas_search.py`` (``test_history_is_saved_atomically_after_every_trial``,
``test_csv_export``, ``test_corrupt_history_is_reported_with_its_path_and_left_unchanged``).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minnet.io import atomic_write

from .pareto import pareto_front

__all__ = ["TrialRecord", "History", "HistoryError", "STATUSES"]

FORMAT, VERSION = "optim.nas.history", 1
STATUSES = ("ok", "failed", "invalid")
TIMINGS = ("duration", "finished")


class HistoryError(ValueError):
    """A history file that cannot be read; the message names the file, which is left as is."""


@dataclass(frozen=True)
class TrialRecord:
    """One evaluated (or rejected) trial; see the module docstring for the fields."""

    id: int
    batch: int
    arch: dict
    resource: Any
    status: str
    objectives: list | None
    error: str | None
    duration: float
    finished: float

    def outcome(self) -> dict:
        """The fields without the timings."""
        return {k: v for k, v in asdict(self).items() if k not in TIMINGS}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_record(entry: Any) -> TrialRecord:
    """A TrialRecord from a JSON object, or ValueError saying what is wrong."""
    if not isinstance(entry, dict) or set(entry) != set(TrialRecord.__dataclass_fields__):
        raise ValueError(f"a trial must have the fields {sorted(TrialRecord.__dataclass_fields__)}, "
                         f"got {entry!r:.200}")
    record = TrialRecord(**entry)
    problems = [
        (not _is_count(record.id), "id"), (not _is_count(record.batch), "batch"),
        (not isinstance(record.arch, dict), "arch"),
        (record.resource is not None and not _is_number(record.resource), "resource"),
        (record.status not in STATUSES, "status"),
        (record.status == "ok" and not (
            isinstance(record.objectives, list) and record.objectives
            and all(_is_number(v) and math.isfinite(v) for v in record.objectives)), "objectives"),
        (record.status != "ok" and record.objectives is not None, "objectives"),
        (record.error is not None and not isinstance(record.error, str), "error"),
        (not (_is_number(record.duration) and _is_number(record.finished)), "timings")]
    bad = [name for wrong, name in problems if wrong]
    if bad:
        raise ValueError(f"trial {entry.get('id')!r} has a malformed {bad[0]}: {entry!r:.200}")
    return record


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) through ``minnet.io.atomic_write``: a reader (or a crash) sees
    the old file or the new one, never a part, and the file gets the usual permissions."""
    with atomic_write(path) as handle:
        handle.write(text.encode("utf-8"))


class History:
    """The trials of one search, kept in id order, with the settings needed to resume it."""

    def __init__(self, strategy: str, seed: int | None, batch_size: int, genes: list[str],
                 records: list[TrialRecord] = ()):
        self.strategy, self.seed, self.batch_size, self.genes = strategy, seed, batch_size, list(genes)
        self._records = {r.id: r for r in records}

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, trial_id: int) -> TrialRecord:
        return self._records[trial_id]

    def __repr__(self) -> str:
        return f"History({self.strategy}, seed={self.seed}, {len(self)} trials)"

    @property
    def records(self) -> list[TrialRecord]:
        return [self._records[i] for i in sorted(self._records)]

    def add(self, record: TrialRecord) -> None:
        if record.id in self._records:
            raise ValueError(f"trial {record.id} is already recorded")
        self._records[record.id] = record

    def outcomes(self) -> list[dict]:
        """Every record without its timings (equal for runs that must agree)."""
        return [r.outcome() for r in self.records]

    def ok(self) -> list[TrialRecord]:
        return [r for r in self.records if r.status == "ok"]

    def best(self, objective: int = 0) -> TrialRecord:
        """The successful trial with the lowest value of objective ``objective`` (first on ties)."""
        ok = self.ok()
        if not ok:
            raise ValueError("the history has no successful trial")
        return min(ok, key=lambda r: r.objectives[objective])

    def pareto(self) -> list[TrialRecord]:
        """The successful trials whose objectives are non-dominated (``pareto_front``)."""
        ok = self.ok()
        return [ok[i] for i in pareto_front(np.array([r.objectives for r in ok]))] if ok else []

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "strategy": self.strategy, "seed": self.seed,
                "batch_size": self.batch_size, "genes": self.genes,
                "trials": [asdict(r) for r in self.records]}

    def save(self, path: str | os.PathLike) -> None:
        """Write the JSON atomically."""
        atomic_write_text(path, json.dumps(self.to_json(), indent=1, allow_nan=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "History":
        """Read a history written by ``save``; ``HistoryError`` naming ``path`` if it is corrupt."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
                raise ValueError(f"not a version-{VERSION} {FORMAT} file")
            missing = {"strategy", "seed", "batch_size", "genes", "trials"} - set(data)
            if missing:
                raise ValueError(f"missing fields {sorted(missing)}")
            history = cls(data["strategy"], data["seed"], data["batch_size"], data["genes"])
            for entry in data["trials"]:
                history.add(_check_record(entry))
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            raise HistoryError(f"history file {str(path)!r} is corrupt ({error}); it was left "
                               f"unchanged: move it away or fix it") from error
        return history

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write one row per trial (atomically): id, batch, status, resource, objective_k...,
        duration, finished, error, then one column per gene."""
        width = max((len(r.objectives) for r in self.ok()), default=0)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["id", "batch", "status", "resource"]
                        + [f"objective_{k}" for k in range(width)]
                        + ["duration", "finished", "error"] + self.genes)
        for r in self.records:
            objectives = r.objectives or [""] * width
            writer.writerow([r.id, r.batch, r.status, "" if r.resource is None else r.resource,
                             *objectives, r.duration, r.finished, r.error or "",
                             *(r.arch.get(g, "") for g in self.genes)])
        atomic_write_text(path, buffer.getvalue())

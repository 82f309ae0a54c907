"""Running a search: batches of trials through any executor, recorded, resumable."""
from __future__ import annotations

import os
import time
from concurrent.futures import Executor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from .history import History, TrialRecord
from .space import SearchSpace
from .strategy import Strategy, Trial, check_positive_int

__all__ = ["search", "evaluate_trial"]


def evaluate_trial(evaluate: Callable[[Trial], Any], trial: Trial, n_objectives: int) -> dict:
    """Run ``evaluate(trial)`` and return the outcome fields of its record.

    Never raises for a failing evaluation: an exception, a result that is not
    ``n_objectives`` finite numbers, are reported as status "failed" with the reason. Runs
    in the worker when an executor is used. Tested by
    ``tests/optim/nas/test_nas_search.py::test_failing_and_nan_trials_are_recorded_and_the_search_goes_on``.
    """
    start = time.perf_counter()
    objectives, error = None, None
    try:
        values = np.atleast_1d(np.asarray(evaluate(trial), dtype=np.float64))
        if values.shape != (n_objectives,):
            error = f"evaluate returned shape {values.shape}, expected {n_objectives} objective(s)"
        elif not np.all(np.isfinite(values)):
            error = f"evaluate returned non-finite objectives {values.tolist()}"
        else:
            objectives = values.tolist()
    except Exception as exc:  # a failing trial is recorded, the search goes on
        error = f"{type(exc).__name__}: {exc}"
    return {"status": "failed" if error else "ok", "objectives": objectives, "error": error,
            "duration": time.perf_counter() - start, "finished": time.time()}


def _run(trials: Sequence[Trial], evaluate: Callable, n_objectives: int,
         executor: Executor | None) -> Iterator[tuple[Trial, dict]]:
    """Yield (trial, outcome) as evaluations finish: in order when serial, else as completed."""
    if executor is None:
        for trial in trials:
            yield trial, evaluate_trial(evaluate, trial, n_objectives)
        return
    futures = {executor.submit(evaluate_trial, evaluate, trial, n_objectives): trial for trial in trials}
    for future in as_completed(futures):
        try:
            outcome = future.result()
        except Exception as exc:  # the executor could not run it (pickling, broken pool, ...)
            outcome = {"status": "failed", "objectives": None, "error": f"{type(exc).__name__}: {exc}",
                       "duration": 0.0, "finished": time.time()}
        yield futures[future], outcome


def _start(path: Path | None, resume: bool, history: History, budget: int) -> dict[int, TrialRecord]:
    """Records of the earlier run to replay (empty for a new search); checks they match."""
    if path is None or not path.exists():
        return {}
    if not resume:
        raise FileExistsError(f"history file {str(path)!r} exists; pass resume=True to continue "
                              f"that search or choose another history_path")
    old = History.load(path)
    for name in ("strategy", "seed", "batch_size", "genes"):
        if getattr(old, name) != getattr(history, name):
            raise ValueError(f"cannot resume {str(path)!r}: it was written with {name}="
                             f"{getattr(old, name)!r}, this search has {getattr(history, name)!r}")
    if old.seed is None:
        raise ValueError(f"cannot resume {str(path)!r}: its strategy had no seed, so its "
                         f"proposals cannot be replayed")
    if len(old) > budget:
        raise ValueError(f"budget={budget} is smaller than the {len(old)} trials in {str(path)!r}")
    return {r.id: r for r in old.records}


def search(space: SearchSpace, strategy: Strategy, evaluate: Callable[[Trial], Any], budget: int,
           executor: Executor | None = None, history_path: str | os.PathLike | None = None,
           resume: bool = False, batch_size: int | None = None,
           progress: bool | None = None) -> History:
    """Evaluate ``budget`` trials proposed by ``strategy`` and return their ``History``.

    Trials are asked in batches of ``batch_size`` (default ``strategy.batch_size``); a
    batch's valid trials are evaluated through ``executor`` (any
    ``concurrent.futures.Executor``; ``None`` evaluates in this process, in id order), then
    told to the strategy in id order. The strategy thus sees the same sequence of asks and
    tells whatever the executor and however long each evaluation takes, so a seeded search
    gives the same outcomes serially, on threads, on processes or on a cluster.

    ``evaluate(trial)`` returns the trial's objectives (a number or a sequence of
    ``strategy.n_objectives`` numbers, all minimised); with an executor of processes it must
    be picklable (a module-level function). An exception or a NaN result marks the trial
    "failed" (told as ``None``); an architecture that breaks ``space``'s constraints is
    marked "invalid" and not evaluated. Failed and invalid trials count towards ``budget``.

    With ``history_path`` the history is saved atomically after every trial. An existing
    file is never overwritten unless ``resume=True``; then the strategy (constructed afresh
    with the same arguments and seed) is replayed through the recorded trials, which are not
    evaluated again, and the search continues. A corrupt file raises ``HistoryError`` naming
    it. ``progress``: a tqdm bar; ``None`` shows it only on a terminal.

    Tested by ``tests/optim/nas/test_nas_search.py::test_history_is_the_same_whatever_the_executor``
    and ``::test_resume_after_sigkill_matches_uninterrupted_run``.
    """
    if not isinstance(space, SearchSpace):
        raise TypeError(f"space must be a SearchSpace, got {type(space).__name__}")
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a Strategy, got {type(strategy).__name__}")
    if strategy.n_asked:
        raise ValueError(f"strategy has already proposed {strategy.n_asked} trials; pass a fresh one")
    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {evaluate!r}")
    budget = check_positive_int(budget, "budget")
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor or None, got {executor!r}")
    batch_size = check_positive_int(strategy.batch_size if batch_size is None else batch_size,
                                    "batch_size")
    if resume and history_path is None:
        raise ValueError("resume=True needs a history_path")
    path = None if history_path is None else Path(history_path)
    history = History(type(strategy).__name__, strategy.seed, batch_size, space.names)
    recorded = _start(path, resume, history, budget)

    def record(trial: Trial, batch: int, outcome: dict) -> None:
        history.add(TrialRecord(trial.id, batch, trial.arch, trial.resource, **outcome))
        if path is not None:
            history.save(path)
        bar.update(1)

    with tqdm(total=budget, desc=type(strategy).__name__, unit="trial",
              disable=None if progress is None else not progress) as bar:
        batch = 0
        while strategy.n_asked < budget:
            trials = [strategy.ask() for _ in range(min(batch_size, budget - strategy.n_asked))]
            to_run = []
            for trial in trials:
                old = recorded.get(trial.id)
                if old is not None:
                    if (old.arch, old.resource, old.batch) != (trial.arch, trial.resource, batch):
                        raise ValueError(f"cannot resume {str(path)!r}: trial {trial.id} was "
                                         f"{old.arch!r} at resource {old.resource!r}, the strategy "
                                         f"now proposes {trial.arch!r} at {trial.resource!r}")
                    history.add(old)
                    bar.update(1)
                elif not space.is_valid(trial.arch):
                    record(trial, batch, {"status": "invalid", "objectives": None, "duration": 0.0,
                                          "error": "violates the space's constraints",
                                          "finished": time.time()})
                else:
                    to_run.append(trial)
            for trial, outcome in _run(to_run, evaluate, strategy.n_objectives, executor):
                record(trial, batch, outcome)
            for trial in trials:
                result = history[trial.id]
                strategy.tell(trial, result.objectives if result.status == "ok" else None)
            batch += 1
    return history

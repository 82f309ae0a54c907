"""The search runner: executors, failures, atomic history, CSV export, resume after SIGKILL."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from nas_problems import discrete_space, distance_to_target, flaky_distance, zdt1, zdt1_space

from optim.nas import (NSGA2, BayesianOptimization, History, HistoryError, RandomSearch,
                       RegularizedEvolution, Trial, evaluate_trial, search)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def evolution(seed=5):
    return RegularizedEvolution(discrete_space(), population_size=8, sample_size=3, seed=seed)


CASES = {
    "evolution-flaky": lambda: (discrete_space(), evolution(), flaky_distance, 30, 4),
    "nsga2-zdt1": lambda: (zdt1_space(4), NSGA2(zdt1_space(4), population_size=6, seed=2), zdt1, 30, None),
    "bayesian": lambda: (discrete_space(), BayesianOptimization(
        discrete_space(), n_initial=3, n_candidates=32, restarts=0, seed=1), distance_to_target, 9, 3),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_history_is_the_same_whatever_the_executor(case):
    outcomes = []
    for make_executor in (lambda: None, lambda: ThreadPoolExecutor(2), lambda: ProcessPoolExecutor(2)):
        space, strategy, objective, budget, batch_size = CASES[case]()
        executor = make_executor()
        try:
            history = search(space, strategy, objective, budget, executor=executor, batch_size=batch_size)
        finally:
            if executor is not None:
                executor.shutdown()
        assert len(history) == budget
        outcomes.append(history.outcomes())
    assert outcomes[0] == outcomes[1] == outcomes[2]


def test_failing_and_nan_trials_are_recorded_and_the_search_goes_on():
    history = search(discrete_space(), evolution(), flaky_distance, budget=40, batch_size=4)
    assert [r.id for r in history.records] == list(range(40))
    failed = [r for r in history.records if r.status == "failed"]
    assert {r.arch["g0"] for r in failed} == {0, 4}
    assert any("RuntimeError: diverged" in r.error for r in failed)
    assert any("non-finite" in r.error for r in failed)
    assert all(r.objectives is None for r in failed)
    assert all(r.status == "ok" and r.objectives == [distance_to_target(Trial(r.id, r.arch))]
               for r in history.records if r.arch["g0"] not in (0, 4))


def test_invalid_architectures_are_not_evaluated():
    space = discrete_space()
    constrained = space.with_constraints(lambda arch: arch["g1"] != 2)
    seen = []

    def evaluate(trial):
        seen.append(trial.id)
        return distance_to_target(trial)

    history = search(constrained, RandomSearch(space, seed=0), evaluate, budget=30)
    invalid = [r.id for r in history.records if r.status == "invalid"]
    assert invalid and set(invalid).isdisjoint(seen)
    assert sorted(invalid + seen) == list(range(30))
    assert all(history[i].arch["g1"] == 2 for i in invalid)


def test_evaluate_trial_reports_wrong_shapes():
    trial = RandomSearch(discrete_space(), seed=0).ask()
    outcome = evaluate_trial(lambda t: [1.0, 2.0], trial, 1)
    assert outcome["status"] == "failed" and "expected 1 objective" in outcome["error"]
    assert evaluate_trial(lambda t: 3, trial, 1)["objectives"] == [3.0]


def test_history_is_saved_atomically_after_every_trial(tmp_path):
    path = tmp_path / "history.json"

    def evaluate(trial):
        saved = json.loads(path.read_text())["trials"] if path.exists() else []
        assert [t["id"] for t in saved] == list(range(trial.id))
        return distance_to_target(trial)

    history = search(discrete_space(), evolution(), evaluate, budget=12, history_path=path, batch_size=3)
    assert History.load(path).outcomes() == history.outcomes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]  # no temporary files left


def test_csv_export(tmp_path):
    history = search(zdt1_space(3), NSGA2(zdt1_space(3), population_size=4, seed=0), zdt1, budget=8)
    history.to_csv(tmp_path / "history.csv")
    with open(tmp_path / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    for row, record in zip(rows, history.records):
        assert int(row["id"]) == record.id and row["status"] == "ok"
        assert [float(row["objective_0"]), float(row["objective_1"])] == record.objectives
        assert [float(row[f"x{i}"]) for i in range(3)] == list(record.arch.values())


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    path = tmp_path / "history.json"
    script = (f"import sys; sys.path[:0] = [{str(HERE)!r}, {str(ROOT)!r}]\n"
              "from nas_problems import discrete_space, slow_distance\n"
              "from optim.nas import RegularizedEvolution, search\n"
              "search(discrete_space(), RegularizedEvolution(discrete_space(), 8, 3, seed=5), slow_distance,"
              f" budget=40, history_path={str(path)!r}, batch_size=3, progress=False)\n")
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline, done = time.monotonic() + 120, 0
    try:
        while done < 10:
            assert process.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline, "the search did not start"
            done = len(json.loads(path.read_text())["trials"]) if path.exists() else 0
            time.sleep(0.005)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    killed = History.load(path)
    assert 10 <= len(killed) < 40
    resumed = search(discrete_space(), evolution(), distance_to_target, budget=40, history_path=path,
                     resume=True, batch_size=3)
    uninterrupted = search(discrete_space(), evolution(), distance_to_target, budget=40, batch_size=3)
    assert resumed.outcomes() == uninterrupted.outcomes()
    assert [r.outcome() for r in resumed.records[:len(killed)]] == killed.outcomes()  # not re-run
    assert History.load(path).outcomes() == uninterrupted.outcomes()


def test_resume_with_a_larger_budget_continues_the_same_search(tmp_path):
    path = tmp_path / "history.json"
    search(discrete_space(), evolution(), distance_to_target, budget=10, history_path=path, batch_size=4)
    resumed = search(discrete_space(), evolution(), distance_to_target, budget=25, history_path=path,
                     resume=True, batch_size=4)
    uninterrupted = search(discrete_space(), evolution(), distance_to_target, budget=25, batch_size=4)
    assert resumed.outcomes() == uninterrupted.outcomes()


def test_resume_refuses_a_different_search(tmp_path):
    path = tmp_path / "history.json"
    search(discrete_space(), evolution(seed=5), distance_to_target, budget=6, history_path=path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="seed=5"):
        search(discrete_space(), evolution(seed=6), distance_to_target, budget=9, history_path=path,
               resume=True)
    with pytest.raises(ValueError, match="budget=3"):
        search(discrete_space(), evolution(), distance_to_target, budget=3, history_path=path, resume=True)
    data = json.loads(before)
    data["trials"][2]["arch"]["g0"] = (data["trials"][2]["arch"]["g0"] + 1) % 5
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="trial 2"):
        search(discrete_space(), evolution(), distance_to_target, budget=9, history_path=path, resume=True)
    path.write_bytes(before)
    with pytest.raises(FileExistsError, match="resume=True"):
        search(discrete_space(), evolution(), distance_to_target, budget=9, history_path=path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [
    b"{\"format\": \"optim.nas.history\", \"version\": 1, \"trials\": [", b"\xff\xfe not text", b"[]",
    b"{\"format\": \"something else\"}",
    b"{\"format\": \"optim.nas.history\", \"version\": 1, \"strategy\": \"RegularizedEvolution\", "
    b"\"seed\": 5, \"batch_size\": 1, \"genes\": [], \"trials\": [{\"id\": 0}]}"])
def test_corrupt_history_is_reported_with_its_path_and_left_unchanged(tmp_path, content):
    path = tmp_path / "history.json"
    path.write_bytes(content)
    with pytest.raises(HistoryError, match="history.json.*corrupt"):
        search(discrete_space(), evolution(), distance_to_target, budget=5, history_path=path, resume=True)
    assert path.read_bytes() == content


def test_bad_search_arguments_are_rejected(tmp_path):
    space = discrete_space()
    for budget in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="budget"):
            search(space, evolution(), distance_to_target, budget)
    with pytest.raises(ValueError, match="batch_size"):
        search(space, evolution(), distance_to_target, 5, batch_size=0)
    with pytest.raises(TypeError, match="executor"):
        search(space, evolution(), distance_to_target, 5, executor=map)
    with pytest.raises(TypeError, match="evaluate"):
        search(space, evolution(), "distance", 5)
    with pytest.raises(TypeError, match="strategy"):
        search(space, "evolution", distance_to_target, 5)
    with pytest.raises(ValueError, match="history_path"):
        search(space, evolution(), distance_to_target, 5, resume=True)
    used = evolution()
    used.ask()
    with pytest.raises(ValueError, match="fresh"):
        search(space, used, distance_to_target, 5)
    search(space, RandomSearch(space), distance_to_target, 2, history_path=tmp_path / "h.json")
    with pytest.raises(ValueError, match="no seed"):
        search(space, RandomSearch(space), distance_to_target, 4, history_path=tmp_path / "h.json",
               resume=True)


def test_best_and_pareto_of_a_history():
    history = search(zdt1_space(3), NSGA2(zdt1_space(3), population_size=6, seed=1), zdt1, budget=24)
    points = np.array([r.objectives for r in history.ok()])
    front = np.array([r.objectives for r in history.pareto()])
    assert not any(np.all(p <= q) and np.any(p < q) for p in points for q in front)
    assert history.best(1).objectives[1] == points[:, 1].min()

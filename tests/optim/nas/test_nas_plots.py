"""Best-so-far curves and the pictures of a search."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nas_problems import discrete_space, distance_to_target, flaky_distance, zdt1, zdt1_space

from optim.nas import NSGA2, RandomSearch, RegularizedEvolution, dominates, search
from optim.nas.plots import best_so_far, objective_values, plot_best_so_far, plot_front

PNG = b"\x89PNG\r\n\x1a\n"


@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), max_size=30))
def test_best_so_far_is_the_prefix_minimum(values):
    curve = best_so_far(values)
    assert curve.shape == (len(values),)
    for t in range(len(values)):
        seen = [v for v in values[:t + 1] if not np.isnan(v)]
        assert (np.isnan(curve[t]) and not seen) or curve[t] == min(seen)


def test_objective_values_mark_failed_trials():
    history = search(discrete_space(), RandomSearch(discrete_space(), seed=0), flaky_distance, budget=20)
    values = objective_values(history)
    for record, value in zip(history.records, values):
        assert np.isnan(value) if record.status != "ok" else value == record.objectives[0]


def test_best_so_far_rejects_matrices():
    with pytest.raises(ValueError, match="1-D"):
        best_so_far(np.zeros((2, 2)))


def test_front_plot_draws_the_pareto_front(tmp_path):
    pytest.importorskip("matplotlib")
    histories = {name: search(zdt1_space(3), strategy, zdt1, budget=16) for name, strategy in
                 [("NSGA-II", NSGA2(zdt1_space(3), population_size=4, seed=0)),
                  ("random", RandomSearch(zdt1_space(3), n_objectives=2, seed=0))]}
    path = tmp_path / "front.png"
    figure = plot_front(histories, path, references={"reference": (0.5, 0.5)}, logx=False)
    assert path.read_bytes().startswith(PNG)
    assert [p.name for p in tmp_path.iterdir()] == ["front.png"]
    lines = {line.get_gid(): line for line in figure.axes[0].get_lines()}
    for name, history in histories.items():
        drawn = np.column_stack(lines[f"front:{name}"].get_data())  # (x, y) = (f2, f1)
        points = [r.objectives[::-1] for r in history.ok()]
        assert all(any(np.array_equal(d, p) for p in points) for d in drawn)
        assert not any(dominates(p, d) for p in points for d in drawn)
        assert all(any(np.array_equal(d, p) or dominates(d, p) for d in drawn) for p in points)


def test_best_so_far_plot_has_one_curve_per_strategy(tmp_path):
    pytest.importorskip("matplotlib")
    histories = {"evolution": search(discrete_space(), RegularizedEvolution(discrete_space(), 6, 2, seed=1),
                                     distance_to_target, budget=15),
                 "random": search(discrete_space(), RandomSearch(discrete_space(), seed=1),
                                  distance_to_target, budget=10)}
    path = tmp_path / "best.png"
    figure = plot_best_so_far(histories, path)
    assert path.read_bytes().startswith(PNG)
    lines = {line.get_gid(): line for line in figure.axes[0].get_lines()}
    for name, history in histories.items():
        steps, curve = lines[f"best:{name}"].get_data()
        assert list(steps) == list(range(1, len(history) + 1))
        assert curve[-1] == history.best().objectives[0]
        assert np.all(np.diff(curve) <= 0)


def test_plots_reject_empty_input(tmp_path):
    with pytest.raises(ValueError, match="histories"):
        plot_front({}, tmp_path / "x.png")
    with pytest.raises(TypeError, match="History"):
        plot_best_so_far({"a": [1, 2]}, tmp_path / "x.png")

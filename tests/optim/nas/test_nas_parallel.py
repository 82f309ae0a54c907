"""Real architecture searches give the serial history on processes and on a Dask cluster."""
from concurrent.futures import ProcessPoolExecutor

import pytest
from nas_problems import zdt1, zdt1_space

from optim.nas import NSGA2, cnn_space, search
from optim.nas.build import build_cnn, cnn_cost, macs_at_most
from optim.nas.objectives import MnistObjectives


def small_cnn_space():
    space = cnn_space(max_blocks=2, channels=(2, 4), kernel_sizes=(3, 5), fc_widths=(0, 16))
    return space.with_constraints(macs_at_most(40_000))


def cnn_search(executor=None):
    space = small_cnn_space()
    evaluate = MnistObjectives(build_cnn, ("error", "macs"), epochs=1, limit=120)
    return search(space, NSGA2(space, population_size=3, seed=4), evaluate, budget=6, executor=executor)


def zdt1_search(executor=None):
    return search(zdt1_space(4), NSGA2(zdt1_space(4), population_size=4, seed=1), zdt1, budget=12,
                  executor=executor)


def test_real_search_on_processes_gives_the_serial_history():
    serial = cnn_search()
    assert [r.status for r in serial.records] == ["ok"] * 6
    assert all(r.objectives[1] == cnn_cost(r.arch).macs <= 40_000 for r in serial.records)
    with ProcessPoolExecutor(2) as pool:
        assert cnn_search(pool).outcomes() == serial.outcomes()


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_dask_cluster_gives_the_serial_history(processes):
    distributed = pytest.importorskip("distributed")
    # worker processes import modules by name: the synthetic problems live in the tests only
    searches = [cnn_search] if processes else [zdt1_search, cnn_search]
    expected = [run().outcomes() for run in searches]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=processes,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        executor = client.get_executor()
        assert [run(executor).outcomes() for run in searches] == expected

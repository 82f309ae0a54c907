"""The nas stage's executor option: serial, a local process pool and a Dask cluster started by
the test (``LocalCluster``, addressed by its ``tcp://`` scheduler address) give the same search
history; unknown executors are refused when the configuration is checked."""
import numpy as np
import pytest

from minnet.data import load_mnist
from optim.nas import History
from optim.pipeline.config import ConfigError, validate
from optim.pipeline.executor import candidate_executor
from optim.pipeline.sources import build_model
from optim.pipeline.stages import STAGE_FUNCTIONS, Context


def _nas_history(tmp_path, executor: str) -> list:
    config = validate({"run": {"limit": 96},
                       "stage": [{"type": "baseline"},
                                 {"type": "nas", "trials": 3, "trial_epochs": 1, "epochs": 1,
                                  "executor": executor}]})
    x, y = load_mnist("train")
    keep = np.random.default_rng(0).permutation(len(y))[:96]
    xt, yt = load_mnist("test")
    work = tmp_path / executor.replace("/", "_").replace(":", "_")
    work.mkdir()
    ctx = Context(config["run"], (x[keep], y[keep]), (xt[:40], yt[:40]), work, progress=False)
    STAGE_FUNCTIONS["nas"](build_model("lenet5", 0), config["stages"][-1], ctx)
    return History.load(work / "nas.json").outcomes()


def test_serial_processes_and_a_dask_cluster_give_one_history(tmp_path):
    distributed = pytest.importorskip("distributed")
    serial = _nas_history(tmp_path, "serial")
    assert _nas_history(tmp_path, "processes") == serial
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        assert _nas_history(tmp_path, cluster.scheduler_address) == serial


def test_unknown_executors_are_refused():
    with pytest.raises(ConfigError, match="executor"):
        validate({"stage": [{"type": "baseline"}, {"type": "nas", "executor": "gpu"}]})
    with pytest.raises(ValueError, match="executor"):
        with candidate_executor("threads"):
            pass

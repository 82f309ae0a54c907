"""The kernel backend switch: environment variable, context manager, and life without Numba."""
import os
import subprocess
import sys
import textwrap

import pytest

from minnet.kernels import backend


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=300)


def test_use_backend_switches_and_restores():
    before = backend.get_backend()
    with backend.use_backend("numpy"):
        assert backend.get_backend() == "numpy"
    assert backend.get_backend() == before


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        backend.set_backend("cuda")
    result = _run("import minnet", MINNET_BACKEND="fortran")
    assert result.returncode != 0 and "MINNET_BACKEND" in result.stderr


def test_environment_variable_selects_numpy():
    result = _run("from minnet.kernels import backend; print(backend.get_backend())",
                  MINNET_BACKEND="numpy")
    assert result.stdout.strip() == "numpy"


def test_without_numba_everything_runs_on_numpy_with_one_warning():
    result = _run("""
        import sys, warnings
        sys.modules["numba"] = None          # makes `import numba` fail
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import numpy as np, minnet
            from minnet import models, functional as F
            model = models.lenet5()
            x = minnet.tensor(np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32))
            F.cross_entropy(model(x), np.array([1, 2])).backward()
        from minnet.kernels import backend
        numba_warnings = [w for w in caught if "numba" in str(w.message)]
        print(backend.get_backend(), len(numba_warnings), model[0].weight.grad.shape)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["numpy", "1", "(6,", "1,", "5,", "5)"]


def test_observe_ops_sees_every_op_with_its_attributes():
    import numpy as np

    import minnet
    from minnet import functional as F
    from minnet.tensor import observe_ops

    seen = []
    x = minnet.tensor(np.ones((2, 3)))
    with observe_ops(lambda fn, inputs, attrs, out: seen.append((fn.__name__, attrs, out.shape))):
        with minnet.no_grad():
            F.softmax(x.sum(axis=1, keepdims=True) * 2, axis=0)
    assert [name for name, _, _ in seen] == ["Sum", "Mul", "Softmax"]
    assert seen[0][1] == {"axis": 1, "keepdims": True} and seen[2][2] == (2, 1)
    F.relu(x)  # outside the block nothing is recorded
    assert len(seen) == 3

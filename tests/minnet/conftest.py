"""Fail any minnet test that leaks global state: grad mode or the kernel backend."""
import pytest


@pytest.fixture(autouse=True)
def _no_leaked_global_state():
    import minnet
    from minnet.kernels import backend

    before = backend.get_backend()
    yield
    assert minnet.is_grad_enabled(), "test left grad mode disabled"
    assert backend.get_backend() == before, "test changed the kernel backend"

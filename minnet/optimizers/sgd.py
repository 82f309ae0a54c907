"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from minnet.optimizers.optimizer import Optimizer, ParamsT, check_bool, check_real


def sgd_update(param: np.ndarray, grad: np.ndarray, momentum_buffer: np.ndarray | None, *,
               lr: float, momentum: float = 0.0, dampening: float = 0.0,
               nesterov: bool = False, weight_decay: float = 0.0) -> np.ndarray | None:
    r"""One SGD step on ``param``, in place; returns the momentum buffer (None without momentum).

    With gradient :math:`g`, weight decay :math:`\lambda`, momentum :math:`\mu`, dampening
    :math:`\tau` and learning rate :math:`\gamma`:

    .. math::

        g \leftarrow g + \lambda\theta, \qquad
        b_t = \begin{cases} g & t = 1 \\ \mu b_{t-1} + (1-\tau)\, g & t > 1 \end{cases}, \qquad
        d = \begin{cases} g + \mu b_t & \text{nesterov} \\ b_t & \text{otherwise} \end{cases},
        \qquad \theta \leftarrow \theta - \gamma d

    (no momentum: :math:`d = g`). The first step is signalled by ``momentum_buffer=None``;
    a given buffer is updated in place. ``param`` keeps its dtype.

    Source: the algorithm in PyTorch's ``torch.optim.SGD`` documentation (momentum in the form
    of Sutskever et al., 2013, "On the importance of initialization and momentum in deep
    learning", Sec. 2). Tests: ``tests/minnet/test_optimizers.py::test_sgd_matches_torch`` and
    ``::test_sgd_momentum_on_constant_gradient_is_a_geometric_series``.
    """
    g = np.asarray(grad, dtype=param.dtype)
    if weight_decay != 0:
        g = g + weight_decay * param
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = g.copy()
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1 - dampening) * g
        g = g + momentum * momentum_buffer if nesterov else momentum_buffer
    param -= lr * g
    return momentum_buffer


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's ``torch.optim.SGD`` semantics (see ``sgd_update``);
    ``dampening`` is keyword-only.

    State per parameter: ``momentum_buffer`` (only when momentum is non-zero).
    """
    _state_spec = {"momentum_buffer": ("array", False)}

    def __init__(self, params: ParamsT, lr: float, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, *, dampening: float = 0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay))

    def _check_options(self, options: Mapping[str, Any]) -> None:
        check_real("lr", options["lr"])
        check_real("momentum", options["momentum"])
        check_real("dampening", options["dampening"], low=None)
        check_real("weight_decay", options["weight_decay"])
        check_bool("nesterov", options["nesterov"])
        if options["nesterov"] and (options["momentum"] <= 0 or options["dampening"] != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening == 0, got "
                             f"momentum={options['momentum']!r}, "
                             f"dampening={options['dampening']!r}")

    def _update(self, p: Any, group: dict[str, Any], state: dict[str, Any]) -> None:
        buffer = sgd_update(p.data, p.grad, state.get("momentum_buffer"), lr=float(group["lr"]),
                            momentum=float(group["momentum"]),
                            dampening=float(group["dampening"]),
                            nesterov=bool(group["nesterov"]),
                            weight_decay=float(group["weight_decay"]))
        if buffer is not None:
            state["momentum_buffer"] = buffer

"""Adam (with optional AMSGrad) and AdamW, its decoupled-weight-decay variant."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from minnet.kernels.adam import adam_step
from minnet.optimizers.optimizer import Optimizer, ParamsT, check_bool, check_real


def adam_update(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray,
                exp_avg_sq: np.ndarray, *, step: int, lr: float, beta1: float, beta2: float,
                eps: float, weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                max_exp_avg_sq: np.ndarray | None = None) -> None:
    r"""One Adam/AdamW step on ``param``, in place; the moment buffers are updated in place.

    With gradient :math:`g`, step count :math:`t \ge 1` (this step included), learning rate
    :math:`\gamma` and weight decay :math:`\lambda`:

    .. math::

        \text{Adam: } g \leftarrow g + \lambda\theta, \qquad
        \text{AdamW: } \theta \leftarrow \theta\,(1 - \gamma\lambda),

        m_t = \beta_1 m_{t-1} + (1-\beta_1)\, g, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\, g^2,

        \hat m_t = \frac{m_t}{1-\beta_1^t}, \qquad
        \hat v_t = \frac{v_t}{1-\beta_2^t}, \qquad
        \theta \leftarrow \theta - \gamma\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    (:math:`\epsilon` is added after the square root of the bias-corrected second moment).
    AMSGrad (``max_exp_avg_sq`` given) divides by :math:`\sqrt{\max_{s\le t} v_s / (1-\beta_2^t)}
    + \epsilon` instead, keeping the running maximum in ``max_exp_avg_sq``. ``param`` keeps its
    dtype. The arithmetic runs in one fused pass (``minnet.kernels.adam``).

    Sources: Kingma & Ba, 2015, "Adam: A Method for Stochastic Optimization", Algorithm 1;
    Loshchilov & Hutter, 2019, "Decoupled Weight Decay Regularization", Algorithm 2 (AdamW,
    with the decay scaled by the learning rate as in PyTorch); Reddi et al., 2018, "On the
    Convergence of Adam and Beyond" (AMSGrad, bias-corrected as in PyTorch). Tests:
    ``tests/minnet/test_optimizers.py::test_adam_matches_torch``,
    ``::test_adam_first_step_is_lr_times_sign_of_gradient`` and
    ``::test_adamw_with_zero_gradient_only_decays``.
    """
    adam_step(param, np.asarray(grad, dtype=param.dtype), exp_avg, exp_avg_sq, max_exp_avg_sq,
              step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
              decoupled_weight_decay=decoupled_weight_decay)


class Adam(Optimizer):
    """Adam, PyTorch's ``torch.optim.Adam`` semantics (see ``adam_update``): ``weight_decay``
    is an L2 penalty added to the gradient.

    State per parameter: ``step`` (int), ``exp_avg``, ``exp_avg_sq`` and, with ``amsgrad``,
    ``max_exp_avg_sq``.
    """
    _decoupled_weight_decay = False
    _state_spec = {"step": ("count", True), "exp_avg": ("array", True),
                   "exp_avg_sq": ("array", True), "max_exp_avg_sq": ("array", False)}

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad))

    def _check_options(self, options: Mapping[str, Any]) -> None:
        check_real("lr", options["lr"])
        betas = options["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            check_real(f"betas[{i}]", beta, high=1.0, high_open=True)
        check_real("eps", options["eps"])
        check_real("weight_decay", options["weight_decay"])
        check_bool("amsgrad", options["amsgrad"])

    def _update(self, p: Any, group: dict[str, Any], state: dict[str, Any]) -> None:
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
        if group["amsgrad"]:
            state.setdefault("max_exp_avg_sq", np.zeros_like(p.data))
        state["step"] += 1
        beta1, beta2 = group["betas"]
        adam_update(p.data, p.grad, state["exp_avg"], state["exp_avg_sq"], step=state["step"],
                    lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
                    eps=float(group["eps"]), weight_decay=float(group["weight_decay"]),
                    decoupled_weight_decay=self._decoupled_weight_decay,
                    max_exp_avg_sq=state.get("max_exp_avg_sq") if group["amsgrad"] else None)


class AdamW(Adam):
    """AdamW, PyTorch's ``torch.optim.AdamW`` semantics (see ``adam_update``): before the Adam
    step the parameter is multiplied by ``1 - lr * weight_decay``."""
    _decoupled_weight_decay = True

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)

"""optim.distill: knowledge distillation and transfer.

- ``soft``: soft targets and Hinton et al. 2015's losses — ``kd_loss`` (the fixed API:
  :math:`T^2` · batch-mean KL(softmax(t/T) ‖ softmax(s/T))), ``soft_cross_entropy`` and the
  combined ``distillation_loss`` (α·KD + (1 − α)·CE);
- ``hints``: FitNets hint loss and regressors (Romero et al. 2015), attention maps and the
  attention-transfer loss (Zagoruyko & Komodakis 2017);
- ``features``: outputs of named submodules through forward hooks;
- ``distiller``: ``Distiller``, the training loop (teacher frozen in eval mode, optional
  teacher cache, checkpoint and resume);
- ``transfer``: ``freeze`` / ``unfreeze`` by name and ``load_partial_state_dict``.
"""
from .distiller import Distiller, TeacherOutputs
from .features import named_submodules, record_features
from .hints import attention_map, attention_transfer_loss, hint_loss, hint_regressor
from .soft import distillation_loss, kd_loss, soft_cross_entropy, soft_targets
from .transfer import TransferReport, freeze, load_partial_state_dict, unfreeze

__all__ = [
    "kd_loss", "soft_targets", "soft_cross_entropy", "distillation_loss",
    "hint_loss", "hint_regressor", "attention_map", "attention_transfer_loss",
    "named_submodules", "record_features",
    "Distiller", "TeacherOutputs",
    "freeze", "unfreeze", "load_partial_state_dict", "TransferReport",
]

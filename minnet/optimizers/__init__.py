"""Gradient optimizers (SGD, Adam, AdamW) and learning-rate schedulers with PyTorch's semantics.

Each update rule is a pure function on arrays (``sgd_update``, ``adam_update``, ``step_lr``,
``cosine_annealing_lr``, ``linear_lr``) with its formula and source in the docstring; the
classes hold parameter groups and per-parameter state around them.
"""
from minnet.optimizers.adam import Adam, AdamW, adam_update
from minnet.optimizers.optimizer import Optimizer
from minnet.optimizers.schedulers import (CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR,
                                          StepLR, cosine_annealing_lr, linear_lr, step_lr)
from minnet.optimizers.sgd import SGD, sgd_update

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "sgd_update", "adam_update", "LRScheduler",
           "StepLR", "CosineAnnealingLR", "LinearLR", "SequentialLR", "step_lr",
           "cosine_annealing_lr", "linear_lr"]

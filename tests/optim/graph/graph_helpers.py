"""Shared helpers of the optim.graph tests: reference models and eager outputs."""
from __future__ import annotations

import numpy as np

import minnet
from minnet.models import lenet5, lenet_300_100
from optim.graph.zoo import random_model, randomize_batchnorm, residual_cnn

N_RANDOM = 24


def eager(model, x: np.ndarray) -> np.ndarray:
    """The model's eval-mode output under no_grad (mode restored)."""
    was = model.training
    model.eval()
    try:
        with minnet.no_grad():
            return model(minnet.Tensor(x)).data
    finally:
        model.train(was)


def named_models() -> list[tuple[str, object, tuple[int, ...]]]:
    """(name, model, input shape): the three fixed models, then N_RANDOM random ones."""
    minnet.manual_seed(0)
    models = [("lenet_300_100", lenet_300_100(), (4, 1, 28, 28)),
              ("lenet5", lenet5(), (4, 1, 28, 28)),
              ("lenet5_bn", randomize_batchnorm(lenet5(batch_norm=True), np.random.default_rng(1)),
               (4, 1, 28, 28)),
              ("residual_cnn", residual_cnn(), (2, 1, 28, 28))]
    for seed in range(N_RANDOM):
        model, shape = random_model(seed)
        models.append((f"random{seed}", model, shape))
    return models


def sample(shape, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)

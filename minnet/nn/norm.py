"""Batch normalization layers with PyTorch's running-statistics semantics."""
from __future__ import annotations

import numpy as np

from minnet import functional as F
from minnet.nn.module import Module, Parameter


class _BatchNorm(Module):
    expected_ndim: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_running_stats: bool = True, dtype=np.float32):
        super().__init__()
        if not isinstance(num_features, (int, np.integer)) or num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))
            self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)

    def forward(self, x):
        if x.ndim not in self.expected_ndim:
            raise ValueError(f"{type(self).__name__} expects input with {self.expected_ndim} "
                             f"dimensions, got shape {x.shape}")
        use_batch_stats = self.training or not self.track_running_stats
        out = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                           training=use_batch_stats, momentum=self.momentum, eps=self.eps)
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
        return out

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """Over (N, C) or (N, C, L) inputs."""
    expected_ndim = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Over (N, C, H, W) inputs."""
    expected_ndim = (4,)

"""optim.lowrank: low-rank factorization of Linear and Conv2d layers ("low-dimensional mapping").

- ``svd``: ``truncated_svd`` (Eckart–Young), the rank rules ``energy_rank`` / ``budget_rank``,
  ``truncation_error``, ``kept_energy`` and the data-aware ``whitened_svd``;
- ``conv``: kernel factors for a kh×kw conv with r filters + 1×1 conv (``"channel"``) and for
  Jaderberg et al. 2014's vertical kh×1 + horizontal 1×kw scheme (``"spatial"``);
- ``tucker``: Tucker-2 of a conv kernel on its channel modes (Kim et al. 2016; HOSVD, optional
  HOOI; ranks given or by kept energy) as 1×1, k×k core and 1×1 convolutions;
- ``cp``: CP-ALS of a conv kernel (Lebedev et al. 2015) as 1×1, kh×1 and 1×kw depthwise, 1×1
  convolutions;
- ``factorize``: ``factorize_linear``, ``factorize_conv2d`` and ``factorize(model, names, ...)``
  which replaces layers in place and reports ranks, parameters and kept energy.
"""
from .conv import SCHEMES, compose_kernel, conv_factors, factorized_params, kernel_matrix
from .cp import CP, cp_als, cp_conv2d, cp_kernel
from .factorize import (Factorization, choose_rank, factorize, factorize_conv2d,
                        factorize_linear)
from .svd import (budget_rank, check_rank, decompose, energy_rank, factors, kept_energy,
                  singular_values, truncated_svd, truncation_error, whitened_svd)
from .tucker import Tucker2, tucker2, tucker2_conv2d, tucker2_kernel, tucker2_ranks

__all__ = [
    "truncated_svd", "singular_values", "truncation_error", "kept_energy", "energy_rank",
    "budget_rank", "check_rank", "whitened_svd", "decompose", "factors",
    "SCHEMES", "kernel_matrix", "conv_factors", "compose_kernel", "factorized_params",
    "Factorization", "choose_rank", "factorize_linear", "factorize_conv2d", "factorize",
    "Tucker2", "tucker2", "tucker2_kernel", "tucker2_ranks", "tucker2_conv2d",
    "CP", "cp_als", "cp_kernel", "cp_conv2d",
]

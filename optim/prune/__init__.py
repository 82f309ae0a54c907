"""optim.prune: saliency-based pruning, from pure score and mask functions to smaller models.

- ``scores``: saliency criteria on arrays (magnitude, random, Taylor per weight and per
  feature map, OBD with Fisher or Hutchinson Hessian diagonals, SNIP, per-sample influence,
  activation variance, entropy and APoZ, FPGM, BatchNorm scale);
- ``obs``: Optimal Brain Surgeon (recursive inverse Hessian, saliency, compensating update);
- ``grasp``: GraSP scores from a Hessian-gradient product;
- ``masks``: top-k, magnitude (layer-wise and global), L_n-structured and N:M masks
  (boolean, True = kept; ``amount`` an int count or a float fraction);
- ``parametrize``: the pruning mask, a ``minnet.nn.parametrize`` parametrization of module parameters;
- ``criteria`` / ``model``: scores gathered from data and applied to whole models;
- ``schedules``: one-shot, iterative, AGP (cubic) and lottery-ticket rewinding;
- ``shrink``: physical removal of neurons/filters with their dependencies (Sequential);
- ``dependency``: DepGraph channel groups of any graph, group importance, masking and
  physical removal;
- ``sparse``: CSR sparse inference (kernel in ``minnet.kernels.csr``);
- ``report``: per-layer sparsity, parameters and MACs.
"""
from .dependency import (ChannelGroup, dependency_groups, group_importance, mask_channels,
                         prune_graph_channels, remove_channels, select_channels)
from .criteria import (activations, activations_and_gradients, channel_scores, flat_gradient,
                       hessian_diagonals, mean_gradients, weight_scores)
from minnet.kernels.csr import CSR, csr_matmul, csr_to_dense, to_csr
from .grasp import grasp_scores, hessian_gradient_product
from .masks import (expand_channel_mask, global_magnitude_masks, global_topk_masks,
                    ln_structured_mask, lp_norms, magnitude_mask, nm_mask, sparsity,
                    structured_mask, threshold_mask, topk_mask)
from .model import (prunable, prune_channels, prune_model, prune_nm, slimming_penalty,
                    target_sparsity)
from .obs import (linear_output_jacobians, obs_inverse_hessian, obs_prune, obs_prune_linear,
                  obs_saliency, obs_update)
from .parametrize import (apply_mask, effective_weight, get_mask, is_pruned, remove,
                          remove_all, restore_pruning)
from .report import format_report, layer_report
from .schedules import agp_sparsity, geometric_sparsities, lottery_ticket, prune_rounds, rewind
from .scores import (activation_entropy, activation_variance, apoz, bn_scale_scores,
                     finite_difference_hvp, fisher_diagonal, fpgm_scores, hutchinson_diagonal,
                     influence_scores, magnitude_scores, obd_scores, random_scores,
                     slimming_penalty_grad, snip_scores, taylor_feature_map_scores,
                     taylor_group_scores, taylor_scores)
from .shrink import flat_layers, kept_units, shrink
from .sparse import SparseConv2d, SparseLinear, sparsify

__all__ = [
    "magnitude_scores", "random_scores", "taylor_scores", "taylor_group_scores", "obd_scores",
    "fisher_diagonal", "hutchinson_diagonal", "finite_difference_hvp", "snip_scores",
    "influence_scores", "activation_variance", "activation_entropy", "fpgm_scores",
    "bn_scale_scores", "slimming_penalty_grad", "taylor_feature_map_scores", "apoz",
    "obs_inverse_hessian", "linear_output_jacobians", "obs_saliency", "obs_update", "obs_prune",
    "obs_prune_linear", "grasp_scores", "hessian_gradient_product",
    "topk_mask", "global_topk_masks", "magnitude_mask", "global_magnitude_masks",
    "threshold_mask", "lp_norms", "ln_structured_mask", "structured_mask",
    "expand_channel_mask", "nm_mask", "sparsity",
    "apply_mask", "remove", "remove_all", "is_pruned", "get_mask", "effective_weight",
    "restore_pruning",
    "weight_scores", "channel_scores", "mean_gradients", "hessian_diagonals", "activations",
    "activations_and_gradients", "flat_gradient",
    "prunable", "prune_model", "prune_channels", "prune_nm", "slimming_penalty",
    "target_sparsity",
    "agp_sparsity", "geometric_sparsities", "prune_rounds", "lottery_ticket", "rewind",
    "shrink", "flat_layers", "kept_units",
    "ChannelGroup", "dependency_groups", "group_importance", "mask_channels",
    "prune_graph_channels", "remove_channels", "select_channels",
    "CSR", "to_csr", "csr_to_dense", "csr_matmul", "SparseLinear", "SparseConv2d", "sparsify",
    "layer_report", "format_report",
]

"""optim: model optimization on minnet models and plain arrays.

Subpackages: ``quant`` (quantization), ``prune`` (saliency-based pruning), ``distill``
(soft-target distillation), ``nas`` (architecture search), ``graph`` (traced IR and rewrite
passes); ``metrics`` counts parameters, MACs, bytes and latency.
"""

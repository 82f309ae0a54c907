"""optim.nas: neural architecture search.

- ``pareto``: dominance, ``pareto_front``, ``non_dominated_sort``, ``crowding_distance``,
  ``hypervolume_2d``, ``igd`` (all objectives minimised);
- ``space`` / ``spaces``: declarative search spaces (``Choice``, ``IntRange``, ``FloatRange``,
  constraints) and the shipped ``mlp_space`` / ``cnn_space`` for 28x28 inputs;
- strategies with ``ask() -> Trial`` / ``tell(trial, objectives)``: ``RandomSearch``,
  ``GeneticAlgorithm``, ``RegularizedEvolution``, ``NSGA2``, ``BayesianOptimization``
  (``gp``: Matérn-5/2 Gaussian process, expected improvement), ``SuccessiveHalving``,
  ``Hyperband``;
- ``build``: architectures of the two spaces as minnet models, their params/MACs in closed
  form, a MACs-budget constraint; ``objectives``: validation error (a split of the training
  images), params, MACs and latency of trained architectures;
- ``plots``: ``best_so_far`` curves, PNG pictures of the Pareto front and of the best-so-far
  curve per strategy (matplotlib, optional);
- ``darts``: DARTS, a continuous relaxation of a small MNIST cell searched by first-order
  bilevel steps with minnet's autograd, and the discrete cell derived from it;
- ``search``: runs a strategy through any ``concurrent.futures.Executor`` with a resumable,
  atomically saved ``History``.
"""
from .bayesian import BayesianOptimization
from .build import Cost, Residual, build_cnn, build_mlp, cnn_cost, describe, macs_at_most, mlp_cost
from .darts import (OPS, DartsNetwork, DartsSearchNetwork, build_darts, darts_search,
                    derive_cell, edge_list, mixed_op)
from .evolution import GeneticAlgorithm, RegularizedEvolution, offspring, tournament
from .gp import GPParams, expected_improvement, fit_gp, gp_posterior, log_marginal_likelihood, matern52
from .history import History, HistoryError, TrialRecord
from .hyperband import Hyperband, SuccessiveHalving, hyperband_brackets, successive_halving_rungs
from .objectives import OBJECTIVES, MnistObjectives, measure, mnist_splits, stratified_split, train_model
from .nsga2 import NSGA2, crowded_tournament, nsga2_survival
from .pareto import crowding_distance, dominates, hypervolume_2d, igd, non_dominated_sort, pareto_front
from .plots import best_so_far, objective_values, plot_best_so_far, plot_front
from .random_search import RandomSearch
from .search import evaluate_trial, search
from .space import Choice, FloatRange, IntRange, SearchSpace
from .spaces import (canonical_arch, cnn_feature_shape, cnn_space, cnn_valid, conv_output_size,
                     mlp_skips_valid, mlp_space)
from .strategy import Strategy, Trial

__all__ = [
    "pareto_front", "crowding_distance", "non_dominated_sort", "dominates", "hypervolume_2d", "igd",
    "Choice", "IntRange", "FloatRange", "SearchSpace",
    "mlp_space", "cnn_space", "conv_output_size", "cnn_feature_shape", "cnn_valid", "mlp_skips_valid",
    "canonical_arch",
    "Trial", "Strategy", "RandomSearch", "GeneticAlgorithm", "RegularizedEvolution", "NSGA2",
    "BayesianOptimization", "SuccessiveHalving", "Hyperband",
    "tournament", "offspring", "nsga2_survival", "crowded_tournament",
    "successive_halving_rungs", "hyperband_brackets",
    "matern52", "log_marginal_likelihood", "GPParams", "fit_gp", "gp_posterior", "expected_improvement",
    "search", "evaluate_trial", "History", "TrialRecord", "HistoryError",
    "Residual", "Cost", "build_mlp", "build_cnn", "mlp_cost", "cnn_cost", "macs_at_most", "describe",
    "OBJECTIVES", "stratified_split", "mnist_splits", "train_model", "measure", "MnistObjectives",
    "best_so_far", "objective_values", "plot_front", "plot_best_so_far",
    "OPS", "mixed_op", "edge_list", "derive_cell", "DartsNetwork", "DartsSearchNetwork",
    "build_darts", "darts_search",
]

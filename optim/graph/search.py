"""Searching rewrite sequences for the graph of least predicted cost.

A *move* applies one rewrite rule at one site (``optim.graph.passes.RULES``) or one run of
common-subexpression elimination, then removes dead code. Both searches minimise a cost
function of the graph, typically ``CostModel.graph_cost`` (Σ_i C(v_i) plus call overhead).

- ``greedy``: repeatedly take the move that lowers the cost most; stop at a local minimum.
- ``backtracking``: TASO's cost-based backtracking search (Jia et al. 2019, "TASO: Optimizing
  Deep Learning Computation with Automatic Generation of Graph Substitutions", Algorithm 2):
  a priority queue ordered by cost; pop the cheapest graph, generate every move, and queue
  each unseen result whose cost is below α times the best so far. α > 1 keeps moves that
  raise the cost for a while, so sequences that pass through a worse graph can still be found;
  ``budget`` bounds the number of graphs expanded.

Tests: ``tests/optim/graph/test_graph_search.py``.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

from optim.graph.ir import Graph
from optim.graph.passes import RULES, Rule, apply_rewrite, eliminate_common, eliminate_dead, rewrites

__all__ = ["SearchResult", "moves", "greedy", "backtracking"]

Cost = Callable[[Graph], float]


@dataclass(frozen=True)
class SearchResult:
    graph: Graph
    cost: float
    initial_cost: float
    expanded: int  # graphs whose moves were generated
    seen: int  # distinct graphs costed


def moves(graph: Graph, rules: Mapping[str, Rule] = RULES) -> Iterator[Graph]:
    """Every graph one move away from ``graph``."""
    for rule in rules.values():
        for rewrite in rewrites(graph, rule):
            yield eliminate_dead(apply_rewrite(graph, rewrite))
    merged = eliminate_common(graph)
    if merged is not graph:
        yield eliminate_dead(merged)


def _check(budget: int, alpha: float) -> None:
    if not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive int, got {budget!r}")
    if not alpha >= 1.0:
        raise ValueError(f"alpha must be >= 1, got {alpha!r}")


def greedy(graph: Graph, cost: Cost, rules: Mapping[str, Rule] = RULES,
           budget: int = 1000) -> SearchResult:
    """Steepest descent over moves, at most ``budget`` steps."""
    _check(budget, 1.0)
    current, current_cost = graph, cost(graph)
    initial, expanded, seen = current_cost, 0, 1
    while expanded < budget:
        expanded += 1
        best, best_cost = None, current_cost
        for candidate in moves(current, rules):
            seen += 1
            c = cost(candidate)
            if c < best_cost:
                best, best_cost = candidate, c
        if best is None:
            break
        current, current_cost = best, best_cost
    return SearchResult(current, current_cost, initial, expanded, seen)


def backtracking(graph: Graph, cost: Cost, rules: Mapping[str, Rule] = RULES, budget: int = 100,
                 alpha: float = 1.05) -> SearchResult:
    """TASO's backtracking search (see the module docstring); ``alpha = inf`` with a large
    budget explores every reachable graph."""
    _check(budget, alpha)
    start_cost = cost(graph)
    best, best_cost = graph, start_cost
    order = itertools.count()  # ties broken by insertion order: deterministic
    queue = [(start_cost, next(order), graph)]
    seen = {graph.signature(data=False)}
    expanded = 0
    while queue and expanded < budget:
        _, _, current = heapq.heappop(queue)
        expanded += 1
        for candidate in moves(current, rules):
            key = candidate.signature(data=False)
            if key in seen:
                continue
            seen.add(key)
            c = cost(candidate)
            if c < best_cost:
                best, best_cost = candidate, c
            if c < alpha * best_cost:
                heapq.heappush(queue, (c, next(order), candidate))
    return SearchResult(best, best_cost, start_cost, expanded, len(seen))

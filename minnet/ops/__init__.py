"""Differentiable ops grouped by family; the public facade is ``minnet.functional``."""

"""Quantization configuration shared by PTQ and QAT: bit widths, observers, schemes.

Weights: per-channel (output channels, axis 0) symmetric signed codes; activations: per-tensor
affine codes, unsigned by default (uint8 for 8 bits), as ``torch.ao.quantization``'s default
x86 configuration.
"""
from __future__ import annotations

from dataclasses import dataclass

from ._checks import check_int
from .observers import (
    HistogramKLObserver,
    HistogramL2Observer,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
)
from .ranges import MAX_BITS, MIN_BITS, int_range

OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
    "kl": HistogramKLObserver,
    "histogram_l2": HistogramL2Observer,
}


def _check_bits(value: object, name: str) -> int:
    value = check_int(value, name)
    if not MIN_BITS <= value <= MAX_BITS:
        raise ValueError(f"{name} must be in [{MIN_BITS}, {MAX_BITS}], got {value}")
    return value


def _check_observer(value: object, name: str) -> str:
    if value not in OBSERVERS:
        raise ValueError(f"{name} must be one of {sorted(OBSERVERS)}, got {value!r}")
    return value


@dataclass(frozen=True)
class QConfig:
    """How to quantize a model.

    ``weight_bits`` / ``activation_bits`` in [2, 16]; ``weight_observer`` /
    ``activation_observer`` name an observer of ``OBSERVERS``; ``weight_only`` leaves
    activations in float; ``signed_activations`` uses signed codes (int8) instead of unsigned
    (uint8); ``restricted_weights`` uses the narrow range -(2^(b-1)-1)..2^(b-1)-1;
    ``per_channel_weights=False`` gives each weight tensor one scale (per-tensor).
    """
    weight_bits: int = 8
    activation_bits: int = 8
    weight_observer: str = "minmax"
    activation_observer: str = "minmax"
    weight_only: bool = False
    signed_activations: bool = False
    restricted_weights: bool = False
    per_channel_weights: bool = True

    def __post_init__(self):
        _check_bits(self.weight_bits, "weight_bits")
        _check_bits(self.activation_bits, "activation_bits")
        _check_observer(self.weight_observer, "weight_observer")
        _check_observer(self.activation_observer, "activation_observer")

    @property
    def weight_range(self) -> tuple[int, int]:
        return int_range(self.weight_bits, True, self.restricted_weights)

    @property
    def activation_range(self) -> tuple[int, int]:
        return int_range(self.activation_bits, self.signed_activations)

    def weight_observer_instance(self) -> Observer:
        """A symmetric observer for a weight tensor, per output channel (axis 0) unless
        ``per_channel_weights`` is False."""
        return OBSERVERS[self.weight_observer](
            self.weight_bits, signed=True, symmetric=True, restricted=self.restricted_weights,
            axis=0 if self.per_channel_weights else None)

    def activation_observer_instance(self, name: str | None = None) -> Observer:
        """A per-tensor affine observer for activations (``name`` overrides the configured one)."""
        kind = self.activation_observer if name is None else _check_observer(name, "observer")
        return OBSERVERS[kind](self.activation_bits, signed=self.signed_activations)

"""Argument validation shared by optim.quant: ValueError/TypeError naming the argument."""
from __future__ import annotations

import numbers

import numpy as np


def check_int(value: object, name: str) -> int:
    """Return ``value`` as a Python int; TypeError unless it is an integer (bool excluded)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    return int(value)


def check_qrange(qmin: object, qmax: object) -> tuple[int, int]:
    """Validate an integer range ``qmin < qmax`` that fits int32."""
    qmin, qmax = check_int(qmin, "qmin"), check_int(qmax, "qmax")
    if qmin >= qmax:
        raise ValueError(f"qmin must be < qmax, got qmin={qmin}, qmax={qmax}")
    info = np.iinfo(np.int32)
    if qmin < info.min or qmax > info.max:
        raise ValueError(
            f"qmin={qmin}, qmax={qmax} must lie in the int32 range [{info.min}, {info.max}]"
        )
    return qmin, qmax


def check_axis(axis: object, ndim: int, name: str = "axis") -> int:
    """Normalise ``axis`` for an array of ``ndim`` dimensions."""
    axis = check_int(axis, name)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array with ndim={ndim}")
    return axis % ndim


def as_float_array(x: object, name: str = "x") -> np.ndarray:
    """``x`` as a floating ndarray (float32 unless it already is floating)."""
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        return arr
    if arr.dtype.kind in "biu":
        return arr.astype(np.float32)
    raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")


def check_finite(x: np.ndarray, name: str) -> None:
    """ValueError if ``x`` holds NaN or +-Inf."""
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite, got NaN or Inf")


def channel_param(
    value: object, name: str, ndim: int, axis: int | None, n_channels: int | None
) -> np.ndarray:
    """A per-tensor (scalar) or per-channel (shape ``(C,)``) parameter, reshaped to broadcast
    against an array of ``ndim`` dimensions along ``axis``; with an ``axis`` a 0-d value is
    shared by every channel."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if axis is None:
        if arr.size != 1:
            raise ValueError(
                f"{name} must be a scalar when axis is None (per-tensor), got shape {arr.shape}; "
                "pass axis for per-channel parameters"
            )
        return arr.reshape(())
    if arr.ndim == 0:
        return arr  # one value shared by every channel
    if arr.shape != (n_channels,):
        raise ValueError(
            f"{name} must have shape ({n_channels},) to match the {n_channels} channels along "
            f"axis {axis}, got shape {arr.shape}"
        )
    shape = [1] * ndim
    shape[axis] = n_channels
    return arr.reshape(shape)


def check_scale(scale: np.ndarray) -> None:
    """ValueError unless every scale is positive and finite."""
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ValueError(f"scale must be positive and finite, got {scale.ravel()[:8]}")


def check_zero_point(
    zero_point: np.ndarray, qmin: int | None = None, qmax: int | None = None
) -> np.ndarray:
    """Zero points as int64: integral values, inside ``[qmin, qmax]`` when the range is given."""
    if zero_point.dtype.kind == "f":
        if not np.all(np.isfinite(zero_point)) or np.any(zero_point != np.round(zero_point)):
            raise ValueError(f"zero_point must hold integers, got {zero_point.ravel()[:8]}")
    zp = zero_point.astype(np.int64)
    if qmin is not None and (np.any(zp < qmin) or np.any(zp > qmax)):
        raise ValueError(
            f"zero_point must lie in [qmin, qmax] = [{qmin}, {qmax}], got {zp.ravel()[:8]}"
        )
    return zp


def n_channels(x: np.ndarray, axis: int | None) -> tuple[int | None, int | None]:
    """Normalised axis and channel count (``None, None`` for per-tensor)."""
    if axis is None:
        return None, None
    axis = check_axis(axis, x.ndim)
    return axis, x.shape[axis]


def check_count(value: object, name: str, minimum: int = 1) -> int:
    """An integer ``>= minimum``."""
    value = check_int(value, name)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_indices(indices: object, n_clusters: int) -> np.ndarray:
    """Cluster indices: an integer array with values in ``[0, n_clusters)``."""
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices must be an integer array, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_clusters):
        raise ValueError(
            f"indices must lie in [0, {n_clusters - 1}], got [{idx.min()}, {idx.max()}]"
        )
    return idx

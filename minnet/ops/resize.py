"""Resizing (``interpolate`` / ONNX ``Resize``): nearest and (bi)linear, separable per axis.

Along one axis an output index o reads the input at a source coordinate x_in(o) (ONNX
``coordinate_transformation_mode``, ``resize_coordinates``), then

- nearest: y[o] = x[i(o)], i(o) = the rounded coordinate (ONNX ``nearest_mode``) clamped to
  [0, in - 1];
- linear:  y[o] = (1 - l) x[i0] + l x[i1] with c = x_in(o) clamped to [0, in - 1], i0 = floor(c),
  i1 = min(i0 + 1, in - 1), l = c - i0 (ONNX's linear mode, PyTorch's ``linear``/``bilinear``).

Both are a linear map y = M x along the axis, M[o, i] = sum of the tap weights that read i;
resizing several axes applies one map per axis, and the gradient is dL/dx = M^T dL/dy per axis,
in reverse order (a scatter-add of each tap's share, never the dense M).

PyTorch's ``interpolate`` is the special case: ``nearest`` = asymmetric coordinates o / scale
with floor (i = floor(o in / out)); ``bilinear``/``linear`` = half-pixel coordinates
(o + 1/2) / scale - 1/2, or ``align_corners`` o (in - 1) / (out - 1); scale = out / in, or the
``scale_factor`` when one is given. Coordinates are computed in float64 (exact rationals where
the scale is out / in) whatever the dtype; on float32 input PyTorch's legacy nearest computes
o * float32(in / out) in float32, which for a few size pairs (first at 2 -> 82) picks a
neighbouring row.

Sources: the ONNX ``Resize`` operator specification (opset 13+); PyTorch's
``torch.nn.functional.interpolate``. Tests: ``tests/minnet/ops/test_resize.py``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from minnet.tensor import Function, Tensor, as_tensor

COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
MODES = ("nearest", "linear")


def resize_coordinates(out_size: int, in_size: int, mode: str = "half_pixel",
                       scale: float | None = None) -> np.ndarray:
    """Source coordinate x_in of every output index o < out_size (ONNX Resize), float64.

    With scale s = out_size / in_size unless given:

    - ``half_pixel``:          x_in = (o + 1/2) / s - 1/2
    - ``pytorch_half_pixel``:  the same if out_size > 1, else 0
    - ``asymmetric``:          x_in = o / s
    - ``align_corners``:       x_in = o (in_size - 1) / (out_size - 1), 0 if out_size = 1

    Without a scale the coordinates are formed as one exact integer ratio, so an integer
    coordinate is never rounded below itself.

    Examples
    --------
    >>> resize_coordinates(4, 2).tolist()
    [-0.25, 0.25, 0.75, 1.25]
    """
    if mode not in COORDINATE_MODES:
        raise ValueError(f"coordinate_transformation_mode must be one of {COORDINATE_MODES}, got {mode!r}")
    o = np.arange(out_size, dtype=np.int64)
    if mode == "align_corners":
        return o * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros(out_size)
    if mode == "pytorch_half_pixel" and out_size == 1:
        return np.zeros(1)
    if mode == "asymmetric":
        return o / scale if scale is not None else o * in_size / out_size
    if scale is not None:
        return (o + 0.5) / scale - 0.5
    return ((2 * o + 1) * in_size - out_size) / (2 * out_size)


def nearest_index(coordinates: np.ndarray, in_size: int, nearest_mode: str = "round_prefer_floor") -> np.ndarray:
    """Input index of each coordinate (ONNX ``nearest_mode``), clamped to [0, in_size - 1]:
    round_prefer_floor = ceil(c - 1/2), round_prefer_ceil = floor(c + 1/2), floor, ceil."""
    rounding = {"round_prefer_floor": lambda c: np.ceil(c - 0.5),
                "round_prefer_ceil": lambda c: np.floor(c + 0.5),
                "floor": np.floor, "ceil": np.ceil}
    if nearest_mode not in rounding:
        raise ValueError(f"nearest_mode must be one of {NEAREST_MODES}, got {nearest_mode!r}")
    return np.clip(rounding[nearest_mode](coordinates), 0, in_size - 1).astype(np.int64)


def linear_taps(coordinates: np.ndarray, in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(index, weight), each (out, 2): c clamped to [0, in - 1], taps floor(c) and
    min(floor(c) + 1, in - 1) with weights 1 - l and l, l = c - floor(c)."""
    c = np.clip(coordinates, 0, in_size - 1)
    i0 = np.floor(c).astype(np.int64)
    lam = c - i0
    return np.stack([i0, np.minimum(i0 + 1, in_size - 1)], 1), np.stack([1 - lam, lam], 1)


def resize_taps(in_size: int, out_size: int, mode: str = "nearest",
                coordinate_transformation_mode: str = "half_pixel",
                nearest_mode: str = "round_prefer_floor",
                scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(index, weight) of shape (out_size, taps): y[o] = sum_t weight[o, t] x[index[o, t]]."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    coordinates = resize_coordinates(out_size, in_size, coordinate_transformation_mode, scale)
    if mode == "nearest":
        return nearest_index(coordinates, in_size, nearest_mode)[:, None], np.ones((out_size, 1))
    return linear_taps(coordinates, in_size)


def _is_identity(index: np.ndarray, weight: np.ndarray, in_size: int) -> bool:
    return (index.shape[0] == in_size and np.array_equal(index[:, 0], np.arange(in_size))
            and np.all(weight[:, 0] == 1) and np.all(weight[:, 1:] == 0))


class Resize(Function):
    """Separable resize of the last len(size) axes (see the module docstring):
    y = M_k ... M_1 x, one map per axis;  dL/dx = M_1^T ... M_k^T dL/dy."""
    @staticmethod
    def forward(ctx, x, *, size, mode="nearest", coordinate_transformation_mode="half_pixel",
                nearest_mode="round_prefer_floor", scales=None):
        first = x.ndim - len(size)
        ctx.steps = []
        y = x
        for k, out in enumerate(size):
            axis, in_size = first + k, x.shape[first + k]
            index, weight = resize_taps(in_size, out, mode, coordinate_transformation_mode,
                                        nearest_mode, None if scales is None else scales[k])
            if _is_identity(index, weight, in_size):
                continue
            moved = np.moveaxis(y, axis, -1)
            w = weight.astype(x.dtype)
            resized = sum(moved[..., index[:, t]] * w[:, t] for t in range(index.shape[1]))
            y = np.moveaxis(resized, -1, axis)
            ctx.steps.append((axis, in_size, index, weight))
        return np.ascontiguousarray(y) if y is not x else y.copy()

    @staticmethod
    def backward(ctx, g):
        for axis, in_size, index, weight in reversed(ctx.steps):
            moved = np.moveaxis(g, axis, -1)
            gx = np.zeros(moved.shape[:-1] + (in_size,), dtype=g.dtype)
            for t in range(index.shape[1]):  # M^T: scatter-add each tap's share
                np.add.at(gx, (Ellipsis, index[:, t]), moved * weight[:, t].astype(g.dtype))
            g = np.moveaxis(gx, -1, axis)
        return np.ascontiguousarray(g)


def _positive_sizes(name: str, value: Any, count: int) -> tuple[int, ...]:
    sizes = (value,) * count if isinstance(value, (int, np.integer)) else value
    if (not isinstance(sizes, (tuple, list)) or len(sizes) != count
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in sizes)):
        raise TypeError(f"{name} must be an int or a sequence of {count} ints, got {value!r}")
    if min(sizes) < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return tuple(int(v) for v in sizes)


def _positive_scales(name: str, value: Any, count: int) -> tuple[float, ...]:
    scales = (value,) * count if isinstance(value, (int, float, np.number)) else value
    if (not isinstance(scales, (tuple, list)) or len(scales) != count
            or not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in scales)):
        raise TypeError(f"{name} must be a number or a sequence of {count} numbers, got {value!r}")
    if not all(np.isfinite(v) and v > 0 for v in scales):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return tuple(float(v) for v in scales)


def _floating(x: Tensor) -> None:
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")


def resize(x: Any, size: int | Sequence[int], mode: str = "nearest",
           coordinate_transformation_mode: str = "half_pixel",
           nearest_mode: str = "round_prefer_floor",
           scales: float | Sequence[float] | None = None) -> Tensor:
    """Resize the last len(size) axes of x to ``size`` with ONNX Resize's semantics and defaults.

    ``mode`` is ``"nearest"`` or ``"linear"``; ``scales`` (one per resized axis) replaces
    out / in in the coordinate formulas, as ONNX's ``scales`` input does. Formulas:
    ``resize_coordinates``, ``nearest_index``, ``linear_taps``. Tested against onnxruntime in
    ``tests/minnet/ops/test_resize.py``.

    Examples
    --------
    >>> import numpy as np
    >>> resize(np.array([0.0, 1.0]), 4, mode="linear").data.tolist()
    [0.0, 0.25, 0.75, 1.0]
    """
    x = as_tensor(x)
    _floating(x)
    count = 1 if isinstance(size, (int, np.integer)) else len(size) if isinstance(size, (tuple, list)) else 0
    if not 1 <= count <= x.ndim:
        raise ValueError(f"size {size!r} must give 1 to {x.ndim} sizes for x of shape {x.shape}")
    size = _positive_sizes("size", size, count)
    if min(x.shape[x.ndim - count:]) < 1:
        raise ValueError(f"cannot resize empty axes of x of shape {x.shape}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if coordinate_transformation_mode not in COORDINATE_MODES:
        raise ValueError(f"coordinate_transformation_mode must be one of {COORDINATE_MODES}, "
                         f"got {coordinate_transformation_mode!r}")
    if nearest_mode not in NEAREST_MODES:
        raise ValueError(f"nearest_mode must be one of {NEAREST_MODES}, got {nearest_mode!r}")
    if scales is not None:
        scales = _positive_scales("scales", scales, count)
    return Resize.apply(x, size=size, mode=mode,
                        coordinate_transformation_mode=coordinate_transformation_mode,
                        nearest_mode=nearest_mode, scales=scales)


_TORCH_MODES = {"nearest": (1, 2, 3), "linear": (1,), "bilinear": (2,)}


def interpolate(x: Any, size: int | Sequence[int] | None = None,
                scale_factor: float | Sequence[float] | None = None, mode: str = "nearest",
                align_corners: bool | None = None) -> Tensor:
    """Up- or down-sample (N, C, *spatial), as ``torch.nn.functional.interpolate``.

    Exactly one of ``size`` and ``scale_factor``; with a scale factor the output size is
    floor(in · scale_factor) and the coordinates use the factor itself. ``nearest``:
    i = floor(o · in / out); ``linear`` (3-D) and ``bilinear`` (4-D): half-pixel centres,
    x_in = (o + 1/2) in / out - 1/2 clamped at 0, or with ``align_corners=True``
    x_in = o (in - 1) / (out - 1). Gradients: ``Resize``. Tested against PyTorch and finite
    differences in ``tests/minnet/ops/test_resize.py``.

    Examples
    --------
    >>> import numpy as np
    >>> interpolate(np.array([[[[1.0, 2.0]]]]), scale_factor=2).data.tolist()
    [[[[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]]]]
    """
    x = as_tensor(x)
    _floating(x)
    if mode not in _TORCH_MODES:
        raise ValueError(f"mode must be one of {tuple(_TORCH_MODES)}, got {mode!r}")
    spatial = x.ndim - 2
    if spatial not in _TORCH_MODES[mode]:
        raise ValueError(f"mode {mode!r} expects {', '.join(str(d + 2) for d in _TORCH_MODES[mode])}-D "
                         f"input (N, C, ...), got shape {x.shape}")
    if min(x.shape[2:]) < 1:
        raise ValueError(f"x must have non-empty spatial axes, got shape {x.shape}")
    if mode == "nearest" and align_corners is not None:
        raise ValueError("align_corners can only be set with mode 'linear' or 'bilinear'")
    if align_corners is not None and not isinstance(align_corners, bool):
        raise TypeError(f"align_corners must be a bool or None, got {align_corners!r}")
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size and scale_factor")
    scales = None
    if size is not None:
        size = _positive_sizes("size", size, spatial)
    else:
        scales = _positive_scales("scale_factor", scale_factor, spatial)
        size = tuple(int(np.floor(n * s)) for n, s in zip(x.shape[2:], scales))
        if min(size) < 1:
            raise ValueError(f"scale_factor {scale_factor!r} gives the empty output size {size} "
                             f"for x of shape {x.shape}")
    if mode == "nearest":
        options = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    else:
        options = dict(mode="linear", nearest_mode="round_prefer_floor",
                       coordinate_transformation_mode="align_corners" if align_corners else "half_pixel")
    return Resize.apply(x, size=size, scales=scales, **options)

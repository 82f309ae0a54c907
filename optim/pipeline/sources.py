"""Where a run's model and data come from, each checked before anything runs.

``[run] model``: a built-in name (``MODEL_BUILDERS``), a path to an ONNX file (imported by
``optim.graph.from_onnx`` and rebuilt as a ``minnet`` Sequential when it is a chain of layers:
``sequential_from_graph``), or ``"package.module:function"`` returning a ``minnet`` Module.
``[run] dataset``: ``mnist-5k`` / ``mnist-full``, or a path to an ``.npz`` holding ``x_train``,
``y_train``, ``x_test``, ``y_test`` (images NCHW, NHW or flat, float or uint8 — uint8 is
scaled to [0, 1] — labels integers from 0), read with ``allow_pickle=False`` and validated
before use. ``model_problem`` / ``dataset_problem`` / ``checkpoint_problem`` return the reason a
value is refused (``None`` if it is fine) for the configuration checks.
Tests: ``tests/optim/pipeline/test_pipeline_sources.py``.
"""
from __future__ import annotations

import importlib
import os
import re
import zipfile
from typing import Callable

import numpy as np

import minnet
from minnet import models, nn
from minnet.data import load_mnist

__all__ = ["MODEL_BUILDERS", "MNIST_SUBSETS", "model_problem", "dataset_problem",
           "checkpoint_problem", "build_model", "is_imported", "sequential_from_graph",
           "load_dataset", "load_run_data"]

MODEL_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "lenet5": models.lenet5,
    "lenet5-bn": lambda: models.lenet5(batch_norm=True),
    "lenet-300-100": models.lenet_300_100,
}
MNIST_SUBSETS = {"mnist-5k": "5k", "mnist-full": "full"}  # dataset -> load_mnist subset
_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def is_imported(model: str) -> bool:
    """Whether ``[run] model`` names an ONNX file (its weights are the baseline's)."""
    return model.lower().endswith(".onnx")


def model_problem(model: str) -> str | None:
    """Why ``[run] model`` cannot be used, or None."""
    if model in MODEL_BUILDERS:
        return None
    if is_imported(model):
        return None if os.path.isfile(model) else f"no such ONNX file: {model!r}"
    if _FUNCTION.match(model):
        try:
            _function(model)
        except (ImportError, AttributeError) as err:
            return f"cannot import {model!r}: {err}"
        return None
    return (f"must be one of {', '.join(MODEL_BUILDERS)}, a path to an .onnx file or "
            f"'package.module:function', got {model!r}")


def _function(spec: str) -> Callable[[], nn.Module]:
    module, name = spec.split(":")
    function = getattr(importlib.import_module(module), name)
    if not callable(function):
        raise AttributeError(f"{spec!r} is not callable")
    return function


def build_model(model: str, seed: int) -> nn.Module:
    """The run's model, freshly initialised under ``seed`` (an ONNX model with its weights)."""
    minnet.manual_seed(seed)
    if model in MODEL_BUILDERS:
        return MODEL_BUILDERS[model]()
    if is_imported(model):
        from optim.graph import from_onnx
        return sequential_from_graph(from_onnx(model))
    built = _function(model)()
    if not isinstance(built, nn.Module):
        raise TypeError(f"{model!r} returned {type(built).__name__}, not a minnet Module")
    return built


def _layer(node, constants) -> list[nn.Module]:
    """The minnet modules computing one node of a chain (weights copied)."""
    op, a = node.op, node.attrs
    if op in ("Conv2d", "Linear"):
        w = np.array(constants[node.inputs[1]], np.float32)
        b = constants.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        if op == "Conv2d":
            layer = nn.Conv2d(w.shape[1] * a["groups"], w.shape[0], tuple(w.shape[2:]),
                              stride=a["stride"], padding=a["padding"], dilation=a["dilation"],
                              groups=a["groups"], bias=b is not None)
        else:
            layer = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        layer.weight.data = w
        if b is not None:
            layer.bias.data = np.array(b, np.float32)
        return [layer]
    if op == "ReLU":
        return [nn.ReLU()]
    if op == "MaxPool2d":
        return [nn.MaxPool2d(a["kernel_size"], a["stride"], a["padding"],
                             ceil_mode=a.get("ceil_mode", False))]
    if op == "Reshape" and len(a["shape"]) == 2:
        return [nn.Flatten()]
    if op in ("Identity", "Dropout"):
        return []
    raise ValueError(f"node {node.output!r}: {op} has no minnet layer here (a chain of Conv2d, "
                     f"Linear, ReLU, MaxPool2d and flattening Reshape is supported)")


def sequential_from_graph(graph) -> nn.Sequential:
    """A ``minnet`` Sequential computing ``graph`` when it is a chain (each node consumes the
    previous one's output) of Conv2d / Linear / ReLU / MaxPool2d / flattening Reshape; the
    weights are the graph's constants. Raises ValueError naming the first node that is not."""
    (current,) = graph.inputs
    layers: list[nn.Module] = []
    for node in graph.nodes:
        data = [i for i in node.inputs if i and i not in graph.constants]
        if data != [current]:
            raise ValueError(f"node {node.output!r} ({node.op}) does not continue a chain of "
                             f"layers: it reads {data}")
        layers += _layer(node, graph.constants)
        current = node.output
    return nn.Sequential(*layers)


def dataset_problem(dataset: str) -> str | None:
    """Why ``[run] dataset`` cannot be used, or None (an .npz is read and validated)."""
    if dataset in MNIST_SUBSETS:
        return None
    if not dataset.lower().endswith(".npz"):
        return f"must be one of {', '.join(MNIST_SUBSETS)} or a path to an .npz, got {dataset!r}"
    try:
        load_dataset(dataset)
    except (OSError, ValueError) as err:
        return str(err)
    return None


def _images(x: np.ndarray, name: str, path: str) -> np.ndarray:
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif x.dtype.kind != "f":
        raise ValueError(f"{path}: {name} must be float or uint8 images, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim not in (2, 4) or len(x) == 0:
        raise ValueError(f"{path}: {name} must be (N, C, H, W), (N, H, W) or (N, F) with N > 0, "
                         f"got shape {x.shape}")
    x = np.ascontiguousarray(x, np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{path}: {name} holds NaN or infinite values")
    return x


def load_dataset(path: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``((x_train, y_train), (x_test, y_test))`` from an ``.npz`` (module docstring), checked:
    the four arrays present, no pickled objects, images as above with equal per-image shapes,
    integer labels in [0, K) with one label per image."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz ({err})") from None
    with archive:
        missing = [k for k in NPZ_KEYS if k not in archive.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing} (needs {', '.join(NPZ_KEYS)})")
        arrays = {}
        for k in NPZ_KEYS:
            try:
                arrays[k] = archive[k]
            except ValueError as err:  # pickled objects, refused by allow_pickle=False
                raise ValueError(f"{path}: {k} is not a plain array ({err})") from None
    x_train = _images(arrays["x_train"], "x_train", path)
    x_test = _images(arrays["x_test"], "x_test", path)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{path}: train images {x_train.shape[1:]} and test images "
                         f"{x_test.shape[1:]} differ in shape")
    labels = []
    for name, x in (("y_train", x_train), ("y_test", x_test)):
        y = arrays[name]
        if y.dtype.kind not in "iu" or y.shape != (len(x),) or (len(y) and y.min() < 0):
            raise ValueError(f"{path}: {name} must be {len(x)} integer labels >= 0, got "
                             f"{y.dtype} of shape {y.shape}")
        labels.append(y.astype(np.int64))
    return (x_train, labels[0]), (x_test, labels[1])


def load_run_data(run: dict) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The run's full ``(train, test)`` arrays, before any ``limit``."""
    if run["dataset"] in MNIST_SUBSETS:
        subset = MNIST_SUBSETS[run["dataset"]]
        return (load_mnist("train", subset, run.get("data_root")),
                load_mnist("test", subset, run.get("data_root")))
    return load_dataset(run["dataset"])


def checkpoint_problem(path: str) -> str | None:
    """Why ``baseline.checkpoint`` cannot be a state_dict or packed model file (both npz, so
    zip archives), or None; an ONNX or pickle file is named as such."""
    if not os.path.isfile(path):
        return f"no such file: {path!r}"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if all(name.endswith(".npy") for name in archive.namelist()):
                return None
    hint = " (an ONNX model goes in [run] model)" if path.lower().endswith(".onnx") else ""
    return (f"{path!r} is not an npz (a minnet.save state_dict or a packed model file){hint}")

"""The pipeline's stages: each maps the previous stage's model to a new one.

A stage function is ``<type>_stage(model, options, ctx) -> Outcome``: ``model`` is the
previous stage's model (``None`` for the baseline), ``options`` the stage's validated table and
``ctx`` the ``Context`` (data, the baseline as the
teacher, the stage's work directory for resumable checkpoints). Every training loop writes a
checkpoint to the work directory after each epoch (or pruning round) and resumes from it, so a
run killed mid-stage continues where it stopped and ends with the same weights (QAT included:
its fake quantizers keep their qparams and observer ranges in the ``state_dict``).

Pruned weights stay zero in every later stage: the pruning masks survive ``shrink`` (re-applied
to the shrunk layers), distillation trains through them, and quantization-aware training and
weight sharing pin the zero entries (Han et al. 2015 retrain only the kept connections;
Han et al. 2016 share weights among the surviving ones).

Each stage type declares its keys beside its function (``@stage(key=Option(...), ...)``, the
registry ``STAGE_OPTIONS``); ``optim.pipeline.config`` validates tables against them and a
test holds ``default_pipeline.toml`` to them.
Tests: ``tests/optim/pipeline/test_pipeline_stages.py``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import minnet
from minnet import models, nn, optimizers
from minnet.io import load, save
from minnet.train import fit
from optim import metrics
from optim.auto import compress_to_target, validation_split
from optim.distill import Distiller
from optim.graph import to_onnx
from optim.lowrank import factorize
from optim.nas import (NSGA2, MnistObjectives, RandomSearch, RegularizedEvolution, build_cnn,
                       build_mlp, cnn_cost, cnn_space, describe, macs_at_most, mlp_cost,
                       mlp_space, search)
from optim.prune import (apply_mask, effective_weight, prunable, prune_channels, prune_model,
                         remove_all, restore_pruning, shrink, target_sparsity)
from optim.prune.parametrize import named_pruned
from optim.quant import IntegerModel, calibrate, convert, prepare, prepare_qat, share_weights

from optim.distill.soft import T_MAX as KD_T_MAX
from optim.distill.soft import T_MIN as KD_T_MIN
from optim.quant.qconfig import OBSERVERS
from optim.quant.ranges import MAX_BITS, MIN_BITS

from .executor import candidate_executor, executor_problem
from .options import ConfigError, Option
from .sources import MNIST_SUBSETS, build_model, is_imported
from .engines import deployed_graph, float_view, optimized_graph
from .store import load_model, packed_bytes

__all__ = ["Context", "Outcome", "STAGE_FUNCTIONS", "STAGE_OPTIONS", "WEIGHT_CRITERIA",
           "CHANNEL_CRITERIA", "stage"]



@dataclass
class Context:
    """What every stage may use: the run options, the data, the baseline (teacher), the
    stage's work directory and whether to show progress bars. With the run option
    ``validation_fraction``, ``train`` is cut (``optim.auto.validation_split``) into the images
    every stage trains on (``train``) and the held-out ``validation`` images."""
    run: dict
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    work: Path
    baseline: nn.Module | None = None
    progress: bool | None = None
    validation: tuple[np.ndarray, np.ndarray] | None = None

    def __post_init__(self):
        fraction = self.run.get("validation_fraction")
        if fraction is not None and self.validation is None:
            x, y = self.train
            fit_index, val_index = validation_split(len(y), fraction, self.run["seed"])
            self.train, self.validation = (x[fit_index], y[fit_index]), (x[val_index], y[val_index])


@dataclass
class Outcome:
    """A stage's result: its model, the engine that measures it and JSON-ready details."""
    model: nn.Module
    engine: str = "minnet"
    details: dict = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # extra artifacts, by file name
    artefact: str | None = None  # the file of ``files`` that is deployed: sized and measured


def _train(model: nn.Module, ctx: Context, epochs: int, lr: float, checkpoint: str | None
           ) -> dict:
    """Adam(``lr``) with a cosine schedule over ``epochs`` on the training data, checkpointed
    to (and resumed from) ``ctx.work / checkpoint``; returns fit's history."""
    optimizer = optimizers.Adam(model.parameters(), lr=lr)
    scheduler = optimizers.CosineAnnealingLR(optimizer, T_max=epochs)
    path = None if checkpoint is None else ctx.work / checkpoint
    return fit(model, optimizer, ctx.train, epochs, batch_size=ctx.run["batch_size"],
               scheduler=scheduler, seed=ctx.run["seed"], checkpoint_path=path,
               resume=path is not None, progress=ctx.progress)


def _load_checkpoint(path: str, seed: int, model_name: str) -> nn.Module:
    """A model from ``path``: a packed model file, or a state_dict npz of the run's model.
    ConfigError (key ``checkpoint``) if it is neither."""
    try:
        arrays = load(path)
        if set(arrays) == {"spec", "payload"}:
            return load_model(path)[0]
        model = build_model(model_name, seed)
        restore_pruning(model, arrays)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError("checkpoint", f"cannot load {path!r} as a packed model or a "
                                        f"state_dict of {model_name}: {err}") from None
    return model


# ---- stages and their options ------------------------------------------------------------

STAGE_FUNCTIONS: dict[str, Callable[[nn.Module | None, dict, Context], Outcome]] = {}
STAGE_OPTIONS: dict[str, dict[str, Option]] = {}

WEIGHT_CRITERIA = ("magnitude", "random", "taylor", "snip", "obd_fisher", "obd_hutchinson",
                   "influence")
CHANNEL_CRITERIA = ("l1", "l2", "fpgm", "random", "taylor", "bn_scale", "activation_variance",
                    "activation_entropy")
_LR_HELP = "Adam learning rate (annealed to 0 by a cosine over the stage's epochs)"


def stage(**options: Option):
    """Declare the decorated ``<type>_stage`` function as stage type ``<type>`` taking the keys
    ``options`` (besides ``type``, ``name`` and ``enabled``), in ``STAGE_FUNCTIONS`` and
    ``STAGE_OPTIONS``."""
    def register(function):
        kind = function.__name__.removesuffix("_stage")
        STAGE_FUNCTIONS[kind], STAGE_OPTIONS[kind] = function, options
        return function
    return register


def _epochs(default: int, help: str = "training epochs", low: int = 1) -> Option:
    return Option("int", default, help, low=low)


def _lr(default: float, help: str = _LR_HELP) -> Option:
    return Option("float", default, help, low=0, open="low")


def _rising(values: list) -> str | None:
    if not values:
        return "must not be empty"
    if any(b <= a for a, b in zip(values, values[1:])):
        return f"amounts must increase from round to round, got {values!r}"
    return None


def _distinct(values: list) -> str | None:
    return None if values and len(set(values)) == len(values) else \
        f"must be distinct and not empty, got {values!r}"


def _distinct_integers(values: list) -> str | None:
    if any(v != int(v) for v in values):
        return f"must be integers, got {values!r}"
    return _distinct(values)


@stage(
    epochs=_epochs(20),
    lr=_lr(1e-3),
    checkpoint=Option("str", None, "load this state_dict npz (minnet.save) or packed model "
                      "file instead of training"),
)
def baseline_stage(model, options: dict, ctx: Context) -> Outcome:
    """Train the run's model from scratch (or load ``checkpoint``; an ONNX model arrives
    trained and is taken as it is): the float reference."""
    if "checkpoint" in options:
        return Outcome(_load_checkpoint(options["checkpoint"], ctx.run["seed"], ctx.run["model"]),
                       details={"loaded": options["checkpoint"]})
    model = build_model(ctx.run["model"], ctx.run["seed"])
    if is_imported(ctx.run["model"]):
        return Outcome(model, details={"imported": ctx.run["model"]})
    history = _train(model, ctx, options["epochs"], options["lr"], "fit.npz")
    return Outcome(model, details={"history": history})


def _round_checkpoint(model: nn.Module, ctx: Context, done: int) -> None:
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["round"] = np.asarray(done, dtype=np.int64)
    save(state, ctx.work / "rounds.npz")


@stage(
    method=Option("str", "weights", "'weights': unstructured, 'channels': whole "
                  "neurons/filters (structured)", ("weights", "channels")),
    criterion=Option("str", None, f"saliency: for weights one of {', '.join(WEIGHT_CRITERIA)} "
                     f"(default magnitude); for channels one of {', '.join(CHANNEL_CRITERIA)} "
                     "(default l1)"),
    scope=Option("str", "global", "weights: one threshold over all layers or the same sparsity "
                 "per layer", ("global", "layer")),
    amounts=Option("floats", [0.5, 0.75, 0.875, 0.92], "fraction pruned after each round (of "
                   "the weights, or of each layer's units), increasing", low=0, high=1,
                   open="both", check=_rising),
    layers=Option("strs", None, "layer names to prune (default: every Linear/Conv2d; for "
                  "channels all but the output layer)"),
    fine_tune_epochs=_epochs(3, "training epochs after each round", low=0),
    lr=_lr(5e-4),
)
def prune_stage(model, options: dict, ctx: Context) -> Outcome:
    """Iterative pruning, each round pruning to the next total amount and fine-tuning
    (Han et al. 2015, section 3.3): ``method = "weights"`` masks single weights
    (``optim.prune.prune_model``, global or per-layer ranking), ``"channels"`` whole
    neurons/filters of each layer (``optim.prune.prune_channels``; ``shrink`` then removes
    them). Each round and each fine-tuning epoch is checkpointed; a resumed stage redoes the
    (deterministic) pruning of the interrupted round and continues its fine-tuning."""
    model = copy.deepcopy(model)
    amounts, seed = options["amounts"], ctx.run["seed"]
    start, path = 0, ctx.work / "rounds.npz"
    if path.exists():
        state = load(path)
        restore_pruning(model, {k[6:]: v for k, v in state.items() if k.startswith("model.")})
        start = int(state["round"])
    modules = dict(model.named_modules())
    names = options.get("layers")
    for name in names or []:
        if not isinstance(modules.get(name), (nn.Linear, nn.Conv2d)):
            raise ValueError(f"prune.layers: {name!r} is not a Linear/Conv2d layer of the model "
                             f"(layers: {[n for n, _, _ in prunable(model)]})")
    targets = None if names is None else [(n, modules[n], "weight") for n in names]
    data = (ctx.train[0][:512], ctx.train[1][:512])
    for k in range(start, len(amounts)):
        rng = np.random.default_rng([seed, k])
        if options["method"] == "weights":
            prune_model(model, amounts[k], options["criterion"], scope=options["scope"],
                        targets=targets, data=data, rng=rng)
        else:
            prune_channels(model, amounts[k], options["criterion"], layers=names, data=data,
                           rng=rng)
        if options["fine_tune_epochs"]:
            _train(model, ctx, options["fine_tune_epochs"], options["lr"], f"round{k}.npz")
        _round_checkpoint(model, ctx, k + 1)
    targets = list(named_pruned(model))
    sparsity = target_sparsity(targets) if targets else 0.0
    return Outcome(model, details={"sparsity": sparsity, "rounds": len(amounts)})


@stage()
def shrink_stage(model, options: dict, ctx: Context) -> Outcome:
    """Remove the neurons/filters whose weights are all zero (``optim.prune.shrink``), giving
    a smaller dense model; layers that were pruned keep their remaining zeros as masks."""
    pruned = {name for name, _, _ in named_pruned(model)}
    small = shrink(model)
    for name, module in small.named_modules():
        if name in pruned:
            apply_mask(module, "weight", module.weight.data != 0)
    shapes = {name: list(m.weight.shape) for name, m in small.named_modules()
              if isinstance(m, (nn.Linear, nn.Conv2d))}
    return Outcome(small, details={"weight_shapes": shapes})


@stage(
    layers=Option("strs", None, "Linear/Conv2d layer names to factorize (default: every Linear "
                  "but the output layer)"),
    energy=Option("float", 0.9, "keep the smallest rank holding this fraction of the singular "
                  "energy", low=0, high=1, open="low"),
    scheme=Option("str", "channel", "factorization of convolutions", ("channel", "spatial")),
    data_aware=Option("bool", True, "factorize Linear layers on their calibration inputs "
                      "(whitened SVD)"),
    fine_tune_epochs=_epochs(3, low=0),
    lr=_lr(5e-4),
)
def lowrank_stage(model, options: dict, ctx: Context) -> Outcome:
    """Replace layers by two thinner ones from a truncated (or data-aware whitened) SVD,
    keeping ``energy`` of the singular energy (``optim.lowrank.factorize``), then fine-tune."""
    model = remove_all(copy.deepcopy(model))
    names = options.get("layers")
    if names is None:
        linears = [n for n, m, _ in prunable(model) if isinstance(m, nn.Linear)]
        names = linears[:-1]
    calibration = ctx.train[0][:512] if options["data_aware"] else None
    done = factorize(model, names, energy=options["energy"], scheme=options["scheme"],
                     calibration=calibration)
    if options["fine_tune_epochs"]:
        _train(model, ctx, options["fine_tune_epochs"], options["lr"], "fit.npz")
    return Outcome(model, details={"factorized": [f._asdict() for f in done]})


_NAS = {"cnn": (cnn_space, build_cnn, cnn_cost), "mlp": (mlp_space, build_mlp, mlp_cost)}


@stage(
    space=Option("str", "cnn", "search space of optim.nas", ("cnn", "mlp")),
    strategy=Option("str", "random", "search strategy", ("random", "evolution", "nsga2")),
    trials=Option("int", 12, "architectures evaluated", low=1),
    trial_epochs=_epochs(2, "training epochs per trial"),
    macs_budget=Option("float", 1.0, "largest MACs per image, as a fraction of the current "
                       "model's", low=0, open="low"),
    tolerance=Option("float", 0.01, "pick the fewest parameters among architectures within "
                     "this validation error of the best", low=0, high=1),
    epochs=_epochs(10, "training epochs of the picked architecture"),
    lr=_lr(1e-3),
    executor=Option("str", "processes", "where trials train: serial, processes (a local pool) "
                    "or a Dask scheduler address tcp://host:port", check=executor_problem),
)
def nas_stage(model, options: dict, ctx: Context) -> Outcome:
    """Pick a new (student) architecture by architecture search over ``space`` under a MACs
    budget relative to the current model: trials are trained for ``trial_epochs`` and
    validated on a split of the run's training images (``optim.nas.MnistObjectives``); the
    architecture with the fewest parameters among those within ``tolerance`` of the lowest
    validation error is trained for ``epochs``. The search history is resumable."""
    make_space, build, cost = _NAS[options["space"]]
    budget = options["macs_budget"] * metrics.macs(float_view(model), (1,) + ctx.test[0].shape[1:])
    space = make_space().with_constraints(macs_at_most(budget, cost))
    seed = ctx.run["seed"]
    names = ("error", "params") if options["strategy"] == "nsga2" else ("error",)
    objectives = MnistObjectives(build, names, options["trial_epochs"], lr=options["lr"],
                                 batch_size=ctx.run["batch_size"], limit=ctx.run.get("limit"),
                                 seed=seed, subset=MNIST_SUBSETS[ctx.run["dataset"]],
                                 root=ctx.run.get("data_root"))
    population = max(2, min(8, options["trials"]))
    strategy = {"random": lambda: RandomSearch(space, len(names), seed=seed),
                "evolution": lambda: RegularizedEvolution(space, population,
                                                          min(3, population), seed=seed),
                "nsga2": lambda: NSGA2(space, population, seed=seed)}[options["strategy"]]()
    with candidate_executor(options["executor"]) as executor:
        history = search(space, strategy, objectives, options["trials"], executor=executor,
                         history_path=ctx.work / "nas.json", resume=True, progress=ctx.progress)
    trials = history.ok()
    if not trials:
        raise RuntimeError("nas: no trial succeeded; see the history in the work directory")
    best = min(t.objectives[0] for t in trials)
    eligible = [t for t in trials if t.objectives[0] <= best + options["tolerance"]]
    chosen = min(eligible, key=lambda t: (cost(t.arch).params, t.objectives[0], t.id))
    minnet.manual_seed(seed)
    student = build(chosen.arch)
    _train(student, ctx, options["epochs"], options["lr"], "fit.npz")
    return Outcome(student, details={
        "architecture": chosen.arch, "description": describe(chosen.arch),
        "validation_error": chosen.objectives[0], "macs_budget": budget,
        "trials": len(history), "ok_trials": len(trials)})


@stage(
    epochs=_epochs(10),
    lr=_lr(5e-4),
    T=Option("float", 4.0, "softmax temperature of the soft targets", low=KD_T_MIN,
             high=KD_T_MAX),
    alpha=Option("float", 0.9, "weight of the soft loss (1 - alpha: cross entropy)", low=0,
                 high=1),
)
def distill_stage(model, options: dict, ctx: Context) -> Outcome:
    """Train the current model as a student of the baseline with Hinton et al. 2015's loss
    :math:`\\alpha T^2 \\mathrm{KL}(p_t^T \\| p_s^T) + (1 - \\alpha) \\mathrm{CE}` through
    ``optim.distill.Distiller`` (teacher outputs cached; pruning masks respected)."""
    student = copy.deepcopy(model)
    distiller = Distiller(student, ctx.baseline, T=options["T"], alpha=options["alpha"],
                          cache_teacher=True)
    optimizer = optimizers.Adam(distiller.parameters(), lr=options["lr"])
    scheduler = optimizers.CosineAnnealingLR(optimizer, T_max=options["epochs"])
    history = distiller.fit(optimizer, ctx.train, options["epochs"],
                            batch_size=ctx.run["batch_size"], scheduler=scheduler,
                            seed=ctx.run["seed"], checkpoint_path=ctx.work / "distill.npz",
                            resume=True, progress=ctx.progress)
    return Outcome(student, details={"history": history})


def _with_zero_masks(model: nn.Module) -> nn.Module:
    """``model`` with a pruning mask on every Linear/Conv2d weight that has zeros (ANDed with
    any mask it has), so that training keeps them zero; returns ``model``."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            kept = effective_weight(m, "weight") != 0
            if not kept.all():
                apply_mask(m, "weight", kept)
    return model


def _quant_engine(model, requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        IntegerModel(model)
    except (TypeError, ValueError):
        return "minnet"
    return "integer"


@stage(
    method=Option("str", "ptq", "post-training quantization or quantization-aware training",
                  ("ptq", "qat")),
    weight_bits=Option("int", 8, "bits per weight code", low=MIN_BITS, high=MAX_BITS),
    activation_bits=Option("int", 8, "bits per activation code", low=MIN_BITS, high=MAX_BITS),
    weight_only=Option("bool", False, "keep activations in float"),
    weight_observer=Option("str", "minmax", "weight range estimator", tuple(sorted(OBSERVERS))),
    activation_observer=Option("str", "minmax", "activation range estimator",
                               tuple(sorted(OBSERVERS))),
    calibration_images=Option("int", 1024, "training images seen by the observers", low=1),
    epochs=_epochs(3, "QAT training epochs"),
    lr=_lr(1e-4, _LR_HELP + " (QAT)"),
    weight_method=Option("str", "ste", "QAT weight quantizer: the current range per channel "
                         "(ste) or a learned step (lsq; its initial step averages |w| over "
                         "pruned zeros too, so prefer ste after pruning)", ("lsq", "ste")),
    activation_method=Option("str", "ste", "QAT activation quantizer", ("lsq", "ste")),
    engine=Option("str", "auto", "what runs the measurements: integer-only kernels, the "
                  "fake-quantized minnet model, or integer when possible",
                  ("auto", "integer", "minnet")),
)
def quantize_stage(model, options: dict, ctx: Context) -> Outcome:
    """Quantize weights (per output channel, symmetric) and activations (per tensor, affine):
    post-training (``optim.quant.prepare`` / ``calibrate`` / ``convert``, Jacob et al. 2018)
    or quantization-aware training (``prepare_qat``, LSQ or STE, then ``convert``). Zero
    weights stay zero: QAT trains them masked, and symmetric codes map 0 to 0 (the masks are
    then baked in)."""
    float_model = _with_zero_masks(copy.deepcopy(model))
    config = dict(weight_bits=options["weight_bits"], activation_bits=options["activation_bits"],
                  weight_observer=options["weight_observer"],
                  activation_observer=options["activation_observer"],
                  weight_only=options["weight_only"])
    x = ctx.train[0][:options["calibration_images"]]
    if options["method"] == "ptq":
        prepared = prepare(float_model, **config)
        calibrate(prepared, x)
        quantized = convert(prepared)
    else:
        qat = prepare_qat(float_model, weight_method=options["weight_method"],
                          activation_method=options["activation_method"], **config)
        _train(qat, ctx, options["epochs"], options["lr"], "qat.npz")
        quantized = convert(qat)
    quantized = remove_all(quantized)
    return Outcome(quantized, _quant_engine(quantized, options["engine"]),
                   details={"config": config, "method": options["method"]})


@stage(
    n_clusters=Option("int", 16, "shared values per layer (k-means centroids)", low=2),
    init=Option("str", "linear", "k-means initialisation", ("linear", "density", "random")),
    fine_tune_epochs=_epochs(2, "epochs of centroid fine-tuning", low=0),
    lr=_lr(1e-4),
)
def share_stage(model, options: dict, ctx: Context) -> Outcome:
    """Deep Compression's weight sharing (Han et al. 2016, section 3): per layer, k-means over
    the weights (``optim.quant.share_weights``; over the non-zero ones when pruned, zero
    keeping a fixed centroid of its own), then fine-tuning of the centroids."""
    shared = share_weights(remove_all(copy.deepcopy(model)), options["n_clusters"],
                           options["init"])
    if options["fine_tune_epochs"]:
        _train(shared, ctx, options["fine_tune_epochs"], options["lr"], "fit.npz")
    return Outcome(shared, details={"n_clusters": options["n_clusters"]})


@stage(
    max_drop_pp=Option("float", 0.5, "largest accuracy drop on the validation split, in "
                       "percentage points", low=0),
    objective=Option("str", "bytes", "what the allocation minimises: packed weight bytes, "
                     "multiply-accumulates with a non-zero weight, energy per inference "
                     "(Horowitz 2014's 45 nm table) or batch-1 latency (measured per layer; "
                     "sparsity then removes whole output channels)",
                     ("bytes", "macs", "energy", "latency")),
    sparsities=Option("floats", [0.0, 0.5, 0.75, 0.875, 0.95], "per-layer magnitude pruning "
                      "levels to choose from (objectives bytes, macs, energy)", low=0, high=1,
                      open="high", check=_distinct),
    channel_sparsities=Option("floats", [0.0, 0.25, 0.5, 0.75], "per-layer fractions of "
                              "output channels to remove, to choose from (objective latency; "
                              "must include 0)", low=0, high=1, open="high", check=_distinct),
    bits=Option("floats", [8, 6, 5, 4, 3, 2], "per-layer weight bit widths to choose from "
                "(activations: 8 bits)", low=MIN_BITS, high=8, check=_distinct_integers),
    confidence_z=Option("float", 1.0, "a candidate fits when its validation drop plus this "
                        "many standard errors is within max_drop_pp", low=0),
    validation_fraction=Option("float", 0.25, "fraction of the training images held out to "
                               "measure candidates (never the test images)", low=0, high=1,
                               open="both"),
    fine_tune_epochs=_epochs(2, "fine-tuning epochs of each candidate after pruning (masks "
                             "kept)", low=0),
    recovery_epochs=_epochs(1, "epochs of fine-tuning before a pruned option's one-layer "
                            "sensitivity is measured (NetAdapt's short-term fine-tuning; 0: "
                            "measured right after pruning)", low=0),
    distill=Option("bool", False, "fine-tune candidates as students of the baseline (Hinton "
                   "et al. 2015's loss, T = 4, alpha = 0.9) instead of on the labels alone"),
    max_candidates=Option("int", 8, "candidates built and measured at most (the fine-tuning "
                          "budget is this times fine_tune_epochs)", low=1),
    lr=_lr(5e-4),
    calibration_images=Option("int", 1024, "training images seen by the activation observers",
                              low=1),
)
def auto_stage(model, options: dict, ctx: Context) -> Outcome:
    """Accuracy-targeted compression (``optim.auto.compress_to_target``): per-layer sparsity
    and weight bit width chosen by an integer programme as the cheapest by ``objective`` whose
    predicted accuracy drop is within ``max_drop_pp``, then candidates built (pruned,
    fine-tuned, quantized with 8-bit activations), measured on a validation split of the
    training images (the run's held-out ``validation`` images when the run sets
    ``validation_fraction``, so that the baseline never trained on them; otherwise a split of
    the stage's training images) and repaired until the measured drop against the run's
    baseline fits (so the stage may follow prune, shrink and distill). The sensitivity table,
    every measured candidate and each candidate's fine-tuning epochs are checkpointed in the work
    directory, so a killed stage resumes."""
    seed, batch = ctx.run["seed"], ctx.run["batch_size"]

    def fine_tune(candidate: nn.Module, data, index: int) -> None:
        epochs = options["fine_tune_epochs"]
        if not epochs:
            return
        trainer = Distiller(candidate, ctx.baseline, T=4.0, alpha=0.9, cache_teacher=True) \
            if options["distill"] else None
        optimizer = optimizers.Adam(candidate.parameters(), lr=options["lr"])
        scheduler = optimizers.CosineAnnealingLR(optimizer, T_max=epochs)
        common = dict(batch_size=batch, scheduler=scheduler, seed=seed, resume=True,
                      checkpoint_path=ctx.work / f"candidate{index}.npz", progress=ctx.progress)
        if trainer is None:
            fit(candidate, optimizer, data, epochs, **common)
        else:
            trainer.fit(optimizer, data, epochs, **common)

    def recover(candidate: nn.Module, data) -> None:
        optimizer = optimizers.Adam(candidate.parameters(), lr=options["lr"])
        fit(candidate, optimizer, data, options["recovery_epochs"], batch_size=batch,
            scheduler=optimizers.CosineAnnealingLR(optimizer, T_max=options["recovery_epochs"]),
            seed=seed, progress=False)

    quantized, details = compress_to_target(
        model, ctx.train, validation=ctx.validation, max_drop_pp=options["max_drop_pp"],
        objective=options["objective"],
        sparsities=options["channel_sparsities" if options["objective"] == "latency"
                           else "sparsities"],
        bits=[int(b) for b in options["bits"]],
        validation_fraction=options["validation_fraction"], seed=seed, fine_tune=fine_tune,
        max_candidates=options["max_candidates"], confidence_z=options["confidence_z"],
        calibration_images=options["calibration_images"], size_of=packed_bytes,
        work=ctx.work, reference=ctx.baseline,
        recover=recover if options["recovery_epochs"] else None)
    return Outcome(quantized, _quant_engine(quantized, "auto"), details=details)


@stage()
def graph_stage(model, options: dict, ctx: Context) -> Outcome:
    """Trace the model's float view, optimize the graph (``optim.graph.optimize``: identities,
    constant folding, BatchNorm folding, bias and ReLU fusion, CSE, DCE) and run it with the
    compiled executor; the stored model is unchanged (``graph.txt`` shows the graph)."""
    graph = optimized_graph(model, ctx.test[0][:1])
    return Outcome(model, "graph", details={"ops": [n.op for n in graph.nodes]},
                   files={"graph.txt": graph.dump().encode()})


@stage()
def export_stage(model, options: dict, ctx: Context) -> Outcome:
    """Write the model as ONNX (``model.onnx``, ``optim.pipeline.engines.deployed_graph``: the
    int8 integer graph of a quantized model, else the optimized float graph; a symbolic batch;
    short value names; very sparse weights as sparse initialisers) when the ``onnx`` extra is
    installed; the row's file size is that file's and it measures that file with
    ONNX Runtime when it is installed too; otherwise record why nothing was written."""
    try:
        graph, form = deployed_graph(model, ctx.test[0][:1])
        proto = to_onnx(graph, compact=True, sparse=True)
    except (ImportError, NotImplementedError) as err:  # no onnx, or an op ONNX cannot express
        return Outcome(model, "graph", details={"onnx": f"not written: {err}"})
    data = proto.SerializeToString()
    try:
        import onnxruntime  # noqa: F401
        engine = "onnxruntime"
    except ImportError:
        engine = "graph"
    return Outcome(model, engine, details={"onnx": "model.onnx", "onnx_bytes": len(data),
                                           "onnx_form": form},
                   files={"model.onnx": data}, artefact="model.onnx")


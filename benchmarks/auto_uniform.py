"""The auto stage's allocation against uniform choices at the same byte budget.

Reads a finished run of ``optim/pipeline/auto_pipeline.toml`` (the auto stage's input model, the
model of the stage before it, and its chosen allocation), then builds uniform allocations —
every layer at 3 bits, at 4 bits and at 8 bits, each with the one uniform sparsity whose
predicted bytes (``optim.auto.option_costs``, a layer's sparsity counted as at least the zeros
it already has) match the chosen allocation's — with the same fine-tuning, and prints packed
bytes and test accuracy of each. Also reports the additivity of one-layer sensitivities
(Pearson r over random joint configurations) for the accuracy, loss and HAWQ-V2 tables.

    python benchmarks/auto_uniform.py RUN_DIR [--configs 20]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from minnet import optimizers
from minnet.train import evaluate, fit
from optim import auto
from optim.pipeline import load_data
from optim.pipeline.stages import Context
from optim.pipeline.store import load_model, packed_bytes
from optim.quant import quantizable_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--configs", type=int, default=20)
    args = parser.parse_args()
    config = json.loads((args.run / "pipeline.json").read_text())["config"]
    run = config["run"]
    stage = next(s for s in config["stages"] if s["type"] == "auto")
    auto_dir = next(args.run.glob("*-auto"))
    record = json.loads((auto_dir / "stage.json").read_text())
    before = sorted(d for d in args.run.glob("[0-9][0-9]-*") if d.name < auto_dir.name)[-1]
    model, _ = load_model(before / "model.npz")
    baseline, _ = load_model(args.run / "00-baseline" / "model.npz")
    train, test = load_data(run)
    ctx = Context(run, train, test, args.run)
    fit_data, val = ctx.train, ctx.validation
    if val is None:  # the run held nothing out: the stage split its training images
        fit_index, val_index = auto.validation_split(len(train[1]),
                                                     stage["validation_fraction"], run["seed"])
        fit_data = (train[0][fit_index], train[1][fit_index])
        val = (train[0][val_index], train[1][val_index])
    details = record["details"]
    names = details["layers"]
    layers = quantizable_layers(model)
    sizes = {n: int(m.weight.data.size) for n, m in layers.items()}
    channels = {n: int(m.weight.shape[0]) for n, m in layers.items()}
    macs = auto.layer_macs(model, (1,) + test[0].shape[1:])
    # a layer of a pruned input keeps its zeros: its sparsity is at least what it has
    existing = {n: float(np.mean(m.weight.data == 0)) for n, m in layers.items()}

    def predicted_bytes(options):
        effective = [(max(s, existing[n]), b) for n, (s, b) in zip(names, options)]
        return auto.option_costs(sizes, channels, macs, effective, "bytes").diagonal().sum()

    chosen = [tuple(details["chosen"][n]) for n in names]
    budget = predicted_bytes(chosen)

    def fine_tune(candidate, data, index):
        epochs = stage["fine_tune_epochs"]
        optimizer = optimizers.Adam(candidate.parameters(), lr=stage["lr"])
        fit(candidate, optimizer, data, epochs, batch_size=run["batch_size"],
            scheduler=optimizers.CosineAnnealingLR(optimizer, T_max=epochs), seed=run["seed"],
            progress=False)

    def build(options):
        return auto._build(model, names, options, list(range(len(names))),
                           (lambda m, i: fine_tune(m, fit_data, i)), 0,
                           fit_data[0][:stage["calibration_images"]], "mse", False)

    def uniform_sparsity(bits):
        low, high = 0.0, 0.999
        for _ in range(30):
            s = (low + high) / 2
            cost = predicted_bytes([(s, bits)] * len(names))
            low, high = (s, high) if cost > budget else (low, s)
        return high

    rows = [("auto (chosen)", chosen)]
    for bits in (3, 4, 8):
        s = uniform_sparsity(bits)
        rows.append((f"uniform {bits}-bit, sparsity {s:.3f}", [(s, bits)] * len(names)))
    print(f"seed {run['seed']}: baseline test accuracy {evaluate(baseline, test)['accuracy']:.2%}, "
          f"auto's input ({before.name}) {evaluate(model, test)['accuracy']:.2%}; predicted "
          f"byte budget {budget:,.0f}")
    for label, options in rows:
        built = build(options)
        print(f"  {label:34s} packed {packed_bytes(built):>7,} B  test "
              f"{evaluate(built, test)['accuracy']:.2%}  validation "
              f"{evaluate(built, val)['accuracy']:.2%}")
    options = auto.make_options(stage["sparsities"], [int(b) for b in stage["bits"]])
    sample = (val[0][:500], val[1][:500])
    for metric in ("accuracy", "loss"):
        table = auto.sensitivity_table(model, sample, options, metric)
        r = auto.additivity(model, sample, options, table, args.configs, metric, rng=0)["r"]
        print(f"  additivity ({metric} table vs joint {metric} change): r = {r:.3f}")
    hawq, _ = auto.hawq_v2_table(model, (val[0][:200], val[1][:200]), options, n_samples=8)
    r = auto.additivity(model, sample, options, hawq, args.configs, "loss", rng=0)["r"]
    print(f"  additivity (HAWQ-V2 Omega vs joint loss change): r = {r:.3f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

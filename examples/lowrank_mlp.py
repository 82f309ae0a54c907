"""Low-rank factorization of LeNet-300-100's first layer (784 x 300) on the bundled MNIST-5k.

The trained layer W is replaced by two Linears, 784 -> r -> 300, with r chosen to keep 90 % of
the singular energy (sum of sigma_i^2) of W, or of the layer's responses on 1,000 training
images (data-aware, whitened SVD), or to halve the layer's parameters. Each factorized model is
then fine-tuned on the labels, or distilled from the original model, for a few epochs.

The original is trained with a small L2 weight decay (1e-4, coupled as in torch.optim.Adam):
without it, W keeps much of its random initialisation (Adam moves the weights little in 20
epochs, and the weights of the 129 never-lit border pixels get no gradient at all), whose flat
spectrum spreads the energy over many ranks; ``--weight-decay 0`` shows the difference.

    python examples/lowrank_mlp.py --epochs 20 --recover-epochs 2
"""
import argparse

import numpy as np

import minnet
from minnet import models, optimizers
from minnet.data import load_mnist
from minnet.train import evaluate, fit
from optim.distill import Distiller
from optim.lowrank import factorize

parser = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--epochs", type=int, default=20, help="epochs to train the original")
parser.add_argument("--limit", type=int, default=None, help="train on this many images only")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--energy", type=float, default=0.9)
parser.add_argument("--recover-epochs", type=int, default=2,
                    help="fine-tuning / distillation epochs")
parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate when recovering")
parser.add_argument("--weight-decay", type=float, default=1e-4,
                    help="L2 weight decay when training the original")
args = parser.parse_args()

x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")
rng = np.random.default_rng(args.seed)
if args.limit:  # the bundled split is sorted by digit: take a random subset
    keep = rng.permutation(len(x_train))[:args.limit]
    x_train, y_train = x_train[keep], y_train[keep]
train, test = (x_train, y_train), (x_test, y_test)
calibration = x_train[rng.permutation(len(x_train))[:1000]]

minnet.manual_seed(args.seed)
original = models.lenet_300_100()
fit(original, optimizers.Adam(original.parameters(), lr=1e-3, weight_decay=args.weight_decay),
    train, args.epochs, seed=args.seed)
base = evaluate(original, test)["accuracy"]
layer_params = original[1].weight.size + original[1].bias.size
print(f"original: first layer {layer_params:,} parameters, test accuracy {100 * base:.2f}%\n")

RULES = {f"{args.energy:.0%} weight energy": dict(energy=args.energy),
         f"{args.energy:.0%} response energy (data-aware)": dict(energy=args.energy,
                                                                  calibration=calibration),
         "half the parameters": dict(budget=0.5)}

print("| rule | rank | layer params | fewer | kept energy | accuracy | fine-tuned | distilled |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for label, rule in RULES.items():
    accuracies = []
    for recover in (None, "fine-tune", "distill"):
        model = models.lenet_300_100()
        model.load_state_dict(original.state_dict())
        (report,) = factorize(model, ["1"], **rule)
        if recover == "fine-tune":
            fit(model, optimizers.Adam(model.parameters(), lr=args.lr), train,
                args.recover_epochs, seed=args.seed)
        elif recover == "distill":
            distiller = Distiller(model, original, T=4.0, alpha=0.9, cache_teacher=True)
            distiller.fit(optimizers.Adam(distiller.parameters(), lr=args.lr), train,
                          args.recover_epochs, seed=args.seed)
        accuracies.append(evaluate(model, test)["accuracy"])
    print(f"| {label} | {report.rank} | {report.params_after:,} | "
          f"{report.params_before / report.params_after:.2f}x | {report.kept_energy:.3f} | "
          + " | ".join(f"{100 * a:.2f}%" for a in accuracies) + " |")
print(f"\ntest accuracy of the original: {100 * base:.2f}%")

"""Train LeNet-5 on the bundled MNIST-5k with Adam and a cosine learning-rate schedule.

    python examples/train_lenet5.py --epochs 20
"""
import argparse

import minnet
from minnet import models, optimizers
from minnet.data import load_mnist, random_subset
from minnet.train import evaluate, fit

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--limit", type=int, default=None, help="train on this many images only")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")
x_train, y_train = random_subset(x_train, y_train, n=args.limit)

minnet.manual_seed(args.seed)
model = models.lenet5()
print(model)
optimizer = optimizers.Adam(model.parameters(), lr=1e-3)
scheduler = optimizers.CosineAnnealingLR(optimizer, T_max=args.epochs)
fit(model, optimizer, (x_train, y_train), args.epochs, scheduler=scheduler, seed=args.seed)
print(f"test accuracy {100 * evaluate(model, (x_test, y_test))['accuracy']:.2f}%")

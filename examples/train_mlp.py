"""Train LeNet-300-100 (784-300-100-10) on the bundled MNIST-5k and print test accuracy.

    python examples/train_mlp.py --epochs 20
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
model = models.lenet_300_100()
optimizer = optimizers.Adam(model.parameters(), lr=1e-3)
history = fit(model, optimizer, (x_train, y_train), args.epochs, batch_size=128, seed=args.seed,
              val_data=(x_test, y_test))
print(f"final train loss {history['train_loss'][-1]:.4f}")
print(f"test accuracy {100 * evaluate(model, (x_test, y_test))['accuracy']:.2f}%")

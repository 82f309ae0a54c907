"""Train briefly, save the model to an npz checkpoint, load it into a fresh model, evaluate.

    python examples/checkpoint_roundtrip.py --epochs 2 --out lenet5.npz
"""
import argparse
import os
import tempfile

import minnet
from minnet import models, optimizers
from minnet.data import load_mnist, random_subset
from minnet.train import evaluate, fit

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--limit", type=int, default=None, help="train on this many images only")
parser.add_argument("--out", default=None, help="checkpoint path (default: a temporary file)")
args = parser.parse_args()

x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")
x_train, y_train = random_subset(x_train, y_train, n=args.limit)

model = models.lenet5()
fit(model, optimizers.Adam(model.parameters()), (x_train, y_train), args.epochs)
path = args.out or os.path.join(tempfile.mkdtemp(), "lenet5.npz")
minnet.save(model, path)
print(f"saved {len(model.state_dict())} arrays to {path} ({os.path.getsize(path)} bytes)")

restored = models.lenet5()
restored.load_state_dict(minnet.load(path))
before = evaluate(model, (x_test, y_test))["accuracy"]
after = evaluate(restored, (x_test, y_test))["accuracy"]
print(f"test accuracy: trained {100 * before:.2f}%, reloaded {100 * after:.2f}%")
if before != after:
    raise SystemExit("the reloaded model disagrees with the trained one")

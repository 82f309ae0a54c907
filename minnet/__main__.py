"""``python -m minnet``: train LeNet-5 (or LeNet-300-100) on the bundled MNIST-5k and report
test accuracy. ``--help`` lists the options."""
from __future__ import annotations

import argparse

import minnet
from minnet import models, optimizers
from minnet.data import load_mnist, random_subset
from minnet.train import evaluate, fit

MODELS = {"lenet5": models.lenet5, "lenet300": models.lenet_300_100}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m minnet", description=__doc__)
    parser.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None,
                        help="train on LIMIT randomly chosen images only (smoke runs)")
    parser.add_argument("--checkpoint", default=None, help="npz checkpoint written every epoch")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be positive, got {args.limit}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    x_train, y_train = random_subset(x_train, y_train, n=args.limit, seed=args.seed)
    minnet.manual_seed(args.seed)
    model = MODELS[args.model]()
    optimizer = optimizers.Adam(model.parameters(), lr=args.lr)
    fit(model, optimizer, (x_train, y_train), args.epochs, batch_size=args.batch_size,
        seed=args.seed, checkpoint_path=args.checkpoint, resume=args.resume,
        progress=False if args.no_progress else None)
    result = evaluate(model, (x_test, y_test))
    print(f"{args.model}: test accuracy {100 * result['accuracy']:.2f}% "
          f"(loss {result['loss']:.4f}) on {len(x_test)} test images")
    return result


if __name__ == "__main__":
    main()

"""Datasets and batching: the bundled MNIST-5k subset, the full MNIST IDX files
(downloaded and SHA-256-checked), an IDX reader, and ``DataLoader``."""
from minnet.data.idx import read_idx
from minnet.data.loader import DataLoader
from minnet.data.mnist import load_mnist
from minnet.data.subset import random_subset

__all__ = ["load_mnist", "DataLoader", "read_idx", "random_subset"]

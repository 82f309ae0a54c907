"""minnet: a minimal reverse-mode autograd engine for MLPs and CNNs on NumPy."""
from minnet.tensor import Function, Tensor, enable_grad, is_grad_enabled, no_grad, tensor
from minnet.random import manual_seed
from minnet import data, functional, nn, optimizers
from minnet.gradcheck import gradcheck
from minnet.io import load, save

__all__ = ["Tensor", "Function", "tensor", "no_grad", "enable_grad", "is_grad_enabled",
           "manual_seed", "functional", "nn", "optimizers", "data", "save", "load", "gradcheck"]
__version__ = "0.1.0"

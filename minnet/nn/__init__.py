"""Neural-network modules with PyTorch's names, shapes and state_dict keys."""
from minnet.nn import init, parametrize
from minnet.nn.containers import ModuleList, Sequential
from minnet.nn.layers import (GELU, AdaptiveAvgPool2d, AvgPool2d, Conv2d, Dropout, Flatten,
                              Hardsigmoid, Hardswish, Identity, LeakyReLU, Linear, MaxPool2d, ReLU,
                              Sigmoid, Tanh, Upsample)
from minnet.nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, KLDivLoss, MSELoss, NLLLoss
from minnet.nn.module import Module, Parameter, RemovableHandle
from minnet.nn.norm import BatchNorm1d, BatchNorm2d, LayerNorm, LocalResponseNorm

__all__ = ["Module", "Parameter", "RemovableHandle", "Linear", "Conv2d", "MaxPool2d",
           "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm",
           "LocalResponseNorm", "Upsample", "Dropout", "Flatten", "Identity", "ReLU", "LeakyReLU",
           "GELU", "Hardsigmoid", "Hardswish", "Sigmoid", "Tanh", "Sequential",
           "ModuleList", "CrossEntropyLoss", "NLLLoss", "MSELoss", "KLDivLoss",
           "BCEWithLogitsLoss", "init", "parametrize"]

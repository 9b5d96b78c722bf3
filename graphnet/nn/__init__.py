"""Layers and models in the module paradigm of the seed post (and PyTorch)."""

from ..tensor import Parameter  # noqa: F401
from . import init  # noqa: F401
from .layers import (  # noqa: F401
    ELU, GELU, AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Identity, LeakyReLU, Linear, MaxPool2d, ReLU,
    Sigmoid, Softmax, Tanh,
)
from .module import IncompatibleKeys, Module, ModuleDict, ModuleList, Sequential, StateDictError  # noqa: F401

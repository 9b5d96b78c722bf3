"""Optimizers and learning-rate schedules for compiled training plans.

A training plan holds each optimizer's update rule as graph ops: the compiler calls
``opt.update(param, grad, state, step, h)`` once per trainable parameter with tensors and
turns the results into effects; see :mod:`graphnet.optim.optimizer` for the full
contract and for how to write your own optimizer.
"""

from .adagrad import Adagrad
from .adam import Adam, AdamW
from .nadam import NAdam
from .radam import RAdam
from .optimizer import HyperParams, Optimizer, available, check_number, from_config, get, register, scalar
from .rmsprop import RMSprop
from .schedules import (
    CosineAnnealingLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    StepLR,
)
from .schedules import (
    CosineAnnealingWarmRestarts,
    OneCycleLR,
    PolynomialLR,
    ReduceLROnPlateau,
    SequentialLR,
)
from .sgd import SGD

__all__ = [
    "Optimizer",
    "HyperParams",
    "scalar",
    "register",
    "get",
    "from_config",
    "available",
    "check_number",
    "SGD",
    "Adam",
    "AdamW",
    "NAdam",
    "RAdam",
    "RMSprop",
    "Adagrad",
    "LRScheduler",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "LambdaLR",
    "LinearLR",
    "PolynomialLR",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "SequentialLR",
    "ReduceLROnPlateau",
]

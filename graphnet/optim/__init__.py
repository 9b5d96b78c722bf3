"""Optimizers and learning-rate schedules for compiled training plans.

The executor calls ``state = opt.init_state(xp, param)`` once per trainable
parameter and ``opt.update(xp, param, grad, state, step)`` on every step (in
place, ``step`` counting from 1); see :mod:`graphnet.optim.optimizer` for the
full contract and for how to write your own optimizer.
"""

from .adagrad import Adagrad
from .adam import Adam, AdamW
from .optimizer import Optimizer, available, check_number, from_config, get, register
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
from .sgd import SGD

__all__ = [
    "Optimizer",
    "register",
    "get",
    "from_config",
    "available",
    "check_number",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "Adagrad",
    "LRScheduler",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "LambdaLR",
    "LinearLR",
]

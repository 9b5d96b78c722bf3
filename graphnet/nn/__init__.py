"""Layers and models in the module paradigm of the seed post (and PyTorch)."""

from ..tensor import Parameter  # noqa: F401
from . import init  # noqa: F401
from .layers import (  # noqa: F401
    ELU, GELU, AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, ConvTranspose2d,
    Dropout, Embedding, Flatten, GroupNorm, Identity, LayerNorm, LeakyReLU, Linear, LogSoftmax, MaxPool1d, MaxPool2d,
    ReLU, Sigmoid, SiLU, Softmax, Tanh,
)
from .layers import (  # noqa: F401  (issue 23)
    AdaptiveMaxPool2d, ConvTranspose1d, Dropout2d, InstanceNorm2d, Mish, PReLU, RMSNorm, Softplus, Upsample,
)
from .transformer import (  # noqa: F401  (issue 24)
    MultiheadAttention, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer,
)
from .module import IncompatibleKeys, Module, ModuleDict, ModuleList, Sequential, StateDictError  # noqa: F401
from .recurrent import GRU, LSTM, RNN  # noqa: F401
from .layers import SyncBatchNorm  # noqa: F401  (issue 26: data-parallel training)

"""Modules: layers, activations, losses and containers, each with a hand-derived backward."""

from minidl.nn.activation import Activation
from minidl.nn.cross_entropy import CrossEntropyLoss
from minidl.nn.elu import ELU
from minidl.nn.leaky_relu import LeakyReLU
from minidl.nn.linear import Linear
from minidl.nn.loss import Loss
from minidl.nn.mlp import ACTIVATIONS, activation, mlp
from minidl.nn.module import Module
from minidl.nn.mse import MSELoss
from minidl.nn.parameter import Parameter
from minidl.nn.relu import ReLU
from minidl.nn.selu import SELU
from minidl.nn.sequential import Sequential
from minidl.nn.sigmoid import Sigmoid
from minidl.nn.tanh import Tanh

__all__ = [
    "ACTIVATIONS",
    "ELU",
    "SELU",
    "Activation",
    "CrossEntropyLoss",
    "LeakyReLU",
    "Linear",
    "Loss",
    "MSELoss",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "activation",
    "mlp",
]

"""Modules: layers, activations, losses and containers, each with a hand-derived backward."""

from minidl.nn import init
from minidl.nn._checks import GradientDtypeError
from minidl.nn.activation_base import Activation
from minidl.nn.batch_norm import BatchNorm1d
from minidl.nn.batched_linear import BatchedLinear
from minidl.nn.bce_with_logits import BCEWithLogitsLoss
from minidl.nn.builders import ACTIVATIONS, activation, mlp
from minidl.nn.clip import clip_grad_norm_, clip_grad_value_
from minidl.nn.cross_entropy import CrossEntropyLoss
from minidl.nn.dropout import Dropout
from minidl.nn.elu import ELU
from minidl.nn.gelu import GELU
from minidl.nn.huber import HuberLoss
from minidl.nn.identity import Identity
from minidl.nn.l1 import L1Loss
from minidl.nn.leaky_relu import LeakyReLU
from minidl.nn.linear import Linear
from minidl.nn.log_softmax import LogSoftmax
from minidl.nn.loss import Loss
from minidl.nn.module import IncompatibleKeys, Module
from minidl.nn.mse import MSELoss
from minidl.nn.nll import NLLLoss
from minidl.nn.parameter import Parameter
from minidl.nn.relu import ReLU
from minidl.nn.residual import Residual
from minidl.nn.selu import SELU
from minidl.nn.sequential import Sequential
from minidl.nn.sigmoid import Sigmoid
from minidl.nn.silu import SiLU
from minidl.nn.softmax import Softmax
from minidl.nn.stack import (
    flat_model_parameters,
    model_parameters,
    stack_models,
    unstack_model,
)
from minidl.nn.stacked_activation import StackedActivation
from minidl.nn.stacked_loss import StackedLoss
from minidl.nn.tanh import Tanh

__all__ = [
    "ACTIVATIONS",
    "ELU",
    "GELU",
    "SELU",
    "Activation",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchedLinear",
    "CrossEntropyLoss",
    "Dropout",
    "GradientDtypeError",
    "HuberLoss",
    "Identity",
    "IncompatibleKeys",
    "L1Loss",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "Loss",
    "MSELoss",
    "Module",
    "NLLLoss",
    "Parameter",
    "ReLU",
    "Residual",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "StackedActivation",
    "StackedLoss",
    "Tanh",
    "activation",
    "clip_grad_norm_",
    "clip_grad_value_",
    "flat_model_parameters",
    "init",
    "mlp",
    "model_parameters",
    "stack_models",
    "unstack_model",
]

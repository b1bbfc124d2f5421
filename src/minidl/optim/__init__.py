"""Optimizers and learning-rate schedules."""

from minidl.optim.adadelta import Adadelta
from minidl.optim.adagrad import Adagrad
from minidl.optim.adam import Adam
from minidl.optim.adamw import AdamW
from minidl.optim.cosine_annealing import CosineAnnealing
from minidl.optim.cosine_warm_restarts import CosineAnnealingWarmRestarts
from minidl.optim.cyclic_lr import CyclicLR
from minidl.optim.exponential_decay import ExponentialDecay
from minidl.optim.linear_warmup import LinearWarmup
from minidl.optim.lr_scheduler import LRScheduler
from minidl.optim.one_cycle import OneCycle
from minidl.optim.optimizer import Hyperparameter, Optimizer
from minidl.optim.rmsprop import RMSprop
from minidl.optim.sequential_schedule import SequentialSchedule
from minidl.optim.sgd import SGD
from minidl.optim.step_decay import StepDecay

__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "CosineAnnealing",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialDecay",
    "Hyperparameter",
    "LRScheduler",
    "LinearWarmup",
    "OneCycle",
    "Optimizer",
    "RMSprop",
    "SequentialSchedule",
    "StepDecay",
]

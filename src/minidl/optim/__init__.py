"""Optimizers and learning-rate schedules."""

from minidl.optim.adadelta import Adadelta
from minidl.optim.cyclic_lr import CyclicLR
from minidl.optim.lr_scheduler import LRScheduler
from minidl.optim.optimizer import Optimizer
from minidl.optim.sgd import SGD
from minidl.optim.step_decay import StepDecay

__all__ = ["SGD", "Adadelta", "CyclicLR", "LRScheduler", "Optimizer", "StepDecay"]

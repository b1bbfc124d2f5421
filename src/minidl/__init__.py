"""minidl: a mini deep-learning framework with explicit, hand-derived backpropagation.

Built from PyTorch tensor operations alone (none of PyTorch's ``nn`` or ``autograd`` modules):
every module computes its own backward pass.

>>> import minidl
>>> from minidl import nn, optim
>>> model = nn.Sequential(nn.Linear(2, 25), nn.Tanh(), nn.Linear(25, 2))
"""

from minidl import data, nn, optim
from minidl.anomaly import AnomalyError, detect_anomaly
from minidl.gradcheck import GradcheckError, gradcheck

__version__ = "0.1.0"

__all__ = [
    "AnomalyError",
    "GradcheckError",
    "__version__",
    "data",
    "detect_anomaly",
    "gradcheck",
    "nn",
    "optim",
]

"""optarena's optimizer library, pure PyTorch (it imports nothing from ``services``).

- optimizers matching torch.optim numerically: build one by name with
  :func:`build_optimizer`; :data:`OPTIMIZERS` lists the names;
- regularizers: L1/L2 loss penalties (coupled and decoupled weight decay are arguments of
  every optimizer);
- layers written here: :class:`Dropout`, :class:`BatchNorm1d`, :class:`BatchNorm2d`;
- learning-rate schedules as pure functions of the step (:data:`SCHEDULES`);
- activations by name (:data:`ACTIVATIONS`) and :class:`EarlyStopping`.
"""

from optimizers.activations import ACTIVATIONS, Activation, build_activation
from optimizers.adagrad import Adagrad
from optimizers.adam import Adam, AdamW, AMSGrad
from optimizers.base import Optimizer
from optimizers.early_stopping import EarlyStopping
from optimizers.layers import BatchNorm1d, BatchNorm2d, Dropout
from optimizers.lion import Lion
from optimizers.nadam import NAdam
from optimizers.registry import OPTIMIZERS, build_optimizer, hyperparameter_names
from optimizers.regularizers import decay_parameters, l1_penalty, l2_penalty
from optimizers.rmsprop import RMSprop
from optimizers.schedules import (
    SCHEDULES,
    ReduceLROnPlateau,
    ScheduledLR,
    build_lr_scheduler,
    build_schedule,
)
from optimizers.sgd import SGD, Momentum, Nesterov

__all__ = [
    "ACTIVATIONS",
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "AMSGrad",
    "Activation",
    "Adagrad",
    "Adam",
    "AdamW",
    "BatchNorm1d",
    "BatchNorm2d",
    "Dropout",
    "EarlyStopping",
    "Lion",
    "Momentum",
    "NAdam",
    "Nesterov",
    "Optimizer",
    "RMSprop",
    "ReduceLROnPlateau",
    "ScheduledLR",
    "build_activation",
    "build_lr_scheduler",
    "build_optimizer",
    "build_schedule",
    "decay_parameters",
    "hyperparameter_names",
    "l1_penalty",
    "l2_penalty",
]

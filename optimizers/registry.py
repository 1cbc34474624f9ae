"""Optimizers by name: the names studies use, and the one way to build one from a name.

Adding an optimizer is one new module with its class plus one line in ``OPTIMIZERS``.
"""

import difflib
import inspect
from typing import Any

from optimizers.adagrad import Adagrad
from optimizers.adam import Adam, AdamW, AMSGrad
from optimizers.base import Optimizer, ParamsT
from optimizers.lion import Lion
from optimizers.nadam import NAdam
from optimizers.rmsprop import RMSprop
from optimizers.sgd import SGD, Momentum, Nesterov

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "adam": Adam,
    "adamw": AdamW,
    "nadam": NAdam,
    "amsgrad": AMSGrad,
    "lion": Lion,
}


def hyperparameter_names(name: str) -> list[str]:
    """The keyword arguments optimizer ``name`` accepts (everything but ``params``), sorted."""
    signature = inspect.signature(_optimizer_class(name).__init__)
    return sorted(arg for arg in signature.parameters if arg not in ("self", "params"))


def build_optimizer(name: str, params: ParamsT, **hparams: Any) -> Optimizer:
    """Build optimizer ``name`` over ``params`` with ``hparams`` (torch.optim argument names).

    Hyperparameters not given keep the optimizer's defaults. Raises ``ValueError`` for an
    unknown name, an unknown hyperparameter or an invalid value, naming it and what is
    allowed.

    Example::

        >>> opt = build_optimizer("adamw", model.parameters(), lr=3e-4, weight_decay=0.1)
    """
    allowed = hyperparameter_names(name)
    for hparam in hparams:
        if hparam not in allowed:
            raise ValueError(
                f"unknown hyperparameter {hparam!r} for optimizer {name!r}; "
                f"allowed: {', '.join(allowed)}{_did_you_mean(hparam, allowed)}"
            )
    return OPTIMIZERS[name](params, **hparams)


def _optimizer_class(name: str) -> type[Optimizer]:
    if not isinstance(name, str):
        raise ValueError(f"optimizer name must be a str, got {name!r}")
    if name not in OPTIMIZERS:
        names = sorted(OPTIMIZERS)
        raise ValueError(
            f"unknown optimizer {name!r}; allowed: {', '.join(names)}{_did_you_mean(name, names)}"
        )
    return OPTIMIZERS[name]


def _did_you_mean(word: str, choices: list[str]) -> str:
    matches = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {matches[0]!r}?" if matches else ""

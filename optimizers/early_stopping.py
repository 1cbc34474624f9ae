"""Early stopping on a validation metric, with an immediate stop on a non-finite value."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn


class EarlyStopping:
    """Stop training once ``metric`` has not improved for ``patience`` consecutive epochs
    (Prechelt 1998, "Early Stopping — But When?").

    Call :meth:`update` once per evaluation (an "epoch" below) with the metric's value. A
    value improves on ``best`` when it is lower than ``best − min_delta`` (mode "min") or
    higher than ``best + min_delta`` (mode "max"); the first finite value always does.
    After an improvement the count of epochs without improvement restarts at 0; otherwise
    it grows by 1, and training stops when it reaches ``patience`` (so ``patience=0`` stops
    at the first epoch that does not improve). A NaN or ±inf value stops training at once,
    whatever the patience: the run has diverged.

    With ``restore_best_weights``, each improvement keeps a detached copy of
    ``model.state_dict()``. The copy stays on the model's device (a device-to-device copy per
    improvement, no host transfer; it costs one model's worth of device memory).
    :meth:`restore` loads it back.

    Args:
        metric: name of the monitored metric, e.g. "val_loss" (kept for messages and logs).
        mode: "min" if lower is better, "max" if higher is better.
        patience: epochs without improvement that are tolerated, an int ≥ 0.
        min_delta: smallest change that counts as an improvement, ≥ 0.
        restore_best_weights: keep the best epoch's weights for :meth:`restore`.

    Attributes:
        best: best value so far (None before the first finite value).
        best_epoch: 0-based index of the :meth:`update` call that produced ``best``.
        epochs_without_improvement: the patience counter.
        stop_reason: None while training may go on, else "patience" or "non_finite".
    """

    def __init__(
        self,
        metric: str,
        mode: Literal["min", "max"],
        patience: int,
        min_delta: float = 0.0,
        restore_best_weights: bool = False,
    ) -> None:
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"metric must be a non-empty string, got {metric!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be one of min, max, got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        if (
            isinstance(min_delta, bool)
            or not isinstance(min_delta, int | float)
            or not math.isfinite(min_delta)
            or min_delta < 0
        ):
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        self.metric = metric
        self.mode = mode
        self.patience = patience
        self.min_delta = float(min_delta)
        self.restore_best_weights = restore_best_weights
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.epochs_without_improvement = 0
        self.stop_reason: str | None = None
        self._epoch = 0
        self._best_state: dict[str, torch.Tensor] | None = None

    @property
    def stopped(self) -> bool:
        """Whether :meth:`update` has asked to stop."""
        return self.stop_reason is not None

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float, model: nn.Module | None = None) -> bool:
        """Record this epoch's metric value; return True if training should stop.

        Args:
            value: the metric (a float or a one-element tensor).
            model: the model being trained; required with ``restore_best_weights``.

        Once stopped, further calls change nothing and return True.
        """
        if self.restore_best_weights and model is None:
            raise ValueError(
                f"EarlyStopping({self.metric!r}) has restore_best_weights=True: "
                "pass the model to update()"
            )
        if self.stopped:
            return True
        value = float(value)
        epoch = self._epoch
        self._epoch += 1
        if not math.isfinite(value):
            self.stop_reason = "non_finite"
            return True
        if self._improves(value):
            self.best = value
            self.best_epoch = epoch
            self.epochs_without_improvement = 0
            if self.restore_best_weights:
                self._best_state = {
                    name: tensor.detach().clone() for name, tensor in model.state_dict().items()
                }
            return False
        self.epochs_without_improvement += 1
        if self.epochs_without_improvement >= self.patience:
            self.stop_reason = "patience"
            return True
        return False

    def restore(self, model: nn.Module) -> None:
        """Load the weights of the best epoch into ``model``.

        Raises:
            ValueError: without ``restore_best_weights``, or before any finite value.
        """
        if not self.restore_best_weights:
            raise ValueError(
                f"EarlyStopping({self.metric!r}) keeps no weights: "
                "construct it with restore_best_weights=True"
            )
        if self._best_state is None:
            raise ValueError(
                f"EarlyStopping({self.metric!r}) has no best weights yet: "
                "update() has not seen a finite value"
            )
        model.load_state_dict(self._best_state)

"""Losses and metrics of the workloads, both per sample so one code path serves the training
mean and the evaluation sum over a split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

PerSample = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample cross-entropy of ``logits`` (N, C) against integer ``labels`` (N,),
    computed in float32 (under bf16 autocast the logits arrive in bf16)."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


def quadratic_excess_loss(residuals: Tensor, floor_share: Tensor) -> Tensor:
    """Per-sample loss of the noisy quadratic: ``½ Σ_i r_i² − y`` where the model outputs
    ``r = √h ⊙ (θ − x)`` and ``y`` is the sample's share of its split's minimum loss, so the
    mean over a whole split is the excess loss ``½ Σ h (θ − x̄)²`` (see
    ``datasets.noisy_quadratic``)."""
    return 0.5 * residuals.float().square().sum(dim=1) - floor_share


def correct(logits: Tensor, labels: Tensor) -> Tensor:
    """1.0 where the arg-max class equals the label, else 0.0 (per sample)."""
    return (logits.argmax(dim=1) == labels).to(torch.float32)


@dataclass(frozen=True)
class Metric:
    """The metric a workload is judged by: its name, whether higher or lower is better, and a
    per-sample function whose mean over a split is the metric."""

    name: str
    direction: Literal["max", "min"]
    per_sample: PerSample

    def reached(self, value: float, target: float) -> bool:
        """Whether ``value`` is at least as good as ``target``."""
        return value >= target if self.direction == "max" else value <= target


ACCURACY = Metric("accuracy", "max", correct)
EXCESS_LOSS = Metric("excess_loss", "min", quadratic_excess_loss)

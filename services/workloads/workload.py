"""What a workload is: the fixed facts of one benchmark problem.

A workload names its dataset (with fixed train / validation / test splits), its model family
and the model options it accepts, its loss, the metric it is judged by and that metric's
direction, the target value for time-to-target, and the default epochs and batch size.
Tuning looks at the validation split only; the test split is for the final report.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from services.workloads.datasets import Dataset, data_root
from services.workloads.objectives import Metric, PerSample

ModelFactory = Callable[..., nn.Module]
Augmentation = Callable[[Tensor, torch.Generator], Tensor]


def _check_option(name: str, value: Any) -> None:
    """Raise ``ValueError`` if ``value`` has the wrong type or range for model option ``name``
    (the activation name itself is checked by ``optimizers.activations`` when the model is
    built)."""
    if name == "activation":
        ok = isinstance(value, str)
        expected = "an activation name"
    elif name == "dropout":
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value < 1
        expected = "a number in [0, 1)"
    elif name == "batch_norm":
        ok = isinstance(value, bool)
        expected = "true or false"
    else:  # width, depth
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
        expected = "an integer >= 1"
    if not ok:
        raise ValueError(f"model option {name} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class Workload:
    """One benchmark problem (see the module docstring).

    ``target`` is the validation-metric value whose first crossing defines time-to-target;
    ``target_source`` says where it comes from: "measured" (runs made here) or
    "literature" (where the data is not available here); docs/WORKLOADS.md has both.
    """

    name: str
    description: str
    load: Callable[[Path, bool], Dataset]
    input_shape: tuple[int, ...]  # of one sample; the loaded dataset must match
    num_classes: int  # 0 where the targets are not classes
    model_family: str
    model: ModelFactory
    model_defaults: Mapping[str, Any]
    loss: PerSample
    metric: Metric
    target: float
    target_source: str
    default_epochs: int
    default_batch_size: int
    augment: Augmentation | None = None

    @property
    def image_input(self) -> bool:
        """Whether inputs are (C, H, W) images, so that ``channels_last`` applies."""
        return len(self.input_shape) == 3

    def load_data(self, data_dir: str | Path | None = None, download: bool = False) -> Dataset:
        """The workload's dataset as host arrays, from ``data_dir`` (see ``data_root``).

        Raises ``ValueError`` if the files hold samples of another shape or class count.
        """
        dataset = self.load(data_root(data_dir), download)
        if dataset.input_shape != self.input_shape or dataset.num_classes != self.num_classes:
            raise ValueError(
                f"workload {self.name!r} expects samples of shape {self.input_shape} in "
                f"{self.num_classes} classes, the data has {dataset.input_shape} in "
                f"{dataset.num_classes}"
            )
        return dataset

    def resolve_model_options(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """``given`` merged over the defaults; raises ``ValueError`` naming an option this
        workload does not take (with the ones it does) or a value of the wrong type."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.model_defaults))
        if unknown:
            allowed = ", ".join(sorted(self.model_defaults)) or "none"
            raise ValueError(
                f"unknown model option {unknown[0]!r} for workload {self.name!r}; "
                f"allowed: {allowed}"
            )
        options = {**self.model_defaults, **given}
        for name, value in options.items():
            _check_option(name, value)
        return options

    def build_model(self, options: Mapping[str, Any]) -> nn.Module:
        """The model with resolved ``options`` (see ``resolve_model_options``), on the
        default device; the weights are drawn from the global generator."""
        return self.model(self.input_shape, self.num_classes, **options)

    def facts(self) -> dict[str, Any]:
        """The workload's facts as a JSON-able dict (for results, reports and the CLI)."""
        return {
            "name": self.name,
            "description": self.description,
            "model_family": self.model_family,
            "model_defaults": dict(self.model_defaults),
            "metric": self.metric.name,
            "direction": self.metric.direction,
            "target": self.target,
            "target_source": self.target_source,
            "default_epochs": self.default_epochs,
            "default_batch_size": self.default_batch_size,
            "augmentation": self.augment is not None,
        }

"""The study file: which optimizers to compare on which workloads, what to search, with what
budget; validated whole before anything runs.

A study file is data (YAML), never code. ``load_spec(path)`` reads and validates it and
raises one :class:`SpecError` listing every problem as ``FILE: FIELD.PATH: message``, each
naming the allowed values (and the nearest valid name for a misspelling). It reads the file
and imports the registries, nothing else: no storage, tracking server or cluster is touched
before a study file is known to be valid.

**Arms.** Every workload × optimizer pair is an arm: one Optuna study named
``<study>/<workload>/<optimizer>`` with the same budget and the same shared search space —
the fairness rule of optimizer benchmarks (DeepOBS, AlgoPerf, Schmidt et al. 2021).

**Search space.** Dimensions are written in AlgoPerf's vocabulary: ``{min, max, scaling:
log|linear, int: true|false}`` for a range, ``{feasible_points: [...]}`` for numbers to pick
from, ``{choices: [...]}`` for any values to pick from. A dimension's name says what it sets
in the trainer's trial config (``services.trainer.TrialConfig``):

- ``learning_rate`` (or ``lr``) and every other argument of the optimizer (``weight_decay``,
  ``momentum``, ``eps``, ...) → ``hparams``;
- ``beta1``, ``beta2``, ``one_minus_beta1``, ``one_minus_beta2`` → one entry of the
  ``betas`` pair (the other keeps its fixed or default value); the ``one_minus_`` forms are
  searched as 1 − β, which is what a log scale needs for β close to 1; likewise
  ``one_minus_momentum`` → ``momentum``;
- ``schedule`` → the learning-rate schedule's name; its other arguments come from the
  ``schedules`` section (one mapping of fixed arguments per schedule name);
- ``decay_rate`` → the rate argument of the drawn schedule (``gamma`` for step, multistep
  and exponential, ``decay_rate`` for inverse_time, ``factor`` for reduce_on_plateau). It is
  a conditional dimension: not sampled at all for a schedule without a rate (constant,
  cosine, ...), so those trials do not carry a meaningless value;
- a model option of the workload (``dropout``, ``activation``, ``width``, ...) → ``model``;
- ``epochs``, ``batch_size``, ``l1``, ``l2`` → the trial config's key of that name.

The shared ``search_space`` applies to every optimizer; an optimizer's own ``search_space``
adds dimensions only it has (its ``fixed`` settings pin others). Every value a dimension can
take is checked against the trainer (``TrialConfig.from_dict``) at load time: both ends of
each range and every listed point.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from optimizers import OPTIMIZERS, hyperparameter_names
from optimizers.schedules import SCHEDULES, ReduceLROnPlateau
from services import search
from services.trainer import TrialConfig
from services.workloads import WORKLOADS

STORAGE_ENV = "OPTARENA_STORAGE"
TRACKING_URI_ENV = "OPTARENA_TRACKING_URI"
DEFAULT_TRACKING_URI = "sqlite:///.optarena/mlflow.db"

DIRECTIONS = ("maximize", "minimize")
SCALINGS = ("linear", "log")
# What an objective can be, and its direction (None: the workload metric's direction). The
# names are those of ``services.trainer.TrialResult``: val_metric is final_val_metric (the
# workload's metric on the validation split after the last epoch), val_loss the last
# epoch's validation loss. A trial that never reaches the target has infinite
# time_to_target_s and steps_to_target.
OBJECTIVE_METRICS: dict[str, str | None] = {
    "val_metric": None,
    "best_val_metric": None,
    "val_loss": "minimize",
    "train_time_s": "minimize",
    "time_to_target_s": "minimize",
    "steps_to_target": "minimize",
}
# Dimensions whose value is one entry of a hyperparameter, possibly searched as 1 − value:
# name → (hyperparameter, index in it or None, searched as 1 − value).
DERIVED_DIMENSIONS: dict[str, tuple[str, int | None, bool]] = {
    "beta1": ("betas", 0, False),
    "beta2": ("betas", 1, False),
    "one_minus_beta1": ("betas", 0, True),
    "one_minus_beta2": ("betas", 1, True),
    "one_minus_momentum": ("momentum", None, True),
}
TRIAL_DIMENSIONS = ("epochs", "batch_size", "l1", "l2")
# The first of these that a schedule takes is what ``decay_rate`` sets.
RATE_ARGUMENTS = ("gamma", "decay_rate", "factor")
# Keys of the trial config that the study file sets elsewhere than in ``trial``.
_ARM_KEYS = {
    "workload": "workloads",
    "optimizer": "optimizers[].name",
    "hparams": "optimizers[].fixed",
}
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# ---- errors --------------------------------------------------------------------------------


class SpecError(ValueError):
    """A study file that cannot be run; the message has one ``FILE: PATH: problem`` per line."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(f"{source}: {problem}" for problem in self.problems))


class _FieldError(ValueError):
    """A validation problem at ``path`` below the place pydantic reports it."""

    def __init__(self, path: Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.path = tuple(path)
        self.message = message


def unknown_name(kind: str, value: object, allowed: Sequence[str]) -> str:
    """``unknown KIND 'x'; allowed: a, b, c (did you mean 'b'?)``."""
    nearest = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    hint = f" (did you mean {nearest[0]!r}?)" if nearest else ""
    return f"unknown {kind} {value!r}; allowed: {', '.join(map(str, allowed))}{hint}"


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _render_path(path: Sequence[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_TYPE_MESSAGES = {
    "float_type": "must be a number",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
}
_BOUND_MESSAGES = {"greater_than": ">", "greater_than_equal": ">="}


def _problem(error: Mapping[str, Any]) -> str:
    """One pydantic error as ``path: message``, in the words of a study file."""
    path = [part for part in error["loc"] if part != "[key]"]
    kind, value = error["type"], error.get("input")
    context = error.get("ctx") or {}
    cause = context.get("error")
    if isinstance(cause, _FieldError):
        path += cause.path
        message = cause.message
    elif kind == "missing":
        message = "is required"
    elif kind in _TYPE_MESSAGES:
        message = f"{_TYPE_MESSAGES[kind]}, got {_show(value)}"
    elif kind in _BOUND_MESSAGES:
        bound = context.get("gt", context.get("ge"))
        message = f"must be {_BOUND_MESSAGES[kind]} {bound}, got {_show(value)}"
    elif cause is not None:
        message = str(cause)
    else:
        message = f"{error['msg']}, got {_show(value)}"
    return f"{_render_path(path) or '(top level)'}: {message}"


# ---- reading YAML --------------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader that reads ``1e-3`` as a number (YAML 1.1 wants ``1.0e-3``, a
    trap in files full of learning rates) and rejects a key given twice in one mapping
    (PyYAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _read_yaml(path: Path, source: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(source, ["no such file"]) from None
    except OSError as error:
        raise SpecError(source, [f"cannot read: {error.strerror or error}"]) from None
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError(source, [f"{where}invalid YAML: {problem}"]) from None


def load_spec(path: str | os.PathLike[str]) -> StudySpec:
    """Read and validate the study file at ``path``; raises ``SpecError`` for a missing or
    unreadable file, invalid YAML, or an invalid study, with every problem in one message."""
    return parse_spec(_read_yaml(Path(path), str(path)), source=str(path))


def parse_spec(data: Any, source: str = "<study>") -> StudySpec:
    """Validate an already parsed study file; ``source`` names it in error messages."""
    if not isinstance(data, Mapping):
        found = "an empty file" if data is None else _show(data)
        raise SpecError(
            source,
            [f"a study file is a mapping of fields ({', '.join(_top_level_keys())}), got {found}"],
        )
    try:
        return StudySpec.model_validate(data)
    except ValidationError as error:
        problems = list(dict.fromkeys(_problem(e) for e in error.errors(include_url=False)))
        raise SpecError(source, problems) from None


# ---- sections ------------------------------------------------------------------------------


class _Section(BaseModel):
    """A mapping of a study file: unknown keys are rejected, with the allowed ones."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            allowed = [field.alias or name for name, field in cls.model_fields.items()]
            for key in data:
                if key not in allowed:
                    raise _FieldError([str(key)], unknown_name("key", key, allowed))
        return data


def _check_scalar_list(values: list[Any], numbers_only: bool) -> list[Any]:
    if not values:
        raise _FieldError([], "must not be empty")
    for index, value in enumerate(values):
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if numbers_only and not (is_number and math.isfinite(value)):
            raise _FieldError([index], f"must be a finite number, got {_show(value)}")
        if not numbers_only and not (is_number or isinstance(value, str | bool)):
            raise _FieldError([index], f"must be a string, number or boolean, got {_show(value)}")
    for index, value in enumerate(values):
        # 1 == 1.0 == True in Python: compare with the type so they count as different.
        if any((type(value), value) == (type(v), v) for v in values[:index]):
            raise _FieldError([index], f"duplicate value {_show(value)}")
    return values


class Dimension(_Section):
    """One searched hyperparameter, in AlgoPerf's vocabulary: a range ``min``..``max`` with
    ``scaling`` log or linear (``int: true`` for integers), or a list of ``feasible_points``
    (numbers) or ``choices`` (any strings, numbers or booleans) to pick from."""

    scaling: str = "linear"
    integer: bool = Field(False, alias="int")
    min: float | None = None
    max: float | None = None
    feasible_points: list[Any] | None = None
    choices: list[Any] | None = None

    @field_validator("scaling")
    @classmethod
    def _known_scaling(cls, scaling: str) -> str:
        if scaling not in SCALINGS:
            raise _FieldError([], unknown_name("scaling", scaling, SCALINGS))
        return scaling

    @field_validator("min", "max")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise _FieldError([], f"must be a finite number, got {value}")
        return value

    @field_validator("feasible_points")
    @classmethod
    def _numbers(cls, points: list[Any] | None) -> list[Any] | None:
        return None if points is None else _check_scalar_list(points, numbers_only=True)

    @field_validator("choices")
    @classmethod
    def _scalars(cls, choices: list[Any] | None) -> list[Any] | None:
        return None if choices is None else _check_scalar_list(choices, numbers_only=False)

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        given = self.model_fields_set
        kinds = [k for k in ("feasible_points", "choices") if k in given]
        if "min" in given or "max" in given:
            kinds.insert(0, "min/max")
        if len(kinds) != 1:
            found = f"got {' and '.join(kinds)}" if kinds else "got neither"
            raise _FieldError(
                [], f"give exactly one of min/max (a range), feasible_points or choices; {found}"
            )
        if kinds[0] != "min/max":
            for key in ("scaling", "integer"):
                if key in given:
                    alias = "int" if key == "integer" else key
                    raise _FieldError([alias], f"applies to min/max ranges only, not {kinds[0]}")
            return self
        for key in ("min", "max"):
            if key not in given:
                raise _FieldError([key], "is required in a range (min and max)")
        assert self.min is not None and self.max is not None
        if self.integer:
            for key, value in (("min", self.min), ("max", self.max)):
                if not value.is_integer():
                    raise _FieldError(
                        [key], f"must be an integer for an int dimension, got {value}"
                    )
        if self.scaling == "log" and self.min <= 0:
            raise _FieldError(["min"], f"must be > 0 for log scaling, got {_number(self.min)}")
        if self.max <= self.min:
            raise _FieldError(
                ["max"], f"must be > min ({_number(self.min)}), got {_number(self.max)}"
            )
        return self

    @property
    def is_range(self) -> bool:
        """Whether this is a min/max range (else a list of points to pick from)."""
        return self.min is not None

    @property
    def points(self) -> list[Any]:
        """The values to pick from (``feasible_points`` or ``choices``); empty for a range."""
        return list(self.feasible_points or self.choices or [])

    def corners(self) -> list[tuple[str, Any]]:
        """The extreme values a sample can take, each with the field it comes from: both
        ends of a range, or every point."""
        if self.is_range:
            cast = int if self.integer else float
            return [("min", cast(self.min)), ("max", cast(self.max))]
        field = "feasible_points" if self.feasible_points is not None else "choices"
        return [(f"{field}[{i}]", value) for i, value in enumerate(self.points)]

    def grid_points(self) -> list[Any]:
        """Every value of a discrete dimension, for the grid sampler (which refuses a
        continuous range at validation)."""
        if not self.is_range:
            return self.points
        assert self.integer and self.min is not None and self.max is not None
        return list(range(int(self.min), int(self.max) + 1))


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


class OptimizerSpec(_Section):
    """One optimizer of the study: its name (``optimizers.OPTIMIZERS``), hyperparameters
    pinned for all its trials (``fixed``), and dimensions only it searches (``search_space``).
    A bare name stands for ``{name: NAME}``."""

    name: str
    fixed: dict[str, Any] = {}
    search_space: dict[str, Dimension] = {}

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in OPTIMIZERS:
            raise _FieldError([], unknown_name("optimizer", name, list(OPTIMIZERS)))
        return name

    @field_validator("fixed")
    @classmethod
    def _hyperparameters(cls, fixed: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is not None:
            allowed = hyperparameter_names(name)
            for key in fixed:
                if key not in allowed:
                    raise _FieldError([key], unknown_name(f"{name} hyperparameter", key, allowed))
        return fixed


class Budget(_Section):
    """What each arm gets: ``trials`` (the same for every optimizer), optionally a cap on
    the arm's total trial time ``time_limit_s`` (summed over its trials, so independent of
    the number of workers), and ``max_retries`` for a trial whose worker died."""

    trials: int = Field(gt=0)
    time_limit_s: float | None = Field(None, gt=0)
    max_retries: int = Field(2, ge=0)


class SamplerSpec(_Section):
    """The Optuna sampler by name (``services.search.SAMPLERS``), its seed and options (the
    keyword arguments of Optuna's class that YAML can express). A bare name stands for
    ``{name: NAME}``."""

    name: str = "tpe"
    seed: int = Field(0, ge=0)
    options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in search.SAMPLERS:
            raise _FieldError([], unknown_name("sampler", name, list(search.SAMPLERS)))
        return name

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "name" in info.data:
            _check_options("sampler", info.data["name"], options)
        return options


class PrunerSpec(_Section):
    """The Optuna pruner by name (``services.search.PRUNERS``; ``none`` never prunes) and its
    options. A bare name stands for ``{name: NAME}``."""

    name: str = "none"
    options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in search.PRUNERS:
            raise _FieldError([], unknown_name("pruner", name, list(search.PRUNERS)))
        return name

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "name" in info.data:
            _check_options("pruner", info.data["name"], options)
        return options


def _check_options(kind: str, name: str, options: Mapping[str, Any]) -> None:
    for key, value in options.items():
        try:
            search.check_options(kind, name, {key: value})
        except ValueError as error:
            raise _FieldError([key], str(error)) from None
    try:
        search.check_options(kind, name, options)
    except ValueError as error:
        raise _FieldError([], str(error)) from None


class ObjectiveSpec(_Section):
    """What a trial is judged by: one of ``OBJECTIVE_METRICS`` and its direction (default:
    the metric's own; for ``val_metric``, each workload's metric's direction)."""

    metric: str = "val_metric"
    direction: str | None = None

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        if metric not in OBJECTIVE_METRICS:
            raise _FieldError([], unknown_name("metric", metric, list(OBJECTIVE_METRICS)))
        return metric

    @field_validator("direction")
    @classmethod
    def _known_direction(cls, direction: str | None) -> str | None:
        if direction is not None and direction not in DIRECTIONS:
            raise _FieldError([], unknown_name("direction", direction, DIRECTIONS))
        return direction

    def direction_for(self, workload: str) -> str:
        """The direction on ``workload``: the one given, else the metric's own."""
        if self.direction is not None:
            return self.direction
        return OBJECTIVE_METRICS[self.metric] or _workload_direction(workload)


def _workload_direction(workload: str) -> str:
    return "maximize" if WORKLOADS[workload].metric.direction == "max" else "minimize"


class FinalPhase(_Section):
    """The seeds each arm's best configuration is re-run with after the search (the runs
    the report's confidence intervals come from)."""

    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3])

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise _FieldError([], "must not be empty: the final phase needs at least one seed")
        for index, seed in enumerate(seeds):
            if seed < 0:
                raise _FieldError([index], f"must be >= 0, got {seed}")
            if seed in seeds[:index]:
                raise _FieldError([index], f"duplicate seed {seed}: each seed is one run")
        return seeds


class Resources(_Section):
    """How trials are placed: ``workers`` running at once, ``cpus_per_trial``, and
    ``gpus_per_trial`` as a fraction of one GPU in (0, 1] (0.25: four trials share a GPU;
    leave it out for CPU-only trials)."""

    workers: int = Field(1, gt=0)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float | None = None

    @field_validator("gpus_per_trial")
    @classmethod
    def _fraction(cls, gpus: float | None) -> float | None:
        if gpus is not None and not 0 < gpus <= 1:
            raise _FieldError(
                [],
                f"must be a fraction of one GPU in (0, 1] (0.25: four trials share a GPU), "
                f"got {gpus}; leave it out for CPU-only trials",
            )
        return gpus


# ---- the study -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One workload × optimizer pair of a study: one Optuna study, one MLflow child run."""

    study: str
    workload: str
    optimizer: str

    @property
    def study_name(self) -> str:
        """The Optuna study name: ``<study>/<workload>/<optimizer>``."""
        return f"{self.study}/{self.workload}/{self.optimizer}"

    @property
    def label(self) -> str:
        """A name for people: ``adam · mnist1d-mlp``."""
        return f"{self.optimizer} · {self.workload}"


@dataclass(frozen=True)
class _Target:
    """Where a dimension's value goes in the trial config."""

    section: Literal["hparams", "model", "trial", "schedule", "rate"]
    key: str
    index: int | None = None
    complement: bool = False


@dataclass(frozen=True)
class Endpoint:
    """A resolved storage or tracking URI and where it came from (``flag``, ``env``,
    ``spec`` or ``default``), for the plan a dry run prints."""

    uri: str
    source: Literal["flag", "env", "spec", "default"]


class StudySpec(_Section):
    """A validated study file (see the module docstring); build it with ``load_spec``."""

    study: str
    description: str = ""
    workloads: list[str]
    optimizers: list[OptimizerSpec]
    search_space: dict[str, Dimension] = {}
    schedules: dict[str, dict[str, Any]] = {}
    trial: dict[str, Any] = {}
    objective: ObjectiveSpec = ObjectiveSpec()
    second_objective: ObjectiveSpec | None = None
    budget: Budget
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    final: FinalPhase = FinalPhase()
    resources: Resources = Resources()
    storage: str | None = None
    tracking_uri: str | None = None

    @field_validator("study")
    @classmethod
    def _name(cls, study: str) -> str:
        if not _STUDY_NAME.fullmatch(study):
            raise _FieldError(
                [],
                f"must be letters, digits, '.', '_' or '-' (it names Optuna studies "
                f"<study>/<workload>/<optimizer> and the MLflow experiment), got {study!r}",
            )
        return study

    @field_validator("workloads")
    @classmethod
    def _registered_workloads(cls, workloads: list[str]) -> list[str]:
        if not workloads:
            raise _FieldError([], f"must name at least one workload; allowed: {_names(WORKLOADS)}")
        for index, workload in enumerate(workloads):
            if workload not in WORKLOADS:
                raise _FieldError([index], unknown_name("workload", workload, list(WORKLOADS)))
            if workload in workloads[:index]:
                raise _FieldError([index], f"duplicate workload {workload!r}")
        return workloads

    @field_validator("optimizers")
    @classmethod
    def _distinct_optimizers(cls, optimizers: list[OptimizerSpec]) -> list[OptimizerSpec]:
        if not optimizers:
            raise _FieldError(
                [], f"must name at least one optimizer; allowed: {_names(OPTIMIZERS)}"
            )
        names = [optimizer.name for optimizer in optimizers]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise _FieldError(
                    [index, "name"], f"duplicate optimizer {name!r}: each optimizer is one arm"
                )
        return optimizers

    @field_validator("schedules")
    @classmethod
    def _known_schedules(cls, schedules: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, arguments in schedules.items():
            if name not in _schedule_names():
                raise _FieldError([name], unknown_name("schedule", name, _schedule_names()))
            if "name" in arguments:
                raise _FieldError([name, "name"], "the schedule's name is the key above")
        return schedules

    @field_validator("trial")
    @classmethod
    def _trial_keys(cls, trial: dict[str, Any]) -> dict[str, Any]:
        allowed = [key for key in TrialConfig.keys() if key not in _ARM_KEYS]  # noqa: SIM118
        for key in trial:
            if key in _ARM_KEYS:
                raise _FieldError([key], f"is set by {_ARM_KEYS[key]}, not in trial")
            if key not in allowed:
                raise _FieldError([key], unknown_name("trial config key", key, allowed))
        if not isinstance(trial.get("model", {}), Mapping):
            raise _FieldError(
                ["model"], f"must be a mapping of model options, got {_show(trial['model'])}"
            )
        schedule = trial.get("schedule")
        if schedule is not None and not (isinstance(schedule, Mapping) and "name" in schedule):
            raise _FieldError(
                ["schedule"], f"must be a mapping with a name (or null), got {_show(schedule)}"
            )
        return trial

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, storage: str | None) -> str | None:
        if storage is None:
            return None
        try:
            return search.check_storage_url(storage)
        except ValueError as error:
            raise _FieldError([], str(error)) from None

    @field_validator("tracking_uri")
    @classmethod
    def _tracking_uri(cls, uri: str | None) -> str | None:
        if uri is not None and not uri.strip():
            raise _FieldError([], "must not be empty (leave it out for the default)")
        return uri

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        self._check_objectives()
        self._check_sampler_and_pruner()
        self._check_dimensions()
        self._check_trial_configs()
        return self

    # -- what the rest of optarena reads --

    def arms(self) -> list[Arm]:
        """Every workload × optimizer pair, workloads outermost, in file order."""
        return [
            Arm(self.study, workload, optimizer.name)
            for workload in self.workloads
            for optimizer in self.optimizers
        ]

    def optimizer(self, name: str) -> OptimizerSpec:
        """The study's settings for optimizer ``name``."""
        return next(optimizer for optimizer in self.optimizers if optimizer.name == name)

    def search_space_for(self, arm: Arm) -> dict[str, Dimension]:
        """The arm's dimensions: the shared ones, then the optimizer's own; a conditional
        dimension (``decay_rate``) comes after the one it depends on (``schedule``)."""
        space = {**self.search_space, **self.optimizer(arm.optimizer).search_space}
        return dict(sorted(space.items(), key=lambda item: item[0] == "decay_rate"))

    def applies(self, arm: Arm, name: str, params: Mapping[str, Any]) -> bool:
        """Whether dimension ``name`` is sampled given the values drawn so far: always,
        except ``decay_rate`` for a schedule without a rate argument."""
        if name != "decay_rate":
            return True
        schedule = params.get("schedule", (self.trial.get("schedule") or {}).get("name"))
        return _rate_argument(schedule) is not None

    def directions(self, arm: Arm) -> list[str]:
        """The Optuna directions of the arm's objectives."""
        objectives = [self.objective, self.second_objective]
        return [o.direction_for(arm.workload) for o in objectives if o is not None]

    def trial_config(
        self, arm: Arm, params: Mapping[str, Any], *, seed: int | None = None
    ) -> dict[str, Any]:
        """The trainer's trial config for ``arm`` with the sampled ``params`` (dimension
        name → value, as Optuna stores them): the ``trial`` settings, the optimizer's
        ``fixed`` hyperparameters, then each dimension where its name says. ``seed``
        replaces the trial seed (the final phase)."""
        config: dict[str, Any] = copy.deepcopy(self.trial)
        config.update(workload=arm.workload, optimizer=arm.optimizer)
        hparams = copy.deepcopy(self.optimizer(arm.optimizer).fixed)
        model = dict(config.get("model") or {})
        schedule = copy.deepcopy(config.get("schedule"))
        if "schedule" in params:
            name = params["schedule"]
            schedule = {"name": name, **copy.deepcopy(self.schedules.get(name, {}))}
        for name, value in params.items():
            target = _resolve(name, arm.optimizer, arm.workload)
            if target.complement:
                value = 1 - value
            if target.section == "hparams" and target.index is not None:
                pair = list(hparams.get(target.key) or _default(arm.optimizer, target.key))
                pair[target.index] = value
                hparams[target.key] = pair
            elif target.section == "hparams":
                hparams[target.key] = value
            elif target.section == "model":
                model[target.key] = value
            elif target.section == "trial":
                config[target.key] = value
            elif target.section == "rate":
                schedule[_rate_argument(schedule["name"])] = value
        config["hparams"] = hparams
        if model:
            config["model"] = model
        if schedule is not None:
            config["schedule"] = schedule
        if seed is not None:
            config["seed"] = seed
        return config

    # -- validation across sections --

    def _check_objectives(self) -> None:
        for key in ("objective", "second_objective"):
            objective = getattr(self, key)
            if objective is None or objective.direction is None:
                continue
            natural = OBJECTIVE_METRICS[objective.metric]
            for workload in self.workloads if natural is None else []:
                if objective.direction != _workload_direction(workload):
                    raise _FieldError(
                        [key, "direction"],
                        f"workload {workload!r} judges by {WORKLOADS[workload].metric.name}, "
                        f"which is to {_workload_direction(workload)}, got "
                        f"{objective.direction!r}",
                    )
            if natural is not None and objective.direction != natural:
                raise _FieldError(
                    [key, "direction"],
                    f"{objective.metric} is to {natural}, got {objective.direction!r}",
                )
        second = self.second_objective
        if second is not None and second.metric == self.objective.metric:
            raise _FieldError(
                ["second_objective", "metric"], f"is the first objective's ({second.metric})"
            )

    def _check_sampler_and_pruner(self) -> None:
        if self.sampler.name == "grid":
            self._check_grid()
        if self.second_objective is None:
            return
        if self.sampler.name == "cmaes":
            raise _FieldError(
                ["sampler", "name"],
                "cmaes optimizes a single objective; with a second_objective use one of "
                + ", ".join(n for n in search.SAMPLERS if n != "cmaes"),
            )
        if self.pruner.name != "none":
            raise _FieldError(
                ["pruner", "name"],
                "Optuna prunes single-objective studies only; with a second_objective use none",
            )

    def _check_grid(self) -> None:
        for arm in self.arms():
            size = 1
            for path, name in self._dimensions_with_paths(arm):
                dimension = self.search_space_for(arm)[name]
                if dimension.is_range and not dimension.integer:
                    raise _FieldError(
                        path,
                        "the grid sampler needs discrete dimensions (feasible_points, choices "
                        "or an int range); this is a continuous range",
                    )
                size *= len(dimension.grid_points())
            if self.budget.trials > size:
                raise _FieldError(
                    ["budget", "trials"],
                    f"exceeds the {size} points of the grid of arm {arm.label}: the grid "
                    "sampler would repeat points",
                )

    def _dimensions_with_paths(self, arm: Arm) -> list[tuple[tuple[str | int, ...], str]]:
        index = next(i for i, o in enumerate(self.optimizers) if o.name == arm.optimizer)
        own = self.optimizers[index].search_space
        return [(("search_space", name), name) for name in self.search_space] + [
            (("optimizers", index, "search_space", name), name) for name in own
        ]

    def _check_dimensions(self) -> None:
        for index, optimizer in enumerate(self.optimizers):
            for name in optimizer.search_space:
                if name in self.search_space:
                    raise _FieldError(
                        ["optimizers", index, "search_space", name],
                        "is already in the shared search_space (an optimizer's own dimensions "
                        "add to it; every optimizer searches the shared ones alike)",
                    )
        searched_schedule = any("schedule" in self.search_space_for(arm) for arm in self.arms())
        if searched_schedule and "schedule" in self.trial:
            raise _FieldError(
                ["trial", "schedule"],
                "is searched (the search space has a schedule dimension): give the schedules' "
                "fixed arguments in schedules",
            )
        if self.schedules and not searched_schedule:
            raise _FieldError(
                ["schedules"],
                "only applies to a searched schedule dimension; set a fixed one in trial.schedule",
            )
        if not any(self.search_space_for(arm) for arm in self.arms()):
            raise _FieldError(["search_space"], "must have at least one dimension")
        for arm in self.arms():
            self._check_arm_dimensions(arm)
        drawn = list(dict.fromkeys(s for arm in self.arms() for s in self._schedules_drawn(arm)))
        for name in self.schedules:
            if name not in drawn:
                raise _FieldError(
                    ["schedules", name],
                    f"is not among the schedule choices ({', '.join(drawn)})",
                )

    def _check_arm_dimensions(self, arm: Arm) -> None:
        taken: dict[tuple[str, str, int | None], str] = {}
        for path, name in self._dimensions_with_paths(arm):
            try:
                target = _resolve(name, arm.optimizer, arm.workload)
            except ValueError as error:
                hint = ""
                if path[0] == "search_space" and self._resolves_for_another_optimizer(arm, name):
                    hint = (
                        "; a dimension of some optimizers only goes in optimizers[].search_space"
                    )
                raise _FieldError(path, f"{error} (arm {arm.label}{hint})") from None
            slot = (target.section, target.key, target.index)
            if slot in taken:
                raise _FieldError(path, f"sets the same value as dimension {taken[slot]!r}")
            taken[slot] = name
            if target.key in self._pinned(arm, target):
                raise _FieldError(path, f"{target.key} is also fixed; remove one of the two")
            if name == "schedule":
                self._check_schedule_choices(path, self.search_space_for(arm)[name])
            if name == "decay_rate" and not any(
                _rate_argument(s) for s in self._schedules_drawn(arm)
            ):
                raise _FieldError(
                    path,
                    "no schedule of this study takes a rate (schedules with one: "
                    f"{', '.join(n for n in _schedule_names() if _rate_argument(n))})",
                )

    def _resolves_for_another_optimizer(self, arm: Arm, name: str) -> bool:
        for optimizer in self.optimizers:
            try:
                _resolve(name, optimizer.name, arm.workload)
            except ValueError:
                continue
            return True
        return False

    @staticmethod
    def _check_schedule_choices(path: Sequence[str | int], dimension: Dimension) -> None:
        if dimension.choices is None:
            raise _FieldError(path, "must be choices: a list of schedule names")
        for index, name in enumerate(dimension.choices):
            if name not in _schedule_names():
                raise _FieldError(
                    [*path, "choices", index], unknown_name("schedule", name, _schedule_names())
                )

    def _pinned(self, arm: Arm, target: _Target) -> Mapping[str, Any]:
        """The fixed settings a dimension with ``target`` would contradict."""
        if target.section == "hparams":
            # One entry of a pair (betas) may be searched while the other stays fixed.
            return {} if target.index is not None else self.optimizer(arm.optimizer).fixed
        if target.section == "model":
            return self.trial.get("model") or {}
        if target.section == "trial":
            return self.trial
        if target.section == "rate":
            schedule = self.trial.get("schedule") or {}
            rate = _rate_argument(schedule.get("name"))
            return {target.key: schedule[rate]} if rate in schedule else {}
        return {}

    def _schedules_drawn(self, arm: Arm) -> list[Any]:
        dimension = self.search_space_for(arm).get("schedule")
        if dimension is not None:
            return dimension.points
        return [(self.trial.get("schedule") or {}).get("name")]

    def _check_trial_configs(self) -> None:
        """Every value the search can produce, checked by the trainer itself.

        A range's ends and every point of each dimension are tried one at a time, the other
        dimensions at their first value, once for each thing the value's validity depends
        on: optimizer hyperparameters on each optimizer, model and trial settings on each
        workload, schedules (the rate with each schedule that takes one) once.
        """
        for arm in self.arms():
            index = next(i for i, o in enumerate(self.optimizers) if o.name == arm.optimizer)
            self._trainer_accepts(arm, {}, ["trial"], without_fixed=True)
            self._trainer_accepts(arm, {}, ["optimizers", index, "fixed"])
        for name in self.schedules:
            arm = next(a for a in self.arms() if name in self._schedules_drawn(a))
            self._trainer_accepts(arm, self._point(arm, {"schedule": name}), ["schedules", name])
        checked: set[tuple[Any, ...]] = set()
        for arm in self.arms():
            space = self.search_space_for(arm)
            for path, name in self._dimensions_with_paths(arm):
                section = _resolve(name, arm.optimizer, arm.workload).section
                # What the dimension's validity can depend on besides its own value.
                depends_on = {
                    "hparams": arm.optimizer,
                    "model": arm.workload,
                    "trial": arm.workload,
                }.get(section)
                if (path, depends_on) in checked:
                    continue
                checked.add((path, depends_on))
                for corner, value in space[name].corners():
                    for params in self._points_with(arm, name, value):
                        self._trainer_accepts(arm, params, [*path, *_split_corner(corner)])

    def _point(self, arm: Arm, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """A point of the arm's space: ``overrides`` where given, else each dimension's first
        value; conditional dimensions only where they apply."""
        params: dict[str, Any] = {}
        for name, dimension in self.search_space_for(arm).items():
            if self.applies(arm, name, {**params, **overrides}):
                params[name] = overrides.get(name, dimension.corners()[0][1])
        return params

    def _points_with(self, arm: Arm, name: str, value: Any) -> list[dict[str, Any]]:
        """Points with dimension ``name`` at ``value``; for ``decay_rate``, one with each
        drawn schedule that takes a rate."""
        if name != "decay_rate" or "schedule" not in self.search_space_for(arm):
            return [self._point(arm, {name: value})]
        return [
            self._point(arm, {"schedule": schedule, name: value})
            for schedule in self._schedules_drawn(arm)
            if _rate_argument(schedule) is not None
        ]

    def _trainer_accepts(
        self,
        arm: Arm,
        params: Mapping[str, Any],
        path: Sequence[str | int],
        without_fixed: bool = False,
    ) -> None:
        config = self.trial_config(arm, params)
        if without_fixed:
            config["hparams"] = {}
        try:
            TrialConfig.from_dict(config)
        except (ValueError, TypeError) as error:
            raise _FieldError(path, f"{error} (arm {arm.label})") from None


def _split_corner(corner: str) -> list[str | int]:
    """``feasible_points[2]`` → ``["feasible_points", 2]``; ``min`` → ``["min"]``."""
    match = re.fullmatch(r"(\w+)\[(\d+)\]", corner)
    return [match.group(1), int(match.group(2))] if match else [corner]


def _names(registry: Mapping[str, Any]) -> str:
    return ", ".join(registry)


def _top_level_keys() -> list[str]:
    return [field.alias or name for name, field in StudySpec.model_fields.items()]


@functools.cache
def _schedule_names() -> list[str]:
    return [*SCHEDULES, "reduce_on_plateau"]


@functools.cache
def _rate_argument(schedule: str | None) -> str | None:
    """The argument of ``schedule`` that ``decay_rate`` sets, or None if it has none."""
    if schedule == "reduce_on_plateau":
        factory: Any = ReduceLROnPlateau
    elif schedule in SCHEDULES:
        factory = SCHEDULES[schedule]
    else:
        return None
    arguments = inspect.signature(factory).parameters
    return next((name for name in RATE_ARGUMENTS if name in arguments), None)


def _default(optimizer: str, hyperparameter: str) -> Any:
    """The optimizer's default value of ``hyperparameter`` (torch.optim's)."""
    return inspect.signature(OPTIMIZERS[optimizer].__init__).parameters[hyperparameter].default


@functools.cache
def _resolve(name: str, optimizer: str, workload: str) -> _Target:
    """Where dimension ``name`` goes in a trial config of (``workload``, ``optimizer``);
    ``ValueError`` naming the dimensions that arm accepts otherwise."""
    hparams = hyperparameter_names(optimizer)
    model_options = list(WORKLOADS[workload].model_defaults)
    derived = [d for d, (hparam, _, _) in DERIVED_DIMENSIONS.items() if hparam in hparams]
    if name == "schedule":
        return _Target("schedule", "name")
    if name == "decay_rate":
        return _Target("rate", "decay_rate")
    if name in derived:
        hparam, index, complement = DERIVED_DIMENSIONS[name]
        return _Target("hparams", hparam, index, complement)
    hparam = "lr" if name == "learning_rate" else name
    if hparam in hparams:
        return _Target("hparams", hparam)
    if name in model_options:
        return _Target("model", name)
    if name in TRIAL_DIMENSIONS:
        return _Target("trial", name)
    allowed = [
        "learning_rate",
        "schedule",
        "decay_rate",
        *hparams,
        *derived,
        *model_options,
        *TRIAL_DIMENSIONS,
    ]
    if name in DERIVED_DIMENSIONS:
        missing = DERIVED_DIMENSIONS[name][0]
        raise ValueError(
            f"optimizer {optimizer!r} has no {missing}; allowed dimensions: {', '.join(allowed)}"
        )
    raise ValueError(unknown_name("dimension", name, allowed))


def resolve_endpoints(
    spec: StudySpec,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Endpoint, Endpoint]:
    """The Optuna storage and MLflow tracking URI a run uses, each from the first that is
    set of: the CLI flag (``storage``, ``tracking_uri``), the environment
    (``OPTARENA_STORAGE``, ``OPTARENA_TRACKING_URI``; empty counts as unset), the study
    file, the embedded default under ``.optarena/``. A storage URL from a flag or the
    environment is checked like the study file's: ``SpecError`` naming where it came from."""
    environ = os.environ if environ is None else environ

    def pick(flag: str | None, env: str, in_spec: str | None, default: str) -> Endpoint:
        for uri, origin in ((flag, "flag"), (environ.get(env) or None, "env"), (in_spec, "spec")):
            if uri is not None:
                return Endpoint(uri, origin)
        return Endpoint(default, "default")

    chosen = pick(storage, STORAGE_ENV, spec.storage, search.DEFAULT_STORAGE)
    if chosen.source in ("flag", "env"):  # the study file's was checked when it was loaded
        try:
            chosen = Endpoint(search.check_storage_url(chosen.uri), chosen.source)
        except ValueError as error:
            where = "--storage" if chosen.source == "flag" else f"${STORAGE_ENV}"
            raise SpecError(where, [str(error)]) from None
    tracking = pick(tracking_uri, TRACKING_URI_ENV, spec.tracking_uri, DEFAULT_TRACKING_URI)
    return chosen, tracking

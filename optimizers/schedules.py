"""Learning-rate schedules.

A schedule is a pure function of the step count t = 0, 1, 2, ... returning a multiplicative
factor of each param group's base learning rate (optax style; torch's ``LambdaLR`` does the
same), so param groups with different learning rates keep their ratios. Build one by name
with :func:`build_schedule` from :data:`SCHEDULES`, or call the factories directly::

    schedule = warmup(500, then=cosine(9_500))
    schedule = build_schedule(  # the same, as a study file spells it
        "warmup", warmup_steps=500, then={"name": "cosine", "total_steps": 9_500}
    )

Warm-up followed by another schedule: the following schedule's clock starts when the
warm-up ends (as in torch's ``SequentialLR``), so a run of T steps with W warm-up steps and a
cosine decay to the end is ``warmup(W, then=cosine(T − W))``.

:class:`ScheduledLR` applies a schedule to an optimizer: ``lr = initial_lr · factor(t)``.
:class:`ReduceLROnPlateau` is the one stateful schedule: it reads a metric. Both have the
same interface for the trainer (:func:`build_lr_scheduler` builds either by name)::

    scheduler = build_lr_scheduler(optimizer, "cosine", total_steps=1000)
    ...
    optimizer.step()
    if scheduler.interval == "step":
        scheduler.step()
    ...                                   # at the end of each epoch:
    if scheduler.interval == "epoch":
        scheduler.step(validation_loss)   # the metric is read only by reduce_on_plateau

Factors are evaluated in closed form, never by multiplying the previous learning rate, so
no rounding error accumulates over long runs.
"""

from __future__ import annotations

import bisect
import difflib
import inspect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from torch import Tensor
from torch.optim import Optimizer

Schedule = Callable[[int], float]
"""A learning-rate schedule: step count t ≥ 0 → factor of the base learning rate."""

INTERVALS = ("step", "epoch")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _require(ok: bool, schedule: str, argument: str, requirement: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{schedule}: {argument} must be {requirement}, got {value!r}")


def _require_positive_int(schedule: str, argument: str, value: object) -> None:
    _require(_is_int(value) and value > 0, schedule, argument, "an int > 0", value)


def _require_gamma(schedule: str, gamma: object) -> None:
    _require(_is_number(gamma) and 0 < gamma <= 1, schedule, "gamma", "in (0, 1]", gamma)


def _require_end_factor(schedule: str, end_factor: object) -> None:
    _require(
        _is_number(end_factor) and 0 <= end_factor <= 1,
        schedule,
        "end_factor",
        "in [0, 1]",
        end_factor,
    )


def constant() -> Schedule:
    """factor(t) = 1: the base learning rate throughout."""

    def schedule(t: int) -> float:
        return 1.0

    return schedule


def step_decay(step_size: int, gamma: float = 0.1) -> Schedule:
    """Step decay: factor(t) = γ^⌊t / step_size⌋ (torch's ``StepLR``).

    Args:
        step_size: steps between decays, an int > 0.
        gamma: γ in (0, 1].
    """
    _require_positive_int("step", "step_size", step_size)
    _require_gamma("step", gamma)

    def schedule(t: int) -> float:
        return gamma ** (t // step_size)

    return schedule


def multistep(milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    """Decay at milestones: factor(t) = γ^(number of milestones ≤ t) (torch's
    ``MultiStepLR``).

    Args:
        milestones: strictly increasing ints > 0.
        gamma: γ in (0, 1].
    """
    _require(
        isinstance(milestones, list | tuple)
        and all(_is_int(m) and m > 0 for m in milestones)
        and all(a < b for a, b in itertools.pairwise(milestones)),
        "multistep",
        "milestones",
        "a list of strictly increasing ints > 0",
        milestones,
    )
    _require_gamma("multistep", gamma)
    milestones = list(milestones)

    def schedule(t: int) -> float:
        return gamma ** bisect.bisect_right(milestones, t)

    return schedule


def exponential(gamma: float) -> Schedule:
    """Exponential decay: factor(t) = γᵗ (torch's ``ExponentialLR``).

    Args:
        gamma: γ in (0, 1].
    """
    _require_gamma("exponential", gamma)

    def schedule(t: int) -> float:
        return gamma**t

    return schedule


def inverse_time(decay_steps: int, decay_rate: float, staircase: bool = False) -> Schedule:
    """Inverse-time decay: factor(t) = 1 / (1 + decay_rate · t / decay_steps), with
    ⌊t / decay_steps⌋ in place of t / decay_steps when ``staircase`` (Keras'
    ``InverseTimeDecay``; for decay_steps = 1, the classic η/(1 + λt) of stochastic
    approximation).

    Args:
        decay_steps: an int > 0.
        decay_rate: ≥ 0.
        staircase: decay in steps of decay_steps instead of continuously.
    """
    _require_positive_int("inverse_time", "decay_steps", decay_steps)
    _require(
        _is_number(decay_rate) and decay_rate >= 0,
        "inverse_time",
        "decay_rate",
        "a finite number >= 0",
        decay_rate,
    )

    def schedule(t: int) -> float:
        progress = t // decay_steps if staircase else t / decay_steps
        return 1.0 / (1.0 + decay_rate * progress)

    return schedule


def polynomial(total_steps: int, power: float = 1.0, end_factor: float = 0.0) -> Schedule:
    """Polynomial decay to ``end_factor`` at ``total_steps``, held afterwards:

        factor(t) = end_factor + (1 − end_factor) · (1 − min(t, T)/T)^power

    With end_factor = 0 this is torch's ``PolynomialLR(total_iters=T, power=power)``.

    Args:
        total_steps: T, an int > 0.
        power: a finite number > 0 (1 is linear decay).
        end_factor: the final factor, in [0, 1].
    """
    _require_positive_int("polynomial", "total_steps", total_steps)
    _require(_is_number(power) and power > 0, "polynomial", "power", "a number > 0", power)
    _require_end_factor("polynomial", end_factor)

    def schedule(t: int) -> float:
        remaining = 1.0 - min(t, total_steps) / total_steps
        return end_factor + (1.0 - end_factor) * remaining**power

    return schedule


def cosine(total_steps: int, end_factor: float = 0.0) -> Schedule:
    """Cosine decay (Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient Descent with Warm
    Restarts", without restarts) to ``end_factor`` at ``total_steps``, held afterwards:

        factor(t) = end_factor + (1 − end_factor) · (1 + cos(π · min(t, T) / T)) / 2

    This is torch's ``CosineAnnealingLR(T_max=T, eta_min=end_factor · base_lr)`` for
    t ≤ T; past T torch's cosine rises again, ours stays at the minimum. The minimum is a
    factor rather than an absolute learning rate so that it scales with a tuned base lr.

    Args:
        total_steps: T, an int > 0.
        end_factor: the final factor (torch's eta_min / base_lr), in [0, 1].
    """
    _require_positive_int("cosine", "total_steps", total_steps)
    _require_end_factor("cosine", end_factor)

    def schedule(t: int) -> float:
        cosine_factor = (1.0 + math.cos(math.pi * min(t, total_steps) / total_steps)) / 2.0
        return end_factor + (1.0 - end_factor) * cosine_factor

    return schedule


def warmup(
    warmup_steps: int,
    then: str | Mapping[str, Any] | Schedule = "constant",
    start_factor: float = 0.0,
) -> Schedule:
    """Linear warm-up (Goyal et al. 2017, "Accurate, Large Minibatch SGD") followed by
    another schedule whose clock starts at the end of the warm-up:

        factor(t) = start_factor + (1 − start_factor) · t / W   for t < W
        factor(t) = then(t − W)                                 for t ≥ W

    For t < W this is torch's ``LinearLR(start_factor, end_factor=1, total_iters=W)``; with
    ``then`` it is ``SequentialLR([LinearLR(...), then], milestones=[W])``.

    Args:
        warmup_steps: W, an int > 0.
        then: the schedule after the warm-up: a name from :data:`SCHEDULES` (no
            arguments), a mapping ``{"name": ..., **arguments}`` (the form a study file
            uses), or a schedule. Default "constant".
        start_factor: the factor at t = 0, in [0, 1].
    """
    _require_positive_int("warmup", "warmup_steps", warmup_steps)
    _require(
        _is_number(start_factor) and 0 <= start_factor <= 1,
        "warmup",
        "start_factor",
        "in [0, 1]",
        start_factor,
    )
    if isinstance(then, str):
        after = build_schedule(then)
    elif isinstance(then, Mapping):
        _require("name" in then, "warmup", "then", 'a mapping with a "name" key', then)
        arguments = dict(then)
        after = build_schedule(arguments.pop("name"), **arguments)
    elif callable(then):
        after = then
    else:
        raise ValueError(
            f"warmup: then must be a schedule name, a mapping with a 'name' key, or a "
            f"schedule, got {then!r}"
        )

    def schedule(t: int) -> float:
        if t < warmup_steps:
            return start_factor + (1.0 - start_factor) * t / warmup_steps
        return after(t - warmup_steps)

    return schedule


def _anneal_cos(start: float, end: float, progress: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * progress) + 1.0)


def _anneal_linear(start: float, end: float, progress: float) -> float:
    # A convex combination, not torch's (end − start)·progress + start: that form cancels
    # near progress = 1 when end ≪ start (a 1e-11 relative error in the final lr).
    return (1.0 - progress) * start + progress * end


def one_cycle(
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Schedule:
    """The 1cycle policy (Smith & Topin 2019, "Super-Convergence: Very Fast Training of
    Neural Networks Using Large Learning Rates"), learning rate only.

    The param group's learning rate is the *peak* (torch's ``max_lr``). The factor anneals
    from 1/div_factor up to 1 over the first pct_start·T − 1 steps, then down to
    1/(div_factor · final_div_factor) at step T − 1, and holds there. ``three_phase``
    follows the paper: up, back down to 1/div_factor symmetrically, then down to the minimum.
    Step boundaries and annealing formulas are those of torch's ``OneCycleLR``; unlike it,
    momentum is not cycled (pass ``cycle_momentum=False`` there to compare) and stepping
    past T is allowed.

    Args:
        total_steps: T, an int ≥ 2.
        pct_start: fraction of T spent increasing; the phases must have positive length
            (pct_start·T > 1, and pct_start < 1, or < (T + 1)/(2T) with ``three_phase``).
        anneal_strategy: "cos" or "linear".
        div_factor: peak / initial learning rate, ≥ 1.
        final_div_factor: initial / final learning rate, ≥ 1.
        three_phase: use the paper's three phases instead of fastai's two.
    """
    _require(
        _is_int(total_steps) and total_steps >= 2,
        "one_cycle",
        "total_steps",
        "an int >= 2",
        total_steps,
    )
    _require(
        isinstance(pct_start, float) and 0 < pct_start < 1 and pct_start * total_steps > 1,
        "one_cycle",
        "pct_start",
        f"a float in (0, 1) with pct_start · total_steps > 1 (total_steps={total_steps})",
        pct_start,
    )
    _require(
        anneal_strategy in ("cos", "linear"),
        "one_cycle",
        "anneal_strategy",
        "one of cos, linear",
        anneal_strategy,
    )
    for argument, value in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
        _require(_is_number(value) and value >= 1, "one_cycle", argument, "a number >= 1", value)
    initial = 1.0 / div_factor
    final = initial / final_div_factor
    peak_step = pct_start * total_steps - 1
    last_step = total_steps - 1
    if three_phase:
        _require(
            2 * peak_step < last_step,
            "one_cycle",
            "pct_start",
            f"< (total_steps + 1) / (2·total_steps) with three_phase (total_steps={total_steps})",
            pct_start,
        )
        # (start step, end step, factor at the start, factor at the end)
        phases = [
            (0.0, peak_step, initial, 1.0),
            (peak_step, 2 * peak_step, 1.0, initial),
            (2 * peak_step, last_step, initial, final),
        ]
    else:
        phases = [(0.0, peak_step, initial, 1.0), (peak_step, last_step, 1.0, final)]
    anneal = _anneal_cos if anneal_strategy == "cos" else _anneal_linear

    def schedule(t: int) -> float:
        t = min(t, last_step)
        start_step, end_step, start_factor, end_factor = next(p for p in phases if t <= p[1])
        return anneal(start_factor, end_factor, (t - start_step) / (end_step - start_step))

    return schedule


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "step": step_decay,
    "multistep": multistep,
    "exponential": exponential,
    "inverse_time": inverse_time,
    "polynomial": polynomial,
    "cosine": cosine,
    "warmup": warmup,
    "one_cycle": one_cycle,
}
"""Names of the pure schedules → their factories. ``reduce_on_plateau`` is not here: it is
stateful, see :func:`build_lr_scheduler`."""


def _check_arguments(name: str, parameters: Sequence[inspect.Parameter], given: Mapping) -> None:
    allowed = [p.name for p in parameters]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(
            f"schedule {name!r} got unknown argument(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    missing = [p.name for p in parameters if p.default is p.empty and p.name not in given]
    if missing:
        raise ValueError(f"schedule {name!r} is missing required argument(s) {', '.join(missing)}")


def _unknown_name(kind: str, name: object, allowed: Sequence[str]) -> ValueError:
    nearest = difflib.get_close_matches(str(name), allowed, n=1)
    hint = f" (did you mean {nearest[0]!r}?)" if nearest else ""
    return ValueError(f"unknown {kind} {name!r}{hint}; allowed: {', '.join(sorted(allowed))}")


def build_schedule(name: str, **kwargs: Any) -> Schedule:
    """Build the pure schedule ``name`` from :data:`SCHEDULES` with arguments ``kwargs``.

    Raises:
        ValueError: for an unknown name (listing the names and suggesting the nearest), an
            unknown or missing argument, or an invalid value.
    """
    if name == "reduce_on_plateau":
        raise ValueError(
            "schedule 'reduce_on_plateau' reads a metric, so it is not a function of the step: "
            "build it with build_lr_scheduler(optimizer, 'reduce_on_plateau', ...)"
        )
    if name not in SCHEDULES:
        raise _unknown_name("schedule", name, list(SCHEDULES))
    factory = SCHEDULES[name]
    _check_arguments(name, list(inspect.signature(factory).parameters.values()), kwargs)
    return factory(**kwargs)


def _check_interval(interval: object) -> None:
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")


def _set_lr(group: dict[str, Any], lr: float | Tensor) -> None:
    # A tensor learning rate (capturable / compiled optimizers) is updated in place so that
    # anything holding a reference to it sees the new value.
    if isinstance(group["lr"], Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


class ScheduledLR:
    """Apply a :data:`Schedule` to an optimizer: ``group["lr"] = initial_lr · factor(t)``.

    On construction each param group's current ``lr`` is recorded as its ``initial_lr``
    (kept if already present, as torch's schedulers do) and factor(0) is applied; each
    :meth:`step` advances t by one. ``interval`` tells the trainer whether t counts
    optimizer steps or epochs; this class behaves the same either way.

    Args:
        optimizer: the optimizer whose learning rates are set.
        schedule: a function of the step, e.g. from :func:`build_schedule`.
        interval: "step" (call :meth:`step` after every optimizer step) or "epoch" (after
            every epoch).
    """

    requires_metric = False

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: Schedule,
        interval: Literal["step", "epoch"] = "step",
    ) -> None:
        _check_interval(interval)
        self.optimizer = optimizer
        self.schedule = schedule
        self.interval = interval
        for group in optimizer.param_groups:
            lr = group["lr"]
            group.setdefault("initial_lr", lr.clone() if isinstance(lr, Tensor) else lr)
        self.step_count = 0
        self._apply()

    def _apply(self) -> None:
        factor = self.schedule(self.step_count)
        for group in self.optimizer.param_groups:
            _set_lr(group, group["initial_lr"] * factor)

    def step(self, metric: float | None = None) -> None:
        """Advance the schedule by one step or epoch. ``metric`` is accepted for a uniform
        interface with :class:`ReduceLROnPlateau` and ignored."""
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The learning rate of each param group as last set."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """The position in the schedule and the base learning rates (not the schedule
        function itself: rebuild it from the config, as with torch's ``LambdaLR``)."""
        return {
            "step_count": self.step_count,
            "initial_lrs": [group["initial_lr"] for group in self.optimizer.param_groups],
            "interval": self.interval,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` and set the learning rates it implies."""
        initial_lrs = state_dict["initial_lrs"]
        if len(initial_lrs) != len(self.optimizer.param_groups):
            raise ValueError(
                f"state_dict has {len(initial_lrs)} initial_lrs but the optimizer has "
                f"{len(self.optimizer.param_groups)} param groups"
            )
        self.interval = state_dict["interval"]
        self.step_count = state_dict["step_count"]
        for group, initial_lr in zip(self.optimizer.param_groups, initial_lrs, strict=True):
            group["initial_lr"] = initial_lr
        self._apply()


class ReduceLROnPlateau:
    """Multiply the learning rates by ``factor`` once a metric stops improving (torch's
    ``ReduceLROnPlateau``, same arguments, defaults and decisions).

    A value is better than ``best`` when, in mode "min", it is below best·(1 − threshold)
    (threshold_mode "rel") or best − threshold ("abs"); in mode "max", above
    best·(1 + threshold) or best + threshold. Each call that is not better counts a bad
    epoch (a NaN metric is never better); when there are more than ``patience`` bad epochs,
    every group's lr becomes max(lr · factor, min_lr) (unless that changes it by ``eps`` or
    less), the count restarts, and the next ``cooldown`` calls count no bad epochs.

    Args:
        optimizer: the optimizer whose learning rates are reduced.
        mode: "min" or "max".
        factor: in (0, 1).
        patience: bad epochs tolerated, an int ≥ 0.
        threshold: ≥ 0; the margin a value must beat ``best`` by.
        threshold_mode: "rel" or "abs".
        cooldown: calls after a reduction during which bad epochs are not counted, ≥ 0.
        min_lr: lower bound of the learning rate (absolute), one for all groups or a list
            with one per group.
        eps: smallest change of learning rate that is applied, ≥ 0.
        interval: when the trainer calls :meth:`step` (usually "epoch", with the
            validation metric).
    """

    requires_metric = True

    def __init__(
        self,
        optimizer: Optimizer,
        mode: Literal["min", "max"] = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_lr: float | Sequence[float] = 0.0,
        eps: float = 1e-8,
        interval: Literal["step", "epoch"] = "epoch",
    ) -> None:
        name = "reduce_on_plateau"
        _require(mode in ("min", "max"), name, "mode", "one of min, max", mode)
        _require(_is_number(factor) and 0 < factor < 1, name, "factor", "in (0, 1)", factor)
        _require(_is_int(patience) and patience >= 0, name, "patience", "an int >= 0", patience)
        _require(
            _is_number(threshold) and threshold >= 0, name, "threshold", "a number >= 0", threshold
        )
        _require(
            threshold_mode in ("rel", "abs"),
            name,
            "threshold_mode",
            "one of rel, abs",
            threshold_mode,
        )
        _require(_is_int(cooldown) and cooldown >= 0, name, "cooldown", "an int >= 0", cooldown)
        _require(_is_number(eps) and eps >= 0, name, "eps", "a number >= 0", eps)
        _check_interval(interval)
        groups = len(optimizer.param_groups)
        min_lrs = list(min_lr) if isinstance(min_lr, Sequence) else [min_lr] * groups
        _require(
            len(min_lrs) == groups and all(_is_number(m) and m >= 0 for m in min_lrs),
            name,
            "min_lr",
            f"a number >= 0 or a list of {groups} (one per param group)",
            min_lr,
        )
        self.optimizer = optimizer
        self.mode = mode
        self.factor = factor
        self.patience = patience
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.cooldown = cooldown
        self.min_lrs = min_lrs
        self.eps = eps
        self.interval = interval
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.step_count = 0

    def _is_better(self, value: float) -> bool:
        if self.mode == "min":
            bar = (
                self.best * (1 - self.threshold)
                if self.threshold_mode == "rel"
                else self.best - self.threshold
            )
            return value < bar
        bar = (
            self.best * (1 + self.threshold)
            if self.threshold_mode == "rel"
            else self.best + self.threshold
        )
        return value > bar

    def step(self, metric: float | None = None) -> None:
        """Record the metric of this step or epoch, reducing the learning rates after more
        than ``patience`` calls without improvement."""
        if metric is None:
            raise ValueError("reduce_on_plateau needs the monitored metric: call step(metric)")
        value = float(metric)
        self.step_count += 1
        if self._is_better(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def _reduce_lr(self) -> None:
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs, strict=True):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                _set_lr(group, new_lr)

    def get_last_lr(self) -> list[float]:
        """The learning rate of each param group as it is now."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    _STATE = ("best", "num_bad_epochs", "cooldown_counter", "step_count")

    def state_dict(self) -> dict[str, Any]:
        """The counters and the best value so far (the settings come from the config)."""
        return {key: getattr(self, key) for key in self._STATE}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        for key in self._STATE:
            setattr(self, key, state_dict[key])


LRScheduler = ScheduledLR | ReduceLROnPlateau


def build_lr_scheduler(
    optimizer: Optimizer,
    name: str,
    interval: Literal["step", "epoch"] | None = None,
    **kwargs: Any,
) -> LRScheduler:
    """Build the learning-rate scheduler ``name`` for ``optimizer``: a :class:`ScheduledLR`
    over ``build_schedule(name, **kwargs)``, or a :class:`ReduceLROnPlateau` for
    "reduce_on_plateau".

    Args:
        optimizer: the optimizer to schedule.
        name: a key of :data:`SCHEDULES`, or "reduce_on_plateau".
        interval: "step" or "epoch"; None takes "step" for the pure schedules and "epoch"
            for reduce_on_plateau.
        **kwargs: the schedule's arguments.
    """
    if name == "reduce_on_plateau":
        settings = inspect.signature(ReduceLROnPlateau).parameters.values()
        # optimizer and interval are build_lr_scheduler's own arguments.
        settings = [p for p in settings if p.name not in ("optimizer", "interval")]
        _check_arguments(name, settings, kwargs)
        return ReduceLROnPlateau(optimizer, interval=interval or "epoch", **kwargs)
    if name not in SCHEDULES:
        raise _unknown_name("schedule", name, [*SCHEDULES, "reduce_on_plateau"])
    return ScheduledLR(optimizer, build_schedule(name, **kwargs), interval=interval or "step")

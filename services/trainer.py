"""Run one trial: train one model with one configuration and report what happened.

A trial is the unit everything else schedules, records and compares. ``run_trial`` takes a
plain, JSON-able config dict (validated here into a :class:`TrialConfig`), builds the data,
model, optimizer (``optimizers.build_optimizer``), learning-rate schedule, penalties and early
stopping, trains, evaluates on the validation split after every epoch, and returns a
:class:`TrialResult`. Pure PyTorch: no Ray, Optuna or MLflow here; they hook in through the
reporter.

Speed. The splits live on the device as tensors and batches are gathered by index from a
per-epoch permutation (no DataLoader; the last partial batch of an epoch is dropped, so
every step sees ``batch_size`` samples). The training step never waits for the device:
per-step losses stay on the device and are transferred, together with the validation means,
in one device→host copy per epoch.

Divergence. A non-finite loss or parameter ends the trial as ``diverged``. The epoch-end copy
holds every step's loss, so the diverged step reported is exactly the first step whose loss
was not finite. Parameters made non-finite by a step show in the next step's loss; after an
epoch's last step they show in the validation loss, and the epoch's last step is reported
(checking the parameters themselves every epoch cost more than 1% of a small trial's
time, for nothing the validation pass does not already reveal). So that a NaN early
in a long epoch does not waste the rest of it, every ``DIVERGENCE_CHECK_STEPS`` steps the
last losses' finiteness is copied to the host asynchronously (CUDA: a non-blocking copy
into pinned memory, polled with an event; CPU: read directly, there is no device to wait
for) and the epoch is cut short once a copy shows a non-finite loss. This guard only
decides *when* to stop; the step reported always comes from the epoch-end losses.

Determinism. ``seed`` seeds the global generators inside ``torch.random.fork_rng`` (model
initialisation and dropout; the caller's generator state is restored afterwards) and a
separate generator for the data order and augmentation. On CPU the same config and seed
give a bit-identical history (except the wall-clock times).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from optimizers import build_optimizer
from optimizers.early_stopping import EarlyStopping
from optimizers.regularizers import decay_parameters, l1_penalty, l2_penalty
from optimizers.schedules import build_lr_scheduler
from services.workloads import Dataset, Split, Workload, get_workload

Status = Literal["completed", "early_stopped", "pruned", "diverged", "failed"]
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
EARLY_STOPPING_KEYS = ("patience", "min_delta", "restore_best_weights", "monitor")
MONITORS = ("val_metric", "val_loss")
DIVERGENCE_CHECK_STEPS = 32
EVAL_BATCH_SIZE = 1024
# Placeholder length used only to validate a schedule whose total_steps the trial fills in.
_VALIDATION_TOTAL_STEPS = 10_000


# --- configuration --------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _require(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"trial config {key} must be {expected}, got {value!r}")


def _unknown_keys(what: str, given: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(str(k) for k in set(given) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {what} key {unknown[0]!r}; allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class TrialConfig:
    """The validated configuration of one trial (build it with :meth:`from_dict`).

    Keys:
        workload: a workload name (``services.workloads.WORKLOADS``).
        optimizer: an optimizer name (``optimizers.OPTIMIZERS``).
        hparams: keyword arguments of ``optimizers.build_optimizer`` (lr, weight_decay,
            betas, momentum, ...).
        schedule: None, or ``{"name": ..., "interval": "step"|"epoch", **arguments}`` for
            ``optimizers.schedules.build_lr_scheduler``. A ``total_steps`` left out is the
            trial's length in the schedule's interval; reduce_on_plateau watches the
            validation metric (``mode`` defaults to the metric's direction).
        epochs, batch_size: default to the workload's.
        model: model options (activation, dropout, batch_norm, width, depth; which ones
            depends on the workload), merged over the workload's defaults.
        l1, l2: coefficients of the L1 / L2 penalties added to the loss, applied to the
            weight matrices and kernels (``optimizers.regularizers.decay_parameters``).
        early_stopping: None, or ``{"patience": int, "min_delta": float,
            "restore_best_weights": bool, "monitor": "val_metric"|"val_loss"}``.
        seed: controls initialisation, data order, augmentation and dropout.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        precision: "fp32" or "bf16" (autocast for the forward pass and loss).
        compile: ``torch.compile`` the model.
        channels_last: channels-last memory format (image workloads only).
        data_dir: the data directory (default ``$OPTARENA_DATA_DIR`` or ``.optarena/data``).
        download: download missing dataset files (with checksum verification).
        max_steps: None, or a cap on optimizer steps (the trial then ends ``completed``).
    """

    workload: str
    optimizer: str
    hparams: dict[str, Any] = field(default_factory=dict)
    schedule: dict[str, Any] | None = None
    epochs: int | None = None
    batch_size: int | None = None
    model: dict[str, Any] = field(default_factory=dict)
    l1: float = 0.0
    l2: float = 0.0
    early_stopping: dict[str, Any] | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    data_dir: str | None = None
    download: bool = False
    max_steps: int | None = None

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The keys a trial config may have."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrialConfig:
        """Validate a plain config dict and resolve the workload's defaults (epochs, batch
        size, model options), so the result records everything the trial used.

        Raises ``ValueError`` naming the first bad key or value and what is allowed: unknown
        keys, workload, optimizer, hyperparameter, model option, schedule or early-stopping
        setting, and values of the wrong type or range.
        """
        if not isinstance(raw, Mapping):
            raise ValueError(f"trial config must be a mapping, got {type(raw).__name__}")
        _unknown_keys("trial config", raw, cls.keys())
        for key in ("workload", "optimizer"):
            if key not in raw:
                raise ValueError(f"trial config needs {key!r}")
        workload = get_workload(raw["workload"])
        config = dict(raw)
        if config.get("epochs") is None:
            config["epochs"] = workload.default_epochs
        if config.get("batch_size") is None:
            config["batch_size"] = workload.default_batch_size
        model = raw.get("model")
        _require(model is None or isinstance(model, Mapping), "model", "a mapping", model)
        config["model"] = workload.resolve_model_options(model)
        for key in ("hparams", "schedule", "early_stopping"):
            if isinstance(config.get(key), Mapping):
                config[key] = dict(config[key])
        resolved = cls(**config)
        resolved._check(workload)
        return resolved

    def _check(self, workload: Workload) -> None:
        _require(_is_int(self.epochs) and self.epochs >= 1, "epochs", "an int >= 1", self.epochs)
        _require(
            _is_int(self.batch_size) and self.batch_size >= 1,
            "batch_size",
            "an int >= 1",
            self.batch_size,
        )
        _require(
            self.max_steps is None or (_is_int(self.max_steps) and self.max_steps >= 1),
            "max_steps",
            "null or an int >= 1",
            self.max_steps,
        )
        _require(_is_int(self.seed) and self.seed >= 0, "seed", "an int >= 0", self.seed)
        _require(self.device in DEVICES, "device", f"one of {', '.join(DEVICES)}", self.device)
        _require(
            self.precision in PRECISIONS,
            "precision",
            f"one of {', '.join(PRECISIONS)}",
            self.precision,
        )
        for key in ("compile", "channels_last", "download"):
            _require(
                isinstance(getattr(self, key), bool), key, "true or false", getattr(self, key)
            )
        _require(
            self.data_dir is None or isinstance(self.data_dir, str),
            "data_dir",
            "null or a path",
            self.data_dir,
        )
        if self.channels_last and not workload.image_input:
            raise ValueError(
                f"trial config channels_last applies to image workloads only; "
                f"{workload.name!r} has inputs of shape {workload.input_shape}"
            )
        _require(isinstance(self.hparams, dict), "hparams", "a mapping", self.hparams)
        # The model on the meta device: checks activation names and architecture options
        # without allocating memory.
        with torch.device("meta"):
            model = workload.build_model(self.model)
        for key in ("l1", "l2"):
            value = getattr(self, key)
            _require(
                _is_real(value) and math.isfinite(value) and value >= 0,
                key,
                "a finite number >= 0",
                value,
            )
            if value > 0 and not decay_parameters(model)[0]:
                raise ValueError(
                    f"trial config {key} > 0 but workload {workload.name!r} has no weight "
                    f"matrices or kernels to penalise (use the optimizer's weight_decay)"
                )
        probe = [nn.Parameter(torch.zeros(1))]
        optimizer = build_optimizer(self.optimizer, probe, **self.hparams)
        if self.schedule is not None:
            _require(
                isinstance(self.schedule, dict), "schedule", "null or a mapping", self.schedule
            )
            _schedule_interval(self.schedule)
            _build_scheduler(optimizer, self.schedule, workload, _VALIDATION_TOTAL_STEPS)
        if self.early_stopping is not None:
            _build_early_stopping(self.early_stopping, workload)

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain JSON-able dict; ``from_dict(to_dict())`` gives it back."""
        return asdict(self)


def _schedule_interval(schedule: Mapping[str, Any]) -> str:
    """The schedule's interval; left out, "epoch" for reduce_on_plateau (it reads the
    per-epoch validation metric) and "step" for the pure schedules."""
    if "name" not in schedule:
        raise ValueError("trial config schedule needs a 'name'")
    default = "epoch" if schedule["name"] == "reduce_on_plateau" else "step"
    return schedule.get("interval") or default


def _build_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: Mapping[str, Any],
    workload: Workload,
    trial_length: int,
) -> Any:
    """``build_lr_scheduler`` from a schedule config, filling ``total_steps`` (the trial's
    length in the schedule's interval) and reduce_on_plateau's ``mode`` when left out."""
    arguments = dict(schedule)
    name = arguments.pop("name")
    if name == "reduce_on_plateau":
        if arguments.get("interval") == "step":
            raise ValueError(
                "schedule reduce_on_plateau reads the validation metric, which exists once "
                "per epoch: use interval 'epoch'"
            )
        arguments.setdefault("mode", workload.metric.direction)
    elif name in ("cosine", "polynomial", "one_cycle"):
        arguments.setdefault("total_steps", trial_length)
    return build_lr_scheduler(optimizer, name, **arguments)


def _build_early_stopping(settings: Mapping[str, Any], workload: Workload) -> EarlyStopping:
    if not isinstance(settings, Mapping):
        raise ValueError(
            f"trial config early_stopping must be null or a mapping, got {settings!r}"
        )
    _unknown_keys("early_stopping", settings, EARLY_STOPPING_KEYS)
    if "patience" not in settings:
        raise ValueError("trial config early_stopping needs 'patience'")
    monitor = settings.get("monitor", "val_metric")
    _require(
        monitor in MONITORS, "early_stopping.monitor", f"one of {', '.join(MONITORS)}", monitor
    )
    return EarlyStopping(
        metric=workload.metric.name if monitor == "val_metric" else "val_loss",
        mode=workload.metric.direction if monitor == "val_metric" else "min",
        patience=settings["patience"],
        min_delta=settings.get("min_delta", 0.0),
        restore_best_weights=settings.get("restore_best_weights", False),
    )


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch produced; the reporter receives it, the history is a list of them.

    ``train_loss`` is the mean data loss over the epoch's steps (penalties excluded, so
    trials with and without L1/L2 compare). ``lr`` is param group 0's learning rate at the
    epoch's last step. Times are training only (evaluation excluded): ``epoch_time_s`` this
    epoch, ``train_time_s`` since the start.
    """

    epoch: int
    step: int
    train_loss: float
    val_metric: float
    val_loss: float
    lr: float
    epoch_time_s: float
    train_time_s: float


class Reporter(Protocol):
    """Called once per epoch, after evaluation, with that epoch's metrics.

    Return True to stop the trial (status ``pruned``: how Optuna pruning hooks in); None or
    False to go on. It runs between epochs, not on the per-step path, but the next epoch
    waits for it, so it should hand slow work (network logging) to another thread. An
    exception it raises propagates to the caller of ``run_trial`` unchanged.
    """

    def __call__(self, metrics: EpochMetrics) -> bool | None: ...


@dataclass(frozen=True)
class TrialResult:
    """The outcome of one trial.

    ``status``: completed (all epochs or max_steps), early_stopped, pruned (the reporter
    asked to stop), diverged (non-finite loss or parameters, at ``diverged_at_step``) or
    failed (an exception in the model or training, in ``error`` and ``traceback``).
    ``final_val_metric`` is the last epoch's validation metric (the best epoch's with
    early stopping's restore_best_weights); ``test_metric`` is measured once at the end, for
    completed and early-stopped trials only. ``time_to_target_s`` (training time only) and
    ``steps_to_target`` are those at the end of the first epoch whose validation metric
    reached the workload's target, None if none did.
    """

    status: Status
    config: dict[str, Any]
    metric: str
    direction: str
    target: float
    history: list[EpochMetrics]
    final_val_metric: float | None
    best_val_metric: float | None
    test_metric: float | None
    time_to_target_s: float | None
    steps_to_target: int | None
    train_time_s: float
    steps: int
    samples_per_s: float
    device: str
    diverged_at_step: int | None = None
    error: str | None = None
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (non-finite floats become None, so strict JSON encoders accept
        it)."""
        return _json_safe(asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- the training loop ----------------------------------------------------------------------


def resolve_device(requested: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without CUDA is a ``ValueError``."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("trial config device is 'cuda' but CUDA is not available here")
    return torch.device(requested)


class _Stopwatch:
    """Training time of one epoch: CUDA events on the GPU (read after the epoch's one
    synchronisation), ``perf_counter`` on the CPU (where every op has finished on return)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start_s = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self._end = torch.cuda.Event(enable_timing=True)
            self._end.record()
        else:
            self._elapsed_s = time.perf_counter() - self._start_s

    def elapsed_s(self) -> float:
        """Seconds between start and stop; on CUDA call it after the device caught up."""
        if self.cuda:
            return self._start.elapsed_time(self._end) / 1000.0
        return self._elapsed_s


class _DivergenceGuard:
    """Notices a non-finite loss a few steps after it happens without waiting for the
    device (see the module docstring)."""

    def __init__(self, device: torch.device, every: int = DIVERGENCE_CHECK_STEPS) -> None:
        self.every = every
        self.cuda = device.type == "cuda"
        self._finite_host = torch.ones((), dtype=torch.bool, pin_memory=self.cuda)
        self._copied: torch.cuda.Event | None = None

    def non_finite_seen(self, step_losses: list[Tensor]) -> bool:
        if self._copied is not None and self._copied.query():
            self._copied = None
            if not self._finite_host.item():
                return True
        n = len(step_losses)
        if n % self.every:
            return False
        finite = torch.stack(step_losses[n - self.every :]).isfinite().all()
        if not self.cuda:
            return not bool(finite)
        if self._copied is None:  # else the previous copy is in flight: skip this window
            self._finite_host.copy_(finite, non_blocking=True)
            self._copied = torch.cuda.Event()
            self._copied.record()
        return False


@dataclass
class _DeviceSplit:
    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.x)


class _Stop(Exception):
    """Ends the epoch loop with a status (raised inside ``_TrialRun``, never escapes it)."""

    def __init__(self, status: Status) -> None:
        self.status = status


class _TrialRun:
    """The state of one trial while it runs; ``run_trial`` is its only user."""

    def __init__(
        self,
        config: TrialConfig,
        workload: Workload,
        dataset: Dataset,
        device: torch.device,
        reporter: Reporter | None,
    ) -> None:
        self.config = config
        self.workload = workload
        self.device = device
        self.reporter = reporter
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.memory_format = memory_format

        def to_device(split: Split) -> _DeviceSplit:
            x = torch.from_numpy(split.x).to(device)
            if config.channels_last:
                x = x.contiguous(memory_format=memory_format)
            return _DeviceSplit(x, torch.from_numpy(split.y).to(device))

        self.train, self.val, self.test = map(
            to_device, (dataset.train, dataset.val, dataset.test)
        )
        if config.batch_size > len(self.train):
            raise ValueError(
                f"trial config batch_size {config.batch_size} exceeds the {len(self.train)} "
                f"training samples of workload {workload.name!r}"
            )
        self.steps_per_epoch = len(self.train) // config.batch_size
        self.total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        if config.schedule is not None:
            # Validate the schedule at the trial's real length (from_dict could only use a
            # placeholder): a bad schedule is the caller's input, not a failed trial.
            probe = build_optimizer(config.optimizer, [nn.Parameter(torch.zeros(1))])
            _build_scheduler(probe, config.schedule, workload, self._schedule_length())
        self.data_order = torch.Generator(device=device)
        self.data_order.manual_seed(config.seed)
        self.autocast = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
            if config.precision == "bf16"
            else contextlib.nullcontext
        )
        self.history: list[EpochMetrics] = []
        self.step = 0
        self.train_time_s = 0.0
        self.time_to_target_s: float | None = None
        self.steps_to_target: int | None = None
        self.diverged_at_step: int | None = None

    # -- setup (inside the failure boundary) --

    def build(self) -> None:
        config = self.config
        model = self.workload.build_model(config.model).to(self.device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.penalised = decay_parameters(model)[0]
        self.optimizer = build_optimizer(config.optimizer, model.parameters(), **config.hparams)
        self.scheduler = None
        if config.schedule is not None:
            self.scheduler = _build_scheduler(
                self.optimizer, config.schedule, self.workload, self._schedule_length()
            )
        self.early_stopping = (
            _build_early_stopping(config.early_stopping, self.workload)
            if config.early_stopping is not None
            else None
        )
        self.module = model
        self.model = torch.compile(model) if config.compile else model

    def _epochs_to_run(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def _schedule_length(self) -> int:
        """The trial's length in its schedule's interval (steps or epochs)."""
        per_epoch = _schedule_interval(self.config.schedule) == "epoch"
        return self._epochs_to_run() if per_epoch else self.total_steps

    # -- one epoch --

    def _objective(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with self.autocast():
            loss = self.workload.loss(self.model(x), y).mean()
        objective = loss
        if self.config.l1:
            objective = objective + l1_penalty(self.penalised, self.config.l1)
        if self.config.l2:
            objective = objective + l2_penalty(self.penalised, self.config.l2)
        return loss, objective

    def train_epoch(self, guard: _DivergenceGuard) -> tuple[list[Tensor], float]:
        """Run up to one epoch of steps; return the per-step losses (on the device) and the
        learning rate of the last step."""
        config, train = self.config, self.train
        batch_size = config.batch_size
        steps = min(self.steps_per_epoch, self.total_steps - self.step)
        order = torch.randperm(len(train), generator=self.data_order, device=self.device)
        per_step_schedule = self.scheduler is not None and self.scheduler.interval == "step"
        group = self.optimizer.param_groups[0]
        step_losses: list[Tensor] = []
        lr = group["lr"]
        self.model.train()
        for i in range(steps):
            index = order[i * batch_size : (i + 1) * batch_size]
            # index_select, not x[index]: on CPU the advanced-indexing kernel goes parallel
            # for small gathers and was 10-100x slower on a busy 2-core machine; x[index]
            # only where it keeps the channels-last layout that index_select would drop.
            x = train.x[index] if config.channels_last else train.x.index_select(0, index)
            y = train.y.index_select(0, index)
            if self.workload.augment is not None:
                x = self.workload.augment(x, self.data_order)
                x = x.contiguous(memory_format=self.memory_format)
            loss, objective = self._objective(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            lr = group["lr"]
            self.optimizer.step()
            if per_step_schedule:
                self.scheduler.step()
            step_losses.append(loss.detach())
            if guard.non_finite_seen(step_losses):
                break
        return step_losses, float(lr)

    @torch.no_grad()
    def evaluate(self, split: _DeviceSplit) -> Tensor:
        """Mean metric and mean loss over ``split``, as a 2-element tensor on the device."""
        self.model.eval()
        sums = torch.zeros(2, device=self.device)
        batch = max(EVAL_BATCH_SIZE, self.config.batch_size)
        metric_is_loss = self.workload.metric.per_sample is self.workload.loss
        for start in range(0, len(split), batch):
            x, y = split.x[start : start + batch], split.y[start : start + batch]
            with self.autocast():
                output = self.model(x)
            loss = self.workload.loss(output, y).float()
            # The quadratic's metric is its loss: computed once.
            metric = loss if metric_is_loss else self.workload.metric.per_sample(output, y)
            sums += torch.stack([metric.sum(), loss.sum()])
        self.model.train()
        return sums / len(split)

    # -- the epoch loop --

    def epochs(self) -> Iterator[EpochMetrics]:
        """Train epoch by epoch, yielding each epoch's metrics; raises ``_Stop`` for a
        divergence."""
        guard = _DivergenceGuard(self.device)
        stopwatch = _Stopwatch(self.device)
        for epoch in range(1, self._epochs_to_run() + 1):
            stopwatch.start()
            step_losses, lr = self.train_epoch(guard)
            stopwatch.stop()
            validation = self.evaluate(self.val)
            # The epoch's one device→host copy: every step's loss and the validation means.
            *losses, val_metric, val_loss = torch.cat(
                [torch.stack(step_losses).float(), validation]
            ).tolist()
            epoch_time_s = stopwatch.elapsed_s()
            self.train_time_s += epoch_time_s
            first_bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
            if first_bad is not None:
                self.diverged_at_step = self.step + first_bad + 1
                self.step += len(losses)
                raise _Stop("diverged")
            self.step += len(losses)
            # Parameters broken by the epoch's last update show in the validation loss.
            if not (math.isfinite(val_loss) and math.isfinite(val_metric)):
                self.diverged_at_step = self.step
                raise _Stop("diverged")
            metrics = EpochMetrics(
                epoch=epoch,
                step=self.step,
                train_loss=math.fsum(losses) / len(losses),
                val_metric=val_metric,
                val_loss=val_loss,
                lr=lr,
                epoch_time_s=epoch_time_s,
                train_time_s=self.train_time_s,
            )
            self.history.append(metrics)
            if self.time_to_target_s is None and self.workload.metric.reached(
                val_metric, self.workload.target
            ):
                self.time_to_target_s, self.steps_to_target = self.train_time_s, self.step
            yield metrics

    def after_epoch(self, metrics: EpochMetrics) -> None:
        """Schedules and early stopping that read the epoch's metrics; raises ``_Stop``."""
        if self.scheduler is not None and self.scheduler.interval == "epoch":
            self.scheduler.step(metrics.val_metric)
        if self.early_stopping is not None:
            monitored = (
                metrics.val_loss
                if self.config.early_stopping.get("monitor") == "val_loss"
                else metrics.val_metric
            )
            # Non-finite values never get here (they end the epoch as diverged), so a stop
            # is EarlyStopping's patience running out.
            if self.early_stopping.update(monitored, self.module):
                raise _Stop("early_stopped")

    def finish(self) -> tuple[float | None, float | None]:
        """(final validation metric, test metric) of the trained model."""
        final_val = self.history[-1].val_metric if self.history else None
        stopping = self.early_stopping
        if stopping is not None and stopping.restore_best_weights and stopping.best is not None:
            stopping.restore(self.module)
            final_val = self.history[stopping.best_epoch].val_metric
        test_metric = self.evaluate(self.test)[0].item()
        return final_val, test_metric

    def result(
        self,
        status: Status,
        final_val: float | None = None,
        test_metric: float | None = None,
        error: BaseException | None = None,
    ) -> TrialResult:
        values = [m.val_metric for m in self.history]
        best = None
        if values:
            best = max(values) if self.workload.metric.direction == "max" else min(values)
        samples = self.step * self.config.batch_size
        return TrialResult(
            status=status,
            config=self.config.to_dict(),
            metric=self.workload.metric.name,
            direction=self.workload.metric.direction,
            target=self.workload.target,
            history=list(self.history),
            final_val_metric=final_val,
            best_val_metric=best,
            test_metric=test_metric,
            time_to_target_s=self.time_to_target_s,
            steps_to_target=self.steps_to_target,
            train_time_s=self.train_time_s,
            steps=self.step,
            samples_per_s=samples / self.train_time_s if self.train_time_s > 0 else 0.0,
            device=str(self.device),
            diverged_at_step=self.diverged_at_step,
            error=None if error is None else f"{type(error).__name__}: {error}",
            traceback=None
            if error is None
            else "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        )

    def run(self) -> TrialResult:
        """Train to the end or to a stop. Failures of the trial become results; the
        reporter is called outside that boundary, so its exceptions reach the caller."""
        try:
            self.build()
        except Exception as error:
            return self.result("failed", error=error)
        epochs = self.epochs()
        while True:
            try:
                metrics = next(epochs, None)
                if metrics is None:
                    return self.result("completed", *self.finish())
            except _Stop as stop:
                return self.result(stop.status)
            except Exception as error:
                return self.result("failed", error=error)
            if self.reporter is not None and self.reporter(metrics):
                return self.result("pruned", final_val=metrics.val_metric)
            try:
                self.after_epoch(metrics)
            except _Stop as stop:
                if stop.status != "early_stopped":
                    return self.result(stop.status)
                try:
                    return self.result("early_stopped", *self.finish())
                except Exception as error:
                    return self.result("failed", error=error)
            except Exception as error:
                return self.result("failed", error=error)


def run_trial(
    config: Mapping[str, Any] | TrialConfig, reporter: Reporter | None = None
) -> TrialResult:
    """Train one model with one configuration; see the module docstring and
    :class:`TrialConfig` for the keys.

    Raises ``ValueError`` for an invalid config and ``services.workloads.DataFileMissing``
    for missing dataset files, before any training: those are the caller's input, the same
    for every trial, and must not be recorded as an optimizer's failure. Everything after
    that is captured in the result: a divergence is ``diverged``, an exception in the
    model or the training step is ``failed`` with the error. The reporter's own exceptions
    propagate.
    """
    if not isinstance(config, TrialConfig):
        config = TrialConfig.from_dict(config)
    workload = get_workload(config.workload)
    device = resolve_device(config.device)
    dataset = workload.load_data(config.data_dir, config.download)
    forked = []
    if device.type == "cuda":
        forked = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(config.seed)
        return _TrialRun(config, workload, dataset, device, reporter).run()

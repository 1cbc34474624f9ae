"""Run a study: search every arm's hyperparameters on Ray workers, re-run each arm's best
configuration with the final-phase seeds, record everything in Optuna and MLflow, and show
the progress.

**Driver and workers.** ``run_study`` is the driver: it creates or loads each arm's Optuna
study, reserves the arm's missing trials (``services.search.reserve_trials``: exact budgets,
nothing duplicated on resume), opens the MLflow runs of the study and of each arm, starts
the workers (``services.cluster.WorkerPool``) and hands each idle worker an arm that has
reserved trials waiting, preferring arms with the fewest workers on them: with more arms
than workers each arm's trials run one after another (what a model-based sampler such as
TPE needs), with more workers than arms they share arms. A :class:`TrialWorker` runs the
waiting trials of the arm it was given (``run_reserved_trials``) and returns when none is
left. The driver only reads the storage, and polls it for the progress display.

**A trial.** The worker samples a configuration through Optuna (``suggest_config``), runs
``services.trainer.run_trial`` with a reporter that buffers each epoch's metrics for MLflow
and reports the objective's value at each epoch to Optuna's pruner, and ends the trial as:

- COMPLETE with the objective's value, for a completed or early-stopped trial;
- PRUNED when the pruner stopped it;
- FAIL for a failed trial (an exception in the model or training) or a NaN objective;
- COMPLETE with the worst possible value (−inf when maximizing, +inf when minimizing) for a
  diverged trial, with user attrs ``status=diverged`` and ``diverged_step``. AlgoPerf
  counts a diverged run as one that never reaches the target. As FAIL the sampler would
  ignore it (TPE drops failed trials) and keep proposing the learning rates that diverge; as
  the worst value it learns to avoid them. A diverged trial is never an arm's best.

Every finished trial has the user attr ``status`` (the trainer's: completed, early_stopped,
pruned, diverged, failed; or ``lost`` and ``interrupted``, below) and ``timing`` (the wall
time of its ``run_trial`` and, within it, of reporting epochs to Optuna and MLflow); a
started one has ``run`` (the worker, host and process that ran it) and, once created,
``mlflow_run_id``. The MLflow run of a trial is nested under its arm's run, whose id the
driver passes to the workers. MLflow records are sent from a background thread of the
worker while the trial trains (:class:`TrialRecorder`); a trial ends in Optuna once its
MLflow run has ended, so the two agree whenever a worker dies.

**Final phase.** Once an arm's search has finished, its best trial (the best finite value
of the first objective among COMPLETE, non-diverged trials) is trained again with each seed
of ``final.seeds``. Final runs are the trials of a second Optuna study per arm,
``<study>/<workload>/<optimizer>/final``, reserved like search trials, with user attrs
``seed``, ``source_trial`` and ``params``: they survive a dead worker or driver like any
trial, and a resumed run re-runs none that is done. They are keyed by (source trial, seed):
when a larger budget later finds a better configuration, that one's seeds run too. An arm
without a completed trial has no final phase.

**Failures.** A worker that dies mid-trial loses that trial only. When Ray reports the actor
dead, the driver fails its running trial (``status=lost``), requeues it with the same
parameters at most ``budget.max_retries`` times (after that it counts as failed) and starts
a replacement worker. A trial whose worker the driver does not know to be dead (a killed
driver's, another machine's) is failed and requeued the same way by the heartbeat reaper
once it has been silent for the grace period. A killed driver is resumed by running the same
command again: finished trials are kept and count towards the budget, and the dead run's
running trials are retried once their heartbeat is stale. Ctrl-C stops the workers, requeues
their running trials (``status=interrupted``, not counted as a retry's failure) and ends with
exit code 130.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import os
import queue
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, Trial, TrialState
from rich.console import Console
from rich.live import Live
from rich.table import Table

from services import cluster
from services.search import (
    GRACE_PERIOD_S,
    JOURNAL_SCHEME,
    ArmStudy,
    build_pruner,
    build_sampler,
    check_storage_url,
    create_or_load_study,
    open_storage,
    reap_stale_trials,
    reserve_trials,
    run_reserved_trials,
    suggest_config,
)
from services.spec import Arm, Endpoint, StudySpec
from services.tracking import StudyTracker
from services.trainer import EpochMetrics, TrialConfig, TrialResult, run_trial
from services.workloads import DataFileMissing, get_workload

Phase = Literal["search", "final"]
FINAL_SUFFIX = "/final"

# User attrs of a trial (see the module docstring).
STATUS_ATTR = "status"
DIVERGED_STEP_ATTR = "diverged_step"
TIMING_ATTR = "timing"
ERROR_ATTR = "error"
RUN_ATTR = "run"
MLFLOW_RUN_ATTR = "mlflow_run_id"
SEED_ATTR = "seed"
SOURCE_TRIAL_ATTR = "source_trial"
PARAMS_ATTR = "params"
# Statuses of trials the driver fails itself.
LOST, INTERRUPTED = "lost", "interrupted"

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
# How long the driver waits for a worker to finish a task before it looks at the storage.
POLL_S = 1.0
# Workers dying outside any trial this often cannot run here at all (out of memory when
# starting, a broken installation): the study stops instead of replacing them forever.
MAX_DEATHS_OUTSIDE_TRIALS = 3
# Objectives whose per-epoch value the pruner compares (value at an epoch, best so far).
# The others exist only at the end of a trial, so studies judged by them are not pruned.
PER_EPOCH_VALUES: dict[str, Callable[[EpochMetrics], float]] = {
    "val_metric": lambda metrics: metrics.val_metric,
    "best_val_metric": lambda metrics: metrics.val_metric,
    "val_loss": lambda metrics: metrics.val_loss,
}


class TrialFailed(Exception):
    """Ends a trial as FAIL and lets the study go on (Optuna's ``catch``)."""


class StudyInputError(Exception):
    """``run_trial`` refused the trial config or found the data missing, before training:
    the same for every trial, so the study stops instead of failing them all."""


# ---- settings shared by the driver and the workers -----------------------------------------


@dataclass(frozen=True)
class StudySettings:
    """What every worker needs to run an arm's trials; picklable (it is shipped to the Ray
    actors). ``arm_run_ids`` maps an arm's Optuna study name to its MLflow run;
    ``invocation`` names this run of the study, so that its trials can be told apart from
    those of an earlier, dead one."""

    spec: StudySpec
    storage_url: str
    tracker: StudyTracker
    arm_run_ids: dict[str, str]
    invocation: str
    grace_period_s: int = GRACE_PERIOD_S

    @property
    def heartbeat_interval_s(self) -> int:
        """Six heartbeats per grace period, so a late beat never makes a live trial look
        dead."""
        return max(1, self.grace_period_s // 6)

    def open_storage(self) -> BaseStorage:
        """The Optuna storage, with heartbeats and the budget's retries of lost trials."""
        return open_storage(
            self.storage_url,
            max_retries=self.spec.budget.max_retries,
            heartbeat_interval_s=self.heartbeat_interval_s,
            grace_period_s=self.grace_period_s,
        )


def final_study_name(arm: Arm) -> str:
    """The Optuna study of the arm's final-phase runs: ``<study>/<workload>/<optimizer>/final``."""
    return arm.study_name + FINAL_SUFFIX


def open_arm_study(
    storage: BaseStorage, spec: StudySpec, arm: Arm, phase: Phase, *, sampler_stream: int = 0
) -> ArmStudy:
    """The arm's search or final-phase study, created if missing. The search samples with
    the study file's sampler, seeded for ``sampler_stream`` (``build_sampler``'s
    ``worker_index``), and prunes with its pruner; final runs sample nothing and are never
    pruned."""
    directions = spec.directions(arm)
    if phase == "search":
        space = spec.search_space_for(arm)
        sampler = build_sampler(spec.sampler, space, worker_index=sampler_stream)
        return create_or_load_study(
            storage, arm.study_name, directions, sampler, build_pruner(spec.pruner)
        )
    return create_or_load_study(
        storage,
        final_study_name(arm),
        directions,
        optuna.samplers.RandomSampler(seed=0),
        optuna.pruners.NopPruner(),
    )


def absolute_storage_url(url: str) -> str:
    """``url`` with a relative journal path made absolute: workers may start elsewhere."""
    url = check_storage_url(url)
    if url.startswith(JOURNAL_SCHEME):
        return JOURNAL_SCHEME + str(Path(url.removeprefix(JOURNAL_SCHEME)).resolve())
    return url


# ---- trial outcomes ------------------------------------------------------------------------


def objective_value(result: TrialResult, metric: str) -> float:
    """The value of objective ``metric`` (``services.spec.OBJECTIVE_METRICS``) for a
    finished trial: +inf for a time or step count to a target that was never reached
    (AlgoPerf's rule), NaN when the trial has no such value."""
    values: dict[str, float | int | None] = {
        "val_metric": result.final_val_metric,
        "best_val_metric": result.best_val_metric,
        "val_loss": result.history[-1].val_loss if result.history else None,
        "train_time_s": result.train_time_s,
        "time_to_target_s": result.time_to_target_s,
        "steps_to_target": result.steps_to_target,
    }
    value = values[metric]
    if value is None:
        return math.inf if metric in ("time_to_target_s", "steps_to_target") else math.nan
    return float(value)


def worst_value(direction: str) -> float:
    """A value no trial can be worse than: what a diverged trial gets."""
    return -math.inf if direction == "maximize" else math.inf


def is_diverged(trial: FrozenTrial) -> bool:
    """Whether ``trial`` ended because its loss or parameters stopped being finite."""
    return trial.state == TrialState.COMPLETE and trial.user_attrs.get(STATUS_ATTR) == "diverged"


def best_trial(study: optuna.Study, direction: str) -> FrozenTrial | None:
    """The arm's best trial: the best finite first objective among its COMPLETE,
    non-diverged trials (the earliest on a tie); None if it has none."""
    candidates = [
        trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not is_diverged(trial) and math.isfinite(trial.values[0])
    ]
    if not candidates:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    return min(candidates, key=lambda trial: (sign * trial.values[0], trial.number))


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of the failed trials that were requeued (their retry takes their place)."""
    return {number for trial in trials for number in trial.system_attrs.get("retry_history", [])}


def retry_failed_trial(study: optuna.Study, trial: FrozenTrial, max_retry: int | None) -> None:
    """Requeue failed ``trial`` with its parameters and user attrs, as the heartbeat reaper
    does, unless it has already been retried ``max_retry`` times (None: always)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        # A copy: the callback appends to the trial's retry history, which a storage's cache
        # would otherwise keep (Optuna's reaper copies too).
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, copy.deepcopy(trial))


def fail_and_retry(
    study: optuna.Study, trial: FrozenTrial, status: str, max_retry: int | None
) -> bool:
    """Fail running ``trial`` with user attr ``status`` and requeue it (``retry_failed_trial``);
    False if it had finished meanwhile (then nothing changes)."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, STATUS_ATTR, status)
        if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    retry_failed_trial(study, storage.get_trial(trial._trial_id), max_retry)
    return True


def mlflow_run_id(trial: FrozenTrial) -> str | None:
    """The MLflow run of ``trial``, if its worker recorded it."""
    return trial.user_attrs.get(MLFLOW_RUN_ATTR)


def worker_tag(invocation: str, slot: int, generation: int) -> str:
    """A worker's name in the ``run`` attr of its trials: ``<invocation>/<slot>.<generation>``."""
    return f"{invocation}/{slot}.{generation}"


def ran_on(trial: FrozenTrial, tag_prefix: str) -> bool:
    """Whether ``trial`` was started by a worker whose tag starts with ``tag_prefix``."""
    worker = (trial.user_attrs.get(RUN_ATTR) or {}).get("worker", "")
    return worker.startswith(tag_prefix)


# ---- the worker ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkDone:
    """What a worker returns once the arm has no reserved trial left for it."""

    arm_index: int
    phase: Phase
    trials_run: int


class TrialRecorder:
    """Sends a worker's MLflow records from a background thread, in order, while the trial
    they belong to trains: a trial's run is looked up and created, and its epochs buffered,
    off the training path. Sending them costs about 150 ms a trial here, against 15 ms for
    all of its Optuna writes.

    A trial ends in Optuna only once its records are sent (the worker calls ``drain``
    before it reports the trial's end), so a finished Optuna trial always has a finished
    MLflow run, whenever the worker dies. An error raised by the tracker (it spools what
    the server cannot take and raises only for records the server refuses) stops the
    records that follow and is raised again in the worker at ``drain``.
    """

    def __init__(self) -> None:
        self._records: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, record: Callable[[], None]) -> None:
        """Queue ``record`` to run after the ones before it."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._send, name="mlflow", daemon=True)
            self._thread.start()
        with self._idle:
            self._pending += 1
        self._records.put(record)

    def drain(self) -> None:
        """Wait until every queued record has been sent; raise the first error met."""
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _send(self) -> None:
        while True:
            record = self._records.get()
            try:
                if self._error is None:
                    record()
            except BaseException as error:  # handed to the worker's thread by drain()
                self._error = error
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()


class _TrialRecords:
    """One trial's MLflow run, created and written through the worker's recorder."""

    def __init__(self, tracker: StudyTracker, study: optuna.Study, trial: Trial) -> None:
        self.tracker = tracker
        self.study = study
        self.trial_id = trial._trial_id
        self.run_id = ""

    def create(self, arm_run_id: str, arm: Arm, **run: Any) -> None:
        self.run_id = self.tracker.trial_run(arm_run_id, arm, **run)
        # The link from the trial to its run. The trial may have been failed already, by a
        # reaper that took this worker for dead (a stall longer than the grace period).
        with contextlib.suppress(UpdateFinishedTrialError):
            self.study._storage.set_trial_user_attr(self.trial_id, MLFLOW_RUN_ATTR, self.run_id)


class TrialWorker:
    """Runs an arm's reserved trials: one per Ray actor, one task at a time.

    Plain Python; ``services.cluster`` makes it an actor. ``slot`` and ``generation`` say
    which worker of the pool it is and how many died in that slot before it. With the number
    of trials the arm had started when this worker joined it, they seed its sampler, so a
    replacement or a resumed run does not draw the same points again, while a study run from
    scratch by one worker is reproducible from the study file's seed. MLflow records go
    through a :class:`TrialRecorder`, sent while the trial trains.
    """

    def __init__(self, settings: StudySettings, slot: int, generation: int) -> None:
        self.settings = settings
        self.slot = slot
        self.generation = generation
        self._storage: BaseStorage | None = None
        self._studies: dict[tuple[int, Phase], ArmStudy] = {}
        self._recorder = TrialRecorder()
        self._warm_up()

    def _warm_up(self) -> None:
        """Pay this process's one-time costs before its first trial, so that they count as
        the worker's start-up and not as that trial's time: reading each workload's data,
        the first optimizer construction (where torch imports its compiler: over a second)
        and the MLflow client (a SQLite store checks its schema). Errors are left to the
        trials, which meet them again and record them."""
        spec, tracker = self.settings.spec, self.settings.tracker

        def open_client() -> None:
            with contextlib.suppress(Exception):
                _ = tracker.client

        self._recorder.submit(open_client)
        loaded: set[str] = set()
        for arm in spec.arms():
            with contextlib.suppress(Exception):
                config = TrialConfig.from_dict(spec.trial_config(arm, {}))  # builds the optimizer
                if arm.workload not in loaded:
                    get_workload(arm.workload).load_data(config.data_dir, config.download)
                    loaded.add(arm.workload)
        self._recorder.drain()

    @property
    def tag(self) -> str:
        """This worker's name in the ``run`` attr of its trials."""
        return worker_tag(self.settings.invocation, self.slot, self.generation)

    def run(self, arm_index: int, phase: Phase) -> WorkDone:
        """Run the arm's reserved ``phase`` trials until none is waiting.

        A ``StudyInputError`` requeues the trial it hit (the study's input, not the
        trial's configuration, was at fault) and propagates to the driver.
        """
        # The driver reports every trial; Optuna's per-trial log lines would repeat it.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        spec = self.settings.spec
        study = self._study(arm_index, phase)
        refused: list[int] = []
        try:
            ran = run_reserved_trials(
                study,
                self._objective(spec.arms()[arm_index], phase, study, refused),
                time_limit_s=spec.budget.time_limit_s if phase == "search" else None,
                catch=(TrialFailed,),
            )
        except StudyInputError:
            for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
                if trial.number in refused:
                    retry_failed_trial(study, trial, max_retry=None)
            raise
        return WorkDone(arm_index, phase, ran)

    def _study(self, arm_index: int, phase: Phase) -> ArmStudy:
        key = (arm_index, phase)
        if key not in self._studies:
            if self._storage is None:
                self._storage = self.settings.open_storage()
            arm = self.settings.spec.arms()[arm_index]
            name = arm.study_name if phase == "search" else final_study_name(arm)
            study_id = self._storage.get_study_id_from_name(name)  # the driver created it
            started = sum(
                trial.state != TrialState.WAITING
                for trial in self._storage.get_all_trials(study_id, deepcopy=False)
            )
            stream = (started << 20) | (self.generation << 10) | self.slot
            self._studies[key] = open_arm_study(
                self._storage, self.settings.spec, arm, phase, sampler_stream=stream
            )
        return self._studies[key]

    def _objective(
        self, arm: Arm, phase: Phase, study: ArmStudy, refused: list[int]
    ) -> Callable[[Trial], float | list[float]]:
        spec, tracker, recorder = self.settings.spec, self.settings.tracker, self._recorder
        arm_run_id = self.settings.arm_run_ids[arm.study_name]
        directions = spec.directions(arm)
        metrics = [o.metric for o in (spec.objective, spec.second_objective) if o is not None]
        per_epoch = PER_EPOCH_VALUES.get(metrics[0])
        prune = phase == "search" and len(metrics) == 1 and per_epoch is not None
        worker = {"worker": self.tag, "host": socket.gethostname(), "pid": os.getpid()}

        def objective(trial: Trial) -> float | list[float]:
            seed = None
            if phase == "search":
                config = suggest_config(trial, spec, arm)
            else:
                seed = trial.user_attrs[SEED_ATTR]
                config = spec.trial_config(arm, trial.user_attrs[PARAMS_ATTR], seed=seed)
            trial.set_user_attr(RUN_ATTR, worker)
            records = _TrialRecords(tracker, study, trial)
            recorder.submit(
                functools.partial(
                    records.create,
                    arm_run_id,
                    arm,
                    phase=phase,
                    trial_number=trial.number,
                    config=config,
                    optuna_trial_id=trial._trial_id,
                    seed=seed,
                )
            )
            best: float | None = None
            reporting_s = 0.0

            def reporter(epoch: EpochMetrics) -> bool:
                nonlocal best, reporting_s
                started = time.perf_counter()
                recorder.submit(lambda: tracker.log_epoch(records.run_id, epoch))
                stop = False
                if prune:
                    value = per_epoch(epoch)
                    if metrics[0] == "best_val_metric" and best is not None:
                        value = _better(value, best, directions[0])
                    best = value
                    trial.report(value, epoch.epoch)
                    stop = trial.should_prune()
                reporting_s += time.perf_counter() - started
                return stop

            started = time.perf_counter()
            try:
                result = run_trial(config, reporter)
            except (ValueError, DataFileMissing) as error:
                refused.append(trial.number)
                message = str(error)
                trial.set_user_attr(ERROR_ATTR, message)
                recorder.submit(
                    lambda: tracker.finish_run(records.run_id, "FAILED", tags={"error": message})
                )
                recorder.drain()
                raise StudyInputError(f"{arm.label}: {message}") from error
            run_trial_s = time.perf_counter() - started
            trial.set_user_attr(
                TIMING_ATTR, {"run_trial_s": run_trial_s, "reporting_s": reporting_s}
            )
            return self._conclude(trial, result, metrics, directions, records)

        return objective

    def _conclude(
        self,
        trial: Trial,
        result: TrialResult,
        metrics: Sequence[str],
        directions: Sequence[str],
        records: _TrialRecords,
    ) -> float | list[float]:
        """Record the outcome on the trial and its MLflow run; return the objective values
        or raise ``TrialPruned`` / ``TrialFailed`` (see the module docstring)."""
        status, error = result.status, result.error
        if status == "diverged":
            trial.set_user_attr(DIVERGED_STEP_ATTR, result.diverged_at_step)
            values = [worst_value(direction) for direction in directions]
        else:
            values = [objective_value(result, metric) for metric in metrics]
            if status in ("completed", "early_stopped") and any(map(math.isnan, values)):
                status, error = "failed", f"the objective ({', '.join(metrics)}) is NaN"
                result = dataclasses.replace(result, status="failed", error=error)
        trial.set_user_attr(STATUS_ATTR, status)
        if status == "failed":
            trial.set_user_attr(ERROR_ATTR, error)
        state = {"pruned": "PRUNED", "failed": "FAIL"}.get(status, "COMPLETE")
        tracker = self.settings.tracker
        self._recorder.submit(
            lambda: tracker.finish_trial(records.run_id, result, optuna_state=state)
        )
        self._recorder.drain()
        if state == "PRUNED":
            raise optuna.TrialPruned()
        if state == "FAIL":
            raise TrialFailed(error)
        return values[0] if len(values) == 1 else values


def _better(value: float, best: float, direction: str) -> float:
    return max(value, best) if direction == "maximize" else min(value, best)


# ---- where an arm stands -------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseCounts:
    """One phase of an arm against its ``planned`` trials, counted as
    ``services.search.budget_status`` counts a budget (a requeued failure is replaced by its
    retry), with diverged trials apart from completed ones."""

    planned: int
    complete: int = 0
    diverged: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    best: float | None = None
    trial_time_s: float = 0.0
    durations_s: tuple[float, ...] = ()

    @property
    def finished(self) -> int:
        """Trials that reached an end and count towards the plan."""
        return self.complete + self.diverged + self.pruned + self.failed

    @property
    def remaining(self) -> int:
        """Trials still to finish."""
        return max(0, self.planned - self.finished)


def count_trials(trials: Sequence[FrozenTrial], planned: int, direction: str) -> PhaseCounts:
    """Where ``trials`` (one phase of an arm) stand against ``planned``."""
    retried = retried_numbers(trials)
    counted = [t for t in trials if not (t.state == TrialState.FAIL and t.number in retried)]
    states = [t.state for t in counted]
    diverged = sum(map(is_diverged, counted))
    values = [
        t.values[0]
        for t in counted
        if t.state == TrialState.COMPLETE and not is_diverged(t) and math.isfinite(t.values[0])
    ]
    best = None
    if values:
        best = max(values) if direction == "maximize" else min(values)
    durations = tuple(
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in counted
        if t.state.is_finished() and t.datetime_start and t.datetime_complete
    )
    return PhaseCounts(
        planned=planned,
        complete=states.count(TrialState.COMPLETE) - diverged,
        diverged=diverged,
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
        best=best,
        trial_time_s=sum(durations),
        durations_s=durations,
    )


def reserve_final_runs(final: optuna.Study, best: FrozenTrial, seeds: Sequence[int]) -> int:
    """Reserve a final run of ``best`` for each seed that has none yet; returns how many
    were added."""
    have = {
        trial.user_attrs.get(SEED_ATTR)
        for trial in final.get_trials(deepcopy=False)
        if trial.user_attrs.get(SOURCE_TRIAL_ATTR) == best.number
    }
    added = 0
    for seed in seeds:
        if seed not in have:
            attrs = {SEED_ATTR: seed, SOURCE_TRIAL_ATTR: best.number, PARAMS_ATTR: best.params}
            final.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=attrs))
            added += 1
    return added


def final_runs_of(final: optuna.Study, best: FrozenTrial | None) -> list[FrozenTrial]:
    """The final study's runs of ``best``."""
    if best is None:
        return []
    return [
        trial
        for trial in final.get_trials(deepcopy=False)
        if trial.user_attrs.get(SOURCE_TRIAL_ATTR) == best.number
    ]


# ---- progress ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmRow:
    """One arm in the progress display."""

    label: str
    phase: str
    search: PhaseCounts
    final: PhaseCounts
    workers: int
    eta_s: float | None


class Progress(Protocol):
    """How the driver shows progress: a live table or one line per finished trial."""

    def update(self, rows: Sequence[ArmRow], eta_s: float | None) -> None: ...

    def trial_finished(
        self, arm: Arm, phase: Phase, trial: FrozenTrial, position: int | None, planned: int
    ) -> None:
        """``trial`` finished, the ``position``-th of the ``planned`` trials of its phase
        (None: it was requeued and its retry takes its place)."""

    def note(self, message: str) -> None: ...

    def close(self) -> None: ...


def describe_trial(trial: FrozenTrial, metric: str) -> str:
    """A finished trial in a few words: ``val_metric 0.7130``, ``pruned at epoch 3``, ..."""
    status = trial.user_attrs.get(STATUS_ATTR, "lost")
    if trial.state == TrialState.COMPLETE and status != "diverged":
        return f"{status}  {metric} {trial.values[0]:.4g}"
    if status == "diverged":
        return f"diverged at step {trial.user_attrs.get(DIVERGED_STEP_ATTR)}"
    if trial.state == TrialState.PRUNED:
        return f"pruned at epoch {trial.last_step}"
    error = trial.user_attrs.get(ERROR_ATTR)
    if status in (LOST, INTERRUPTED) or error is None:
        return f"{status} (its worker stopped)"
    return f"{status}: {str(error).splitlines()[0][:120]}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


class LiveProgress:
    """A table that redraws in place: per arm, trials done / pruned / failed / diverged, the
    best value so far and the time left."""

    def __init__(self, spec: StudySpec, console: Console | None = None) -> None:
        self.spec = spec
        self.started = time.monotonic()
        self.live = Live(console=console, refresh_per_second=2, transient=False)
        self.live.start()

    def update(self, rows: Sequence[ArmRow], eta_s: float | None) -> None:
        elapsed = _duration(time.monotonic() - self.started)
        table = Table(
            title=f"study {self.spec.study}: {elapsed} elapsed, about {_duration(eta_s)} left",
            title_justify="left",
        )
        for header in ("arm", "phase", "done", "pruned", "failed", "diverged", "running"):
            table.add_column(header, justify="left" if header in ("arm", "phase") else "right")
        table.add_column(f"best {self.spec.objective.metric}", justify="right")
        table.add_column("final", justify="right")
        table.add_column("ETA", justify="right")
        for row in rows:
            search = row.search
            table.add_row(
                row.label,
                row.phase,
                f"{search.finished}/{search.planned}",
                str(search.pruned),
                str(search.failed),
                str(search.diverged),
                str(search.running + row.final.running),
                _value(search.best),
                f"{row.final.finished}/{row.final.planned}" if row.final.planned else "-",
                "queued" if row.phase != "done" and not row.workers else _duration(row.eta_s),
            )
        self.live.update(table, refresh=True)

    def trial_finished(
        self, arm: Arm, phase: Phase, trial: FrozenTrial, position: int | None, planned: int
    ) -> None:
        """Finished trials show in the table's counts."""

    def note(self, message: str) -> None:
        self.live.console.print(message)

    def close(self) -> None:
        self.live.stop()


class LineProgress:
    """One line per finished trial (``--quiet``, and when stdout is not a terminal)."""

    def __init__(self, spec: StudySpec, stream: Any = None) -> None:
        self.spec = spec
        self.stream = stream
        self.started = time.monotonic()

    def _print(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:7.1f}s] {text}", file=self.stream or sys.stdout, flush=True)

    def update(self, rows: Sequence[ArmRow], eta_s: float | None) -> None:
        """Lines are printed as trials finish, not on every poll."""

    def trial_finished(
        self, arm: Arm, phase: Phase, trial: FrozenTrial, position: int | None, planned: int
    ) -> None:
        if phase == "search":
            what = f"trial {trial.number}"
        else:
            what = f"seed {trial.user_attrs[SEED_ATTR]}"
        outcome = describe_trial(trial, self.spec.objective.metric)
        count = "requeued" if position is None else f"{position}/{planned}"
        self._print(f"{arm.label}  {phase} {what}  {outcome}  [{count}]")

    def note(self, message: str) -> None:
        self._print(message)

    def close(self) -> None:
        """Nothing to tear down."""


# ---- the driver ----------------------------------------------------------------------------


@dataclass
class ArmState:
    """The driver's view of one arm."""

    index: int
    arm: Arm
    run_id: str
    studies: dict[Phase, ArmStudy]
    phase: Literal["search", "final", "done"] = "search"
    best: FrozenTrial | None = None
    workers: dict[Phase, set[int]] = field(
        default_factory=lambda: {"search": set(), "final": set()}
    )
    counts: dict[Phase, PhaseCounts] = field(default_factory=dict)
    seen: dict[Phase, set[int]] = field(default_factory=lambda: {"search": set(), "final": set()})


@dataclass(frozen=True)
class StudyOutcome:
    """How a run of a study ended: its exit code (``EXIT_*``), a message for the user, the
    arms' final counts and the MLflow run of this invocation."""

    exit_code: int
    message: str
    arms: dict[str, tuple[PhaseCounts, PhaseCounts]]
    parent_run_id: str | None
    elapsed_s: float


class StudyStopped(Exception):
    """The study cannot go on; carries the exit code and the reason."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run_study(
    spec: StudySpec,
    storage: Endpoint,
    tracking: Endpoint,
    *,
    address: str | None = None,
    grace_period_s: int = GRACE_PERIOD_S,
    quiet: bool = False,
    dashboard: bool = False,
) -> StudyOutcome:
    """Run ``spec`` to the end of its budget and final phase (see the module docstring),
    on a local Ray instance or the cluster at ``address``. Returns how it ended; Ctrl-C
    ends it with ``EXIT_INTERRUPTED`` after requeueing the running trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress display reports
    progress: Progress = (
        LineProgress(spec) if quiet or not sys.stdout.isatty() else LiveProgress(spec)
    )
    runner = StudyRunner(spec, storage, tracking, address, grace_period_s, progress, dashboard)
    try:
        return runner.run()
    finally:
        progress.close()


class StudyRunner:
    """The driver of one ``optarena run`` (``run_study`` is the way in)."""

    def __init__(
        self,
        spec: StudySpec,
        storage: Endpoint,
        tracking: Endpoint,
        address: str | None,
        grace_period_s: int,
        progress: Progress,
        dashboard: bool,
    ) -> None:
        self.spec = spec
        self.storage_url = absolute_storage_url(storage.uri)
        self.tracking = tracking
        self.address = address
        self.grace_period_s = grace_period_s
        self.progress = progress
        self.dashboard = dashboard
        self.invocation = uuid.uuid4().hex[:12]
        self.tracker = StudyTracker(tracking.uri, spec.study)
        self.arms: list[ArmState] = []
        self.parent_run_id: str | None = None
        self.pool: cluster.WorkerPool | None = None
        self.disconnect = False  # whether this run connected to the cluster
        self.slot_task: dict[int, tuple[int, Phase]] = {}
        self.deaths_outside_trials = 0
        self.started = time.monotonic()

    # -- the whole run --

    def run(self) -> StudyOutcome:
        try:
            # Storage and cluster first: a bad URL or an unreachable cluster ends the run
            # before anything is recorded.
            storage = self._open_storage()
            info = self._connect()
            self._prepare(storage)
            self._start_workers(info)
            self._loop()
            outcome = self._outcome(EXIT_OK, self._summary())
            if any(arm.best is None for arm in self.arms):
                names = ", ".join(arm.arm.label for arm in self.arms if arm.best is None)
                outcome = self._outcome(
                    EXIT_FAILED, f"{self._summary()}\nno completed trial in: {names}"
                )
            self._close("FINISHED" if outcome.exit_code == EXIT_OK else "FAILED")
            return outcome
        except KeyboardInterrupt:
            requeued = self._abandon(INTERRUPTED)
            self._close("KILLED")
            return self._outcome(
                EXIT_INTERRUPTED,
                f"interrupted: {requeued} running trial(s) requeued; run the same command "
                "to resume",
            )
        except StudyStopped as stop:
            self._abandon(INTERRUPTED)
            self._close("FAILED")
            return self._outcome(stop.exit_code, str(stop))
        finally:
            self._stop_cluster()

    def _outcome(self, exit_code: int, message: str) -> StudyOutcome:
        arms = {
            state.arm.label: (
                state.counts.get("search", PhaseCounts(0)),
                state.counts.get("final", PhaseCounts(0)),
            )
            for state in self.arms
        }
        elapsed = time.monotonic() - self.started
        return StudyOutcome(exit_code, message, arms, self.parent_run_id, elapsed)

    def _summary(self) -> str:
        lines = [f"study {self.spec.study} done in {_duration(time.monotonic() - self.started)}"]
        for state in self.arms:
            search, final = state.counts["search"], state.counts["final"]
            lines.append(
                f"  {state.arm.label}: {search.finished} trials ({search.pruned} pruned, "
                f"{search.failed} failed, {search.diverged} diverged), best "
                f"{self.spec.objective.metric} {_value(search.best)}, "
                f"{final.finished} final runs"
            )
        return "\n".join(lines)

    # -- setting up --

    def _open_storage(self) -> BaseStorage:
        try:
            return open_storage(self.storage_url)
        except (OSError, sqlalchemy.exc.SQLAlchemyError) as error:
            raise StudyStopped(
                EXIT_FAILED, f"cannot open the storage {self.storage_url}: {error}"
            ) from None

    def _connect(self) -> cluster.ClusterInfo:
        resources = self.spec.resources
        wanted = math.ceil(resources.workers * resources.cpus_per_trial)
        # A local instance gets as many CPUs as the workers ask for, even beyond this
        # machine's: the user asked for that many trials at once.
        cpus = None if self.address else max(len(os.sched_getaffinity(0)), wanted)
        try:
            info = cluster.start_cluster(self.address, num_cpus=cpus, dashboard=self.dashboard)
        except ConnectionError as error:
            raise StudyStopped(EXIT_FAILED, str(error)) from None
        self.disconnect = info.connected_here
        return info

    def _prepare(self, storage: BaseStorage) -> None:
        """Open the MLflow runs, create or load the arms' studies and reserve their trials."""
        spec = self.spec
        replayed = self.tracker.replay_spool()
        if replayed:
            self.progress.note(f"sent {replayed} spooled record(s) to {self.tracking.uri}")
        self.parent_run_id = self.tracker.start_study(
            spec.model_dump(mode="json", by_alias=True),
            {"storage": self.storage_url, "invocation": self.invocation},
        )
        for index, arm in enumerate(spec.arms()):
            studies: dict[Phase, ArmStudy] = {
                phase: open_arm_study(storage, spec, arm, phase) for phase in ("search", "final")
            }
            reserve_trials(studies["search"], spec.budget.trials)
            run_id = self.tracker.arm_run(self.parent_run_id, arm)
            state = ArmState(index, arm, run_id, studies)
            self._refresh_arm(state, report=False)
            self.arms.append(state)

    def _start_workers(self, info: cluster.ClusterInfo) -> None:
        resources = self.spec.resources
        placement = cluster.placement(
            resources.cpus_per_trial, resources.gpus_per_trial, info.gpus
        )
        workers = resources.workers
        fit = placement.fits(info)
        if fit < workers:
            self.progress.note(
                f"the cluster has room for {fit} of the {workers} workers "
                f"({placement.describe()}); running {max(fit, 1)}"
            )
            workers = max(fit, 1)
        if resources.gpus_per_trial and not placement.num_gpus:
            self.progress.note("gpus_per_trial is set but the cluster has no GPU: trials use CPUs")
        settings = StudySettings(
            spec=self.spec,
            storage_url=self.storage_url,
            tracker=self.tracker,
            arm_run_ids={state.arm.study_name: state.run_id for state in self.arms},
            invocation=self.invocation,
            grace_period_s=self.grace_period_s,
        )
        self.progress.note(
            f"{workers} worker(s), {placement.describe()}, on "
            f"{'a local Ray instance' if info.local else 'the Ray cluster at ' + info.address} "
            f"({info.nodes} node(s), {info.cpus:g} CPUs, {info.gpus:g} GPUs)"
        )
        self.pool = cluster.WorkerPool(
            TrialWorker, lambda slot, generation: (settings, slot, generation), workers, placement
        )

    def _stop_cluster(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        if self.disconnect:
            cluster.stop_cluster()

    # -- the loop --

    def _loop(self) -> None:
        assert self.pool is not None
        last_reap = time.monotonic()
        while True:
            self._refresh()
            if all(state.phase == "done" for state in self.arms):
                # Workers return once their last MLflow records are sent: wait for them.
                while self.pool.busy:
                    for event in self.pool.wait(POLL_S):
                        self._handle(event)
                return
            self._dispatch()
            if time.monotonic() - last_reap >= self.grace_period_s / 6:
                self._reap()
                last_reap = time.monotonic()
            if not self.pool.busy:  # waiting for another process's trials, or for the reaper
                time.sleep(POLL_S)
            for event in self.pool.wait(POLL_S):
                self._handle(event)

    def _refresh(self) -> None:
        for state in self.arms:
            if state.phase != "done":
                self._refresh_arm(state, report=True)
        self.progress.update(self._rows(), self._eta())

    def _refresh_arm(self, state: ArmState, report: bool) -> None:
        """Count the arm's trials, report the newly finished ones (``report``; else they only
        count as seen) and move the arm on: search → final phase → done."""
        spec, direction = self.spec, self.spec.directions(state.arm)[0]
        search_trials = state.studies["search"].get_trials(deepcopy=False)
        search = count_trials(search_trials, spec.budget.trials, direction)
        state.counts["search"] = search
        self._see_finished(state, "search", search_trials, search, report)
        if state.phase == "search" and self._search_finished(state, search):
            self._end_search(state, announce=report)
        final_trials = final_runs_of(state.studies["final"], state.best)
        planned = len(spec.final.seeds) if state.best is not None else 0
        final = count_trials(final_trials, planned, direction)
        state.counts["final"] = final
        self._see_finished(state, "final", final_trials, final, report)
        if state.phase == "final" and final.finished >= planned and not final.running:
            self._finish_arm(state)

    def _end_search(self, state: ArmState, announce: bool) -> None:
        spec = self.spec
        state.phase = "final"
        state.best = best_trial(state.studies["search"], spec.directions(state.arm)[0])
        if state.best is None:
            self.progress.note(f"{state.arm.label}: no completed trial, so no final phase")
            return
        added = reserve_final_runs(state.studies["final"], state.best, spec.final.seeds)
        if added and announce:
            self.progress.note(
                f"{state.arm.label}: search done, best trial {state.best.number} "
                f"({spec.objective.metric} {state.best.values[0]:.4g}); final runs with "
                f"seeds {', '.join(map(str, spec.final.seeds))}"
            )

    def _search_finished(self, state: ArmState, counts: PhaseCounts) -> bool:
        if counts.finished >= counts.planned:
            return True
        limit = self.spec.budget.time_limit_s
        busy = counts.running or state.workers["search"]
        return limit is not None and counts.trial_time_s >= limit and not busy

    def _see_finished(
        self,
        state: ArmState,
        phase: Phase,
        trials: Sequence[FrozenTrial],
        counts: PhaseCounts,
        report: bool,
    ) -> None:
        """Mark newly finished trials as seen, reporting them in the order they finished,
        each with its position in the phase's count (None for a requeued one)."""
        new = [t for t in trials if t.state.is_finished() and t.number not in state.seen[phase]]
        new.sort(key=lambda trial: trial.datetime_complete or trial.datetime_start)
        retried = retried_numbers(trials)
        position = counts.finished - sum(trial.number not in retried for trial in new)
        for trial in new:
            state.seen[phase].add(trial.number)
            counted = trial.number not in retried
            position += counted
            if report:
                self.progress.trial_finished(
                    state.arm, phase, trial, position if counted else None, counts.planned
                )

    def _finish_arm(self, state: ArmState) -> None:
        """Close the arm's MLflow run (and the runs of trials lost by a dead driver)."""
        state.phase = "done"
        for study in state.studies.values():
            for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
                run_id = mlflow_run_id(trial)
                if run_id and STATUS_ATTR not in trial.user_attrs:  # reaped as stale
                    self.tracker.finish_run(run_id, "FAILED", tags={"status": LOST})
        search = state.counts["search"]
        metrics = {
            "trials_complete": search.complete,
            "trials_pruned": search.pruned,
            "trials_failed": search.failed,
            "trials_diverged": search.diverged,
            "final_runs": state.counts["final"].finished,
        }
        tags = {}
        if state.best is not None:
            metrics["best_value"] = state.best.values[0]
            tags["best_trial"] = str(state.best.number)
        self.tracker.finish_run(state.run_id, "FINISHED", metrics=metrics, tags=tags)

    def _dispatch(self) -> None:
        assert self.pool is not None
        for slot in self.pool.idle_slots():
            choices = [
                (len(state.workers[phase]), state.index, state, phase)
                for state in self.arms
                for phase in ("search", "final")
                if state.phase == phase and state.counts[phase].waiting > len(state.workers[phase])
            ]
            if not choices:
                return
            _, _, state, phase = min(choices, key=lambda choice: choice[:2])
            self.pool.submit(slot, "run", state.index, phase)
            state.workers[phase].add(slot)
            self.slot_task[slot] = (state.index, phase)

    def _reap(self) -> None:
        """Fail and requeue trials whose heartbeat stopped (a dead driver's or a worker's
        the driver did not see die)."""
        for state in self.arms:
            for phase, study in state.studies.items():
                counts = state.counts.get(phase)
                if counts is not None and counts.running:
                    reap_stale_trials(study)

    def _handle(self, event: cluster.TaskEvent) -> None:
        assert self.pool is not None
        arm_index, phase = self.slot_task.pop(event.slot)
        state = self.arms[arm_index]
        state.workers[phase].discard(event.slot)
        if event.died:
            self._worker_died(event, state, phase)
        elif isinstance(event.error, StudyInputError):
            raise StudyStopped(EXIT_BAD_INPUT, str(event.error))
        elif event.error is not None:
            raise StudyStopped(
                EXIT_FAILED, f"worker {event.slot} failed on {state.arm.label}: {event.error!r}"
            )

    def _worker_died(self, event: cluster.TaskEvent, state: ArmState, phase: Phase) -> None:
        assert self.pool is not None
        tag = worker_tag(self.invocation, event.slot, event.generation)
        study = state.studies[phase]
        lost = [
            trial
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if ran_on(trial, tag)
        ]
        for trial in lost:
            if fail_and_retry(study, trial, LOST, self.spec.budget.max_retries):
                run_id = mlflow_run_id(trial)
                if run_id:
                    self.tracker.finish_run(run_id, "FAILED", tags={"status": LOST})
        if not lost:
            self.deaths_outside_trials += 1
            if self.deaths_outside_trials > MAX_DEATHS_OUTSIDE_TRIALS:
                raise StudyStopped(
                    EXIT_FAILED,
                    f"workers died {self.deaths_outside_trials} times outside any trial, so "
                    f"they cannot run on this cluster; the last one: {event.error}",
                )
        numbers = ", ".join(str(trial.number) for trial in lost) or "none"
        self.progress.note(
            f"worker {event.slot} died on {state.arm.label} ({phase} trial {numbers} "
            "requeued); starting a new one"
        )
        self.pool.replace(event.slot)

    # -- stopping --

    def _abandon(self, status: str) -> int:
        """Stop the workers and requeue the trials they were running; returns how many."""
        if self.pool is not None:
            self.pool.shutdown()
        requeued = 0
        for state in self.arms:
            for study in state.studies.values():
                for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    if ran_on(trial, self.invocation + "/") and fail_and_retry(
                        study, trial, status, max_retry=None
                    ):
                        requeued += 1
                        run_id = mlflow_run_id(trial)
                        if run_id:
                            self.tracker.finish_run(run_id, "KILLED", tags={"status": status})
        return requeued

    def _close(self, status: str) -> None:
        for state in self.arms:
            if state.phase != "done":
                self.tracker.finish_run(state.run_id, "FAILED" if status == "FAILED" else "KILLED")
        if self.parent_run_id is not None:
            self.tracker.finish_run(
                self.parent_run_id,
                status,
                metrics={"elapsed_s": time.monotonic() - self.started},
            )
        self.tracker.flush()

    # -- progress --

    def _rows(self) -> list[ArmRow]:
        mean = self._mean_trial_s()
        rows = []
        for state in self.arms:
            search = state.counts.get("search", PhaseCounts(self.spec.budget.trials))
            final = state.counts.get("final", PhaseCounts(0))
            workers = len(state.workers["search"]) + len(state.workers["final"])
            eta = None
            if state.phase == "done":
                eta = 0.0
            elif workers and mean is not None:
                eta = self._remaining(state) * mean / workers
            rows.append(ArmRow(state.arm.label, state.phase, search, final, workers, eta))
        return rows

    def _remaining(self, state: ArmState) -> int:
        if state.phase == "done":
            return 0
        final = len(self.spec.final.seeds)
        if state.phase == "final":
            return state.counts["final"].remaining
        return state.counts["search"].remaining + final

    def _mean_trial_s(self) -> float | None:
        durations = [
            duration
            for state in self.arms
            for counts in state.counts.values()
            for duration in counts.durations_s
        ]
        return sum(durations) / len(durations) if durations else None

    def _eta(self) -> float | None:
        mean = self._mean_trial_s()
        if mean is None or self.pool is None:
            return None
        return sum(map(self._remaining, self.arms)) * mean / self.pool.size


# ---- the plan of a dry run -----------------------------------------------------------------


@dataclass(frozen=True)
class ArmPlan:
    """An arm as a dry run sees it: its budget and, when the storage has the arm, what
    is left of it."""

    arm: Arm
    trials: int
    finished: int | None
    final_done: int | None


@dataclass(frozen=True)
class StudyPlan:
    """What ``optarena run`` would do."""

    spec: StudySpec
    storage: Endpoint
    tracking: Endpoint
    storage_state: str
    arms: list[ArmPlan]
    address: str | None


def plan_study(
    spec: StudySpec, storage: Endpoint, tracking: Endpoint, address: str | None = None
) -> StudyPlan:
    """The plan of a run, reading (never creating or changing) the storage."""
    url = absolute_storage_url(storage.uri)
    arms = [ArmPlan(arm, spec.budget.trials, None, None) for arm in spec.arms()]
    try:
        existing = _existing_storage(url)
    except (OSError, sqlalchemy.exc.SQLAlchemyError) as error:
        first_line = str(error).splitlines()[0]
        return StudyPlan(spec, storage, tracking, f"unreachable ({first_line})", arms, address)
    if existing is None:
        return StudyPlan(
            spec, storage, tracking, "empty: every arm starts from scratch", arms, address
        )
    names = set(optuna.get_all_study_names(existing))
    plans = []
    for arm in spec.arms():
        direction = spec.directions(arm)[0]
        finished = final_done = None
        if arm.study_name in names:
            study = optuna.load_study(study_name=arm.study_name, storage=existing)
            finished = count_trials(study.get_trials(deepcopy=False), 0, direction).finished
            best = best_trial(study, direction)
            if best is not None:
                final_done = 0
            if best is not None and final_study_name(arm) in names:
                final = optuna.load_study(study_name=final_study_name(arm), storage=existing)
                final_done = count_trials(final_runs_of(final, best), 0, direction).finished
        plans.append(ArmPlan(arm, spec.budget.trials, finished, final_done))
    if isinstance(existing, RDBStorage):
        existing.engine.dispose()
    return StudyPlan(spec, storage, tracking, "exists", plans, address)


def _existing_storage(url: str) -> BaseStorage | None:
    """The storage at ``url`` opened for reading, or None where it has no studies yet."""
    if url.startswith(JOURNAL_SCHEME):
        path = Path(url.removeprefix(JOURNAL_SCHEME))
        return JournalStorage(JournalFileBackend(str(path))) if path.exists() else None
    engine = sqlalchemy.create_engine(url)
    try:
        has_tables = sqlalchemy.inspect(engine).has_table("studies")
    finally:
        engine.dispose()
    if not has_tables:
        return None
    return RDBStorage(url, skip_table_creation=True, engine_kwargs={"pool_pre_ping": True})


def format_plan(plan: StudyPlan) -> str:
    """The plan as the text a dry run prints."""
    spec = plan.spec
    resources = spec.resources
    gpus = (
        f", {resources.gpus_per_trial:g} GPU per trial where the cluster has GPUs"
        if resources.gpus_per_trial
        else ""
    )
    where = f"the Ray cluster at {plan.address}" if plan.address else "a local Ray instance"
    budget = f"{spec.budget.trials} trials per arm"
    if spec.budget.time_limit_s is not None:
        budget += f" or {spec.budget.time_limit_s:g} s of trial time"
    lines = [
        f"study {spec.study}: {len(spec.arms())} arms, {budget} "
        f"(failed trials retried up to {spec.budget.max_retries} times), final phase with "
        f"seeds {', '.join(map(str, spec.final.seeds))}",
        f"objective: {', '.join(_objectives(spec))}; sampler {spec.sampler.name} "
        f"(seed {spec.sampler.seed}), pruner {spec.pruner.name}",
        f"resources: {resources.workers} worker(s), {resources.cpus_per_trial:g} CPU per "
        f"trial{gpus}, on {where}",
        f"storage: {plan.storage.uri} (from {_source(plan.storage, 'storage')}): "
        f"{plan.storage_state}",
        f"tracking: {plan.tracking.uri} (from {_source(plan.tracking, 'tracking')})",
        "arms:",
    ]
    for arm in plan.arms:
        if arm.finished is None:
            left = f"{arm.trials} trials to run"
        else:
            left = f"{arm.finished} finished, {max(0, arm.trials - arm.finished)} to run"
            if arm.final_done is not None:
                left += f", {arm.final_done}/{len(spec.final.seeds)} final runs done"
        lines.append(f"  {arm.arm.label}  ({arm.arm.study_name}): {left}")
    return "\n".join(lines)


def _objectives(spec: StudySpec) -> Iterator[str]:
    for objective in (spec.objective, spec.second_objective):
        if objective is not None:
            directions = {objective.direction_for(w) for w in spec.workloads}
            yield f"{objective.metric} ({'/'.join(sorted(directions))})"


def _source(endpoint: Endpoint, kind: str) -> str:
    env = "$OPTARENA_STORAGE" if kind == "storage" else "$OPTARENA_TRACKING_URI"
    flag = "--storage" if kind == "storage" else "--tracking-uri"
    return {
        "flag": flag,
        "env": env,
        "spec": "the study file",
        "default": "the embedded default",
    }[endpoint.source]

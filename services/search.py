"""Optuna for optarena: suggestions from a study's search space, samplers and pruners by name,
storages, and each arm's trial budget.

**Storages.** ``open_storage(url)`` takes ``journal://PATH`` (the embedded default, a journal
file under ``.optarena/`` that any number of local processes may share; Optuna's FAQ warns
against SQLite for parallel workers) or ``postgresql+psycopg://...`` (``RDBStorage`` with
``pool_pre_ping`` so a connection dropped by the server is replaced before use). Both record
heartbeats: a trial whose worker stops beating for the grace period is failed and requeued
with the same parameters, at most ``max_retries`` times. Optuna only gives ``RDBStorage`` a
heartbeat; :class:`HeartbeatJournalStorage` adds the same mechanism to the journal storage.
Heartbeats are only recorded inside ``Study.optimize`` (never with ask/tell), which is what
``run_reserved_trials`` uses.

**Budget.** An arm's budget is a queue. The driver reserves the missing trials up front as
WAITING trials (``reserve_trials``); workers only ever pop reserved trials and never create
one (``ArmStudy``), so any number of workers, on any number of machines, run exactly the
budget, and re-running the same command tops the queue up to the budget and no further.
Every trial that reached an end counts towards the budget: COMPLETE, PRUNED, diverged (the
trainer's diverged runs end as COMPLETE or FAIL like any other) and FAIL, so a trial that
crashes deterministically is not retried forever. The one exception is a FAIL that was
requeued because its worker died: its retry takes its place in the budget.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.pruners import (
    BasePruner,
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    SuccessiveHalvingPruner,
)
from optuna.samplers import (
    BaseSampler,
    CmaEsSampler,
    GPSampler,
    GridSampler,
    QMCSampler,
    RandomSampler,
    TPESampler,
)
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, Trial, TrialState

if TYPE_CHECKING:
    from services.spec import Arm, Dimension, PrunerSpec, SamplerSpec, StudySpec

JOURNAL_SCHEME = "journal://"
POSTGRESQL_SCHEME = "postgresql+psycopg://"
DEFAULT_STORAGE = JOURNAL_SCHEME + ".optarena/optuna.journal"
# A heartbeat every 10 s costs one small write per running trial; 60 s of silence is far
# longer than any pause of a live worker (the heartbeat thread runs while torch computes).
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 60

SAMPLERS: dict[str, type[BaseSampler]] = {
    "tpe": TPESampler,
    "random": RandomSampler,
    "qmc": QMCSampler,
    "cmaes": CmaEsSampler,
    "gp": GPSampler,
    "grid": GridSampler,
}
PRUNERS: dict[str, type[BasePruner]] = {
    "none": NopPruner,
    "median": MedianPruner,
    "successive_halving": SuccessiveHalvingPruner,
    "hyperband": HyperbandPruner,
}
# Set by optarena itself, never by a study file: the seed comes from ``sampler.seed`` and the
# grid from the search space.
_MANAGED_OPTIONS = frozenset({"seed", "search_space"})
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "str": (str,),
    "None": (type(None),),
}

Objective = Callable[[Trial], float | Sequence[float]]


# ---- suggestions ---------------------------------------------------------------------------


def suggest_config(trial: Trial, spec: StudySpec, arm: Arm) -> dict[str, Any]:
    """Sample the arm's search space through ``trial`` and return the trainer's trial config
    (``StudySpec.trial_config``: the fixed settings plus the sampled dimensions).

    Dimensions are suggested in the order of ``spec.search_space_for(arm)``; a conditional
    one (``decay_rate``) only when it applies to what was drawn before it, so a trial with a
    constant schedule records no decay rate. A retried trial gets its original values back
    (Optuna returns a parameter a trial already has).
    """
    params: dict[str, Any] = {}
    for name, dimension in spec.search_space_for(arm).items():
        if spec.applies(arm, name, params):
            params[name] = suggest(trial, name, dimension)
    return spec.trial_config(arm, params)


def suggest(trial: Trial, name: str, dimension: Dimension) -> Any:
    """One dimension's value: ``suggest_float`` or ``suggest_int`` (log-scaled where the
    dimension says) for a range, ``suggest_categorical`` for points or choices."""
    if not dimension.is_range:
        return trial.suggest_categorical(name, dimension.points)
    assert dimension.min is not None and dimension.max is not None
    log = dimension.scaling == "log"
    if dimension.integer:
        return trial.suggest_int(name, int(dimension.min), int(dimension.max), log=log)
    return trial.suggest_float(name, dimension.min, dimension.max, log=log)


# ---- samplers and pruners ------------------------------------------------------------------


def option_types(cls: type) -> dict[str, tuple[type, ...]]:
    """The options a study file may set on Optuna sampler or pruner class ``cls``: its keyword
    arguments whose annotation is made of ``int``, ``float``, ``bool``, ``str`` and ``None``
    (callables and Optuna objects cannot be written in YAML), with the types each accepts."""
    options = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name in _MANAGED_OPTIONS or parameter.kind not in (
            parameter.POSITIONAL_OR_KEYWORD,
            parameter.KEYWORD_ONLY,
        ):
            continue
        annotation = parameter.annotation
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        parts = [part.strip() for part in text.split("|")]
        if parts and all(part in _OPTION_TYPES for part in parts):
            options[name] = tuple(t for part in parts for t in _OPTION_TYPES[part])
    return options


def check_options(kind: str, name: str, options: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` for an option of sampler or pruner ``name`` (``kind`` is "sampler"
    or "pruner") that Optuna's class does not take, has the wrong type, or (building it)
    rejects."""
    cls = (SAMPLERS if kind == "sampler" else PRUNERS)[name]
    allowed = option_types(cls)
    for option, value in options.items():
        if option not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise ValueError(f"unknown option {option!r} for {kind} {name!r}; allowed: {names}")
        types = allowed[option]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"option {option!r} must be {expected}, got {value!r}")
    if name != "grid":  # the grid sampler takes no options, only the space
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            try:
                cls(**options)
            except (ValueError, TypeError) as error:
                raise ValueError(f"{kind} {name!r} rejects its options: {error}") from None


def build_sampler(
    sampler: SamplerSpec, space: Mapping[str, Dimension], *, worker_index: int = 0
) -> BaseSampler:
    """The sampler a study file names, seeded.

    Every worker of an arm gets its own seed derived from ``sampler.seed`` and
    ``worker_index``: workers sharing one seed would propose the same points. With one worker
    a study is reproducible from its seed. The arms of a study share the seeds: arms with the
    same dimensions draw the same random starting points (common random numbers), so their
    differences come from the optimizers rather than from the luck of the draw. ``space``
    (the arm's search space) is only read by the grid sampler, whose grid is the product of
    every dimension's points.
    """
    seed = int(np.random.SeedSequence([sampler.seed, worker_index]).generate_state(1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if sampler.name == "grid":
            grid = {name: dimension.grid_points() for name, dimension in space.items()}
            return GridSampler(grid, seed=seed)
        return SAMPLERS[sampler.name](seed=seed, **sampler.options)


def build_pruner(pruner: PrunerSpec) -> BasePruner:
    """The pruner a study file names (``none`` is Optuna's ``NopPruner``), with its options."""
    return PRUNERS[pruner.name](**pruner.options)


# ---- storages ------------------------------------------------------------------------------

_HEARTBEAT_ATTR = "optarena:heartbeat"


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat Optuna only gives ``RDBStorage``.

    A running trial's heartbeat is a system attribute ``[trial_id, unix time]`` rewritten
    every ``heartbeat_interval`` seconds; ``Study.optimize`` fails the RUNNING trials whose
    last beat (or, before the first beat, whose start) is older than ``grace_period``
    seconds and hands each to ``heartbeat_stale_trial_callback``, as with ``RDBStorage``.
    The trial id is stored with the time because a requeued trial inherits the system
    attributes of the trial it replaces, whose beats must not count as its own. The beat
    uses the wall clock: the processes sharing a journal file share a machine or a file
    system, and ``grace_period`` is far longer than any clock skew between them.
    """

    def __init__(
        self,
        backend: BaseJournalBackend,
        *,
        heartbeat_interval: int,
        grace_period: int | None = None,
        heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ) -> None:
        if heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval must be > 0, got {heartbeat_interval}")
        if grace_period is not None and grace_period <= 0:
            raise ValueError(f"grace_period must be > 0, got {grace_period}")
        super().__init__(backend)
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period or 2 * heartbeat_interval
        self._heartbeat_stale_trial_callback = heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        """Record that the worker running ``trial_id`` is alive."""
        # UpdateFinishedTrialError: another process failed this trial as stale (this worker
        # had stalled) and its retry is queued; there is nothing left to keep alive.
        with contextlib.suppress(UpdateFinishedTrialError):
            self.set_trial_system_attr(trial_id, _HEARTBEAT_ATTR, [trial_id, time.time()])

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        deadline = time.time() - self._grace_period
        return [
            trial._trial_id
            for trial in self.get_all_trials(
                study_id, deepcopy=False, states=(TrialState.RUNNING,)
            )
            if _last_sign_of_life(trial) < deadline
        ]

    def get_heartbeat_interval(self) -> int:
        """Seconds between two heartbeats of a running trial."""
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        """What is called with each trial failed as stale (here: requeue it)."""
        return self._heartbeat_stale_trial_callback


def _last_sign_of_life(trial: FrozenTrial) -> float:
    beat = trial.system_attrs.get(_HEARTBEAT_ATTR)
    if beat is not None and beat[0] == trial._trial_id:
        return float(beat[1])
    assert trial.datetime_start is not None  # every RUNNING trial has started
    return trial.datetime_start.timestamp()


def check_storage_url(url: str) -> str:
    """``url`` as ``open_storage`` uses it (``postgresql://`` becomes
    ``postgresql+psycopg://``, the driver installed here); ``ValueError`` naming the allowed
    forms for anything else."""
    if url.startswith("postgresql://"):
        url = POSTGRESQL_SCHEME + url.removeprefix("postgresql://")
    if url.startswith(JOURNAL_SCHEME) and len(url) > len(JOURNAL_SCHEME):
        return url
    if url.startswith(POSTGRESQL_SCHEME):
        return url
    raise ValueError(
        f"unsupported storage {url!r}; allowed: {JOURNAL_SCHEME}PATH (a journal file, e.g. "
        f"{DEFAULT_STORAGE}) or {POSTGRESQL_SCHEME}USER@HOST:PORT/DB "
        "(SQLite is not offered: Optuna warns against it for parallel workers)"
    )


def open_storage(
    url: str,
    *,
    max_retries: int = 2,
    heartbeat_interval_s: int = HEARTBEAT_INTERVAL_S,
    grace_period_s: int = GRACE_PERIOD_S,
) -> BaseStorage:
    """Open the Optuna storage at ``url`` (see ``check_storage_url``) with heartbeats on.

    A trial silent for ``grace_period_s`` is failed and requeued with the same parameters,
    at most ``max_retries`` times in a row. A journal file's folder is created if missing.
    """
    url = check_storage_url(url)
    with warnings.catch_warnings():
        # Heartbeats are "experimental" in Optuna since 2.8; optarena relies on them.
        warnings.simplefilter("ignore", ExperimentalWarning)
        requeue = RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
        if url.startswith(JOURNAL_SCHEME):
            path = Path(url.removeprefix(JOURNAL_SCHEME))
            path.parent.mkdir(parents=True, exist_ok=True)
            return HeartbeatJournalStorage(
                JournalFileBackend(str(path)),
                heartbeat_interval=heartbeat_interval_s,
                grace_period=grace_period_s,
                heartbeat_stale_trial_callback=requeue,
            )
        return RDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=heartbeat_interval_s,
            grace_period=grace_period_s,
            heartbeat_stale_trial_callback=requeue,
        )


# ---- studies and budgets -------------------------------------------------------------------


class NoReservedTrial(Exception):
    """An ``ArmStudy`` was asked for a trial while none of its reserved trials is waiting."""


class ArmStudy(optuna.Study):
    """An Optuna study whose ``ask()`` only pops reserved (WAITING) trials.

    A plain study creates a new trial whenever its queue is empty, so workers that each check
    the budget and then ask would overshoot it; here asking with an empty queue raises
    ``NoReservedTrial`` instead and no trial is created.
    """

    def _pop_waiting_trial_id(self) -> int | None:
        trial_id = super()._pop_waiting_trial_id()
        if trial_id is None:
            raise NoReservedTrial(self.study_name)
        return trial_id


def create_or_load_study(
    storage: BaseStorage,
    name: str,
    directions: Sequence[str],
    sampler: BaseSampler,
    pruner: BasePruner,
) -> ArmStudy:
    """The study ``name`` in ``storage``, created if it does not exist yet.

    Raises ``ValueError`` if the stored study optimizes other directions (the study file's
    objective changed since it was created), since its trials would not compare.
    """
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        directions=list(directions),
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    stored = [direction.name.lower() for direction in study.directions]
    if stored != list(directions):
        raise ValueError(
            f"study {name!r} in the storage optimizes {stored}, the study file asks for "
            f"{list(directions)}; give the study a new name to start over"
        )
    return ArmStudy(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


@dataclass(frozen=True)
class ArmBudget:
    """Where an arm stands against its budget of ``trials`` (see the module docstring)."""

    trials: int
    complete: int
    pruned: int
    failed: int
    requeued: int
    running: int
    waiting: int
    trial_time_s: float

    @property
    def finished(self) -> int:
        """Trials that reached an end and count towards the budget."""
        return self.complete + self.pruned + self.failed

    @property
    def reserved(self) -> int:
        """Budget slots taken: finished, running or waiting to run."""
        return self.finished + self.running + self.waiting

    @property
    def missing(self) -> int:
        """Trials still to reserve so that the queue covers the budget."""
        return max(0, self.trials - self.reserved)

    @property
    def done(self) -> bool:
        """Whether every trial of the budget has finished."""
        return self.finished >= self.trials


def budget_status(study: optuna.Study, trials: int) -> ArmBudget:
    """Count ``study``'s trials against a budget of ``trials``.

    ``trial_time_s`` is the wall-clock time of the arm's finished trials, summed (without the
    requeued ones, whose time was lost to a dead worker, not spent by the arm): the quantity
    a study file's ``time_limit_s`` caps. It does not depend on how many workers ran them and
    survives a resumed run.
    """
    all_trials = study.get_trials(deepcopy=False)
    replaced = {number for trial in all_trials for number in _retried_numbers(trial)}
    states = [trial.state for trial in all_trials]
    failed = [t for t in all_trials if t.state == TrialState.FAIL]
    return ArmBudget(
        trials=trials,
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=sum(trial.number not in replaced for trial in failed),
        requeued=sum(trial.number in replaced for trial in failed),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
        trial_time_s=sum(
            (trial.datetime_complete - trial.datetime_start).total_seconds()
            for trial in all_trials
            if trial.state.is_finished()
            and trial.number not in replaced
            and trial.datetime_start
            and trial.datetime_complete
        ),
    )


def _retried_numbers(trial: FrozenTrial) -> list[int]:
    """Numbers of the failed trials that ``trial`` retries (empty unless it is a retry): what
    ``RetryHeartbeatStaleTrialCallback.retry_history`` returns, read without its
    experimental-API warning."""
    return list(trial.system_attrs.get("retry_history", []))


def reserve_trials(study: optuna.Study, trials: int) -> int:
    """Top ``study``'s queue up to a budget of ``trials`` and return how many were added.

    Only the driver reserves: two drivers reserving the same arm at the same moment could
    both see the same gap.
    """
    missing = budget_status(study, trials).missing
    for _ in range(missing):
        # Not ``enqueue_trial({})``: a trial with ``fixed_params`` is one the grid sampler
        # refuses to place on its grid.
        study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING))
    return missing


def reap_stale_trials(study: optuna.Study) -> None:
    """Fail ``study``'s trials whose worker stopped beating and requeue them (as
    ``Study.optimize`` does before each trial); for a driver checking on an arm."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def run_reserved_trials(
    study: ArmStudy,
    objective: Objective,
    *,
    time_limit_s: float | None = None,
    wait_for_running: bool = False,
    poll_s: float = 1.0,
    catch: tuple[type[Exception], ...] = (),
) -> int:
    """Run ``study``'s reserved trials with ``objective`` until none is waiting and return how
    many this call ran.

    Trials whose worker died are failed and requeued first (Optuna does so before each trial
    while heartbeats are on). With ``wait_for_running`` an empty queue is not the end while
    other workers' trials are still RUNNING: every ``poll_s`` seconds the call looks again,
    and runs the retry of any of them whose worker died, so it returns only once the whole
    budget has finished. With ``time_limit_s`` no trial starts once the arm's trials have run
    that long in total (``ArmBudget.trial_time_s``). An exception of a type in ``catch``
    fails only its trial; any other stops the loop and propagates, as in ``Study.optimize``.
    """
    ran = 0

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal ran
        ran += 1
        if _time_spent(study, time_limit_s):
            study.stop()

    while not _time_spent(study, time_limit_s):
        try:
            study.optimize(objective, catch=catch, callbacks=[after_trial])
            break  # stopped by the time limit
        except NoReservedTrial:
            pass
        if not wait_for_running or budget_status(study, 0).running == 0:
            break
        time.sleep(poll_s)
    return ran


def _time_spent(study: optuna.Study, time_limit_s: float | None) -> bool:
    return time_limit_s is not None and budget_status(study, 0).trial_time_s >= time_limit_s

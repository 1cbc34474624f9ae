"""The Optuna layer against real storages: a journal file and the local PostgreSQL server.

Every storage test runs on both backends. Worker processes are real processes (forked, so
they start in milliseconds); the dead worker is killed with SIGKILL mid-trial.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import psycopg
import pytest
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import Trial, TrialState

from services.search import (
    PRUNERS,
    SAMPLERS,
    ArmStudy,
    HeartbeatJournalStorage,
    NoReservedTrial,
    budget_status,
    build_pruner,
    build_sampler,
    check_storage_url,
    create_or_load_study,
    open_storage,
    option_types,
    reap_stale_trials,
    reserve_trials,
    run_reserved_trials,
    suggest_config,
)
from services.spec import StudySpec, parse_spec
from services.trainer import TrialConfig

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# Short heartbeats so that a dead worker's trial is failed within seconds.
HEARTBEAT_S, GRACE_S = 1, 2
FORK = multiprocessing.get_context("fork")

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class Backend:
    """One storage backend; ``open`` may be called once per simulated process."""

    url: str
    prefix: str = field(default_factory=lambda: f"test-search-{uuid.uuid4().hex[:12]}")
    opened: list[BaseStorage] = field(default_factory=list)

    def open(self, max_retries: int = 2) -> BaseStorage:
        storage = open_storage(
            self.url,
            max_retries=max_retries,
            heartbeat_interval_s=HEARTBEAT_S,
            grace_period_s=GRACE_S,
        )
        self.opened.append(storage)
        return storage

    def name(self, suffix: str = "arm") -> str:
        return f"{self.prefix}/{suffix}"


@pytest.fixture(params=["journal", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    url = f"journal://{tmp_path}/optuna.journal" if request.param == "journal" else POSTGRES_URL
    backend = Backend(url)
    yield backend
    storage = backend.open()
    for name in optuna.get_all_study_names(storage):
        if name.startswith(backend.prefix):
            optuna.delete_study(study_name=name, storage=storage)
    for opened in backend.opened:
        if isinstance(opened, RDBStorage):
            opened.engine.dispose()


def open_study(backend: Backend, name: str = "arm", *, sampler: Any = None, **kw: Any) -> ArmStudy:
    return create_or_load_study(
        backend.open(**kw),
        backend.name(name),
        ["minimize"],
        sampler or optuna.samplers.RandomSampler(seed=0),
        optuna.pruners.NopPruner(),
    )


def quadratic(trial: Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    return x * x


# ---- suggestions ---------------------------------------------------------------------------

SPACE_STUDY: dict[str, Any] = {
    "study": "space",
    "workloads": ["mnist1d-mlp"],
    "optimizers": [
        {
            "name": "adam",
            "search_space": {
                "beta1": {"feasible_points": [0.8, 0.9, 0.95]},
                "one_minus_beta2": {"min": 1e-4, "max": 1e-1, "scaling": "log"},
            },
        }
    ],
    "search_space": {
        "learning_rate": {"min": 1e-4, "max": 1.0, "scaling": "log"},
        "dropout": {"min": 0.0, "max": 0.5},
        "width": {"min": 16, "max": 64, "int": True},
        "depth": {"min": 1, "max": 4, "int": True, "scaling": "log"},
        "batch_norm": {"choices": [True, False]},
        "activation": {"choices": ["relu", "tanh"]},
        "schedule": {"choices": ["constant", "exponential"]},
        "decay_rate": {"min": 0.5, "max": 0.99},
    },
    "schedules": {"exponential": {"interval": "epoch"}},
    "budget": {"trials": 16},
    "sampler": "random",
}


@pytest.fixture(scope="module")
def space_spec() -> StudySpec:
    return parse_spec(SPACE_STUDY, source="space.yaml")


def test_suggestions_stay_inside_the_declared_space(
    backend: Backend, space_spec: StudySpec
) -> None:
    spec = space_spec
    arm = spec.arms()[0]
    study = open_study(backend, sampler=build_sampler(spec.sampler, spec.search_space_for(arm)))
    configs: dict[int, dict[str, Any]] = {}

    def objective(trial: Trial) -> float:
        configs[trial.number] = suggest_config(trial, spec, arm)
        return 0.0

    reserve_trials(study, spec.budget.trials)
    assert run_reserved_trials(study, objective) == 16
    for trial in study.get_trials():
        p, config = trial.params, configs[trial.number]
        assert 1e-4 <= p["learning_rate"] <= 1.0 and isinstance(p["learning_rate"], float)
        assert 0.0 <= p["dropout"] <= 0.5 and isinstance(p["dropout"], float)
        assert 16 <= p["width"] <= 64 and type(p["width"]) is int
        assert 1 <= p["depth"] <= 4 and type(p["depth"]) is int
        assert type(p["batch_norm"]) is bool
        assert p["activation"] in ("relu", "tanh")
        assert p["beta1"] in (0.8, 0.9, 0.95)
        assert 1e-4 <= p["one_minus_beta2"] <= 1e-1
        assert config["hparams"]["lr"] == p["learning_rate"]
        assert config["hparams"]["betas"] == [p["beta1"], 1 - p["one_minus_beta2"]]
        assert config["model"] == {
            key: p[key] for key in ("dropout", "width", "depth", "batch_norm", "activation")
        }
        TrialConfig.from_dict(config)  # the trainer accepts every sampled config


def test_conditional_decay_rate_only_with_a_schedule_that_has_a_rate(
    backend: Backend, space_spec: StudySpec
) -> None:
    spec = space_spec
    arm = spec.arms()[0]
    study = open_study(backend, sampler=build_sampler(spec.sampler, spec.search_space_for(arm)))
    schedules = {}

    def objective(trial: Trial) -> float:
        schedules[trial.number] = suggest_config(trial, spec, arm)["schedule"]
        return 0.0

    reserve_trials(study, spec.budget.trials)
    run_reserved_trials(study, objective)
    drawn = set()
    for trial in study.get_trials():
        schedule = schedules[trial.number]
        drawn.add(schedule["name"])
        if trial.params["schedule"] == "exponential":
            assert 0.5 <= trial.params["decay_rate"] <= 0.99
            assert schedule == {
                "name": "exponential",
                "interval": "epoch",
                "gamma": trial.params["decay_rate"],
            }
        else:
            assert "decay_rate" not in trial.params
            assert schedule == {"name": "constant"}
    assert drawn == {"constant", "exponential"}


# ---- samplers and pruners ------------------------------------------------------------------


def sampler_study(name: str) -> StudySpec:
    if name == "grid":  # a grid needs discrete dimensions: 3 × 2 points
        space = {
            "learning_rate": {"feasible_points": [1e-3, 1e-2, 1e-1]},
            "width": {"min": 16, "max": 17, "int": True},
        }
    else:
        space = {
            "learning_rate": {"min": 1e-3, "max": 1e-1, "scaling": "log"},
            "width": {"min": 16, "max": 64, "int": True},
        }
    # A few startup trials, then the model-based proposals (a GP fit each: the slowest).
    options = (
        {"n_startup_trials": 4 if name == "gp" else 2} if name in ("tpe", "gp", "cmaes") else {}
    )
    return parse_spec(
        {
            "study": "samplers",
            "workloads": ["mnist1d-mlp"],
            "optimizers": ["sgd"],
            "search_space": space,
            "budget": {"trials": 6},
            "sampler": {"name": name, "seed": 3, "options": options},
        },
        source="samplers.yaml",
    )


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_each_sampler_runs_the_budget(backend: Backend, name: str) -> None:
    spec = sampler_study(name)
    arm = spec.arms()[0]
    sampler = build_sampler(spec.sampler, spec.search_space_for(arm))
    assert type(sampler) is SAMPLERS[name]
    study = open_study(backend, sampler=sampler)

    def objective(trial: Trial) -> float:
        config = suggest_config(trial, spec, arm)
        return (math.log10(config["hparams"]["lr"]) + 2) ** 2 + config["model"]["width"] / 100

    reserve_trials(study, spec.budget.trials)
    assert run_reserved_trials(study, objective) == 6
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    points = {(t.params["learning_rate"], t.params["width"]) for t in trials}
    if name == "grid":  # every grid point exactly once
        assert points == {(lr, w) for lr in (1e-3, 1e-2, 1e-1) for w in (16, 17)}
    else:
        assert all(1e-3 <= lr <= 1e-1 and 16 <= w <= 64 for lr, w in points)


def test_workers_get_different_seeds_and_each_is_reproducible() -> None:
    spec = sampler_study("random")
    space = spec.search_space_for(spec.arms()[0])

    def first_values(worker_index: int) -> list[float]:
        sampler = build_sampler(spec.sampler, space, worker_index=worker_index)
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        return [t.params["x"] for t in study.trials]

    assert first_values(0) == first_values(0)
    assert first_values(0) != first_values(1)


PRUNER_OPTIONS = {
    "none": {},
    "median": {"n_startup_trials": 2},
    "successive_halving": {"min_resource": 1, "reduction_factor": 2},
    "hyperband": {"min_resource": 1, "max_resource": 4, "reduction_factor": 2},
}


@pytest.mark.parametrize("name", list(PRUNERS))
def test_each_pruner_builds_and_prunes_worse_trials(backend: Backend, name: str) -> None:
    spec = parse_spec(
        {
            "study": "pruners",
            "workloads": ["mnist1d-mlp"],
            "optimizers": ["sgd"],
            "search_space": {"learning_rate": {"min": 1e-3, "max": 1e-1}},
            "budget": {"trials": 8},
            "pruner": {"name": name, "options": PRUNER_OPTIONS[name]},
        },
        source="pruners.yaml",
    )
    pruner = build_pruner(spec.pruner)
    assert type(pruner) is PRUNERS[name]
    study = create_or_load_study(
        backend.open(), backend.name(), ["minimize"], optuna.samplers.RandomSampler(0), pruner
    )

    def objective(trial: Trial) -> float:
        # Each trial is worse than every earlier one at every step.
        for step in range(1, 5):
            trial.report(trial.number + 1 / step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(trial.number)

    reserve_trials(study, 8)
    run_reserved_trials(study, objective)
    status = budget_status(study, 8)
    assert status.finished == 8
    assert (status.pruned > 0) == (name != "none")


def test_sampler_options_are_the_ones_yaml_can_express() -> None:
    tpe = option_types(optuna.samplers.TPESampler)
    assert tpe["n_startup_trials"] == (int,)
    assert tpe["constant_liar"] == (bool,)
    assert "gamma" not in tpe  # a callable
    assert "seed" not in tpe  # set from sampler.seed
    assert option_types(optuna.pruners.SuccessiveHalvingPruner)["min_resource"] == (str, int)


# ---- storages ------------------------------------------------------------------------------


def test_create_or_load_is_idempotent(backend: Backend) -> None:
    first = open_study(backend)
    reserve_trials(first, 2)
    run_reserved_trials(first, quadratic)
    again = open_study(backend)  # a new storage object: another process resuming
    assert again._study_id == first._study_id
    assert [t.state for t in again.get_trials()] == [TrialState.COMPLETE] * 2
    assert optuna.get_all_study_names(backend.open()).count(backend.name()) == 1


def test_loading_with_other_directions_is_refused(backend: Backend) -> None:
    open_study(backend)
    with pytest.raises(ValueError, match=r"optimizes \['minimize'\], the study file asks"):
        create_or_load_study(
            backend.open(),
            backend.name(),
            ["maximize"],
            optuna.samplers.RandomSampler(0),
            optuna.pruners.NopPruner(),
        )


def test_open_storage_kinds(backend: Backend) -> None:
    storage = backend.open()
    assert storage.get_heartbeat_interval() == HEARTBEAT_S
    if backend.url.startswith("journal://"):
        assert isinstance(storage, HeartbeatJournalStorage)
    else:
        assert isinstance(storage, RDBStorage)
        assert storage.engine_kwargs == {"pool_pre_ping": True}


def test_journal_folder_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "optuna.journal"
    open_storage(f"journal://{path}")
    assert path.exists()


@pytest.mark.parametrize("url", ["sqlite:///x.db", "mysql://x", "journal://", "x.journal"])
def test_unsupported_storage_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError, match="allowed: journal://PATH"):
        check_storage_url(url)


def test_postgresql_connection_dropped_by_the_server_is_replaced() -> None:
    backend = Backend(POSTGRES_URL)
    storage = backend.open()
    try:
        assert isinstance(storage, RDBStorage)
        study = open_study(backend)
        with storage.engine.connect() as connection:  # the pool's only idle connection
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test") as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        reserve_trials(study, 1)  # would raise OperationalError without pool_pre_ping
        assert budget_status(study, 1).waiting == 1
    finally:
        optuna.delete_study(study_name=backend.name(), storage=storage)
        for opened in backend.opened:
            opened.engine.dispose()


# ---- budgets -------------------------------------------------------------------------------


def test_resume_finishes_exactly_the_budget(backend: Backend) -> None:
    study = open_study(backend)
    assert reserve_trials(study, 5) == 5
    study.optimize(quadratic, n_trials=3)  # the first run is interrupted after 3 trials
    resumed = open_study(backend)
    assert budget_status(resumed, 5).complete == 3
    assert reserve_trials(resumed, 5) == 0  # the 2 missing ones are still reserved
    assert run_reserved_trials(resumed, quadratic) == 2
    again = open_study(backend)  # a third run of the same command does nothing
    assert reserve_trials(again, 5) == 0
    assert run_reserved_trials(again, quadratic) == 0
    trials = again.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5


def test_failed_trials_count_towards_the_budget(backend: Backend) -> None:
    study = open_study(backend)

    def objective(trial: Trial) -> float:
        if trial.number == 1:
            raise RuntimeError("a crash in the model")
        return quadratic(trial)

    reserve_trials(study, 4)
    assert run_reserved_trials(study, objective, catch=(RuntimeError,)) == 4
    status = budget_status(study, 4)
    assert (status.complete, status.failed, status.missing, status.done) == (3, 1, 0, True)
    assert reserve_trials(study, 4) == 0


def test_raising_the_budget_reserves_only_the_difference(backend: Backend) -> None:
    study = open_study(backend)
    reserve_trials(study, 2)
    run_reserved_trials(study, quadratic)
    assert reserve_trials(study, 5) == 3
    assert run_reserved_trials(study, quadratic) == 3
    assert budget_status(study, 5).complete == 5


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with")
def test_asking_without_a_reserved_trial_creates_none(backend: Backend) -> None:
    study = open_study(backend)
    with pytest.raises(NoReservedTrial):
        study.ask()
    assert study.get_trials() == []


def test_time_limit_stops_starting_trials(backend: Backend) -> None:
    study = open_study(backend)

    def objective(trial: Trial) -> float:
        time.sleep(0.2)
        return quadratic(trial)

    reserve_trials(study, 6)
    ran = run_reserved_trials(study, objective, time_limit_s=0.3)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    assert ran == len(trials) < 6
    # No trial started after the limit was reached, and none stopped the loop early.
    assert sum(durations[:-1]) < 0.3 <= sum(durations)
    assert budget_status(study, 6).waiting == 6 - ran


# ---- several processes ---------------------------------------------------------------------


def _worker(url: str, name: str, ready: Any, go: Any, done: Any) -> None:
    storage = open_storage(url, heartbeat_interval_s=HEARTBEAT_S, grace_period_s=GRACE_S)
    study = create_or_load_study(
        storage,
        name,
        ["minimize"],
        optuna.samplers.RandomSampler(seed=os.getpid()),
        optuna.pruners.NopPruner(),
    )
    ready.release()
    go.wait(30)

    def objective(trial: Trial) -> float:
        done.put((os.getpid(), trial.number))
        time.sleep(0.1)
        return quadratic(trial)

    run_reserved_trials(study, objective)


def test_two_processes_share_a_study_without_overshoot_or_duplicates(backend: Backend) -> None:
    study = open_study(backend)
    reserve_trials(study, 12)
    ready, go, done = FORK.Semaphore(0), FORK.Event(), FORK.Queue()
    workers = [
        FORK.Process(target=_worker, args=(backend.url, backend.name(), ready, go, done))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        assert ready.acquire(timeout=30)
    go.set()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    runs = [done.get(timeout=5) for _ in range(12)]
    assert done.empty()
    numbers = sorted(number for _, number in runs)
    assert numbers == list(range(12))  # each trial ran once
    assert {pid for pid, _ in runs} == {worker.pid for worker in workers}  # both worked
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 12


def _dying_worker(url: str, name: str, max_retries: int, started: Any) -> None:
    storage = open_storage(
        url, max_retries=max_retries, heartbeat_interval_s=HEARTBEAT_S, grace_period_s=GRACE_S
    )
    study = create_or_load_study(
        storage, name, ["minimize"], optuna.samplers.RandomSampler(7), optuna.pruners.NopPruner()
    )

    def objective(trial: Trial) -> float:
        trial.suggest_float("x", -1.0, 1.0)
        started.set()
        time.sleep(600)  # killed here
        return 0.0

    run_reserved_trials(study, objective)


def kill_worker_mid_trial(backend: Backend, max_retries: int) -> None:
    started = FORK.Event()
    worker = FORK.Process(
        target=_dying_worker, args=(backend.url, backend.name(), max_retries, started)
    )
    worker.start()
    assert started.wait(30)
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(10)
    assert worker.exitcode == -signal.SIGKILL


def finish(backend: Backend, max_retries: int, objective: Callable[[Trial], float]) -> ArmStudy:
    study = open_study(backend, max_retries=max_retries)
    run_reserved_trials(study, objective, wait_for_running=True, poll_s=0.2)
    return study


@pytest.mark.slow
def test_killed_worker_trial_is_failed_and_retried(backend: Backend) -> None:
    study = open_study(backend)
    reserve_trials(study, 2)
    kill_worker_mid_trial(backend, max_retries=2)
    assert budget_status(study, 2).running == 1
    started = time.monotonic()
    study = finish(backend, 2, quadratic)
    assert time.monotonic() - started < 15
    dead, second, retry = study.get_trials()
    assert dead.state == TrialState.FAIL
    assert second.state == retry.state == TrialState.COMPLETE
    assert retry.system_attrs["retry_history"] == [dead.number]
    assert retry.params == dead.params  # the retry re-runs the same configuration
    status = budget_status(study, 2)
    assert (status.complete, status.failed, status.requeued, status.running) == (2, 0, 1, 0)
    assert status.done and reserve_trials(study, 2) == 0


@pytest.mark.slow
def test_killed_worker_trial_counts_as_failed_once_retries_are_spent(backend: Backend) -> None:
    study = open_study(backend, max_retries=0)
    reserve_trials(study, 2)
    kill_worker_mid_trial(backend, max_retries=0)
    deadline = time.monotonic() + 15
    while budget_status(study, 2).running and time.monotonic() < deadline:
        reap_stale_trials(study)  # what a driver checking on the arm does
        time.sleep(0.2)
    status = budget_status(study, 2)
    assert (status.failed, status.requeued, status.running, status.waiting) == (1, 0, 0, 1)
    assert run_reserved_trials(study, quadratic) == 1
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.COMPLETE]
    status = budget_status(study, 2)
    assert (status.complete, status.failed, status.requeued, status.done) == (1, 1, 0, True)

"""The study runner: trial outcomes in Optuna and MLflow, the final phase, and whole studies
on a real local Ray instance, with real journal / PostgreSQL storages and MLflow stores.

The worker is first exercised in this process (it is plain Python), then through
``run_study`` on one module-wide Ray instance. Studies use the ``quadratic`` workload with
two epochs per trial, so a trial takes a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow_server import MlflowServer, mlflow_server  # noqa: F401
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from services import cluster, study
from services.search import budget_status, open_storage, reserve_trials
from services.spec import Arm, Endpoint, StudySpec, parse_spec
from services.study import (
    DIVERGED_STEP_ATTR,
    RUN_ATTR,
    SEED_ATTR,
    SOURCE_TRIAL_ATTR,
    STATUS_ATTR,
    ArmRow,
    LineProgress,
    LiveProgress,
    PhaseCounts,
    StudyInputError,
    StudySettings,
    TrialWorker,
    best_trial,
    count_trials,
    fail_and_retry,
    final_study_name,
    objective_value,
    open_arm_study,
    reserve_final_runs,
    run_study,
    worst_value,
)
from services.tracking import StudyTracker
from services.trainer import TrialResult, run_trial

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def quadratic_study(name: str, **sections: Any) -> StudySpec:
    """A study on the quadratic workload: two epochs per trial, random search over the
    learning rate; ``sections`` replace whole sections of the file."""
    data: dict[str, Any] = {
        "study": name,
        "workloads": ["quadratic"],
        "optimizers": ["sgd", "adam"],
        "search_space": {"learning_rate": {"min": 1e-3, "max": 0.5, "scaling": "log"}},
        "trial": {"epochs": 2},
        "budget": {"trials": 4},
        "sampler": {"name": "random", "seed": 0},
        "final": {"seeds": [1, 2]},
        "resources": {"workers": 2},
        **sections,
    }
    return parse_spec(data, source=f"{name}.yaml")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclasses.dataclass
class Stores:
    """A storage URL and a tracking URI for one test."""

    storage: str
    tracking: str

    def endpoints(self) -> tuple[Endpoint, Endpoint]:
        return Endpoint(self.storage, "flag"), Endpoint(self.tracking, "flag")


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for the module (creating its tables takes seconds); tests keep apart
    by study names, hence experiments."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture
def stores(tmp_path: Path, tracking_uri: str) -> Stores:
    return Stores(f"journal://{tmp_path}/optuna.journal", tracking_uri)


def mlflow_runs(tracking: str, study_name: str) -> list[Run]:
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(study_name)
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], max_results=10_000)


def run_of(trial: FrozenTrial) -> str:
    """The MLflow run id a trial recorded (set while it ran, unless it ended first)."""
    return trial.user_attrs["mlflow_run_id"]


def runs_by_phase(runs: list[Run], phase: str) -> list[Run]:
    return [run for run in runs if run.data.tags.get("phase") == phase]


# ---- objective values and outcomes ---------------------------------------------------------


@pytest.fixture(scope="module")
def quadratic_result() -> TrialResult:
    return run_trial({"workload": "quadratic", "optimizer": "adam", "epochs": 2})


def test_objective_values_come_from_the_result(quadratic_result: TrialResult) -> None:
    result = quadratic_result
    assert objective_value(result, "val_metric") == result.final_val_metric
    assert objective_value(result, "best_val_metric") == result.best_val_metric
    assert objective_value(result, "val_loss") == result.history[-1].val_loss
    assert objective_value(result, "train_time_s") == result.train_time_s
    missed = dataclasses.replace(result, time_to_target_s=None, steps_to_target=None)
    # AlgoPerf: a target never reached counts as an infinite time.
    assert objective_value(missed, "time_to_target_s") == math.inf
    assert objective_value(missed, "steps_to_target") == math.inf
    assert math.isnan(
        objective_value(dataclasses.replace(result, final_val_metric=None), "val_metric")
    )


def test_worst_value_is_beyond_every_value() -> None:
    assert worst_value("maximize") == -math.inf
    assert worst_value("minimize") == math.inf


def journal_study(tmp_path: Path, spec: StudySpec, phase: study.Phase = "search") -> Any:
    storage = open_storage(f"journal://{tmp_path}/optuna.journal")
    return open_arm_study(storage, spec, spec.arms()[0], phase)


def add(study_: optuna.Study, state: TrialState, value: float | None = None, **attrs: Any) -> None:
    study_.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=value,
            params={"learning_rate": 0.01},
            distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-3, 0.5)},
            user_attrs=attrs,
        )
    )


def test_counts_and_best_keep_diverged_and_requeued_trials_apart(tmp_path: Path) -> None:
    spec = quadratic_study("counts", optimizers=["sgd"])  # excess loss: minimize
    arm_study = journal_study(tmp_path, spec)
    add(arm_study, TrialState.COMPLETE, 0.5, status="completed")
    add(arm_study, TrialState.COMPLETE, 0.2, status="completed")
    add(arm_study, TrialState.COMPLETE, math.inf, status="diverged", diverged_step=7)
    add(arm_study, TrialState.PRUNED, status="pruned")
    add(arm_study, TrialState.FAIL, status="failed")
    add(arm_study, TrialState.RUNNING)
    running = arm_study.get_trials(states=(TrialState.RUNNING,))[0]
    assert fail_and_retry(arm_study, running, "lost", max_retry=2)
    counts = count_trials(arm_study.get_trials(), 8, "minimize")
    assert (counts.complete, counts.diverged, counts.pruned, counts.failed) == (2, 1, 1, 1)
    assert (counts.running, counts.waiting, counts.finished, counts.remaining) == (0, 1, 5, 3)
    assert counts.best == 0.2
    best = best_trial(arm_study, "minimize")
    assert best is not None and best.number == 1
    # The same trials under a budget read by services.search agree on what is finished.
    assert budget_status(arm_study, 8).finished == counts.finished


def test_a_study_with_only_diverged_trials_has_no_best(tmp_path: Path) -> None:
    arm_study = journal_study(tmp_path, quadratic_study("nobest", optimizers=["sgd"]))
    add(arm_study, TrialState.COMPLETE, math.inf, status="diverged")
    assert best_trial(arm_study, "minimize") is None


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with")
def test_fail_and_retry_requeues_the_same_parameters_up_to_max_retry(tmp_path: Path) -> None:
    arm_study = journal_study(tmp_path, quadratic_study("retry", optimizers=["sgd"]))
    add(arm_study, TrialState.RUNNING)
    first = arm_study.get_trials()[0]
    assert fail_and_retry(arm_study, first, "lost", max_retry=1)
    trials = arm_study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs[STATUS_ATTR] == "lost"
    assert trials[1].params == first.params
    assert trials[1].system_attrs["retry_history"] == [0]
    assert not fail_and_retry(arm_study, trials[0], "lost", max_retry=1)  # already finished
    # The retry dies too: with max_retry=1 it is failed for good, not requeued again.
    arm_study.ask()
    assert fail_and_retry(arm_study, arm_study.get_trials()[1], "lost", max_retry=1)
    assert [t.state for t in arm_study.get_trials()] == [TrialState.FAIL, TrialState.FAIL]
    assert count_trials(arm_study.get_trials(), 1, "minimize").failed == 1


def test_final_runs_are_reserved_once_per_seed_of_the_best_trial(tmp_path: Path) -> None:
    spec = quadratic_study("finals", optimizers=["sgd"])
    search = journal_study(tmp_path, spec)
    final = journal_study(tmp_path, spec, "final")
    add(search, TrialState.COMPLETE, 0.3, status="completed")
    add(search, TrialState.COMPLETE, 0.1, status="completed")
    first, second = search.get_trials()
    assert reserve_final_runs(final, first, [1, 2]) == 2
    assert reserve_final_runs(final, first, [1, 2]) == 0  # resumed: nothing new
    assert reserve_final_runs(final, first, [1, 2, 5]) == 1  # a seed added to the file
    assert reserve_final_runs(final, second, [1, 2]) == 2  # a new best gets its own runs
    attrs = [(t.user_attrs[SOURCE_TRIAL_ATTR], t.user_attrs[SEED_ATTR]) for t in final.trials]
    assert attrs == [(0, 1), (0, 2), (0, 5), (1, 1), (1, 2)]
    assert all(t.user_attrs["params"] == first.params for t in final.trials[:3])
    assert final.study_name == final_study_name(spec.arms()[0]) == "finals/quadratic/sgd/final"


def test_settings_pickle_for_the_workers(tmp_path: Path, stores: Stores) -> None:
    spec = quadratic_study(unique("pickled"))
    settings = StudySettings(
        spec, stores.storage, StudyTracker(stores.tracking, spec.study), {"a": "b"}, "inv", 12
    )
    copy = pickle.loads(pickle.dumps(settings))
    assert copy.spec == spec
    assert (copy.storage_url, copy.arm_run_ids, copy.invocation) == (
        stores.storage,
        {"a": "b"},
        "inv",
    )
    assert copy.tracker.tracking_uri == settings.tracker.tracking_uri
    assert copy.heartbeat_interval_s == 2  # six beats per grace period


# ---- the worker, in this process -----------------------------------------------------------


@dataclasses.dataclass
class Bench:
    """A worker of slot 0 with its storage, tracker, arm run and the arm's studies."""

    spec: StudySpec
    stores: Stores
    worker: TrialWorker
    arm: Arm
    arm_run_id: str
    search: Any
    final: Any


def bench(stores: Stores, spec: StudySpec, generation: int = 0) -> Bench:
    tracker = StudyTracker(stores.tracking, spec.study)
    parent = tracker.start_study({}, {})
    arm = spec.arms()[0]
    arm_run_id = tracker.arm_run(parent, arm)
    settings = StudySettings(spec, stores.storage, tracker, {arm.study_name: arm_run_id}, "test")
    storage = settings.open_storage()
    search = open_arm_study(storage, spec, arm, "search")
    final = open_arm_study(storage, spec, arm, "final")
    return Bench(
        spec, stores, TrialWorker(settings, 0, generation), arm, arm_run_id, search, final
    )


def test_worker_records_completed_and_diverged_trials(stores: Stores) -> None:
    space = {"learning_rate": {"min": 1e-3, "max": 10.0, "scaling": "log"}}
    spec = quadratic_study(unique("outcomes"), optimizers=["sgd"], search_space=space)
    b = bench(stores, spec)
    b.search.enqueue_trial({"learning_rate": 0.05})
    b.search.enqueue_trial({"learning_rate": 5.0})  # > 2 / (largest curvature 1): diverges
    done = b.worker.run(0, "search")
    assert (done.arm_index, done.phase, done.trials_run) == (0, "search", 2)
    good, diverged = b.search.get_trials()
    assert good.state == TrialState.COMPLETE and good.user_attrs[STATUS_ATTR] == "completed"
    assert 0 < good.value < 1
    assert diverged.state == TrialState.COMPLETE and diverged.value == math.inf
    assert diverged.user_attrs[STATUS_ATTR] == "diverged"
    assert diverged.user_attrs[DIVERGED_STEP_ATTR] >= 1
    assert good.user_attrs[RUN_ATTR]["worker"] == "test/0.0"
    assert good.user_attrs[RUN_ATTR]["pid"] == os.getpid()
    timing = good.user_attrs["timing"]
    assert 0 <= timing["reporting_s"] < timing["run_trial_s"]
    runs = {run.info.run_id: run for run in mlflow_runs(stores.tracking, spec.study)}
    good_run = runs[run_of(good)]
    diverged_run = runs[run_of(diverged)]
    assert good_run.info.run_name == "sgd · quadratic · trial 0"
    assert good_run.data.tags["mlflow.parentRunId"] == b.arm_run_id
    assert good_run.data.metrics["final_val_metric"] == pytest.approx(good.value)
    assert good_run.data.params["hparams.lr"] == "0.05"
    assert (good_run.data.tags["status"], good_run.data.tags["optuna_state"]) == (
        "completed",
        "COMPLETE",
    )
    assert diverged_run.data.tags["status"] == "diverged"
    assert diverged_run.data.metrics["diverged_at_step"] == diverged.user_attrs[DIVERGED_STEP_ATTR]


def test_worker_prunes_a_trial_worse_than_the_median(stores: Stores) -> None:
    pruner = {"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 0}}
    spec = quadratic_study(
        unique("pruning"), optimizers=["adam"], pruner=pruner, trial={"epochs": 3}
    )
    b = bench(stores, spec)
    b.search.enqueue_trial({"learning_rate": 0.05})
    b.search.enqueue_trial({"learning_rate": 0.001})  # far slower: worse at epoch 1
    b.worker.run(0, "search")
    first, second = b.search.get_trials()
    assert first.state == TrialState.COMPLETE
    assert list(first.intermediate_values) == [1, 2, 3]  # one report per epoch
    assert second.state == TrialState.PRUNED and second.user_attrs[STATUS_ATTR] == "pruned"
    assert second.last_step == 1
    run = MlflowClient(stores.tracking).get_run(run_of(second))
    assert (run.info.status, run.data.tags["optuna_state"]) == ("KILLED", "PRUNED")


def test_a_failed_trial_is_fail_and_the_next_one_runs(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_first(config: dict[str, Any], reporter: Any) -> TrialResult:
        result = run_trial(config, reporter)
        if config["hparams"]["lr"] == 0.05:
            return dataclasses.replace(result, status="failed", error="RuntimeError: boom")
        return result

    monkeypatch.setattr(study, "run_trial", failing_first)
    b = bench(stores, quadratic_study(unique("failing"), optimizers=["adam"]))
    b.search.enqueue_trial({"learning_rate": 0.05})
    b.search.enqueue_trial({"learning_rate": 0.01})
    assert b.worker.run(0, "search").trials_run == 2
    failed, ok = b.search.get_trials()
    assert failed.state == TrialState.FAIL
    assert (failed.user_attrs[STATUS_ATTR], failed.user_attrs["error"]) == (
        "failed",
        "RuntimeError: boom",
    )
    assert ok.state == TrialState.COMPLETE
    run = MlflowClient(stores.tracking).get_run(run_of(failed))
    assert (run.info.status, run.data.tags["error"]) == ("FAILED", "RuntimeError: boom")


def test_final_runs_train_the_best_configuration_with_each_seed(stores: Stores) -> None:
    b = bench(stores, quadratic_study(unique("final"), optimizers=["adam"]))
    b.search.enqueue_trial({"learning_rate": 0.02})
    b.worker.run(0, "search")
    best = best_trial(b.search, "minimize")
    assert best is not None
    reserve_final_runs(b.final, best, [1, 2])
    assert b.worker.run(0, "final").trials_run == 2
    finals = b.final.get_trials()
    assert [t.state for t in finals] == [TrialState.COMPLETE] * 2
    assert {t.user_attrs[SEED_ATTR] for t in finals} == {1, 2}
    assert finals[0].value != finals[1].value  # another seed, another model
    for trial in finals:
        run = MlflowClient(b.stores.tracking).get_run(run_of(trial))
        assert run.info.run_name == f"adam · quadratic · seed {trial.user_attrs[SEED_ATTR]}"
        assert (run.data.tags["phase"], run.data.params["seed"]) == (
            "final",
            str(trial.user_attrs[SEED_ATTR]),
        )
        assert run.data.params["hparams.lr"] == "0.02"


def test_missing_data_stops_the_worker_and_requeues_its_trial(
    stores: Stores, tmp_path: Path
) -> None:
    spec = parse_spec(
        {
            "study": unique("nodata"),
            "workloads": ["mnist-mlp"],
            "optimizers": ["sgd"],
            "search_space": {"learning_rate": {"min": 1e-3, "max": 0.5, "scaling": "log"}},
            "trial": {"epochs": 1, "data_dir": str(tmp_path / "empty")},
            "budget": {"trials": 2},
        },
        source="nodata.yaml",
    )
    b = bench(stores, spec)
    reserve_trials(b.search, 2)
    with pytest.raises(StudyInputError, match="mnist"):
        b.worker.run(0, "search")
    status = budget_status(b.search, 2)
    # The refused trial does not count: its retry waits with the other reserved trial.
    assert (status.failed, status.requeued, status.waiting, status.complete) == (0, 1, 2, 0)


def test_sampler_seeds_are_reproducible_and_differ_per_generation(
    tmp_path: Path, tracking_uri: str
) -> None:
    def first_lr(name: str, generation: int) -> float:
        stores = Stores(f"journal://{tmp_path}/{name}.journal", tracking_uri)
        spec = quadratic_study(unique(name), optimizers=["adam"], budget={"trials": 1})
        b = bench(stores, spec, generation)
        reserve_trials(b.search, 1)
        b.worker.run(0, "search")
        return b.search.get_trials()[0].params["learning_rate"]

    assert first_lr("a", 0) == first_lr("b", 0)
    assert first_lr("c", 0) != first_lr("d", 1)


# ---- whole studies on a local Ray instance -------------------------------------------------


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[cluster.ClusterInfo]:
    info = cluster.start_cluster(num_cpus=2)
    yield info
    cluster.stop_cluster()


def assert_study_recorded(spec: StudySpec, stores: Stores, trials: int) -> dict[str, Any]:
    """Each arm ran exactly ``trials`` search trials and one final run per seed of its best,
    and MLflow has one run per Optuna trial, nested under the arm runs; returns the Optuna
    trials of each arm."""
    storage = open_storage(stores.storage)
    runs = mlflow_runs(stores.tracking, spec.study)
    trial_runs = runs_by_phase(runs, "search") + runs_by_phase(runs, "final")
    arm_run_ids = {run.info.run_id for run in runs_by_phase(runs, "arm")}
    assert {run.data.tags["mlflow.parentRunId"] for run in trial_runs} <= arm_run_ids
    started_trials = 0
    by_arm = {}
    for arm in spec.arms():
        search = open_arm_study(storage, spec, arm, "search")
        final = open_arm_study(storage, spec, arm, "final")
        status = budget_status(search, trials)
        assert (status.finished, status.running, status.waiting) == (trials, 0, 0)
        best = best_trial(search, "minimize")
        assert best is not None
        runs_of_best = [t for t in final.trials if t.user_attrs[SOURCE_TRIAL_ATTR] == best.number]
        assert sorted(t.user_attrs[SEED_ATTR] for t in runs_of_best) == list(spec.final.seeds)
        assert all(t.state == TrialState.COMPLETE for t in runs_of_best)
        numbers = [t.number for t in search.trials]
        assert numbers == list(range(len(numbers)))
        started_trials += sum(t.state != TrialState.WAITING for t in search.trials + final.trials)
        by_arm[arm.optimizer] = (search.trials, final.trials)
    assert len(trial_runs) == started_trials  # one MLflow run per trial, none twice
    return by_arm


def test_a_study_runs_its_budget_and_a_resumed_run_adds_nothing(
    ray_instance: cluster.ClusterInfo, stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = quadratic_study(unique("e2e"))
    outcome = run_study(spec, *stores.endpoints(), quiet=True, grace_period_s=6)
    assert outcome.exit_code == 0, outcome.message
    first = assert_study_recorded(spec, stores, 4)
    for search, final in first.values():
        assert [t.state for t in search] == [TrialState.COMPLETE] * 4
        assert len(final) == 2
    # Quiet mode: one line per finished trial, numbered in the order they finished.
    lines = capsys.readouterr().out.splitlines()
    for arm in spec.arms():
        trial_lines = [line for line in lines if f"{arm.label}  search trial" in line]
        positions = sorted(line.rsplit("[", 1)[1] for line in trial_lines)
        assert positions == ["1/4]", "2/4]", "3/4]", "4/4]"]
        assert sum(f"{arm.label}  final seed" in line for line in lines) == 2
        assert sum(f"{arm.label}: search done, best trial" in line for line in lines) == 1
    runs_before = len(mlflow_runs(stores.tracking, spec.study))

    again = run_study(spec, *stores.endpoints(), quiet=True, grace_period_s=6)
    assert again.exit_code == 0, again.message
    assert assert_study_recorded(spec, stores, 4) == first  # nothing ran again
    # Only the new invocation's study run and arm runs were added.
    assert len(mlflow_runs(stores.tracking, spec.study)) == runs_before + 1 + len(spec.arms())


@pytest.mark.slow
def test_a_larger_budget_runs_only_the_difference(
    ray_instance: cluster.ClusterInfo, stores: Stores
) -> None:
    spec = quadratic_study(unique("grow"), optimizers=["adam"], final={"seeds": [1]})
    assert run_study(spec, *stores.endpoints(), quiet=True, grace_period_s=6).exit_code == 0
    first = assert_study_recorded(spec, stores, 4)
    larger = spec.model_copy(update={"budget": spec.budget.model_copy(update={"trials": 6})})
    outcome = run_study(larger, *stores.endpoints(), quiet=True, grace_period_s=6)
    assert outcome.exit_code == 0, outcome.message
    grown = assert_study_recorded(spec, stores, 6)
    assert grown["adam"][0][:4] == first["adam"][0]  # the first four kept as they were


@pytest.mark.slow
def test_a_study_on_postgresql_and_an_mlflow_server(
    ray_instance: cluster.ClusterInfo,
    mlflow_server: MlflowServer,  # noqa: F811
) -> None:
    spec = quadratic_study(unique("pg"))
    stores = Stores(POSTGRES_URL, mlflow_server.url)
    try:
        outcome = run_study(spec, *stores.endpoints(), quiet=True, grace_period_s=6)
        assert outcome.exit_code == 0, outcome.message
        assert_study_recorded(spec, stores, 4)
    finally:
        storage = optuna.storages.RDBStorage(POSTGRES_URL)
        for name in optuna.get_all_study_names(storage):
            if name.startswith(spec.study + "/"):
                optuna.delete_study(study_name=name, storage=storage)
        storage.engine.dispose()


def test_line_progress_describes_outcomes(capsys: pytest.CaptureFixture[str]) -> None:
    spec = quadratic_study("describe", optimizers=["sgd"])
    progress = LineProgress(spec)
    arm = spec.arms()[0]
    diverged = optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        value=math.inf,
        user_attrs={"status": "diverged", "diverged_step": 9},
    )
    pruned = optuna.trial.create_trial(
        state=TrialState.PRUNED, intermediate_values={2: 0.5}, user_attrs={"status": "pruned"}
    )
    lost = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"status": "lost"})
    for trial, position in ((diverged, 1), (pruned, 2), (lost, None)):
        trial.number = 7
        progress.trial_finished(arm, "search", trial, position, 4)
    out = capsys.readouterr().out
    assert "sgd · quadratic  search trial 7  diverged at step 9  [1/4]" in out
    assert "pruned at epoch 2  [2/4]" in out
    assert "lost (its worker stopped)  [requeued]" in out


def test_live_progress_shows_every_arm() -> None:
    spec = quadratic_study("live", optimizers=["sgd", "adam", "rmsprop"])
    console = Console(file=io.StringIO(), width=160, force_terminal=True, color_system=None)
    progress = LiveProgress(spec, console)
    searching = PhaseCounts(4, complete=1, pruned=1, failed=0, diverged=1, running=1, best=0.25)
    adam_search = PhaseCounts(4, complete=4, best=0.125)
    adam_final = PhaseCounts(2, complete=1, running=1)
    rows = [
        ArmRow("sgd · quadratic", "search", searching, PhaseCounts(0), 1, 42.0),
        ArmRow("adam · quadratic", "final", adam_search, adam_final, 1, 3.0),
        ArmRow("rmsprop · quadratic", "search", PhaseCounts(4), PhaseCounts(0), 0, None),
    ]
    progress.update(rows, 125.0)
    progress.close()
    lines = [line.replace("│", " ") for line in console.file.getvalue().splitlines()]
    assert any("about 2m05s left" in line for line in lines)
    sgd = next(line for line in lines if "sgd · quadratic" in line).split()
    assert sgd[3:] == ["search", "3/4", "1", "0", "1", "1", "0.25", "-", "42s"]
    adam = next(line for line in lines if "adam · quadratic" in line).split()
    assert adam[3:] == ["final", "4/4", "0", "0", "0", "1", "0.125", "1/2", "3s"]
    rmsprop = next(line for line in lines if "rmsprop · quadratic" in line).split()
    assert rmsprop[-1] == "queued" and rmsprop[4] == "0/4"

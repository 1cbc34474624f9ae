"""MLflow recording against a real ``mlflow server`` process on loopback and the embedded
SQLite store: nesting, names, params, metrics and statuses; idempotence across tracker
instances and processes; batching; an unreachable or vanishing server, the spool and its
replay."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import pickle
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
import torch
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
from mlflow.tracking import MlflowClient
from mlflow_server import (  # noqa: F401 (mlflow_server is a fixture)
    LOG_BATCH_PATH,
    MlflowServer,
    TcpRelay,
    free_port,
    mlflow_server,
)

from services import tracking
from services.spec import Arm
from services.tracking import (
    EPOCH_METRICS,
    StudyTracker,
    artifact_location,
    flatten_params,
    is_transient,
    resolve_tracking_uri,
    run_environment,
)
from services.trainer import EpochMetrics, TrialResult, run_trial

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = {
    "study": "placeholder",
    "workloads": ["quadratic"],
    "optimizers": [{"name": "adam", "fixed": {"eps": 1e-7}}, "sgd"],
    "search_space": {"learning_rate": {"min": 1e-4, "max": 1.0, "scaling": "log"}},
    "budget": {"trials": 4},
}
CONFIG = {"workload": "quadratic", "optimizer": "adam", "hparams": {"lr": 0.1}, "epochs": 3}


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One embedded SQLite store for the module (creating one takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-sqlite') / 'mlflow.db'}"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> MlflowServer:
    """The session's ``mlflow server`` (the imported ``mlflow_server`` fixture)."""
    return request.getfixturevalue("mlflow_server")


@pytest.fixture(params=["server", "sqlite"])
def tracking_uri(request: pytest.FixtureRequest, sqlite_uri: str) -> str:
    if request.param == "server":
        return request.getfixturevalue("server").url
    return sqlite_uri


@pytest.fixture
def study() -> str:
    """A study name of its own per test: tests share the stores, one experiment each."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def tracker(tracking_uri: str, study: str, tmp_path: Path) -> StudyTracker:
    return StudyTracker(tracking_uri, study, spool_dir=tmp_path / "spool")


def closed_port_uri() -> str:
    return f"http://127.0.0.1:{free_port()}"


# ---- helpers -------------------------------------------------------------------------------


def runs_of(client: MlflowClient, study: str) -> dict[str, Run]:
    """Every run of the study's experiment by name; study runs (named after the study and
    the minute they started) under ``"study"``."""
    experiment = client.get_experiment_by_name(study)
    assert experiment is not None, f"no experiment {study!r}"
    by_name: dict[str, Run] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        name = "study" if run.info.run_name.startswith(f"{study} · ") else run.info.run_name
        assert name not in by_name, f"two runs named {name!r}"
        by_name[name] = run
    return by_name


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def epoch(number: int, steps_per_epoch: int = 10) -> EpochMetrics:
    return EpochMetrics(
        epoch=number,
        step=number * steps_per_epoch,
        train_loss=1.0 / number,
        val_metric=0.5 + number / 1000,
        val_loss=2.0 / number,
        lr=0.1 * 0.99**number,
        epoch_time_s=0.01 * number,
        train_time_s=0.02 * number,
    )


def result_of(status: str, epochs: int, **fields: Any) -> TrialResult:
    """A trial result as run_trial would return it, without training."""
    values: dict[str, Any] = {
        "status": status,
        "config": CONFIG,
        "metric": "excess_loss",
        "direction": "minimize",
        "target": 0.05,
        "history": [epoch(n) for n in range(1, epochs + 1)],
        "final_val_metric": 0.5,
        "best_val_metric": 0.4,
        "test_metric": None,
        "time_to_target_s": None,
        "steps_to_target": None,
        "train_time_s": 0.02 * epochs,
        "steps": 10 * epochs,
        "samples_per_s": 1000.0,
        "device": "cpu",
    }
    values.update(fields)
    return TrialResult(**values)


def spooled(spool_dir: Path, study: str) -> list[dict[str, Any]]:
    path = spool_dir / f"{study}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def count_calls(monkeypatch: pytest.MonkeyPatch, client: MlflowClient, name: str) -> list[int]:
    """Counts calls of the client's method ``name`` (the length of the returned list)."""
    calls: list[int] = []
    method: Callable[..., Any] = getattr(client, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return method(*args, **kwargs)

    monkeypatch.setattr(client, name, counted)
    return calls


# ---- recording -----------------------------------------------------------------------------


def test_study_arm_trial_and_seed_runs_nest_with_readable_names_params_and_metrics(
    tracker: StudyTracker, study: str, tracking_uri: str
) -> None:
    arm = Arm(study, "quadratic", "adam")
    parent = tracker.start_study({**SPEC, "study": study}, tags={"trigger": "test"})
    arm_run = tracker.arm_run(parent, arm)
    trial = tracker.trial_run(
        arm_run, arm, phase="search", trial_number=7, config=CONFIG, optuna_trial_id=107
    )
    result = run_trial(CONFIG, lambda metrics: tracker.log_epoch(trial, metrics))
    assert result.status == "completed"
    tracker.finish_trial(trial, result, optuna_state="COMPLETE")
    seed_run = tracker.trial_run(
        arm_run, arm, phase="final", trial_number=0, config={**CONFIG, "seed": 2}
    )
    tracker.finish_trial(seed_run, result_of("completed", 2), optuna_state="COMPLETE")
    tracker.finish_run(arm_run, metrics={"best_value": 0.25})
    tracker.finish_run(parent)

    client = MlflowClient(tracking_uri)
    runs = runs_of(client, study)
    assert len(runs) == 4
    study_run = runs["study"]
    assert study_run.info.run_id == parent
    assert study_run.data.tags["phase"] == "study"
    assert study_run.data.tags["study"] == study
    assert study_run.data.tags["trigger"] == "test"
    assert study_run.data.tags["command"]
    assert study_run.data.tags["version.torch"] == torch.__version__
    assert study_run.data.tags["version.mlflow"] == mlflow.__version__
    assert study_run.data.tags["hardware"] == run_environment()["hardware"]
    assert study_run.data.params["optimizers.0.name"] == "adam"
    assert study_run.data.params["optimizers.0.fixed.eps"] == "1e-07"
    assert study_run.data.params["optimizers.1"] == "sgd"
    assert study_run.data.params["search_space.learning_rate.scaling"] == "log"
    assert study_run.info.status == "FINISHED"

    arm_info = runs["adam · quadratic"]
    assert arm_info.info.run_id == arm_run
    assert arm_info.data.tags["mlflow.parentRunId"] == parent
    assert arm_info.data.tags["phase"] == "arm"
    assert arm_info.data.tags["arm"] == f"{study}/quadratic/adam"
    assert arm_info.data.metrics["best_value"] == 0.25
    assert arm_info.info.status == "FINISHED"

    trial_info = runs["adam · quadratic · trial 7"]
    assert trial_info.info.run_id == trial
    assert trial_info.data.tags["mlflow.parentRunId"] == arm_run
    tags = trial_info.data.tags
    assert (tags["phase"], tags["trial_number"], tags["optuna_trial_id"]) == ("search", "7", "107")
    assert (tags["workload"], tags["optimizer"]) == ("quadratic", "adam")
    assert (tags["status"], tags["optuna_state"]) == ("completed", "COMPLETE")
    assert tags["metric"] == "excess_loss"
    assert tags["git_commit"] == run_environment()["git_commit"]
    params = trial_info.data.params
    # The resolved config: the workload's default batch size is recorded too.
    assert params["hparams.lr"] == "0.1"
    assert params["epochs"] == "3"
    assert params["batch_size"] == str(result.config["batch_size"])
    assert params["schedule"] == "None"
    assert params["optimizer"] == "adam"
    for key in EPOCH_METRICS:
        expected = [(m.epoch, pytest.approx(getattr(m, key))) for m in result.history]
        assert history(client, trial, key) == expected, key
    assert history(client, trial, "optimizer_steps") == [(m.epoch, m.step) for m in result.history]
    metrics = trial_info.data.metrics
    assert metrics["final_val_metric"] == pytest.approx(result.final_val_metric)
    assert metrics["steps"] == result.steps
    assert metrics["samples_per_s"] == pytest.approx(result.samples_per_s)
    assert metrics["train_time_s"] == pytest.approx(result.train_time_s)
    assert metrics["reached_target"] == float(result.time_to_target_s is not None)
    assert trial_info.info.status == "FINISHED"

    seed_info = runs["adam · quadratic · seed 2"]
    assert seed_info.data.tags["mlflow.parentRunId"] == arm_run
    assert (seed_info.data.tags["phase"], seed_info.data.tags["seed"]) == ("final", "2")
    assert seed_info.data.params["seed"] == "2"

    experiment = client.get_experiment_by_name(study)
    if tracking_uri.startswith("sqlite"):
        assert experiment.artifact_location == artifact_location(tracking_uri, study)
        assert experiment.artifact_location.endswith(f"/mlartifacts/{study}")
    else:  # the server's proxied artifact store
        assert experiment.artifact_location.startswith("mlflow-artifacts:")


@pytest.mark.parametrize(
    ("status", "run_status", "fields"),
    [
        ("pruned", "KILLED", {}),
        ("early_stopped", "FINISHED", {"time_to_target_s": 0.04, "steps_to_target": 20}),
        (
            "diverged",
            "FINISHED",
            {"diverged_at_step": 27, "final_val_metric": None, "train_time_s": 0.05},
        ),
        ("failed", "FAILED", {"error": "RuntimeError: boom", "traceback": "Traceback: boom"}),
    ],
)
def test_trial_outcomes_end_runs_with_their_status_and_metrics(
    tracker: StudyTracker,
    study: str,
    tracking_uri: str,
    status: str,
    run_status: str,
    fields: dict[str, Any],
) -> None:
    arm = Arm(study, "quadratic", "sgd")
    arm_run = tracker.arm_run(tracker.start_study({}, tags={}), arm)
    run_id = tracker.trial_run(arm_run, arm, phase="search", trial_number=0, config=CONFIG)
    result = result_of(status, 2, **fields)
    for metrics in result.history:
        tracker.log_epoch(run_id, metrics)
    state = {"pruned": "PRUNED", "failed": "FAIL"}.get(status, "COMPLETE")
    tracker.finish_trial(run_id, result, optuna_state=state)

    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.info.status == run_status
    assert (run.data.tags["status"], run.data.tags["optuna_state"]) == (status, state)
    metrics = run.data.metrics
    assert ("diverged_at_step" in metrics) == (status == "diverged")
    times = history(MlflowClient(tracking_uri), run_id, "train_time_s")
    if status == "diverged":
        assert metrics["diverged_at_step"] == 27
        assert "final_val_metric" not in metrics
        # The time of the epoch cut short by the divergence has a step of its own.
        assert times == [(1, 0.02), (2, 0.04), (3, 0.05)]
    else:
        assert times == [(1, 0.02), (2, 0.04)]
    if status == "early_stopped":
        assert (metrics["time_to_target_s"], metrics["reached_target"]) == (0.04, 1.0)
        assert metrics["steps_to_target"] == 20
    else:
        assert metrics["reached_target"] == 0.0
        assert "time_to_target_s" not in metrics
    assert run.data.tags.get("error") == fields.get("error")
    assert run.data.tags.get("error_traceback") == fields.get("traceback")


def test_errors_that_are_not_about_connectivity_are_raised_not_spooled(
    tracker: StudyTracker, study: str, tmp_path: Path
) -> None:
    parent = tracker.start_study({}, tags={})
    with pytest.raises(MlflowException, match="bad!key"):
        tracker.finish_run(parent, metrics={"bad!key": 1.0})
    assert spooled(tmp_path / "spool", study) == []


# ---- idempotence ---------------------------------------------------------------------------


def test_a_trial_key_has_one_run_across_calls_trackers_and_invocations(
    tracker: StudyTracker, study: str, tracking_uri: str, tmp_path: Path
) -> None:
    arm = Arm(study, "quadratic", "adam")
    parent = tracker.start_study({}, tags={})
    arm_run = tracker.arm_run(parent, arm)
    assert tracker.arm_run(parent, arm) == arm_run
    first = tracker.trial_run(arm_run, arm, phase="search", trial_number=3, config=CONFIG)
    assert tracker.trial_run(arm_run, arm, phase="search", trial_number=3, config=CONFIG) == first
    tracker.finish_trial(first, result_of("completed", 1), optuna_state="COMPLETE")
    other = tracker.trial_run(arm_run, arm, phase="search", trial_number=4, config=CONFIG)
    seed = tracker.trial_run(arm_run, arm, phase="final", trial_number=3, config=CONFIG)
    assert len({first, other, seed}) == 3

    # A resumed invocation: another tracker, a new study run and arm run; the trial run is
    # the same, running again and now under the new arm run.
    resumed = StudyTracker(tracking_uri, study, spool_dir=tmp_path / "spool")
    new_parent = resumed.start_study({}, tags={})
    new_arm_run = resumed.arm_run(new_parent, arm)
    assert new_parent != parent and new_arm_run != arm_run
    again = resumed.trial_run(new_arm_run, arm, phase="search", trial_number=3, config=CONFIG)
    assert again == first
    resumed.flush()

    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(study).experiment_id
    same_key = client.search_runs(
        [experiment_id], f"tags.`optarena.key` = '{study}/quadratic/adam/search/3'"
    )
    assert [run.info.run_id for run in same_key] == [first]
    run = client.get_run(first)
    assert run.info.status == "RUNNING"
    assert run.data.tags["mlflow.parentRunId"] == new_arm_run
    assert run.data.params["hparams.lr"] == "0.1"
    # Both study runs: a resumed invocation is a new one.
    studies = client.search_runs([experiment_id], "tags.phase = 'study'")
    assert {run.info.run_id for run in studies} == {parent, new_parent}
    arms = client.search_runs([experiment_id], "tags.phase = 'arm'")
    assert {run.info.run_id for run in arms} == {arm_run, new_arm_run}
    others = client.search_runs([experiment_id], "tags.phase != 'study' and tags.phase != 'arm'")
    assert sorted(run.info.run_name for run in others) == [
        "adam · quadratic · seed 0",
        "adam · quadratic · trial 3",
        "adam · quadratic · trial 4",
    ]


CHILD = """
import pickle, sys
tracker, arm, arm_run, config = pickle.loads(sys.stdin.buffer.read())
run_id = tracker.trial_run(arm_run, arm, phase="search", trial_number=5, config=config)
tracker.flush()
print(run_id)
"""


def test_a_pickled_tracker_in_another_process_continues_the_same_trial_run(
    tracker: StudyTracker, study: str, tracking_uri: str
) -> None:
    arm = Arm(study, "quadratic", "adam")
    arm_run = tracker.arm_run(tracker.start_study({}, tags={}), arm)
    run_id = tracker.trial_run(arm_run, arm, phase="search", trial_number=5, config=CONFIG)
    tracker.flush()
    shipped = pickle.dumps((tracker, arm, arm_run, CONFIG))
    child = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=shipped,
        capture_output=True,
        cwd=REPO_ROOT,
        timeout=300,
        check=False,
    )
    assert child.returncode == 0, child.stderr.decode()
    assert child.stdout.decode().split()[-1] == run_id
    client = MlflowClient(tracking_uri)
    names = [name for name in runs_of(client, study) if name.endswith("trial 5")]
    assert names == ["adam · quadratic · trial 5"]


def test_pickling_keeps_settings_and_leaves_the_client_behind(tracker: StudyTracker) -> None:
    tracker.start_study({}, tags={})  # builds the client, the lock and caches
    assert tracker.replay_spool() == 0
    assert not tracker.spool_dir.exists()  # nothing was spooled: nothing written
    copy = pickle.loads(pickle.dumps(tracker))
    assert (copy.tracking_uri, copy.study, copy.spool_dir) == (
        tracker.tracking_uri,
        tracker.study,
        tracker.spool_dir,
    )
    assert copy.git == tracker.git
    assert copy.client is not tracker.client
    assert copy.arm_run(copy.start_study({}, tags={}), Arm(tracker.study, "quadratic", "adam"))


# ---- batching ------------------------------------------------------------------------------


def test_epochs_are_buffered_and_sent_in_at_most_two_batches(
    tracker: StudyTracker,
    study: str,
    tracking_uri: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arm = Arm(study, "quadratic", "adam")
    arm_run = tracker.arm_run(tracker.start_study({}, tags={}), arm)
    run_id = tracker.trial_run(arm_run, arm, phase="search", trial_number=0, config=CONFIG)
    server: MlflowServer | None = None
    since = 0
    if tracking_uri.startswith("http"):
        server = request.getfixturevalue("server")
        since = len(server.log_lines())
    batches = count_calls(monkeypatch, tracker.client, "log_batch")

    for number in range(1, 101):
        tracker.log_epoch(run_id, epoch(number))
    assert batches == []  # 700 values buffered: nothing sent yet
    for number in range(101, 201):
        tracker.log_epoch(run_id, epoch(number))
    tracker.finish_trial(run_id, result_of("completed", 200), optuna_state="COMPLETE")

    assert len(batches) <= 2
    if server is not None:
        assert server.count_requests(LOG_BATCH_PATH, since) == len(batches)
    client = MlflowClient(tracking_uri)
    for key in EPOCH_METRICS:
        expected = [(n, pytest.approx(getattr(epoch(n), key))) for n in range(1, 201)]
        assert history(client, run_id, key) == expected, key
    assert history(client, run_id, "optimizer_steps") == [(n, 10.0 * n) for n in range(1, 201)]
    run = client.get_run(run_id)
    assert run.data.params["hparams.lr"] == "0.1"
    assert run.info.status == "FINISHED"


def test_a_buffer_older_than_the_flush_interval_is_sent_at_the_next_epoch(
    tracking_uri: str, study: str, tmp_path: Path
) -> None:
    tracker = StudyTracker(tracking_uri, study, spool_dir=tmp_path, flush_interval_s=0.2)
    arm = Arm(study, "quadratic", "adam")
    arm_run = tracker.arm_run(tracker.start_study({}, tags={}), arm)
    run_id = tracker.trial_run(arm_run, arm, phase="search", trial_number=0, config=CONFIG)
    time.sleep(0.3)
    tracker.log_epoch(run_id, epoch(1))
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.data.metrics["val_metric"] == epoch(1).val_metric
    assert run.data.params["hparams.lr"] == "0.1"


# ---- an unreachable server -----------------------------------------------------------------


def record_trial(tracker: StudyTracker, arm_run: str, arm: Arm, number: int, epochs: int) -> str:
    run_id = tracker.trial_run(arm_run, arm, phase="search", trial_number=number, config=CONFIG)
    for n in range(1, epochs + 1):
        tracker.log_epoch(run_id, epoch(n))
    tracker.finish_trial(run_id, result_of("completed", epochs), optuna_state="COMPLETE")
    return run_id


def test_an_unreachable_server_spools_quickly_and_replay_creates_the_nested_runs(
    server: MlflowServer,
    study: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spool_dir = tmp_path / "spool"
    offline = StudyTracker(closed_port_uri(), study, spool_dir=spool_dir)
    arm = Arm(study, "quadratic", "adam")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=tracking.__name__):
        parent = offline.start_study({**SPEC, "study": study}, tags={})
        arm_run = offline.arm_run(parent, arm)
        trials = [record_trial(offline, arm_run, arm, number, epochs=20) for number in (0, 1)]
        offline.finish_run(arm_run, metrics={"best_value": 0.5})
        offline.finish_run(parent)
    assert time.monotonic() - started < 10
    assert all(run_id.startswith("spool:") for run_id in [parent, arm_run, *trials])
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    records = spooled(spool_dir, study)
    ops = [record["op"] for record in records]
    assert ops.count("create_run") == 4
    assert ops.count("set_status") == 4
    metrics = sum(len(record["metrics"]) for record in records if record["op"] == "log_batch")
    # 7 per epoch; best_value; per trial the 5 final metrics that are not None and
    # reached_target
    assert metrics == 2 * 20 * 7 + 1 + 2 * 6

    # The server is back (here: a tracker of the live server reads the same spool).
    online = StudyTracker(server.url, study, spool_dir=spool_dir)
    assert online.replay_spool() == len(records)
    assert spooled(spool_dir, study) == []
    assert online.replay_spool() == 0
    assert not list(spool_dir.glob("*.pending"))
    client = MlflowClient(server.url)
    runs = runs_of(client, study)
    assert len(runs) == 4
    arm_info = runs["adam · quadratic"]
    study_run = runs["study"]
    assert arm_info.data.tags["mlflow.parentRunId"] == study_run.info.run_id
    assert study_run.data.params["optimizers.0.name"] == "adam"
    for number in (0, 1):
        trial = runs[f"adam · quadratic · trial {number}"]
        assert trial.data.tags["mlflow.parentRunId"] == arm_info.info.run_id
        assert trial.info.status == "FINISHED"
        assert trial.data.params["hparams.lr"] == "0.1"
        assert len(client.get_metric_history(trial.info.run_id, "val_loss")) == 20
    assert arm_info.info.status == "FINISHED"
    assert arm_info.data.metrics["best_value"] == 0.5
    # Placeholders now lead to the real runs, in any process sharing the spool directory.
    assert offline.resolve_run_id(arm_run) == arm_info.info.run_id
    assert offline.resolve_run_id(parent) == study_run.info.run_id
    assert offline.resolve_run_id("spool:unknown") is None


def test_a_spooled_record_the_server_refuses_is_set_aside_and_the_rest_replayed(
    server: MlflowServer, study: str, tmp_path: Path
) -> None:
    offline = StudyTracker(closed_port_uri(), study, spool_dir=tmp_path)
    parent = offline.start_study({}, tags={})
    offline.finish_run(parent, metrics={"bad!key": 1.0, "good": 2.0})
    assert [record["op"] for record in spooled(tmp_path, study)] == [
        "create_run",
        "log_batch",
        "set_status",
    ]

    online = StudyTracker(server.url, study, spool_dir=tmp_path)
    assert online.replay_spool() == 2
    rejected = [json.loads(line) for line in (tmp_path / f"{study}.rejected.jsonl").open()]
    assert [(record["op"], "bad!key" in record["error"]) for record in rejected] == [
        ("log_batch", True)
    ]
    run = runs_of(MlflowClient(server.url), study)["study"]
    assert run.info.status == "FINISHED"
    assert "good" not in run.data.metrics  # it was in the refused batch
    assert online.replay_spool() == 0


def spool_trials_in_a_child(shipped: bytes, arm_run: str, first: int, count: int) -> None:
    tracker, arm = pickle.loads(shipped)
    for number in range(first, first + count):
        record_trial(tracker, arm_run, arm, number, epochs=10)


def test_processes_spool_to_one_file_and_one_replay_sends_everything(
    server: MlflowServer, study: str, tmp_path: Path
) -> None:
    offline = StudyTracker(closed_port_uri(), study, spool_dir=tmp_path, flush_interval_s=0)
    arm = Arm(study, "quadratic", "adam")
    arm_run = offline.arm_run(offline.start_study({}, tags={}), arm)
    shipped = pickle.dumps((offline, arm))
    fork = multiprocessing.get_context("fork")  # the children only spool: no store to share
    children = [
        fork.Process(target=spool_trials_in_a_child, args=(shipped, arm_run, 10 * i, 2))
        for i in range(3)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    records = spooled(tmp_path, study)
    # flush_interval_s=0: one spooled batch per epoch, written by three processes at once.
    assert len(records) == 2 + 3 * 2 * (1 + 10 + 1 + 1)

    online = StudyTracker(server.url, study, spool_dir=tmp_path)
    assert online.replay_spool() == len(records)
    client = MlflowClient(server.url)
    runs = runs_of(client, study)
    assert len(runs) == 2 + 6
    for i in range(3):
        for number in range(10 * i, 10 * i + 2):
            trial = runs[f"adam · quadratic · trial {number}"]
            assert trial.data.tags["mlflow.parentRunId"] == runs["adam · quadratic"].info.run_id
            assert trial.info.status == "FINISHED"
            assert [step for step, _ in history(client, trial.info.run_id, "lr")] == list(
                range(1, 11)
            )


def test_a_server_outage_mid_study_is_spooled_and_replayed_when_it_is_back(
    server: MlflowServer,
    study: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = TcpRelay(int(server.url.rsplit(":", 1)[1]))
    relay.start()
    try:
        tracker = StudyTracker(relay.url, study, spool_dir=tmp_path / "spool")
        arm = Arm(study, "quadratic", "adam")
        parent = tracker.start_study({}, tags={})
        arm_run = tracker.arm_run(parent, arm)
        before = record_trial(tracker, arm_run, arm, 0, epochs=5)
        during = tracker.trial_run(arm_run, arm, phase="search", trial_number=1, config=CONFIG)
        tracker.log_epoch(during, epoch(1))

        relay.stop()  # the server goes away mid-trial
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger=tracking.__name__):
            for n in range(2, 6):
                tracker.log_epoch(during, epoch(n))
            tracker.finish_trial(during, result_of("completed", 5), optuna_state="COMPLETE")
            after = record_trial(tracker, arm_run, arm, 2, epochs=5)
        assert time.monotonic() - started < 10
        assert not during.startswith("spool:") and after.startswith("spool:")
        assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1
        assert spooled(tmp_path / "spool", study)

        relay.start()  # the server is back
        assert tracker.replay_spool() > 0
        # Online again: a new trial goes straight to the server.
        late = tracker.trial_run(arm_run, arm, phase="search", trial_number=3, config=CONFIG)
        assert not late.startswith("spool:")
        tracker.finish_run(arm_run)
        tracker.finish_run(parent)
    finally:
        relay.stop()

    client = MlflowClient(server.url)
    runs = runs_of(client, study)
    assert len(runs) == 6
    for number, run_id in ((0, before), (1, during)):
        assert runs[f"adam · quadratic · trial {number}"].info.run_id == run_id
    for number in (0, 1, 2):
        trial = runs[f"adam · quadratic · trial {number}"]
        assert trial.data.tags["mlflow.parentRunId"] == arm_run
        assert trial.info.status == "FINISHED"
        assert history(client, trial.info.run_id, "val_metric") == [
            (n, pytest.approx(epoch(n).val_metric)) for n in range(1, 6)
        ]
    assert runs["adam · quadratic"].info.status == "FINISHED"


def test_a_blip_shorter_than_the_retries_is_bridged_without_spooling(
    server: MlflowServer,
    study: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relay = TcpRelay(int(server.url.rsplit(":", 1)[1]))
    relay.start()
    try:
        tracker = StudyTracker(relay.url, study, spool_dir=tmp_path)
        parent = tracker.start_study({}, tags={})
        attempts = count_calls(monkeypatch, tracker.client, "log_batch")
        relay.stop()
        # Back before the second attempt (0.2 s after the first) of the next request.
        threading.Timer(0.1, relay.start).start()
        with caplog.at_level(logging.WARNING, logger=tracking.__name__):
            tracker.finish_run(parent, metrics={"best_value": 1.0})
    finally:
        time.sleep(0.2)  # the timer has fired
        relay.stop()
    assert len(attempts) >= 2  # the first attempt met the closed port
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert spooled(tmp_path, study) == []
    run = MlflowClient(server.url).get_run(parent)
    assert (run.info.status, run.data.metrics["best_value"]) == ("FINISHED", 1.0)


# ---- pieces --------------------------------------------------------------------------------


def test_connection_failures_are_transient_and_refusals_are_not() -> None:
    try:
        requests.get(closed_port_uri(), timeout=5)
    except requests.exceptions.ConnectionError as refused:
        try:
            raise MlflowException("API request failed") from refused
        except MlflowException as wrapped:
            assert is_transient(wrapped)
    assert is_transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))
    assert not is_transient(MlflowException("bad", error_code=INVALID_PARAMETER_VALUE))
    assert not is_transient(ValueError("bad"))


def test_bad_arguments_are_rejected_with_the_allowed_values(study: str, tmp_path: Path) -> None:
    tracker = StudyTracker(closed_port_uri(), study, spool_dir=tmp_path)
    arm = Arm(study, "quadratic", "adam")
    with pytest.raises(ValueError, match="unknown phase 'serch'; allowed: search, final"):
        tracker.trial_run("run", arm, phase="serch", trial_number=0, config=CONFIG)
    with pytest.raises(ValueError, match="trial_number must be an int >= 0, got -1"):
        tracker.trial_run("run", arm, phase="search", trial_number=-1, config=CONFIG)
    with pytest.raises(ValueError, match="arm 'other/quadratic/adam' is not of study"):
        tracker.arm_run("run", Arm("other", "quadratic", "adam"))
    with pytest.raises(ValueError, match="unknown optuna_state 'DONE'; allowed: COMPLETE, PR"):
        tracker.finish_trial("run", result_of("completed", 1), optuna_state="DONE")
    bad = dataclasses.replace(result_of("completed", 1), status="exploded")
    with pytest.raises(ValueError, match="unknown trial status 'exploded'; allowed: complet"):
        tracker.finish_trial("run", bad, optuna_state="COMPLETE")
    with pytest.raises(ValueError, match="unknown run status 'DONE'; allowed: FINISHED, FAI"):
        tracker.finish_run("run", "DONE")
    with pytest.raises(ValueError, match="without quotes"):
        StudyTracker(closed_port_uri(), "it's", spool_dir=tmp_path)
    assert spooled(tmp_path, study) == []


def test_relative_sqlite_uris_become_absolute_with_artifacts_beside_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = resolve_tracking_uri("sqlite:///.optarena/mlflow.db")
    assert uri == f"sqlite:///{tmp_path}/.optarena/mlflow.db"
    expected = (tmp_path / ".optarena" / "mlartifacts" / "quickstart").as_uri()
    assert artifact_location("sqlite:///.optarena/mlflow.db", "quickstart") == expected
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert artifact_location("http://127.0.0.1:5000", "quickstart") is None
    tracker = StudyTracker("sqlite:///.optarena/mlflow.db", "quickstart", spool_dir=None)
    assert tracker.tracking_uri == uri
    assert tracker.spool_dir == tmp_path / ".optarena" / "spool"
    assert list(tmp_path.iterdir()) == []  # a tracker writes nothing until it records

    # Recorded from another directory (a worker's), it is the same database.
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    pickle.loads(pickle.dumps(tracker)).start_study({}, tags={})
    assert (tmp_path / ".optarena" / "mlflow.db").is_file()
    experiment = MlflowClient(uri).get_experiment_by_name("quickstart")
    assert experiment.artifact_location == expected
    assert list(elsewhere.iterdir()) == []


def test_run_environment_names_commit_versions_and_hardware() -> None:
    environment = run_environment()
    commit = environment["git_commit"]
    assert commit == "unknown" or (len(commit) == 40 and int(commit, 16) >= 0)
    assert environment["version.torch"] == torch.__version__
    assert environment["version.mlflow"] == mlflow.__version__
    assert environment["version.python"] == ".".join(map(str, sys.version_info[:3]))
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in environment["hardware"]
    else:
        assert environment["hardware"].endswith("CPUs)")


def test_flatten_params_uses_dotted_keys_and_indexes_lists() -> None:
    flat = flatten_params(
        {"hparams": {"lr": 0.1, "betas": [0.9, 0.99]}, "model": {}, "schedule": None, "x": []}
    )
    assert flat == {
        "hparams.lr": "0.1",
        "hparams.betas.0": "0.9",
        "hparams.betas.1": "0.99",
        "model": "{}",
        "schedule": "None",
        "x": "[]",
    }
    assert len(flatten_params({"long": "x" * 10_000})["long"]) == 6000
    assert not math.isnan(float(flatten_params({"v": 1e-7})["v"]))

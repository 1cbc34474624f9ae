"""Reading a study's records: runs recorded by ``StudyTracker`` (as the runner records them)
into a real MLflow store, read back into pandas by ``load_records``; Optuna's importances;
a whole report built and logged to the study run; unknown and partial studies."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from mlflow_server import MlflowServer, mlflow_server  # noqa: F401 (a fixture)
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from benchmarks import report_scale
from services.report import UnknownStudy, build_report, load_records
from services.report.records import arm_importances, open_client
from services.spec import Arm, StudySpec, parse_spec
from services.tracking import StudyTracker
from services.trainer import EpochMetrics, TrialResult

optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_spec(name: str) -> StudySpec:
    return parse_spec(
        {
            "study": name,
            "workloads": ["quadratic"],
            "optimizers": ["sgd", "adam"],
            "search_space": {"learning_rate": {"min": 1e-3, "max": 1.0, "scaling": "log"}},
            "trial": {"epochs": 3},
            "budget": {"trials": 3},
            "final": {"seeds": [1, 2]},
        }
    )


def result(status: str, config: dict, values: list[float], test: float | None) -> TrialResult:
    """A trial of the quadratic (target 0.04) with validation ``values`` per epoch, 10
    steps and 0.5 s of training per epoch."""
    history = [
        EpochMetrics(
            epoch=n,
            step=10 * n,
            train_loss=v,
            val_metric=v,
            val_loss=v,
            lr=config["hparams"]["lr"],
            epoch_time_s=0.5,
            train_time_s=0.5 * n,
        )
        for n, v in enumerate(values, start=1)
    ]
    reached = next((m for m in history if m.val_metric <= 0.04), None)
    diverged = status == "diverged"
    return TrialResult(
        status=status,
        config=config,
        metric="excess_loss",
        direction="min",
        target=0.04,
        history=history,
        final_val_metric=None if diverged else values[-1],
        best_val_metric=None if diverged else min(values),
        test_metric=test,
        time_to_target_s=reached.train_time_s if reached and not diverged else None,
        steps_to_target=reached.step if reached and not diverged else None,
        train_time_s=history[-1].train_time_s,
        steps=history[-1].step,
        samples_per_s=1000.0,
        device="cpu",
        diverged_at_step=history[-1].step if diverged else None,
    )


def record_study(tracking_uri: str, directory: Path, name: str) -> tuple[StudySpec, str]:
    """A partial study: sgd searched (completed, diverged, pruned) and re-run with both
    seeds; adam with one trial done and one still running. Returns the spec and the
    study run's id."""
    spec = study_spec(name)
    tracker = StudyTracker(tracking_uri, name, spool_dir=directory / "spool")
    parent = tracker.start_study(
        spec.model_dump(mode="json", by_alias=True),
        {"storage": f"journal://{directory / 'optuna.journal'}"},
    )
    sgd, adam = spec.arms()

    def record(
        arm: Arm,
        phase: str,
        number: int,
        params: dict[str, float],
        outcome: Callable[[dict], TrialResult],
        seed: int | None = None,
        finish: bool = True,
    ) -> None:
        config = spec.trial_config(arm, params, seed=seed)
        run = tracker.trial_run(
            tracker.arm_run(parent, arm),
            arm,
            phase=phase,
            trial_number=number,
            config=config,
            seed=seed,
        )
        trial = outcome(config)
        for metrics in trial.history:
            tracker.log_epoch(run, metrics)
        if finish:
            state = {"pruned": "PRUNED"}.get(trial.status, "COMPLETE")
            tracker.finish_trial(run, trial, optuna_state=state)

    record(
        sgd,
        "search",
        0,
        {"learning_rate": 0.1},
        lambda c: result("completed", c, [0.3, 0.05, 0.03], None),
    )
    record(sgd, "search", 1, {"learning_rate": 0.9}, lambda c: result("diverged", c, [5.0], None))
    record(
        sgd, "search", 2, {"learning_rate": 0.002}, lambda c: result("pruned", c, [0.6, 0.5], None)
    )
    for number, seed in enumerate((1, 2)):
        record(
            sgd,
            "final",
            number,
            {"learning_rate": 0.1},
            lambda c, s=seed: result(
                "completed", c, [0.3, 0.04 - s / 100, 0.02 + s / 100], 0.02 + s / 100
            ),
            seed=seed,
        )
    record(
        adam,
        "search",
        0,
        {"learning_rate": 0.01},
        lambda c: result("completed", c, [0.2, 0.1, 0.06], None),
    )
    record(
        adam,
        "search",
        1,
        {"learning_rate": 0.02},
        lambda c: result("completed", c, [0.2], None),
        finish=False,
    )
    tracker.flush()
    return spec, parent


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, str]:
    directory = tmp_path_factory.mktemp("records")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    _, parent = record_study(uri, directory, "records")
    return uri, directory, parent


def test_trial_runs_are_read_with_their_outcomes(recorded: tuple[str, Path, str]) -> None:
    uri, _, _ = recorded
    trials = load_records(uri, "records").trials.set_index("run_name")
    assert sorted(trials.index) == [
        "adam · quadratic · trial 0",
        "adam · quadratic · trial 1",
        "sgd · quadratic · seed 1",
        "sgd · quadratic · seed 2",
        "sgd · quadratic · trial 0",
        "sgd · quadratic · trial 1",
        "sgd · quadratic · trial 2",
    ]
    best = trials.loc["sgd · quadratic · trial 0"]
    assert (best["status"], best["phase"], best["trial_number"]) == ("completed", "search", 0)
    assert best["final_val_metric"] == 0.03 and best["best_val_metric"] == 0.03
    assert (best["time_to_target_s"], best["steps_to_target"]) == (1.5, 30.0)
    assert best["params.hparams.lr"] == "0.1"
    assert (best["metric"], best["direction"], best["target"]) == ("excess_loss", "min", 0.04)
    diverged = trials.loc["sgd · quadratic · trial 1"]
    assert diverged["status"] == "diverged" and math.isnan(diverged["final_val_metric"])
    # Never reached: infinite, AlgoPerf's rule.
    assert (
        diverged["time_to_target_s"]
        == math.inf
        == trials.loc["sgd · quadratic · trial 2", "steps_to_target"]
    )
    seed = trials.loc["sgd · quadratic · seed 2"]
    assert (seed["phase"], seed["seed"], seed["test_metric"]) == ("final", 2, pytest.approx(0.04))
    running = trials.loc["adam · quadratic · trial 1"]
    assert running["status"] == "running" and math.isnan(running["time_to_target_s"])


def test_the_plan_comes_from_the_study_run(recorded: tuple[str, Path, str]) -> None:
    uri, _, parent = recorded
    records = load_records(uri, "records")
    plan = records.plan
    assert (plan.workloads, plan.optimizers) == (["quadratic"], ["sgd", "adam"])
    assert (plan.trials, plan.seeds, plan.objective) == (3, [1, 2], "val_metric")
    assert records.workloads["quadratic"].direction == "min"
    assert records.latest_invocation is not None
    assert records.latest_invocation["run_id"] == parent


def test_histories_are_read_for_final_runs_only(recorded: tuple[str, Path, str]) -> None:
    uri, _, _ = recorded
    records = load_records(uri, "records")
    final_ids = set(records.trials.loc[records.trials["phase"] == "final", "run_id"])
    histories = records.histories
    assert set(histories["run_id"]) == final_ids
    seed_two = records.trials.loc[
        records.trials["run_name"] == "sgd · quadratic · seed 2", "run_id"
    ].item()
    run = histories[histories["run_id"] == seed_two].sort_values("epoch")
    assert run["epoch"].tolist() == [1, 2, 3]
    assert run["val_metric"].tolist() == pytest.approx([0.3, 0.02, 0.04])
    assert run["train_time_s"].tolist() == [0.5, 1.0, 1.5]
    assert run["optimizer_steps"].tolist() == [10.0, 20.0, 30.0]


def test_a_missing_optuna_storage_is_a_note_not_a_failure(recorded: tuple[str, Path, str]) -> None:
    uri, directory, _ = recorded
    records = load_records(uri, "records")  # the journal the study run names was never made
    assert records.importances.empty
    assert records.notes == [
        f"Optuna storage journal://{directory / 'optuna.journal'} unreadable (no Optuna journal "
        f"at {directory / 'optuna.journal'}): no importances"
    ]
    assert not (directory / "optuna.journal").exists()  # reading created nothing


def test_an_unknown_study_lists_the_studies_there(recorded: tuple[str, Path, str]) -> None:
    uri, _, _ = recorded
    with pytest.raises(
        UnknownStudy, match=r"no study 'nope' in the tracking store .*; studies there: records"
    ) as raised:
        load_records(uri, "nope")
    assert raised.value.existing == ["records"]


def test_a_missing_tracking_database_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no MLflow tracking store at"):
        open_client(f"sqlite:///{tmp_path / 'absent.db'}")
    assert not (tmp_path / "absent.db").exists()


def test_a_partial_study_reports_and_logs_to_its_study_run(
    recorded: tuple[str, Path, str], tmp_path: Path
) -> None:
    uri, _, parent = recorded
    outcome = build_report("records", uri, tmp_path / "out")
    assert "sgd · quadratic: 2 of 2 final-phase runs" not in outcome.notes
    assert "adam · quadratic: 1 run(s) still running (or left by a killed worker)" in outcome.notes
    assert "adam · quadratic: 1 of 3 search trials done" in outcome.notes
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("optimizer")
    assert summary.loc["sgd", "test_mean"] == pytest.approx(0.035)
    assert summary.loc["sgd", "best_config"] == "hparams.lr=0.1"
    assert math.isnan(summary.loc["adam", "test_mean"])
    assert outcome.logged_to_run == parent
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert {"report/index.html", "report/report.md", "report/summary.csv"} <= logged


# ---- Optuna --------------------------------------------------------------------------------


def test_importances_over_finite_completed_trials() -> None:
    distributions = {"x": FloatDistribution(0, 1), "y": FloatDistribution(0, 1)}
    study = optuna.create_study(direction="maximize")
    rng = np.random.default_rng(0)
    for x, y in rng.uniform(size=(60, 2)):  # PED-ANOVA wants ≥ 5 trials in its top 10%
        trial = create_trial(params={"x": x, "y": y}, distributions=distributions, value=x)
        study.add_trial(trial)
    # A diverged trial's -inf and a pruned trial say nothing about the landscape.
    for value, state in ((-math.inf, TrialState.COMPLETE), (None, TrialState.PRUNED)):
        params = {"x": 0.999, "y": 0.999}
        study.add_trial(
            create_trial(params=params, distributions=distributions, value=value, state=state)
        )
    importances = arm_importances(study)
    assert set(importances) == {"x", "y"}
    assert sum(importances.values()) == pytest.approx(1.0)
    assert importances["x"] > 0.8


def test_importances_need_two_trials_and_something_that_varies() -> None:
    distributions = {"x": FloatDistribution(0, 1)}
    study = optuna.create_study()
    study.add_trial(create_trial(params={"x": 0.5}, distributions=distributions, value=1.0))
    assert arm_importances(study) == {}
    study.add_trial(create_trial(params={"x": 0.5}, distributions=distributions, value=2.0))
    assert arm_importances(study) == {}


def test_the_benchmark_study_reads_back_whole_with_importances(tmp_path: Path) -> None:
    study = report_scale.synthesize(
        tmp_path,
        study="tiny",
        workloads=("quadratic",),
        optimizers=("sgd", "adam"),
        trials=6,
        seeds=2,
        epochs=3,
    )
    records = load_records(study.tracking_uri, "tiny")
    assert len(records.trials) == study.runs
    assert records.storage_url == study.storage_url
    finals = records.trials[records.trials["phase"] == "final"]
    assert len(records.histories) == 3 * len(finals)
    assert set(records.importances["optimizer"]) == {"sgd", "adam"}
    assert set(records.importances["param"]) == {"learning_rate", "weight_decay"}
    assert records.notes == []


@pytest.mark.slow
def test_a_report_of_a_study_on_a_tracking_server(
    mlflow_server: MlflowServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    name = f"served-{uuid.uuid4().hex[:8]}"
    _, parent = record_study(mlflow_server.url, tmp_path, name)
    outcome = build_report(name, mlflow_server.url, tmp_path / "out")
    records = load_records(mlflow_server.url, name)
    assert len(records.trials) == 7 and len(records.histories) == 2 * 3
    assert outcome.logged_to_run == parent
    client = MlflowClient(mlflow_server.url)
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert "report/index.html" in logged
    downloaded = client.download_artifacts(parent, "report/summary.csv", str(tmp_path))
    assert Path(downloaded).read_text() == (tmp_path / "out" / "summary.csv").read_text()


def test_a_study_without_trials_yet_is_reported_as_such(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = study_spec("empty")
    tracker = StudyTracker(uri, "empty", spool_dir=tmp_path / "spool")
    tracker.start_study(spec.model_dump(mode="json", by_alias=True), {})
    tracker.flush()
    outcome = build_report("empty", uri, tmp_path / "out")
    assert outcome.notes[0] == "no Optuna storage recorded: no hyperparameter importances"
    assert "sgd · quadratic: no runs yet" in outcome.notes
    assert "adam · quadratic: no runs yet" in outcome.notes
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary["optimizer"].tolist() == ["sgd", "adam"]
    assert summary["trials_used"].tolist() == [0, 0]
    assert (tmp_path / "out" / "index.html").stat().st_size > 0

"""The dashboard: MLflow's own UI over a small study's real runs, opened in headless Chromium."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow_server import free_port

from services.dashboard import DEFAULT_HOST, start_dashboard
from services.spec import Arm
from services.tracking import StudyTracker
from services.trainer import run_trial

CHROMIUM = "/usr/bin/chromium"
STUDY = "dashboard-check"
ARMS = [Arm(STUDY, "quadratic", "adam"), Arm(STUDY, "quadratic", "momentum")]


def _record_small_study(tracking_uri: str, spool: Path) -> None:
    """Two arms × two real quadratic trials, recorded as `optarena run` records them."""
    tracker = StudyTracker(tracking_uri, STUDY, spool_dir=spool)
    parent = tracker.start_study({"study": STUDY}, {"command": "test"})
    for arm in ARMS:
        arm_run = tracker.arm_run(parent, arm)
        for number, lr in enumerate((0.01, 0.03)):
            config = {
                "workload": arm.workload,
                "optimizer": arm.optimizer,
                "hparams": {"lr": lr},
                "epochs": 2,
            }
            run_id = tracker.trial_run(
                arm_run, arm, phase="search", trial_number=number, config=config
            )
            result = run_trial(config, reporter=lambda m, r=run_id: tracker.log_epoch(r, m))
            tracker.finish_trial(run_id, result, optuna_state="COMPLETE")
        tracker.finish_run(arm_run)
    tracker.finish_run(parent)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("dashboard")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    _record_small_study(tracking_uri, root / "spool")
    running = start_dashboard(tracking_uri, port=free_port())
    try:
        running.wait_until_ready()
        yield running
    finally:
        running.stop()


def test_dashboard_serves_on_loopback_only(dashboard):
    assert DEFAULT_HOST == "127.0.0.1"
    assert dashboard.url.startswith("http://127.0.0.1:")


def test_experiment_lists_the_arm_runs_with_their_trials_nested(dashboard):
    # the REST API the UI's experiment page calls
    experiment = _get(
        f"{dashboard.url}/api/2.0/mlflow/experiments/get-by-name?"
        + urllib.parse.urlencode({"experiment_name": STUDY})
    )["experiment"]
    runs = _post(
        f"{dashboard.url}/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "max_results": 100},
    )["runs"]
    names = {run["info"]["run_name"]: run for run in runs}
    assert {arm.label for arm in ARMS} <= set(names)
    for arm in ARMS:
        arm_id = names[arm.label]["info"]["run_id"]
        children = [
            run
            for run in runs
            if {"key": "mlflow.parentRunId", "value": arm_id} in run["data"].get("tags", [])
        ]
        assert len(children) == 2
        # same param names in every trial: "compare runs" can plot lr against the metric
        for child in children:
            keys = {param["key"] for param in child["data"]["params"]}
            assert "hparams.lr" in keys
            assert "final_val_metric" in {m["key"] for m in child["data"]["metrics"]}


def test_experiment_page_renders_in_headless_chromium(dashboard, tmp_path: Path):
    experiment = _get(
        f"{dashboard.url}/api/2.0/mlflow/experiments/get-by-name?"
        + urllib.parse.urlencode({"experiment_name": STUDY})
    )["experiment"]
    page = f"{dashboard.url}/#/experiments/{experiment['experiment_id']}/runs"
    screenshot = tmp_path / "experiment.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,1000",
        "--virtual-time-budget=20000",
    ]
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={screenshot}", page],
        check=True,
        capture_output=True,
        timeout=180,
    )
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", page],
        check=True,
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout
    assert screenshot.stat().st_size > 10_000  # a rendered page, not a blank one
    # The runs table: the study run on top (arms and trials nested under it, collapsed),
    # and all of them counted: 1 study + 2 arms + 4 trials.
    assert "Training runs" in dom
    assert f"{STUDY} · " in dom
    text = re.sub(r"<[^>]+>", " ", dom)  # the page's text, without markup
    assert re.search(r"\b7\s+matching runs", text)


def test_dashboard_command_without_records_exits_2_and_says_what_to_do(tmp_path: Path, capsys):
    from services.cli import main

    missing = tmp_path / "nothing" / "mlflow.db"
    assert main(["dashboard", "--tracking-uri", f"sqlite:///{missing}"]) == 2
    error = capsys.readouterr().err
    assert str(missing) in error
    assert "optarena run" in error

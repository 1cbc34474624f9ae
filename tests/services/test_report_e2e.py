"""``optarena report`` end to end: a real small study (quadratic workload, two optimizers,
four trials each, two final-phase seeds) run by ``run_study`` on a local Ray instance into a
journal storage and an MLflow SQLite store, reported by the command, checked against what
Optuna and MLflow hold, and the HTML opened in headless Chromium."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from services import cli, cluster
from services.report.statistics import seed_summary
from services.search import open_storage
from services.spec import Endpoint, StudySpec, parse_spec
from services.study import best_trial, open_arm_study, run_study

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Starting Ray and running the study take about a minute on the 2-core machine.
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class RanStudy:
    spec: StudySpec
    storage: str
    tracking: str
    report_dir: Path


@pytest.fixture(scope="module")
def ran_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RanStudy]:
    """The study, run once for the module, and its report written by the command."""
    directory = tmp_path_factory.mktemp("e2e")
    spec = parse_spec(
        {
            "study": f"report-{uuid.uuid4().hex[:8]}",
            "workloads": ["quadratic"],
            "optimizers": ["sgd", "adam"],
            "search_space": {"learning_rate": {"min": 1e-3, "max": 0.5, "scaling": "log"}},
            "trial": {"epochs": 2},
            "budget": {"trials": 4},
            "sampler": {"name": "random", "seed": 0},
            "final": {"seeds": [1, 2]},
            "resources": {"workers": 2},
        }
    )
    storage = f"journal://{directory / 'optuna.journal'}"
    tracking = f"sqlite:///{directory / 'mlflow.db'}"
    cluster.start_cluster(num_cpus=2)
    try:
        outcome = run_study(
            spec, Endpoint(storage, "flag"), Endpoint(tracking, "flag"), quiet=True
        )
    finally:
        cluster.stop_cluster()
    assert outcome.exit_code == 0, outcome.message
    report_dir = directory / "report"
    code = cli.main(["report", spec.study, "--tracking-uri", tracking, "--out", str(report_dir)])
    assert code == cli.EXIT_OK
    yield RanStudy(spec, storage, tracking, report_dir)


def test_the_summary_agrees_with_optuna_and_mlflow(ran_study: RanStudy) -> None:
    summary = pd.read_csv(ran_study.report_dir / "summary.csv").set_index("optimizer")
    storage = open_storage(ran_study.storage)
    client = MlflowClient(ran_study.tracking)
    experiment = client.get_experiment_by_name(ran_study.spec.study)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    for arm in ran_study.spec.arms():
        row = summary.loc[arm.optimizer]
        search = open_arm_study(storage, ran_study.spec, arm, "search")
        best = best_trial(search, "minimize")
        assert best is not None
        assert (row["trials_used"], row["budget"]) == (4, 4)
        assert row["best_trial"] == best.number
        assert row["best_val_metric"] == pytest.approx(best.values[0], rel=1e-12)
        assert row["best_config"] == f"hparams.lr={best.params['learning_rate']:.4g}"
        finals = [
            run.data.metrics["test_metric"]
            for run in runs
            if run.data.tags.get("phase") == "final"
            and run.data.tags.get("optimizer") == arm.optimizer
        ]
        assert len(finals) == 2
        expected = seed_summary(finals)
        assert (row["final_runs"], row["test_n"]) == (2, 2)
        assert row["test_mean"] == pytest.approx(expected.mean, rel=1e-12)
        assert row["test_ci_low"] == pytest.approx(expected.ci_low, rel=1e-12)
        assert row["test_ci_high"] == pytest.approx(expected.ci_high, rel=1e-12)


def test_the_ranking_and_importances_cover_both_optimizers(ran_study: RanStudy) -> None:
    ranking = pd.read_csv(ran_study.report_dir / "ranking.csv")
    assert sorted(ranking["rank"]) == [1.0, 2.0]
    assert set(ranking["optimizer"]) == {"sgd", "adam"}
    worse = ranking[ranking["rank"] == 2.0].iloc[0]
    assert 0 <= worse["p_value"] <= 1 and worse["p_holm"] == pytest.approx(worse["p_value"])
    importance = pd.read_csv(ran_study.report_dir / "importance.csv")
    # One searched dimension: all the importance is the learning rate's.
    assert set(importance["optimizer"]) == {"sgd", "adam"}
    assert importance["param"].unique().tolist() == ["learning_rate"]
    assert importance["importance"].tolist() == pytest.approx([1.0, 1.0])


def test_the_report_is_logged_to_the_latest_study_run(ran_study: RanStudy) -> None:
    client = MlflowClient(ran_study.tracking)
    experiment = client.get_experiment_by_name(ran_study.spec.study)
    assert experiment is not None
    (study_run,) = client.search_runs([experiment.experiment_id], "tags.phase = 'study'")
    logged = {a.path for a in client.list_artifacts(study_run.info.run_id, "report")}
    assert {"report/index.html", "report/report.md", "report/summary.csv"} <= logged


def test_an_unknown_study_exits_2_and_lists_the_studies(
    ran_study: RanStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = cli.main(["report", "no-such-study", "--tracking-uri", ran_study.tracking])
    assert code == cli.EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "no study 'no-such-study'" in error
    assert ran_study.spec.study in error


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert shutil.which(CHROMIUM), "Debian's chromium is needed: apt-get install -y chromium"
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_chromium_renders_the_tables_and_images(ran_study: RanStudy, tmp_path: Path) -> None:
    page = (ran_study.report_dir / "index.html").as_uri()
    dom = chromium("--dump-dom", page, profile=tmp_path / "profile-dom").stdout
    for table in ("summary", "ranking", "overall_ranking", "performance_ratios"):
        assert re.search(rf'<table[^>]*id="{table}"', dom), table
    summary = re.search(r'<table[^>]*id="summary".*?</table>', dom, re.S)
    assert summary is not None
    rows = re.findall(r"<tr>\s*<td>quadratic</td>\s*<td>(\w+)</td>", summary.group(0))
    assert rows == ["sgd", "adam"]
    images = re.findall(r'<img id="img-(\w+)"[^>]*src="data:image/png;base64,', dom)
    assert len(images) == 5

    screenshot = tmp_path / "report.png"
    chromium(
        f"--screenshot={screenshot}",
        "--window-size=1280,2000",
        page,
        profile=tmp_path / "profile-shot",
    )
    pixels = matplotlib.image.imread(io.BytesIO(screenshot.read_bytes()), format="png")
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 0.05  # a page was drawn, not a blank window
    # The first screenful shows tables: many distinct rows, not only background.
    distinct_rows = len({row.tobytes() for row in (pixels[:, :, :3] * 255).astype("uint8")})
    assert distinct_rows > 200

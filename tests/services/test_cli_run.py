"""``optarena run``: a bad study file or option exits 2 before anything is written; a dry
run prints the plan and writes nothing; a real run on a local Ray instance and on an
existing cluster (``--address``), as a separate process like a user's."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from services.cli import main
from services.search import open_storage, reserve_trials, run_reserved_trials
from services.spec import parse_spec
from services.study import open_arm_study

REPO = Path(__file__).resolve().parents[2]

optuna.logging.set_verbosity(optuna.logging.WARNING)

VALID: dict[str, Any] = {
    "study": "cli",
    "workloads": ["quadratic"],
    "optimizers": ["sgd", "adam"],
    "search_space": {"learning_rate": {"min": 1e-3, "max": 0.5, "scaling": "log"}},
    "trial": {"epochs": 2},
    "budget": {"trials": 3},
    "sampler": {"name": "random", "seed": 0},
    "final": {"seeds": [1]},
    "resources": {"workers": 2},
}


def write_study(directory: Path, **changes: Any) -> Path:
    data = {**VALID, **changes}
    path = directory / "study.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory with no endpoint in the environment, so that the embedded
    defaults would land in ``tmp_path/.optarena``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPTARENA_STORAGE", raising=False)
    monkeypatch.delenv("OPTARENA_TRACKING_URI", raising=False)
    return tmp_path


# Each bad study with fragments of its message (field path, problem, allowed values).
BAD_STUDIES: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    (
        {"optimizers": ["sgd", "adamm"]},
        ("optimizers[1].name: unknown optimizer 'adamm'; allowed: sgd,", "did you mean 'adam'?"),
    ),
    ({"budget": {"trials": -2}}, ("budget.trials: must be > 0, got -2",)),
    ({"budgett": {"trials": 2}}, ("budgett: unknown key 'budgett'; allowed:", "'budget'?")),
    (
        {"search_space": {"learning_rate": {"min": 0.5, "max": 1e-3}}},
        ("search_space.learning_rate.max: must be > min (0.5), got 0.001",),
    ),
    (
        {"resources": {"workers": 2, "gpus_per_trial": 1.5}},
        ("resources.gpus_per_trial: must be a fraction of one GPU in (0, 1]", "got 1.5"),
    ),
    ({"workloads": ["quadratik"]}, ("workloads[0]: unknown workload", "'quadratic'?")),
    ({"sampler": {"name": "tpee"}}, ("sampler.name: unknown sampler 'tpee'; allowed: tpe,",)),
]


@pytest.mark.parametrize(("changes", "fragments"), BAD_STUDIES)
def test_a_bad_study_file_exits_2_and_writes_nothing(
    in_tmp: Path,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, Any],
    fragments: tuple[str, ...],
) -> None:
    path = write_study(in_tmp, **changes)
    storage, tracking = in_tmp / "optuna.journal", in_tmp / "mlflow.db"
    for extra in (
        [],
        ["--storage", f"journal://{storage}", "--tracking-uri", f"sqlite:///{tracking}"],
    ):
        assert main(["run", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"optarena run: error: {path}: ")
        for fragment in fragments:
            assert fragment in err
    assert sorted(p.name for p in in_tmp.iterdir()) == ["study.yaml"]  # no storage, no MLflow


def test_a_missing_or_unreadable_study_file_exits_2(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "nowhere.yaml"]) == 2
    assert "nowhere.yaml: no such file" in capsys.readouterr().err
    (in_tmp / "broken.yaml").write_text("study: [unclosed\n")
    assert main(["run", "broken.yaml"]) == 2
    assert "broken.yaml: line 2, column 1: invalid YAML" in capsys.readouterr().err
    assert sorted(p.name for p in in_tmp.iterdir()) == ["broken.yaml"]


def test_a_bad_storage_url_exits_2(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_study(in_tmp)
    assert main(["run", str(path), "--storage", "sqlite:///optuna.db"]) == 2
    assert "--storage: unsupported storage 'sqlite:///optuna.db'" in capsys.readouterr().err
    monkeypatch.setenv("OPTARENA_STORAGE", "mysql://x")
    assert main(["run", str(path)]) == 2
    assert "$OPTARENA_STORAGE: unsupported storage 'mysql://x'" in capsys.readouterr().err
    assert sorted(p.name for p in in_tmp.iterdir()) == ["study.yaml"]


@pytest.mark.parametrize("option", ["--trials", "--workers", "--grace-period"])
@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_counts_must_be_positive_integers(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    path = write_study(in_tmp)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(path), option, value])
    assert exit_info.value.code == 2
    assert f"argument {option}: must be an integer >= 1, got" in capsys.readouterr().err


def test_more_trials_than_a_grid_has_exits_2(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = {"learning_rate": {"feasible_points": [0.01, 0.1]}}
    path = write_study(in_tmp, search_space=grid, sampler={"name": "grid"}, budget={"trials": 2})
    assert main(["run", str(path), "--trials", "3", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "with the command's options: budget.trials: exceeds the 2 points of the grid" in err


def test_a_dry_run_prints_the_plan_and_writes_nothing(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_study(in_tmp)
    monkeypatch.setenv("OPTARENA_TRACKING_URI", "http://127.0.0.1:5999")
    assert main(["run", str(path), "--dry-run", "--trials", "5", "--workers", "3"]) == 0
    out = capsys.readouterr().out
    assert "study cli: 2 arms, 5 trials per arm" in out
    assert "final phase with seeds 1" in out
    assert "resources: 3 worker(s), 1 CPU per trial, on a local Ray instance" in out
    assert "storage: journal://.optarena/optuna.journal (from the embedded default): empty" in out
    assert "tracking: http://127.0.0.1:5999 (from $OPTARENA_TRACKING_URI)" in out
    assert "sgd · quadratic  (cli/quadratic/sgd): 5 trials to run" in out
    assert "adam · quadratic  (cli/quadratic/adam): 5 trials to run" in out
    assert sorted(p.name for p in in_tmp.iterdir()) == ["study.yaml"]


def test_a_dry_run_reports_what_is_left_of_a_started_study(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study(in_tmp)
    url = f"journal://{in_tmp}/optuna.journal"
    spec = parse_spec(VALID)
    storage = open_storage(url)
    sgd = open_arm_study(storage, spec, spec.arms()[0], "search")
    reserve_trials(sgd, 3)
    run_reserved_trials(sgd, lambda trial: trial.suggest_float("learning_rate", 1e-3, 0.5))
    sgd.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING))
    before = (in_tmp / "optuna.journal").read_bytes()
    assert (
        main(["run", str(path), "--dry-run", "--storage", url, "--address", "10.0.0.1:6380"]) == 0
    )
    out = capsys.readouterr().out
    assert f"storage: {url} (from --storage): exists" in out
    assert "on the Ray cluster at 10.0.0.1:6380" in out
    assert "sgd · quadratic  (cli/quadratic/sgd): 3 finished, 0 to run, 0/1 final runs done" in out
    assert "adam · quadratic  (cli/quadratic/adam): 3 trials to run" in out
    assert (in_tmp / "optuna.journal").read_bytes() == before  # read, never written


def test_a_dry_run_on_an_unreachable_postgresql_says_so(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study(in_tmp)
    url = "postgresql+psycopg://postgres@127.0.0.1:1/test"
    assert main(["run", str(path), "--dry-run", "--storage", url]) == 0
    assert f"storage: {url} (from --storage): unreachable (" in capsys.readouterr().out


def optarena(
    *arguments: str, cwd: Path, env: dict[str, str] | None = None, timeout_s: float = 180
) -> subprocess.CompletedProcess[str]:
    """``optarena ARGUMENTS`` as a user runs it, from ``cwd`` (the checkout on the path, as
    an editable install puts it), with ``env`` added to the environment."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    env.pop("OPTARENA_STORAGE", None)
    env.pop("OPTARENA_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@pytest.mark.slow
def test_optarena_run_runs_a_study_with_the_embedded_defaults(tmp_path: Path) -> None:
    path = write_study(tmp_path)
    done = optarena("run", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "study cli done in" in done.stdout
    lines = done.stdout.splitlines()  # not a terminal: one line per finished trial
    assert sum(" search trial " in line for line in lines) == 6
    assert sum(" final seed 1 " in line for line in lines) == 2
    assert (tmp_path / ".optarena" / "optuna.journal").exists()
    assert (tmp_path / ".optarena" / "mlflow.db").exists()
    report = tmp_path / ".optarena" / "reports" / "cli" / "index.html"
    assert f"report: {Path('.optarena/reports/cli/index.html')}" in done.stdout
    assert "sgd" in report.read_text() and "adam" in report.read_text()
    again = optarena("run", str(path), "--dry-run", cwd=tmp_path)
    assert "sgd · quadratic  (cli/quadratic/sgd): 3 finished, 0 to run, 1/1 final runs done" in (
        again.stdout
    )
    # Resumed with nothing left to run, it still reports; a report that cannot be written
    # (its directory is a file) fails the command and says how to retry, records intact.
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    resumed = optarena("run", str(path), "--report-dir", str(blocked / "report"), cwd=tmp_path)
    assert resumed.returncode == 1
    assert "the report could not be written" in resumed.stderr
    assert "`optarena report cli` retries it" in resumed.stderr
    assert sum(" search trial " in line for line in resumed.stdout.splitlines()) == 0
    skipped = optarena("run", str(path), "--no-report", cwd=tmp_path)
    assert skipped.returncode == 0, skipped.stderr
    assert "report:" not in skipped.stdout


@pytest.mark.slow
def test_optarena_run_joins_an_existing_cluster(tmp_path: Path) -> None:
    port = free_port()
    # The cluster's token: the default, ~/.ray/auth_token, is rewritten by any local Ray
    # instance another process starts meanwhile.
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.update(token)
    # Ray's socket paths must stay under the 107 characters a Unix socket path may have.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    head = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",  # stays in the foreground: stopping it stops this head only
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={temp_dir}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:  # the head is starting
            assert head.poll() is None and time.monotonic() < deadline, "no Ray head"
            time.sleep(0.5)
        path = write_study(tmp_path, optimizers=["adam"])
        address = f"127.0.0.1:{port}"
        done = optarena("run", str(path), "--address", address, cwd=tmp_path, env=token)
        assert done.returncode == 0, done.stderr
        assert f"on the Ray cluster at 127.0.0.1:{port} (1 node(s), 2 CPUs" in done.stdout
        assert sum(" search trial " in line for line in done.stdout.splitlines()) == 3
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)  # `ray start`, its GCS server and raylet
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_an_unreachable_cluster_exits_1_with_a_message(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study(in_tmp)
    assert main(["run", str(path), "--quiet", "--address", f"127.0.0.1:{free_port()}"]) == 1
    assert "cannot reach the Ray cluster at '127.0.0.1:" in capsys.readouterr().err
    assert not (in_tmp / ".optarena" / "mlflow.db").exists()  # nothing recorded


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

"""Fault injection on real processes and a real local Ray instance: a worker killed with
SIGKILL mid-trial, a driver (``optarena run``) killed with SIGKILL and resumed by running the
same command, and Ctrl-C. After each, the storage must hold exactly the budget, no trial
twice, and MLflow one run per trial.

Trials are 40-epoch runs of the quadratic workload (a second or two each), long enough to
be killed in the middle.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from services.search import budget_status, open_storage
from services.spec import Endpoint, StudySpec, parse_spec
from services.study import (
    MLFLOW_RUN_ATTR,
    RUN_ATTR,
    STATUS_ATTR,
    final_study_name,
    run_study,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TRIALS = 4

optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_data(name: str, optimizers: list[str]) -> dict[str, Any]:
    return {
        "study": name,
        "workloads": ["quadratic"],
        "optimizers": optimizers,
        "search_space": {"learning_rate": {"min": 1e-3, "max": 0.3, "scaling": "log"}},
        "trial": {"epochs": 40},
        "budget": {"trials": TRIALS, "max_retries": 2},
        "sampler": {"name": "random", "seed": 0},
        "final": {"seeds": [1]},
        "resources": {"workers": 2},
    }


def trials_of(url: str, name: str) -> list[FrozenTrial]:
    storage = open_storage(url)
    if name not in optuna.get_all_study_names(storage):
        return []
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def running_with_worker(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The running trials, if every one of them has recorded its worker and created its
    MLflow run (created from a background thread while the trial trains: a trial killed
    in the first moments of its life has none); else an empty list."""
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if all({RUN_ATTR, MLFLOW_RUN_ATTR} <= set(t.user_attrs) for t in running):
        return running
    return []


def a_trial_well_inside_its_training(url: str, name: str) -> FrozenTrial:
    """A trial that has been running for a while and still runs: one that ended meanwhile
    (trials here last about a second, and a diverging one far less) is passed over."""
    deadline = time.monotonic() + 120
    while True:
        victim = wait_until(lambda: running_with_worker(trials_of(url, name)), 120, "a trial")[0]
        time.sleep(0.3)
        now = {t.number: t.state for t in trials_of(url, name)}
        if now.get(victim.number) == TrialState.RUNNING:
            return victim
        assert time.monotonic() < deadline, "no trial ran long enough to be killed"


def assert_exact_budget(spec: StudySpec, url: str, tracking: str) -> dict[str, list[FrozenTrial]]:
    """Every arm finished exactly the budget, every reserved trial ran once, the final phase
    is done, and MLflow has exactly one run per Optuna trial that started (but for one
    lost before it could create its run)."""
    storage = open_storage(url)
    started = 0
    trials = {}
    for arm in spec.arms():
        search = optuna.load_study(study_name=arm.study_name, storage=storage)
        status = budget_status(search, TRIALS)
        assert (status.finished, status.running, status.waiting) == (TRIALS, 0, 0)
        assert status.complete == TRIALS  # the killed ones were retried, not counted
        final = trials_of(url, final_study_name(arm))
        assert [t.state for t in final] == [TrialState.COMPLETE]
        started += sum(t.state != TrialState.WAITING for t in search.trials + final)
        # A trial lost in the moment between its start and its MLflow run's creation (a
        # driver killed then, with its workers) has no run; its retry has one.
        started -= sum(
            t.state == TrialState.FAIL
            and t.user_attrs.get(STATUS_ATTR) == "lost"
            and MLFLOW_RUN_ATTR not in t.user_attrs
            for t in search.trials
        )
        trials[arm.optimizer] = search.trials
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(spec.study)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=10_000)
    trial_runs = [run for run in runs if run.data.tags.get("phase") in ("search", "final")]
    keys = [run.data.tags["optarena.key"] for run in trial_runs]
    assert len(keys) == len(set(keys)) == started
    return trials


def assert_retried(trials: list[FrozenTrial], lost: FrozenTrial, status: str) -> None:
    """``lost`` ended FAIL with ``status`` and a later trial retried its parameters."""
    (failed,) = [t for t in trials if t.number == lost.number]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs.get(STATUS_ATTR, "lost") == status
    (retry,) = [t for t in trials if lost.number in t.system_attrs.get("retry_history", [])]
    assert retry.params == lost.params
    assert retry.state == TrialState.COMPLETE


def mlflow_run(tracking: str, trial: FrozenTrial) -> Any:
    return MlflowClient(tracking).get_run(trial.user_attrs[MLFLOW_RUN_ATTR])


# ---- a worker killed mid-trial -------------------------------------------------------------


def test_a_worker_killed_mid_trial_loses_only_that_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = parse_spec(study_data("worker-kill", ["adam"]))
    url, tracking = f"journal://{tmp_path}/optuna.journal", f"sqlite:///{tmp_path}/mlflow.db"
    arm = spec.arms()[0]
    killed: list[FrozenTrial] = []

    def kill_a_worker() -> None:
        victim = a_trial_well_inside_its_training(url, arm.study_name)
        os.kill(victim.user_attrs[RUN_ATTR]["pid"], signal.SIGKILL)
        killed.append(victim)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    # A grace period far longer than the study: the retry must come from the driver seeing
    # the worker die, not from the heartbeat going stale.
    outcome = run_study(
        spec, Endpoint(url, "flag"), Endpoint(tracking, "flag"), quiet=True, grace_period_s=600
    )
    killer.join(5)
    assert outcome.exit_code == 0, outcome.message
    (victim,) = killed
    trials = assert_exact_budget(spec, url, tracking)["adam"]
    assert_retried(trials, victim, "lost")
    assert sum(t.state == TrialState.FAIL for t in trials) == 1  # lost that trial only
    (failed,) = [t for t in trials if t.number == victim.number]
    (retry,) = [t for t in trials if victim.number in t.system_attrs.get("retry_history", [])]
    # Retried long before the 600 s heartbeat grace period: Ray's word that the actor died
    # is what requeued it (the bound is loose because the machines are shared and noisy).
    assert (retry.datetime_start - failed.datetime_complete).total_seconds() < 300
    run = mlflow_run(tracking, victim)
    assert (run.info.status, run.data.tags["status"]) == ("FAILED", "lost")
    out = capsys.readouterr().out
    assert f"worker {0} died" in out or "worker 1 died" in out
    assert f"search trial {victim.number} requeued" in out


# ---- the driver: SIGKILL and Ctrl-C --------------------------------------------------------


@contextlib.contextmanager
def optarena_run(study_file: Path, cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """``optarena run STUDY --quiet --grace-period 3`` as its own process group (as a shell
    starts a job); whatever of it is left is killed on the way out."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("OPTARENA_STORAGE", "OPTARENA_TRACKING_URI"):
        env.pop(name, None)
    command = ["run", str(study_file), "--quiet", "--grace-period", "3"]
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", *command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # Ray's helpers a killed driver leaves
        process.wait(timeout=30)


def write_study(tmp_path: Path, name: str) -> tuple[Path, StudySpec]:
    data = study_data(name, ["sgd", "adam"])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path, parse_spec(data)


def test_a_killed_driver_is_resumed_by_running_the_same_command(tmp_path: Path) -> None:
    path, spec = write_study(tmp_path, "driver-kill")
    url = f"journal://{tmp_path}/.optarena/optuna.journal"
    tracking = f"sqlite:///{tmp_path}/.optarena/mlflow.db"

    def progress() -> tuple[list[FrozenTrial], list[FrozenTrial]] | None:
        trials = [t for arm in spec.arms() for t in trials_of(url, arm.study_name)]
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        running = running_with_worker(trials)
        return (complete, running) if complete and running else None

    with optarena_run(path, tmp_path) as driver:
        wait_until(progress, 120, "a finished trial and a running one")
        os.kill(driver.pid, signal.SIGKILL)
        assert driver.wait(timeout=30) == -signal.SIGKILL
    before = {arm.optimizer: trials_of(url, arm.study_name) for arm in spec.arms()}
    in_flight = {
        optimizer: [t for t in trials if t.state == TrialState.RUNNING]
        for optimizer, trials in before.items()
    }
    assert any(in_flight.values())  # left RUNNING by the dead driver's workers

    with optarena_run(path, tmp_path) as again:
        out, err = again.communicate(timeout=180)
        assert again.returncode == 0, err
    assert "study driver-kill done in" in out
    after = assert_exact_budget(spec, url, tracking)
    retried = 0
    for optimizer, trials in before.items():
        now = {t.number: t for t in after[optimizer]}
        for trial in trials:
            if trial.state.is_finished():  # kept as they were
                assert (now[trial.number].state, now[trial.number].values) == (
                    trial.state,
                    trial.values,
                )
        for trial in in_flight[optimizer]:
            if now[trial.number].state == TrialState.COMPLETE:
                continue  # it ended in the half second its worker outlived the driver
            # Failed once its heartbeat went stale, then retried with the same parameters.
            assert_retried(after[optimizer], trial, "lost")
            if MLFLOW_RUN_ATTR in trial.user_attrs:  # closed by the resumed run
                assert mlflow_run(tracking, trial).info.status == "FAILED"
            retried += 1
    assert retried >= 1


def test_ctrl_c_requeues_the_running_trials_and_exits_130(tmp_path: Path) -> None:
    path, spec = write_study(tmp_path, "ctrl-c")
    url = f"journal://{tmp_path}/.optarena/optuna.journal"
    tracking = f"sqlite:///{tmp_path}/.optarena/mlflow.db"

    def some_running() -> list[FrozenTrial]:
        return running_with_worker([t for a in spec.arms() for t in trials_of(url, a.study_name)])

    with optarena_run(path, tmp_path) as driver:
        wait_until(some_running, 120, "a running trial")
        os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        # a graceful stop ends on its own; the timeout only keeps a hang from stalling CI
        _, err = driver.communicate(timeout=180)
        assert driver.returncode == 130, err
    assert "interrupted:" in err and "running trial(s) requeued; run the same command" in err
    storage = open_storage(url)
    interrupted = 0
    for arm in spec.arms():
        search = optuna.load_study(study_name=arm.study_name, storage=storage)
        status = budget_status(search, TRIALS)
        assert status.running == 0  # nothing left RUNNING for a reaper
        assert status.failed == 0  # an interrupted trial does not count against the arm
        assert status.finished + status.waiting == TRIALS
        for trial in search.trials:
            if trial.user_attrs.get(STATUS_ATTR) == "interrupted" and trial.state.is_finished():
                interrupted += 1
                assert status.requeued >= 1
                run = mlflow_run(tracking, trial)
                assert (run.info.status, run.data.tags["status"]) == ("KILLED", "interrupted")
    assert interrupted >= 1
    assert f"{interrupted} running trial(s) requeued" in err


# ---- a node lost -------------------------------------------------------------------------


def test_a_lost_node_loses_only_its_trials(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    spec = parse_spec(study_data("node-loss", ["adam"]))
    url, tracking = f"journal://{tmp_path}/optuna.journal", f"sqlite:///{tmp_path}/mlflow.db"
    arm = spec.arms()[0]
    # A head without CPUs and three one-CPU nodes: two workers, one node to spare.
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [nodes.add_node(num_cpus=1) for _ in range(3)]
    nodes.connect()  # run_study runs on the cluster this process is connected to
    lost: list[FrozenTrial] = []

    def lose_a_node() -> None:
        victim = a_trial_well_inside_its_training(url, arm.study_name)
        # The node whose raylet started the worker running this trial.
        stat = Path(f"/proc/{victim.user_attrs[RUN_ATTR]['pid']}/stat").read_text()
        raylet = int(stat.rsplit(")", 1)[1].split()[1])
        node = next(n for n in workers if n.all_processes["raylet"][0].process.pid == raylet)
        nodes.remove_node(node, allow_graceful=False)
        lost.append(victim)

    killer = threading.Thread(target=lose_a_node, daemon=True)
    killer.start()
    try:
        outcome = run_study(
            spec, Endpoint(url, "flag"), Endpoint(tracking, "flag"), quiet=True, grace_period_s=600
        )
        killer.join(30)
    finally:
        import ray

        ray.shutdown()
        nodes.shutdown()
    assert outcome.exit_code == 0, outcome.message
    (victim,) = lost
    trials = assert_exact_budget(spec, url, tracking)["adam"]
    assert_retried(trials, victim, "lost")
    assert sum(t.state == TrialState.FAIL for t in trials) == 1

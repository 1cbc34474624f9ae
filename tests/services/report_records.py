"""Synthetic study records for the report tests: trial rows shaped as
``services.report.records.load_records`` builds them, with values chosen so that every
table entry can be worked out by hand (the expected numbers are in the tests)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from services.report.records import (
    RUN_METRICS,
    StudyPlan,
    StudyRecords,
    WorkloadFacts,
)

INF = math.inf
WORKLOAD_FACTS = {
    "digits-mlp": WorkloadFacts("accuracy", "max", 0.96),
    "quadratic": WorkloadFacts("excess_loss", "min", 0.04),
}
PLAN = StudyPlan(
    workloads=["digits-mlp", "quadratic"],
    optimizers=["adam", "sgd", "nadam"],
    trials=4,
    seeds=[1, 2, 3],
    objective="val_metric",
    objective_direction=None,
)


def trial(
    workload: str,
    optimizer: str,
    phase: str,
    number: int,
    status: str = "completed",
    *,
    val: float = math.nan,
    test: float = math.nan,
    time_to_target: float = INF,
    steps_to_target: float = INF,
    lr: float = 0.01,
    seed: int | None = None,
    start: int | None = None,
) -> dict[str, Any]:
    """One trial row; ``start`` (ms) defaults to the trial number."""
    row: dict[str, Any] = {key: math.nan for key in RUN_METRICS}
    run_id = f"{workload}-{optimizer}-{phase}-{number}"
    row.update(
        {
            "run_id": run_id,
            "run_name": run_id,
            "run_status": "RUNNING" if status == "running" else "FINISHED",
            "start_time": number if start is None else start,
            "workload": workload,
            "optimizer": optimizer,
            "phase": phase,
            "trial_number": number,
            "seed": seed,
            "status": status,
            "metric": WORKLOAD_FACTS[workload].metric,
            "direction": WORKLOAD_FACTS[workload].direction,
            "hardware": "test CPU",
            "final_val_metric": val,
            "best_val_metric": val,
            "test_metric": test,
            "time_to_target_s": math.nan if status == "running" else time_to_target,
            "steps_to_target": math.nan if status == "running" else steps_to_target,
            "params.hparams.lr": repr(lr),
            "params.hparams.weight_decay": "0.0",
            "params.seed": str(0 if seed is None else seed),
        }
    )
    return row


def finals(
    workload: str,
    optimizer: str,
    tests: list[float],
    times: list[float],
    lr: float,
    *,
    first_number: int = 0,
) -> list[dict[str, Any]]:
    """Final-phase runs with seeds 1, 2, ...; steps to target are 100 × the time."""
    return [
        trial(
            workload,
            optimizer,
            "final",
            first_number + index,
            test=value,
            val=value,
            time_to_target=time,
            steps_to_target=100 * time,
            lr=lr,
            seed=index + 1,
            start=100 + first_number + index,
        )
        for index, (value, time) in enumerate(zip(tests, times, strict=True))
    ]


def scenario_rows() -> list[dict[str, Any]]:
    """The study of the table tests (see each test for what it pins down):

    - digits-mlp/adam: a diverged and a pruned trial (the pruned one has the highest
      value but never counts), best trial 2 (lr 0.003); its three final runs, and one
      final run of an earlier best configuration (lr 0.001), left out.
    - digits-mlp/sgd: trials 0 and 1 tie (the earlier wins), a failed one, a lost one
      requeued as trial 4; no final run reaches the target.
    - digits-mlp/nadam: no runs at all.
    - quadratic/adam, /nadam: all complete (minimised metric); quadratic/sgd: one trial
      still running and two of three final runs.
    """
    d, q = "digits-mlp", "quadratic"
    return [
        trial(d, "adam", "search", 0, val=0.90, lr=0.001),
        trial(d, "adam", "search", 1, "diverged", lr=1.0),
        trial(d, "adam", "search", 2, val=0.95, lr=0.003),
        trial(d, "adam", "search", 3, "pruned", val=0.97, lr=0.002),
        *finals(d, "adam", [0.5], [INF], 0.001),  # the earlier best's, started first
        *finals(d, "adam", [0.94, 0.95, 0.96], [1.0, 2.0, INF], 0.003, first_number=1),
        trial(d, "sgd", "search", 0, val=0.93, lr=0.1),
        trial(d, "sgd", "search", 1, val=0.93, lr=0.2),
        trial(d, "sgd", "search", 2, "failed", lr=0.05),
        trial(d, "sgd", "search", 3, "lost", lr=0.3),
        trial(d, "sgd", "search", 4, val=0.80, lr=0.3),
        *finals(d, "sgd", [0.90, 0.91, 0.92], [INF, INF, INF], 0.1),
        *[
            trial(q, "adam", "search", n, val=v, lr=lr)
            for n, (v, lr) in enumerate([(0.05, 0.01), (0.03, 0.02), (0.04, 0.03), (0.06, 0.1)])
        ],
        *finals(q, "adam", [0.031, 0.029, 0.030], [5.0, 6.0, 7.0], 0.02),
        *[trial(q, "sgd", "search", n, val=0.05 + n / 100, lr=0.1 * (n + 1)) for n in range(3)],
        trial(q, "sgd", "search", 3, "running", lr=0.5),
        *finals(q, "sgd", [0.035, 0.036], [10.0, 12.0], 0.1),
        *[
            trial(q, "nadam", "search", n, val=0.035 - n / 1000, lr=0.002 * (n + 1))
            for n in range(4)
        ],
        *finals(q, "nadam", [0.0290, 0.0295, 0.0285], [3.0, 4.0, 5.0], 0.008),
    ]


def make_records(
    rows: list[dict[str, Any]],
    *,
    plan: StudyPlan = PLAN,
    histories: pd.DataFrame | None = None,
    importances: pd.DataFrame | None = None,
    invocation_status: str = "FINISHED",
) -> StudyRecords:
    """StudyRecords of ``rows`` as ``load_records`` would return them."""
    trials = pd.DataFrame(rows)
    trials["seed"] = trials["seed"].astype("Int64")
    trials = trials.sort_values(
        ["workload", "optimizer", "phase", "trial_number"], ignore_index=True
    )
    invocations = pd.DataFrame(
        [
            {
                "run_id": "study-run",
                "run_name": "synthetic · 2026-01-01 00:00",
                "status": invocation_status,
                "start_time": 0,
                "git_commit": "0123abc",
                "git_dirty": "false",
                "version.torch": "2.13.0",
                "hardware": "test CPU",
                "command": "optarena run studies/synthetic.yaml",
            }
        ]
    )
    return StudyRecords(
        study="synthetic",
        tracking_uri="sqlite:///unused.db",
        experiment_id="1",
        plan=plan,
        workloads=dict(WORKLOAD_FACTS),
        trials=trials,
        histories=(
            histories
            if histories is not None
            else pd.DataFrame(
                columns=["run_id", "epoch", "val_metric", "train_time_s", "optimizer_steps"]
            )
        ),
        invocations=invocations,
        importances=(
            importances
            if importances is not None
            else pd.DataFrame(columns=["workload", "optimizer", "param", "importance"])
        ),
        storage_url="journal:///unused.journal",
    )

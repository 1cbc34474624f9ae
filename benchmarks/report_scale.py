"""Time of ``optarena report`` on a study the size of a real benchmark: 9 optimizers × 3
workloads × (50 search trials + 5 final-phase seeds) ≈ 1,500 runs with 20-epoch histories.

The study is synthesised, not trained: trial results (``TrialResult`` with per-epoch
``EpochMetrics``) are made up from a smooth function of the learning rate with noise,
with some trials pruned and the highest learning rates diverging, and recorded through
``services.tracking.StudyTracker`` exactly as the runner records real trials (its
``log_batch`` buffering: one batch per run), into a real MLflow SQLite store; the same
trials go into an Optuna journal as the runner's would (search and final studies), so the
report computes importances as it would for a real study. Then the ``optarena report``
command is run in a fresh process (imports included) and timed. The requirement is ≤ 30 s.

    python -m benchmarks.report_scale                      # writes docs/BENCHMARKS.md
    python -m benchmarks.report_scale --trials 10 --seeds 2 --no-record
"""

from __future__ import annotations

import argparse
import math
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from benchmarks.recording import environment_lines, write_section
from services.search import open_storage
from services.spec import Arm, StudySpec, parse_spec
from services.tracking import StudyTracker
from services.trainer import EpochMetrics, TrialResult
from services.workloads import get_workload

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "nadam")
OPTIMIZERS += ("amsgrad",)
WORKLOADS = ("quadratic", "mnist1d-mlp", "digits-mlp")
LIMIT_S = 30.0
LR_RANGE = (1e-4, 1.0)
WEIGHT_DECAY_RANGE = (1e-6, 1e-2)
STEPS_PER_EPOCH = 35
EPOCH_TIME_S = 0.05


@dataclass(frozen=True)
class SyntheticStudy:
    """Where a synthesised study was written and how many trial runs it has."""

    spec: StudySpec
    tracking_uri: str
    storage_url: str
    runs: int


def study_spec(
    study: str,
    workloads: Sequence[str],
    optimizers: Sequence[str],
    trials: int,
    seeds: int,
    epochs: int,
) -> StudySpec:
    """The study file the synthetic study pretends to have run."""
    return parse_spec(
        {
            "study": study,
            "workloads": list(workloads),
            "optimizers": list(optimizers),
            "search_space": {
                "learning_rate": {"min": LR_RANGE[0], "max": LR_RANGE[1], "scaling": "log"},
                "weight_decay": {
                    "min": WEIGHT_DECAY_RANGE[0],
                    "max": WEIGHT_DECAY_RANGE[1],
                    "scaling": "log",
                },
            },
            "trial": {"epochs": epochs},
            "budget": {"trials": trials},
            "final": {"seeds": list(range(1, seeds + 1))},
        },
        source=f"{study}.yaml",
    )


def _quality(arm_index: int, log_lr: float, rng: np.random.Generator) -> float:
    """How good a trial is, in [0, 1]: best near the arm's own learning rate, with noise."""
    best_log_lr = -3.0 + 2.0 * ((arm_index * 7) % 9) / 8  # from 1e-3 to 1e-1
    peak = 0.75 + 0.2 * ((arm_index * 5) % 9) / 8
    return float(np.clip(peak - 0.12 * (log_lr - best_log_lr) ** 2 + rng.normal(0, 0.01), 0, 1))


def synthetic_result(
    config: dict, arm: Arm, arm_index: int, epochs: int, rng: np.random.Generator
) -> TrialResult:
    """A made-up trial of ``config``: diverged above lr 0.5, pruned at random (one in
    eight), else trained ``epochs`` epochs towards a quality set by the learning rate."""
    workload = get_workload(arm.workload)
    log_lr = math.log10(config["hparams"]["lr"])
    quality = _quality(arm_index, log_lr, rng)
    maximize = workload.metric.direction == "max"
    # Accuracy rises to the quality; the quadratic's excess loss falls to a floor.
    final = quality if maximize else 0.5 * 10 ** (-2.5 * quality)
    start = 0.1 if maximize else 1.0
    if log_lr > math.log10(0.5):
        status, length = "diverged", int(rng.integers(1, 4))
    elif rng.random() < 0.125:
        status, length = "pruned", int(rng.integers(2, epochs))
    else:
        status, length = "completed", epochs
    history = []
    reached_at = None
    for epoch in range(1, length + 1):
        share = 1 - math.exp(-4 * epoch / epochs)
        value = start + (final - start) * share + float(rng.normal(0, 0.002))
        if not maximize:
            value = abs(value)
        metrics = EpochMetrics(
            epoch=epoch,
            step=epoch * STEPS_PER_EPOCH,
            train_loss=1 - share * quality,
            val_metric=value,
            val_loss=1 - share * quality,
            lr=config["hparams"]["lr"],
            epoch_time_s=EPOCH_TIME_S,
            train_time_s=epoch * EPOCH_TIME_S,
        )
        history.append(metrics)
        if reached_at is None and workload.metric.reached(value, workload.target):
            reached_at = metrics
    diverged = status == "diverged"
    last = history[-1]
    return TrialResult(
        status=status,
        config=config,
        metric=workload.metric.name,
        direction=workload.metric.direction,
        target=workload.target,
        history=history,
        final_val_metric=None if diverged else last.val_metric,
        best_val_metric=None if diverged else last.val_metric,
        test_metric=last.val_metric - 0.01 if status == "completed" else None,
        time_to_target_s=reached_at.train_time_s if reached_at and not diverged else None,
        steps_to_target=reached_at.step if reached_at and not diverged else None,
        train_time_s=last.train_time_s,
        steps=last.step,
        samples_per_s=10_000.0,
        device="cpu",
        diverged_at_step=last.step if diverged else None,
    )


def _objective_value(result: TrialResult) -> float:
    if result.status == "diverged":
        return -math.inf if result.direction == "max" else math.inf
    assert result.final_val_metric is not None
    return result.final_val_metric


def synthesize(
    directory: Path,
    *,
    study: str = "scale",
    workloads: Sequence[str] = WORKLOADS,
    optimizers: Sequence[str] = OPTIMIZERS,
    trials: int = 50,
    seeds: int = 5,
    epochs: int = 20,
    seed: int = 0,
) -> SyntheticStudy:
    """Write a synthetic study into ``directory``: an MLflow SQLite store (``mlflow.db``)
    and an Optuna journal (``optuna.journal``), recorded as the runner records them."""
    spec = study_spec(study, workloads, optimizers, trials, seeds, epochs)
    tracking_uri = f"sqlite:///{directory / 'mlflow.db'}"
    storage_url = f"journal://{directory / 'optuna.journal'}"
    storage = open_storage(storage_url)
    tracker = StudyTracker(tracking_uri, study, spool_dir=directory / "spool")
    parent = tracker.start_study(
        spec.model_dump(mode="json", by_alias=True),
        {"storage": storage_url, "invocation": uuid.uuid4().hex[:12]},
    )
    rng = np.random.default_rng(seed)
    distributions = {
        "learning_rate": FloatDistribution(*LR_RANGE, log=True),
        "weight_decay": FloatDistribution(*WEIGHT_DECAY_RANGE, log=True),
    }
    runs = 0
    for arm_index, arm in enumerate(spec.arms()):
        arm_run = tracker.arm_run(parent, arm)
        direction = spec.directions(arm)[0]
        search = optuna.create_study(
            storage=storage, study_name=arm.study_name, direction=direction
        )
        final = optuna.create_study(
            storage=storage, study_name=arm.study_name + "/final", direction=direction
        )
        best: tuple[float, dict] | None = None
        frozen = []
        for number in range(trials):
            params = {
                "learning_rate": float(10 ** rng.uniform(*np.log10(LR_RANGE))),
                "weight_decay": float(10 ** rng.uniform(*np.log10(WEIGHT_DECAY_RANGE))),
            }
            config = spec.trial_config(arm, params)
            result = synthetic_result(config, arm, arm_index, epochs, rng)
            _record(tracker, arm_run, arm, "search", number, config, result)
            runs += 1
            value = _objective_value(result)
            state = TrialState.PRUNED if result.status == "pruned" else TrialState.COMPLETE
            frozen.append(
                create_trial(
                    state=state,
                    value=value if state == TrialState.COMPLETE else None,
                    params=params,
                    distributions=distributions,
                    user_attrs={"status": result.status},
                )
            )
            better = best is None or (
                value > best[0] if direction == "maximize" else value < best[0]
            )
            if result.status == "completed" and math.isfinite(value) and better:
                best = (value, params)
        search.add_trials(frozen)
        if best is None:
            continue
        for number, final_seed in enumerate(spec.final.seeds):
            config = spec.trial_config(arm, best[1], seed=final_seed)
            result = synthetic_result(config, arm, arm_index, epochs, rng)
            _record(tracker, arm_run, arm, "final", number, config, result, seed=final_seed)
            runs += 1
            final.add_trial(
                create_trial(
                    value=_objective_value(result),
                    user_attrs={"seed": final_seed, "params": best[1]},
                )
            )
        tracker.finish_run(arm_run)
    tracker.finish_run(parent)
    tracker.flush()
    return SyntheticStudy(spec, tracking_uri, storage_url, runs)


def _record(
    tracker: StudyTracker,
    arm_run: str,
    arm: Arm,
    phase: str,
    number: int,
    config: dict,
    result: TrialResult,
    seed: int | None = None,
) -> None:
    run_id = tracker.trial_run(
        arm_run, arm, phase=phase, trial_number=number, config=config, seed=seed
    )
    for metrics in result.history:
        tracker.log_epoch(run_id, metrics)
    state = {"pruned": "PRUNED", "failed": "FAIL"}.get(result.status, "COMPLETE")
    tracker.finish_trial(run_id, result, optuna_state=state)


def report_command(study: SyntheticStudy, out_dir: Path) -> list[str]:
    """The ``optarena report`` command line for the synthetic study."""
    return [
        sys.executable,
        "-m",
        "services.cli",
        "report",
        study.spec.study,
        "--tracking-uri",
        study.tracking_uri,
        "--out",
        str(out_dir),
    ]


def time_report(study: SyntheticStudy, out_dir: Path) -> float:
    """Wall-clock seconds of one ``optarena report`` process on the study."""
    command = report_command(study, out_dir)
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50, help="search trials per arm")
    parser.add_argument("--seeds", type=int, default=5, help="final-phase seeds per arm")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per trial")
    parser.add_argument("--rounds", type=int, default=3, help="timed report runs")
    parser.add_argument("--no-record", action="store_true", help="do not write the doc")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        started = time.perf_counter()
        study = synthesize(root, trials=args.trials, seeds=args.seeds, epochs=args.epochs)
        synthesis_s = time.perf_counter() - started
        print(f"synthesised {study.runs} trial runs in {synthesis_s:.0f} s", flush=True)
        times = []
        for index in range(args.rounds):
            times.append(time_report(study, root / f"report-{index}"))
            print(f"optarena report: {times[-1]:.1f} s", flush=True)
        command = shlex.join(["optarena", *report_command(study, root / "report")[3:]])
        command = command.replace(directory, "$TMP")
    median = float(np.median(times))
    verdict = "meets" if median <= LIMIT_S else "MISSES"
    body = "\n".join(
        [
            "## Report at scale (`benchmarks/report_scale.py`)",
            "",
            f"`optarena report` on a synthesised study of {len(OPTIMIZERS)} optimizers × "
            f"{len(WORKLOADS)} workloads × ({args.trials} search trials + {args.seeds} "
            f"final-phase seeds) = {study.runs} trial runs with {args.epochs}-epoch "
            "histories, recorded by `StudyTracker` into an MLflow SQLite store, with an "
            "Optuna journal. Wall-clock time of the whole command in a fresh process "
            "(imports, reading, statistics, importances, figures, files, artifact "
            f"logging), median (all) of {args.rounds} runs.",
            "",
            *environment_lines(torch.device("cpu")),
            f"- command: `python -m benchmarks.report_scale --trials {args.trials} --seeds "
            f"{args.seeds} --epochs {args.epochs} --rounds {args.rounds}`, timing `{command}`",
            "",
            "| runs | report s (median) | all rounds s | requirement |",
            "|---|---|---|---|",
            f"| {study.runs} | {median:.1f} | {', '.join(f'{t:.1f}' for t in times)} | "
            f"≤ {LIMIT_S:.0f} s: {verdict} |",
        ]
    )
    print(body)
    if not args.no_record:
        write_section("report_scale", body)
    return 0 if median <= LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main())

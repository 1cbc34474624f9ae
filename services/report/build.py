"""``build_report``: read a study's records, compute its tables and figures, write the files
and log them to the study's latest study run in MLflow (as artifacts under ``report/``).
"""

from __future__ import annotations

import logging
import os
import shlex
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import optuna
import pandas as pd
from mlflow.tracking import MlflowClient

from services.report.figures import build_figures
from services.report.records import (
    COMMAND_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    HARDWARE_TAG,
    HOST_TAGS,
    VERSION_TAG_PREFIX,
    StudyRecords,
    load_records,
    open_client,
)
from services.report.render import Report, ReportTable, format_number, formatted, write_report
from services.report.statistics import CONFIDENCE
from services.report.tables import ReportTables, build_tables
from services.tracking import is_transient, run_environment

logger = logging.getLogger(__name__)

DEFAULT_REPORTS_DIR = Path(".optarena/reports")
ARTIFACT_PATH = "report"
PROFILE_SHOWN_TAUS = (1.0, 1.5, 2.0, 3.0, 4.0)


@dataclass
class ReportOutcome:
    """What ``build_report`` did: the files written, the study run they were logged to
    (None if they could not be), and the notes on partial data."""

    out_dir: Path
    files: list[Path]
    logged_to_run: str | None
    notes: list[str] = field(default_factory=list)


def default_out_dir(study: str) -> Path:
    """``.optarena/reports/<study>``."""
    return DEFAULT_REPORTS_DIR / study


def build_report(
    study: str,
    tracking_uri: str,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    storage_url: str | None = None,
    log_artifacts: bool = True,
) -> ReportOutcome:
    """Write the report of ``study`` (see ``services.report``) under ``out_dir`` (default
    ``default_out_dir(study)``) and log it to the study's latest study run.

    ``storage_url`` overrides the Optuna storage the study run recorded. Raises
    ``services.report.records.UnknownStudy`` for a study the store does not have and
    ``FileNotFoundError`` for a SQLite tracking store that does not exist. A report that
    cannot be logged (the server went away) is still written; the outcome says so.
    """
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(study)
    client = open_client(tracking_uri)
    records = load_records(tracking_uri, study, storage_url=storage_url, client=client)
    report = compose_report(records, _report_command(study, tracking_uri, out_dir, storage_url))
    files = write_report(report, out_dir)
    logged = _log_to_study_run(client, records, out_dir, files) if log_artifacts else None
    return ReportOutcome(out_dir, files, logged, report.notes)


def compose_report(records: StudyRecords, report_command: str) -> Report:
    """The report of ``records``: tables, figures, provenance and notes, ready to write;
    ``report_command`` is the command line shown for regenerating it."""
    tables = build_tables(records)
    return Report(
        study=records.study,
        generated=f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        provenance=provenance(records),
        notes=records.notes + tables.notes,
        tables=report_tables(records, tables),
        figures=build_figures(records, tables),
        commands=commands(records, report_command),
    )


def _report_command(study: str, tracking_uri: str, out_dir: Path, storage_url: str | None) -> str:
    words = ["optarena", "report", study, "--tracking-uri", tracking_uri, "--out", str(out_dir)]
    if storage_url is not None:
        words += ["--storage", storage_url]
    return shlex.join(words)


def _log_to_study_run(
    client: MlflowClient, records: StudyRecords, out_dir: Path, files: list[Path]
) -> str | None:
    """Log ``files`` (under ``out_dir``) to the latest study run's ``report/`` artifacts;
    returns the run id, None when the study has no study run or the store is out of
    reach."""
    latest = records.latest_invocation
    if latest is None:
        return None
    run_id = str(latest["run_id"])
    try:
        for path in files:
            folder = path.parent.relative_to(out_dir).as_posix()
            artifact_path = ARTIFACT_PATH if folder == "." else f"{ARTIFACT_PATH}/{folder}"
            client.log_artifact(run_id, str(path), artifact_path=artifact_path)
    except Exception as error:
        if not is_transient(error) and not isinstance(error, OSError):
            raise
        logger.warning("could not log the report to MLflow run %s: %s", run_id, error)
        return None
    return run_id


# ---- what the report says about where its numbers come from --------------------------------


def provenance(records: StudyRecords) -> list[tuple[str, str]]:
    """Study, stores, invocations, and the commit, versions and hardware the latest
    invocation recorded (and the hardware every trial run recorded)."""
    pairs = [
        ("study", records.study),
        ("tracking store", records.tracking_uri),
        ("Optuna storage", records.storage_url or "unknown"),
    ]
    latest = records.latest_invocation
    if latest is not None:
        started = datetime.fromtimestamp(latest["start_time"] / 1000, UTC)
        pairs.append(
            (
                "invocations",
                f"{len(records.invocations)}; latest {latest['run_name']} "
                f"(started {started:%Y-%m-%d %H:%M} UTC, {latest['status']})",
            )
        )
        tags = {k: v for k, v in latest.items() if isinstance(v, str)}
        commit = tags.get(GIT_COMMIT_TAG, "unknown")
        if tags.get(GIT_DIRTY_TAG) == "true":
            commit += " (with uncommitted changes)"
        pairs.append(("commit", commit))
        versions = [
            f"{key.removeprefix(VERSION_TAG_PREFIX)} {value}"
            for key, value in sorted(tags.items())
            if key.startswith(VERSION_TAG_PREFIX)
        ]
        pairs.append(("library versions", ", ".join(versions) or "unknown"))
        pairs.append(("driver hardware", tags.get(HARDWARE_TAG, "unknown")))
        pairs += [(key, tags.get(key, "unknown")) for key in HOST_TAGS]
    hardware = Counter(records.trials[HARDWARE_TAG].dropna())
    if hardware:
        listing = "; ".join(f"{name} ({count} runs)" for name, count in hardware.most_common())
        pairs.append(("trial hardware", listing))
    environment = run_environment()
    pairs.append(
        (
            "report made with",
            f"commit {environment[GIT_COMMIT_TAG]}, optarena "
            f"{environment.get(VERSION_TAG_PREFIX + 'optarena', 'unknown')}, optuna "
            f"{optuna.__version__}, pandas {pd.__version__}",
        )
    )
    return pairs


def commands(records: StudyRecords, report_command: str) -> list[tuple[str, str]]:
    """The commands that reproduce the study (at its commit) and this report."""
    latest = records.latest_invocation
    pairs = []
    if latest is not None and isinstance(latest.get(COMMAND_TAG), str):
        command = latest[COMMAND_TAG]
        commit = latest.get(GIT_COMMIT_TAG)
        if isinstance(commit, str) and commit != "unknown":
            command = f"git checkout {commit} && {command}"
        pairs.append(("the study", command))
    pairs.append(("this report", report_command))
    return pairs


# ---- the tables as shown -------------------------------------------------------------------


def report_tables(records: StudyRecords, tables: ReportTables) -> list[ReportTable]:
    """The report's tables: the computed ones with their formatted views, then CSV-only
    data (the full performance profile, the importances, every trial record)."""
    level = f"{CONFIDENCE:.0%}"
    result = [
        ReportTable(
            "summary",
            "Arms",
            "Per workload × optimizer: search trials used against the budget and how they "
            "ended; the best search trial by the study objective "
            f"({records.plan.objective}), its final validation metric and configuration; "
            f"the final-phase test metric over seeds (mean ± std, {level} t-interval); "
            "median time and steps to the target over the final-phase seeds (∞: most "
            "never reached it) and the fraction that reached it.",
            tables.summary,
            _summary_shown(tables.summary),
        ),
        ReportTable(
            "ranking",
            "Ranking per workload",
            "Optimizers ranked by mean final-phase test metric (ties share the mean rank; "
            "no result ranks last). Each is compared with the best by Welch's t-test over "
            "seeds; p-values Holm-adjusted within the workload; 'worse' when the adjusted "
            "p < 0.05.",
            tables.ranking,
            _ranking_shown(tables.ranking),
        ),
        ReportTable(
            "overall_ranking",
            "Overall ranking",
            "Mean rank over workloads (lower is better) and workloads won.",
            tables.overall,
            formatted(tables.overall, {"mean_rank": ".3g"}).rename(
                columns={"mean_rank": "mean rank", "ranks": "rank per workload"}
            ),
        ),
        ReportTable(
            "performance_ratios",
            "Time-to-target ratios",
            "Median final-phase time-to-target divided by the workload's best "
            "(1 = the fastest; ∞ = did not reach the target).",
            tables.ratios,
            (
                formatted(tables.ratios.rename_axis(columns=None).reset_index())
                if not tables.ratios.empty
                else None
            ),
            csv_index=True,
        ),
        ReportTable(
            "performance_profile",
            "Performance profile",
            "Fraction of workloads each optimizer solves within τ × the best "
            "time-to-target (the CSV has τ from 1 to 4 in steps of 0.1).",
            tables.profile,
            _profile_shown(tables.profile),
            csv_index=True,
        ),
        ReportTable(
            "importance",
            "Hyperparameter importance",
            "Optuna's importances per arm.",
            records.importances,
            None,
        ),
        ReportTable("trials", "Trials", "Every trial run as read.", records.trials, None),
    ]
    return result


def _summary_shown(summary: pd.DataFrame) -> pd.DataFrame:
    def budget(row: pd.Series) -> str:
        if pd.isna(row["budget"]):
            return str(row["trials_used"])
        return f"{row['trials_used']}/{int(row['budget'])}"

    def mean_std(row: pd.Series) -> str:
        if row["test_n"] == 0:
            return "–"
        return f"{format_number(row['test_mean'])} ± {format_number(row['test_std'])}"

    def interval(row: pd.Series) -> str:
        if pd.isna(row["test_ci_low"]):
            return "–"
        return f"[{format_number(row['test_ci_low'])}, {format_number(row['test_ci_high'])}]"

    def reached(median: float, fraction: float, spec: str) -> str:
        if pd.isna(fraction):
            return "–"
        return f"{format_number(median, spec)} ({fraction:.0%})"

    if summary.empty:
        return pd.DataFrame()
    return pd.DataFrame(
        {
            "workload": summary["workload"],
            "optimizer": summary["optimizer"],
            "metric": summary["metric"].fillna("–") + " (" + summary["direction"] + ")",
            "trials": summary.apply(budget, axis=1),
            "completed / pruned / diverged / failed": summary.apply(
                lambda r: f"{r['completed']} / {r['pruned']} / {r['diverged']} / {r['failed']}",
                axis=1,
            ),
            "requeued / running": summary.apply(
                lambda r: f"{r['requeued']} / {r['running']}", axis=1
            ),
            "best trial": summary["best_trial"].map(format_number),
            "best val metric": summary["best_val_metric"].map(format_number),
            "best configuration": summary["best_config"].fillna("–"),
            "seeds": summary["test_n"].astype(str) + "/" + summary["final_runs"].astype(str),
            "test mean ± std": summary.apply(mean_std, axis=1),
            f"test {CONFIDENCE:.0%} CI": summary.apply(interval, axis=1),
            "time to target s (reached)": [
                reached(m, f, ".3g")
                for m, f in zip(
                    summary["time_to_target_median_s"],
                    summary["time_to_target_reached"],
                    strict=True,
                )
            ],
            "steps to target (reached)": [
                reached(m, f, ".0f")
                for m, f in zip(
                    summary["steps_to_target_median"],
                    summary["steps_to_target_reached"],
                    strict=True,
                )
            ],
        }
    )


def _ranking_shown(ranking: pd.DataFrame) -> pd.DataFrame:
    if ranking.empty:
        return pd.DataFrame()
    shown = formatted(
        ranking[
            [
                "workload",
                "rank",
                "optimizer",
                "seeds",
                "test_mean",
                "diff_to_best",
                "p_value",
                "p_holm",
                "worse_than_best",
            ]
        ],
        {"rank": "g", "p_value": ".3g", "p_holm": ".3g"},
    )
    return shown.rename(
        columns={
            "test_mean": "test mean",
            "diff_to_best": "Δ to best",
            "p_value": "p (Welch)",
            "p_holm": "p (Holm)",
            "worse_than_best": "worse",
        }
    )


def _profile_shown(profile: pd.DataFrame) -> pd.DataFrame | None:
    if profile.empty:
        return None
    rows = profile.reindex(list(PROFILE_SHOWN_TAUS)).T
    rows.columns = [f"τ = {tau:g}" for tau in rows.columns]
    return formatted(rows.rename_axis("optimizer").reset_index(), {})

"""The report's tables, computed from a study's records (``services.report.records``).

- ``summary``: one row per workload × optimizer: trials used against the budget and their
  outcomes; the best tuned trial (by the study's objective), its validation metric and
  configuration; the final-phase test metric over seeds (mean, std, 95% CI); time- and
  steps-to-target over the final seeds (median, fraction that reached the target).
- ``ranking``: per workload, optimizers ranked by final-phase mean test metric, each
  tested against the best with Welch's t-test, Holm-corrected within the workload.
- ``overall``: the mean rank of each optimizer across workloads.
- ``ratios`` and ``profile``: the performance profile of median final-phase
  time-to-target (Dolan & Moré 2002).

``final_run_ids`` names the final-phase runs each arm's numbers come from.

**Final-phase runs.** An arm's final runs are those of one configuration: the one of its
best search trial when it has final runs, else the configuration of its latest final run
(a larger budget that found a better configuration re-runs that one's seeds; the earlier
configuration's runs are then left out, and the notes say so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from services.report.records import (
    COUNTED,
    PARAM_PREFIX,
    REQUEUED,
    RUNNING,
    USABLE,
    StudyRecords,
)
from services.report.statistics import (
    holm_adjust,
    performance_profile,
    performance_ratios,
    rank,
    seed_summary,
    welch_t_test,
)

ALPHA = 0.05
# The MLflow metric of each objective (``services.spec.OBJECTIVE_METRICS``).
OBJECTIVE_COLUMNS = {
    "val_metric": "final_val_metric",
    "best_val_metric": "best_val_metric",
    "val_loss": "val_loss",
    "train_time_s": "train_time_s",
    "time_to_target_s": "time_to_target_s",
    "steps_to_target": "steps_to_target",
}
# Params that differ between runs of one configuration.
PER_RUN_PARAMS = (PARAM_PREFIX + "seed",)


@dataclass
class ReportTables:
    """The tables of a report (see the module docstring) and notes on what is missing."""

    summary: pd.DataFrame
    ranking: pd.DataFrame
    overall: pd.DataFrame
    ratios: pd.DataFrame
    profile: pd.DataFrame
    final_run_ids: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def objective_values(trials: pd.DataFrame, objective: str, direction: str) -> pd.Series:
    """Each trial's value of ``objective``; a diverged trial's is the worst possible (as
    the runner tells Optuna), a missing one NaN."""
    values = trials[OBJECTIVE_COLUMNS[objective]].astype(float)
    worst = -math.inf if direction == "max" else math.inf
    return values.where(trials["status"] != "diverged", worst)


def best_trial(search: pd.DataFrame, objective: str, direction: str) -> pd.Series | None:
    """The best usable (completed or early-stopped) search trial with a finite objective,
    the earliest trial number on a tie; None if there is none."""
    values = objective_values(search, objective, direction)
    usable = search[search["status"].isin(USABLE) & np.isfinite(values)]
    if usable.empty:
        return None
    sign = -1.0 if direction == "max" else 1.0
    keyed = usable.assign(_key=sign * values[usable.index])
    return keyed.sort_values(["_key", "trial_number"]).iloc[0].drop("_key")


def searched_params(search: pd.DataFrame) -> list[str]:
    """The params that vary across an arm's search trials (the searched dimensions); the
    optimizer's hyperparameters when nothing varies (a single trial)."""
    params = [c for c in search.columns if c.startswith(PARAM_PREFIX) and c not in PER_RUN_PARAMS]
    varying = [c for c in params if search[c].dropna().nunique() > 1]
    if varying or search.empty:
        return varying
    return [
        c for c in params if c.startswith(PARAM_PREFIX + "hparams.") and search[c].notna().any()
    ]


def format_config(run: pd.Series, params: list[str]) -> str:
    """``hparams.lr=0.0123, model.dropout=0.1``: the run's values of ``params``, numbers to
    four significant digits."""
    parts = []
    for column in params:
        value = run.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        try:
            shown = f"{float(value):.4g}"
        except ValueError:
            shown = str(value)
        parts.append(f"{column.removeprefix(PARAM_PREFIX)}={shown}")
    return ", ".join(parts)


def _config_key(runs: pd.DataFrame) -> pd.Series:
    params = sorted(
        c for c in runs.columns if c.startswith(PARAM_PREFIX) and c not in PER_RUN_PARAMS
    )
    if not params:
        return pd.Series("", index=runs.index)
    return runs[params].fillna("").astype(str).agg("\x1f".join, axis=1)


def final_runs(final: pd.DataFrame, best: pd.Series | None) -> tuple[pd.DataFrame, int]:
    """The arm's final-phase runs of one configuration (see the module docstring) and how
    many runs of other configurations were left out."""
    if final.empty:
        return final, 0
    keys = _config_key(final)
    chosen = None
    if best is not None:
        best_key = _config_key(best.to_frame().T.reindex(columns=final.columns)).iloc[0]
        if (keys == best_key).any():
            chosen = best_key
    if chosen is None:
        chosen = keys[final["start_time"].idxmax()]
    selected = final[keys == chosen]
    return selected, len(final) - len(selected)


@dataclass
class _Arm:
    workload: str
    optimizer: str
    search: pd.DataFrame
    final: pd.DataFrame
    best: pd.Series | None
    left_out: int


def _arms(records: StudyRecords) -> list[_Arm]:
    trials = records.trials
    planned = records.plan.arms()
    found = [
        (str(w), str(o))
        for (w, o), _ in trials.groupby(["workload", "optimizer"], sort=True)
        if (w, o) not in planned
    ]
    by_arm = dict(list(trials.groupby(["workload", "optimizer", "phase"], sort=False)))
    empty = trials.iloc[0:0]
    arms = []
    for workload, optimizer in planned + found:
        search = by_arm.get((workload, optimizer, "search"), empty)
        facts = records.workloads.get(workload)
        direction = records.plan.direction(facts) if facts else "max"
        best = best_trial(search, records.plan.objective, direction)
        final, left_out = final_runs(by_arm.get((workload, optimizer, "final"), empty), best)
        arms.append(_Arm(workload, optimizer, search, final, best, left_out))
    return arms


def _to_target(final: pd.DataFrame, column: str) -> tuple[float, float]:
    """Median (inf when most never reached it) and fraction reaching the target, over the
    ended final runs."""
    ended = final[final["status"] != RUNNING][column].astype(float)
    if ended.empty:
        return math.nan, math.nan
    return float(np.median(ended)), float(np.isfinite(ended).mean())


def summary_table(records: StudyRecords, arms: list[_Arm] | None = None) -> pd.DataFrame:
    """The ``summary`` table (see the module docstring)."""
    rows = []
    for arm in arms if arms is not None else _arms(records):
        facts = records.workloads.get(arm.workload)
        statuses = arm.search["status"].value_counts()
        test = seed_summary(arm.final.loc[arm.final["status"].isin(USABLE), "test_metric"])
        time_median, time_reached = _to_target(arm.final, "time_to_target_s")
        steps_median, steps_reached = _to_target(arm.final, "steps_to_target")
        best = arm.best
        rows.append(
            {
                "workload": arm.workload,
                "optimizer": arm.optimizer,
                "metric": facts.metric if facts else None,
                "direction": facts.direction if facts else None,
                "trials_used": int(statuses.reindex(list(COUNTED)).fillna(0).sum()),
                "budget": records.plan.trials,
                "completed": int(statuses.reindex(list(USABLE)).fillna(0).sum()),
                "pruned": int(statuses.get("pruned", 0)),
                "diverged": int(statuses.get("diverged", 0)),
                "failed": int(statuses.get("failed", 0)),
                "requeued": int(statuses.reindex(list(REQUEUED)).fillna(0).sum()),
                "running": int(statuses.get(RUNNING, 0)),
                "best_trial": None if best is None else int(best["trial_number"]),
                "best_objective": (
                    math.nan
                    if best is None
                    else float(best[OBJECTIVE_COLUMNS[records.plan.objective]])
                ),
                "best_val_metric": math.nan if best is None else float(best["final_val_metric"]),
                "best_config": (
                    None if best is None else format_config(best, searched_params(arm.search))
                ),
                "final_runs": len(arm.final),
                "final_diverged": int((arm.final["status"] == "diverged").sum()),
                "test_n": test.n,
                "test_mean": test.mean,
                "test_std": test.std,
                "test_ci_low": test.ci_low,
                "test_ci_high": test.ci_high,
                "time_to_target_median_s": time_median,
                "time_to_target_reached": time_reached,
                "steps_to_target_median": steps_median,
                "steps_to_target_reached": steps_reached,
            }
        )
    return pd.DataFrame(rows)


def ranking_table(records: StudyRecords, arms: list[_Arm] | None = None) -> pd.DataFrame:
    """The ``ranking`` table: per workload, every optimizer's rank by mean final test
    metric, its difference to the best and Welch's test against the best's seeds, with
    Holm-adjusted p-values over the workload's comparisons."""
    arms = arms if arms is not None else _arms(records)
    rows = []
    for workload in dict.fromkeys(arm.workload for arm in arms):
        facts = records.workloads.get(workload)
        direction = facts.direction if facts else "max"
        members = [arm for arm in arms if arm.workload == workload]
        values = {
            arm.optimizer: arm.final.loc[arm.final["status"].isin(USABLE), "test_metric"]
            .astype(float)
            .tolist()
            for arm in members
        }
        means = pd.Series({o: seed_summary(v).mean for o, v in values.items()}, dtype=float)
        ranks = rank(means, direction)
        best = ranks.sort_values(kind="stable").index[0]
        tests = {o: welch_t_test(values[o], values[best]) for o in values if o != best}
        adjusted = dict(zip(tests, holm_adjust([t.p_value for t in tests.values()]), strict=True))
        for optimizer in ranks.sort_values(kind="stable").index:
            test = tests.get(optimizer)
            p_holm = adjusted.get(optimizer, math.nan)
            rows.append(
                {
                    "workload": workload,
                    "rank": float(ranks[optimizer]),
                    "optimizer": optimizer,
                    "seeds": len([v for v in values[optimizer] if math.isfinite(v)]),
                    "test_mean": float(means[optimizer]),
                    "diff_to_best": float(means[optimizer] - means[best]),
                    "vs": None if optimizer == best else best,
                    "t": math.nan if test is None else test.t,
                    "df": math.nan if test is None else test.df,
                    "p_value": math.nan if test is None else test.p_value,
                    "p_holm": p_holm,
                    "worse_than_best": bool(p_holm < ALPHA) if not math.isnan(p_holm) else None,
                }
            )
    return pd.DataFrame(rows)


def overall_table(ranking: pd.DataFrame) -> pd.DataFrame:
    """The ``overall`` table: each optimizer's mean rank over the workloads (a missing
    result ranks last on its workload), the workloads it was ranked on and won (rank 1;
    a shared first place counts for each), best mean rank first."""
    if ranking.empty:
        return pd.DataFrame(columns=["optimizer", "mean_rank", "workloads", "wins", "ranks"])
    grouped = ranking.groupby("optimizer", sort=False)
    best_rank = ranking.groupby("workload")["rank"].transform("min")
    won = (ranking["rank"] == best_rank).groupby(ranking["optimizer"], sort=False).sum()
    listed = ranking["workload"] + ": " + ranking["rank"].map("{:g}".format)
    overall = pd.DataFrame(
        {
            "mean_rank": grouped["rank"].mean(),
            "workloads": grouped["rank"].size(),
            "wins": won.astype(int),
            "ranks": listed.groupby(ranking["optimizer"], sort=False).agg(", ".join),
        }
    )
    return (
        overall.rename_axis("optimizer")
        .reset_index()
        .sort_values(["mean_rank", "optimizer"], ignore_index=True)
    )


def time_to_target_matrix(summary: pd.DataFrame) -> pd.DataFrame:
    """Median final-phase time-to-target, workloads × optimizers (NaN: no final runs)."""
    if summary.empty:
        return pd.DataFrame()
    return summary.pivot(
        index="workload", columns="optimizer", values="time_to_target_median_s"
    ).reindex(
        index=list(dict.fromkeys(summary["workload"])),
        columns=list(dict.fromkeys(summary["optimizer"])),
    )


def build_tables(records: StudyRecords) -> ReportTables:
    """Every table of the report, with notes on partial data."""
    arms = _arms(records)
    summary = summary_table(records, arms)
    ranking = ranking_table(records, arms)
    times = time_to_target_matrix(summary)
    tables = ReportTables(
        summary=summary,
        ranking=ranking,
        overall=overall_table(ranking),
        ratios=performance_ratios(times) if not times.empty else times,
        profile=performance_profile(times) if not times.empty else pd.DataFrame(),
        final_run_ids={
            (arm.workload, arm.optimizer): arm.final["run_id"].tolist() for arm in arms
        },
    )
    tables.notes += _partial_notes(records, arms)
    return tables


def _partial_notes(records: StudyRecords, arms: list[_Arm]) -> list[str]:
    notes = []
    latest = records.latest_invocation
    if latest is None:
        notes.append("no study run found: the plan is inferred from the trial runs")
    elif latest["status"] == "RUNNING":
        notes.append(
            f"the latest invocation ({latest['run_name']}) is still running (or was killed "
            "before it ended): the study may be incomplete"
        )
    planned = set(records.plan.arms())
    seeds = len(records.plan.seeds)
    for arm in arms:
        label = f"{arm.optimizer} · {arm.workload}"
        if (arm.workload, arm.optimizer) not in planned:
            notes.append(f"{label}: has runs but is not in the latest plan of the study")
        if arm.search.empty:
            notes.append(f"{label}: no runs yet")
            continue
        running = int((arm.search["status"] == RUNNING).sum())
        running += int((arm.final["status"] == RUNNING).sum())
        if running:
            notes.append(f"{label}: {running} run(s) still running (or left by a killed worker)")
        used = int(arm.search["status"].isin(COUNTED).sum())
        if records.plan.trials is not None and used < records.plan.trials:
            notes.append(f"{label}: {used} of {records.plan.trials} search trials done")
        if arm.best is None:
            notes.append(f"{label}: no completed search trial, so no final phase")
        elif seeds and len(arm.final) < seeds:
            notes.append(f"{label}: {len(arm.final)} of {seeds} final-phase runs")
        if arm.left_out:
            notes.append(
                f"{label}: {arm.left_out} final run(s) of an earlier best configuration left out"
            )
    return notes

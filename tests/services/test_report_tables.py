"""The report's tables and figure data on synthetic run records (``report_records``): every
number worked out by hand or with scipy from the records' values."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from report_records import INF, PLAN, make_records, scenario_rows, trial
from scipy import stats

from services.report.figures import (
    learning_curve_data,
    lr_sensitivity_data,
    optimization_history_data,
)
from services.report.tables import (
    ReportTables,
    best_trial,
    build_tables,
    format_config,
    overall_table,
)


@pytest.fixture(scope="module")
def tables() -> ReportTables:
    return build_tables(make_records(scenario_rows()))


def arm_row(table: pd.DataFrame, workload: str, optimizer: str) -> pd.Series:
    rows = table[(table["workload"] == workload) & (table["optimizer"] == optimizer)]
    assert len(rows) == 1
    return rows.iloc[0]


# ---- summary -------------------------------------------------------------------------------


def test_summary_has_every_planned_arm_in_plan_order(tables: ReportTables) -> None:
    arms = list(zip(tables.summary["workload"], tables.summary["optimizer"], strict=True))
    assert arms == PLAN.arms()


def test_outcome_counts_and_trials_used(tables: ReportTables) -> None:
    adam = arm_row(tables.summary, "digits-mlp", "adam")
    assert (adam["trials_used"], adam["budget"]) == (4, 4)
    counts = ["completed", "pruned", "diverged", "failed", "requeued", "running"]
    assert adam[counts].tolist() == [2, 1, 1, 0, 0, 0]
    sgd = arm_row(tables.summary, "digits-mlp", "sgd")
    # The lost trial was requeued as trial 4: it does not count towards the budget.
    assert sgd["trials_used"] == 4
    assert sgd[counts].tolist() == [3, 0, 0, 1, 1, 0]
    running = arm_row(tables.summary, "quadratic", "sgd")
    assert (running["trials_used"], running["running"]) == (3, 1)


def test_best_trial_ignores_pruned_and_diverged_trials(tables: ReportTables) -> None:
    adam = arm_row(tables.summary, "digits-mlp", "adam")
    # Trial 3 (pruned, 0.97) and trial 1 (diverged) never count.
    assert adam["best_trial"] == 2
    assert adam["best_val_metric"] == 0.95
    assert adam["best_config"] == "hparams.lr=0.003"


def test_best_trial_breaks_ties_by_the_earliest_trial(tables: ReportTables) -> None:
    assert arm_row(tables.summary, "digits-mlp", "sgd")["best_trial"] == 0


def test_best_trial_follows_a_minimised_metric(tables: ReportTables) -> None:
    assert arm_row(tables.summary, "quadratic", "adam")["best_trial"] == 1
    assert arm_row(tables.summary, "quadratic", "nadam")["best_trial"] == 3


def test_best_trial_by_another_objective() -> None:
    search = pd.DataFrame(
        [
            trial("quadratic", "adam", "search", 0, val=0.01, time_to_target=9.0),
            trial("quadratic", "adam", "search", 1, "diverged", time_to_target=1.0),
            trial("quadratic", "adam", "search", 2, val=0.03, time_to_target=4.0),
            trial("quadratic", "adam", "search", 3, val=0.02, time_to_target=INF),
        ]
    )
    best = best_trial(search, "time_to_target_s", "min")
    assert best is not None and best["trial_number"] == 2
    assert best_trial(search.iloc[[1]], "time_to_target_s", "min") is None


def test_final_phase_test_metric_mean_std_and_t_interval(tables: ReportTables) -> None:
    adam = arm_row(tables.summary, "digits-mlp", "adam")
    # The earlier configuration's final run (test 0.5) is left out.
    assert adam["final_runs"] == 3 and adam["test_n"] == 3
    assert adam["test_mean"] == pytest.approx(0.95, rel=1e-12)
    assert adam["test_std"] == pytest.approx(0.01, rel=1e-9)
    half_width = 4.302652729911275 * 0.01 / math.sqrt(3)  # t_{0.975, 2}
    assert adam["test_ci_low"] == pytest.approx(0.95 - half_width, rel=1e-9)
    assert adam["test_ci_high"] == pytest.approx(0.95 + half_width, rel=1e-9)


def test_time_and_steps_to_target_median_and_fraction_reached(tables: ReportTables) -> None:
    adam = arm_row(tables.summary, "digits-mlp", "adam")
    assert adam["time_to_target_median_s"] == 2.0  # of 1, 2 and never
    assert adam["time_to_target_reached"] == pytest.approx(2 / 3)
    assert adam["steps_to_target_median"] == 200.0
    assert adam["steps_to_target_reached"] == pytest.approx(2 / 3)
    sgd = arm_row(tables.summary, "digits-mlp", "sgd")
    assert sgd["time_to_target_median_s"] == INF
    assert sgd["time_to_target_reached"] == 0.0
    assert arm_row(tables.summary, "quadratic", "sgd")["time_to_target_median_s"] == 11.0


def test_a_missing_arm_has_an_empty_row(tables: ReportTables) -> None:
    nadam = arm_row(tables.summary, "digits-mlp", "nadam")
    assert (nadam["trials_used"], nadam["final_runs"], nadam["test_n"]) == (0, 0, 0)
    assert pd.isna(nadam["best_config"]) and pd.isna(nadam["best_trial"])
    assert math.isnan(nadam["test_mean"]) and math.isnan(nadam["time_to_target_median_s"])


def test_notes_name_what_is_partial(tables: ReportTables) -> None:
    assert tables.notes == [
        "adam · digits-mlp: 1 final run(s) of an earlier best configuration left out",
        "nadam · digits-mlp: no runs yet",
        "sgd · quadratic: 1 run(s) still running (or left by a killed worker)",
        "sgd · quadratic: 3 of 4 search trials done",
        "sgd · quadratic: 2 of 3 final-phase runs",
    ]


def test_a_running_invocation_is_noted() -> None:
    tables = build_tables(make_records(scenario_rows(), invocation_status="RUNNING"))
    assert tables.notes[0].startswith("the latest invocation (synthetic · 2026-01-01 00:00)")


def test_runs_of_an_arm_outside_the_plan_are_reported_and_noted() -> None:
    plan = dataclasses.replace(PLAN, optimizers=["adam", "sgd"])
    tables = build_tables(make_records(scenario_rows(), plan=plan))
    assert ("quadratic", "nadam") in set(
        zip(tables.summary["workload"], tables.summary["optimizer"], strict=True)
    )
    assert "nadam · quadratic: has runs but is not in the latest plan of the study" in tables.notes


def test_format_config_rounds_numbers_and_keeps_text() -> None:
    run = pd.Series({"params.hparams.lr": "0.0012345678", "params.schedule.name": "cosine"})
    assert format_config(run, ["params.hparams.lr", "params.schedule.name"]) == (
        "hparams.lr=0.001235, schedule.name=cosine"
    )


# ---- ranking -------------------------------------------------------------------------------


def test_ranking_per_workload_with_welch_against_the_best(tables: ReportTables) -> None:
    digits = tables.ranking[tables.ranking["workload"] == "digits-mlp"]
    assert digits["optimizer"].tolist() == ["adam", "sgd", "nadam"]
    assert digits["rank"].tolist() == [1.0, 2.0, 3.0]  # no result ranks last
    sgd = digits.iloc[1]
    reference = stats.ttest_ind([0.90, 0.91, 0.92], [0.94, 0.95, 0.96], equal_var=False)
    assert sgd["vs"] == "adam"
    assert sgd["t"] == pytest.approx(reference.statistic, rel=1e-10)
    assert sgd["p_value"] == pytest.approx(reference.pvalue, rel=1e-10)
    assert sgd["p_holm"] == pytest.approx(reference.pvalue, rel=1e-10)  # one test: m = 1
    assert sgd["diff_to_best"] == pytest.approx(-0.04)
    assert math.isnan(digits.iloc[2]["p_value"]) and digits.iloc[2]["worse_than_best"] is None


def test_holm_correction_within_a_workload(tables: ReportTables) -> None:
    quadratic = tables.ranking[tables.ranking["workload"] == "quadratic"].set_index("optimizer")
    assert quadratic["rank"].to_dict() == {"nadam": 1.0, "adam": 2.0, "sgd": 3.0}
    best = [0.0290, 0.0295, 0.0285]
    p_adam = stats.ttest_ind([0.031, 0.029, 0.030], best, equal_var=False).pvalue
    p_sgd = stats.ttest_ind([0.035, 0.036], best, equal_var=False).pvalue
    low, high = sorted([p_adam, p_sgd])
    adjusted = {low: min(1, 2 * low), high: max(min(1, 2 * low), high)}
    assert quadratic.loc["adam", "p_holm"] == pytest.approx(adjusted[p_adam], rel=1e-10)
    assert quadratic.loc["sgd", "p_holm"] == pytest.approx(adjusted[p_sgd], rel=1e-10)
    assert quadratic.loc["sgd", "worse_than_best"] == bool(adjusted[p_sgd] < 0.05)


def test_overall_ranking_is_the_mean_rank(tables: ReportTables) -> None:
    overall = tables.overall.set_index("optimizer")
    assert list(overall.index) == ["adam", "nadam", "sgd"]
    assert overall["mean_rank"].to_dict() == {"adam": 1.5, "nadam": 2.0, "sgd": 2.5}
    assert overall["wins"].to_dict() == {"adam": 1, "nadam": 1, "sgd": 0}
    assert overall.loc["adam", "ranks"] == "digits-mlp: 1, quadratic: 2"


def test_overall_ranking_with_ties_shares_wins() -> None:
    ranking = pd.DataFrame(
        {
            "workload": ["w1", "w1", "w1", "w2", "w2", "w2"],
            "optimizer": ["a", "b", "c", "a", "b", "c"],
            "rank": [1.5, 1.5, 3.0, 1.0, 2.5, 2.5],
        }
    )
    overall = overall_table(ranking).set_index("optimizer")
    assert overall["mean_rank"].to_dict() == {"a": 1.25, "b": 2.0, "c": 2.75}
    assert overall["wins"].to_dict() == {"a": 2, "b": 1, "c": 0}
    assert list(overall.index) == ["a", "b", "c"]


# ---- performance profile -------------------------------------------------------------------


def test_performance_ratios_of_median_time_to_target(tables: ReportTables) -> None:
    ratios = tables.ratios
    # digits-mlp: adam 2 s; sgd never; nadam has no final runs (never).
    assert ratios.loc["digits-mlp"].to_dict() == {"adam": 1.0, "sgd": INF, "nadam": INF}
    # quadratic: adam 6 s, sgd 11 s, nadam 4 s.
    assert ratios.loc["quadratic"].to_dict() == pytest.approx(
        {"adam": 1.5, "sgd": 2.75, "nadam": 1.0}
    )
    profile = tables.profile
    assert profile.loc[1.0].to_dict() == {"adam": 0.5, "sgd": 0.0, "nadam": 0.5}
    assert profile.loc[1.5].to_dict() == {"adam": 1.0, "sgd": 0.0, "nadam": 0.5}
    assert profile.loc[3.0].to_dict() == {"adam": 1.0, "sgd": 0.5, "nadam": 0.5}


# ---- figure data ---------------------------------------------------------------------------


def test_learning_curves_are_median_and_quartiles_over_the_chosen_final_runs(
    tables: ReportTables,
) -> None:
    runs = [f"digits-mlp-adam-final-{n}" for n in range(4)]  # 0: the left-out configuration
    histories = pd.DataFrame(
        {
            "run_id": [runs[0], runs[1], runs[2], runs[3], runs[1], runs[2]],
            "epoch": [1, 1, 1, 1, 2, 2],
            "val_metric": [0.1, 0.5, 0.6, 0.7, 0.8, 0.9],
            "train_time_s": [9.0, 1.0, 1.2, 1.1, 2.0, 2.4],
            "optimizer_steps": [10.0, 10.0, 10.0, 10.0, 20.0, 20.0],
        }
    )
    assert tables.final_run_ids[("digits-mlp", "adam")] == runs[1:]
    data = learning_curve_data(histories, tables.final_run_ids).set_index("epoch")
    assert data.loc[1, ["seeds", "time_s", "steps"]].tolist() == pytest.approx([3, 1.1, 10.0])
    assert data.loc[1, ["val_median", "val_q25", "val_q75"]].tolist() == pytest.approx(
        [0.6, 0.55, 0.65]
    )
    assert data.loc[2, ["seeds", "val_median", "val_q25", "val_q75"]].tolist() == pytest.approx(
        [2, 0.85, 0.825, 0.875]
    )


def test_lr_sensitivity_has_every_ended_search_trial() -> None:
    data = lr_sensitivity_data(make_records(scenario_rows()).trials)
    # Not the running trial nor the lost one (its retry is there).
    assert len(data) == 19
    adam = data[(data["workload"] == "digits-mlp") & (data["optimizer"] == "adam")]
    assert adam["lr"].tolist() == [0.001, 0.002, 0.003, 1.0]
    assert adam["status"].tolist() == ["completed", "pruned", "completed", "diverged"]
    assert math.isnan(adam["final_val_metric"].iloc[3])


def test_optimization_history_tracks_the_best_so_far() -> None:
    data = optimization_history_data(make_records(scenario_rows()))
    adam = data[(data["workload"] == "digits-mlp") & (data["optimizer"] == "adam")]
    assert adam["value"].tolist()[:3] == [0.90, -INF, 0.95]
    assert math.isnan(adam["value"].tolist()[3])  # pruned: no objective value
    assert adam["best_so_far"].tolist() == [0.90, 0.90, 0.95, 0.95]
    quadratic = data[(data["workload"] == "quadratic") & (data["optimizer"] == "adam")]
    np.testing.assert_allclose(quadratic["best_so_far"], [0.05, 0.03, 0.03, 0.03])

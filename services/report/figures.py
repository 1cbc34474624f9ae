"""The report's figures: each is a data step (a DataFrame, what tests check) and a drawing
step (a matplotlib figure, one panel per workload, rendered to PNG with the Agg canvas).

- learning curves: validation metric against training time and against optimizer steps,
  median and inter-quartile band over the final-phase seeds of each arm;
- learning-rate sensitivity: each search trial's final validation metric against its
  learning rate (log axis), per optimizer; diverged trials marked at the worst edge;
- hyperparameter importance of each arm's search (Optuna's evaluator);
- the performance profile of time-to-target;
- optimization history: each search trial's objective and the best so far, by trial.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from services.report.records import (
    PARAM_PREFIX,
    REQUEUED,
    RUNNING,
    USABLE,
    StudyRecords,
    WorkloadFacts,
)
from services.report.statistics import performance_profile
from services.report.tables import ReportTables, objective_values

LR_PARAM = PARAM_PREFIX + "hparams.lr"
PROFILE_PLOT_TAUS = np.linspace(1.0, 4.0, 301)
PANEL_SIZE = (4.6, 3.4)  # inches per workload panel
DPI = 96
# Margins in inches (a fixed layout: matplotlib's layout engines doubled the drawing time).
MARGINS = {"left": 0.9, "right": 1.5, "bottom": 0.55, "top": 0.35}  # the legend on the right
# One colour per optimizer, the same in every figure.
COLOURS = matplotlib.colormaps["tab10"].colors


@dataclass(frozen=True)
class ReportFigure:
    """A drawn figure: a file-name stem, a title, a caption and the PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


# ---- data ----------------------------------------------------------------------------------


def learning_curve_data(
    histories: pd.DataFrame, final_run_ids: Mapping[tuple[str, str], Sequence[str]]
) -> pd.DataFrame:
    """Per arm and epoch, over the arm's final-phase runs: ``seeds`` (how many runs reached
    the epoch), median ``time_s`` (training time) and ``steps``, and the validation metric's
    ``val_median``, ``val_q25`` and ``val_q75``."""
    columns = ["workload", "optimizer", "epoch", "seeds", "time_s", "steps"]
    columns += ["val_median", "val_q25", "val_q75"]
    arm_of = {run_id: arm for arm, run_ids in final_run_ids.items() for run_id in run_ids}
    rows = histories[histories["run_id"].isin(arm_of)]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    arms = rows["run_id"].map(arm_of)
    rows = rows.assign(workload=arms.str[0], optimizer=arms.str[1])
    grouped = rows.groupby(["workload", "optimizer", "epoch"], sort=True)
    data = grouped.agg(
        seeds=("run_id", "nunique"),
        time_s=("train_time_s", "median"),
        steps=("optimizer_steps", "median"),
        val_median=("val_metric", "median"),
        val_q25=("val_metric", lambda v: v.quantile(0.25)),
        val_q75=("val_metric", lambda v: v.quantile(0.75)),
    )
    return data.reset_index()[columns]


def lr_sensitivity_data(trials: pd.DataFrame) -> pd.DataFrame:
    """Every ended search trial with a learning rate: ``workload``, ``optimizer``, ``lr``,
    ``final_val_metric`` (NaN where the trial has none) and ``status``."""
    search = trials[(trials["phase"] == "search") & ~trials["status"].isin((RUNNING, *REQUEUED))]
    if LR_PARAM not in search.columns:
        return pd.DataFrame(columns=["workload", "optimizer", "lr", "final_val_metric", "status"])
    lr = pd.to_numeric(search[LR_PARAM], errors="coerce")
    data = search.assign(lr=lr)[["workload", "optimizer", "lr", "final_val_metric", "status"]]
    data = data[np.isfinite(data["lr"]) & (data["lr"] > 0)]
    return data.sort_values(["workload", "optimizer", "lr"], ignore_index=True)


def optimization_history_data(records: StudyRecords) -> pd.DataFrame:
    """Each arm's ended search trials in trial order: the objective ``value`` of a
    completed trial (a diverged trial's is the worst, ±inf; NaN for pruned and failed
    trials, which have none) and the ``best_so_far`` over completed trials."""
    columns = ["workload", "optimizer", "trial_number", "status", "value", "best_so_far"]
    trials = records.trials
    search = trials[(trials["phase"] == "search") & ~trials["status"].isin((RUNNING, *REQUEUED))]
    parts = []
    for (workload, optimizer), runs in search.groupby(["workload", "optimizer"], sort=True):
        facts = records.workloads.get(str(workload))
        direction = records.plan.direction(facts) if facts else "max"
        runs = runs.sort_values("trial_number")
        values = objective_values(runs, records.plan.objective, direction)
        values = values.where(runs["status"].isin((*USABLE, "diverged")))
        usable = values.where(np.isfinite(values))
        best = usable.cummax() if direction == "max" else usable.cummin()
        parts.append(
            pd.DataFrame(
                {
                    "workload": workload,
                    "optimizer": optimizer,
                    "trial_number": runs["trial_number"].to_numpy(),
                    "status": runs["status"].to_numpy(),
                    "value": values.to_numpy(),
                    "best_so_far": best.ffill().to_numpy(),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


# ---- drawing -------------------------------------------------------------------------------


def _panels(workloads: Sequence[str], rows: int = 1) -> tuple[Figure, np.ndarray]:
    columns = max(1, len(workloads))
    figure = _figure(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows)
    axes = figure.subplots(rows, columns, squeeze=False, gridspec_kw={"wspace": 0.35})
    return figure, axes


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI)
    figure.subplots_adjust(
        left=MARGINS["left"] / width,
        right=1 - MARGINS["right"] / width,
        bottom=MARGINS["bottom"] / height,
        top=1 - MARGINS["top"] / height,
        hspace=0.45,
    )
    return figure


def _legend(figure: Figure, optimizers: Sequence[str]) -> None:
    """One legend for all panels, right of them: optimizers in study order, then the rest
    (the target line)."""
    entries: dict[str, Any] = {}
    for axis in figure.axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    order = {name: index for index, name in enumerate(optimizers)}
    labels = sorted(entries, key=lambda label: order.get(label, len(order)))
    if labels:
        figure.legend(
            [entries[label] for label in labels],
            labels,
            loc="center right",
            fontsize="small",
            frameon=False,
        )


def _colour(optimizers: Sequence[str], optimizer: str) -> tuple[float, float, float]:
    return COLOURS[list(optimizers).index(optimizer) % len(COLOURS)]


def _metric_axis(axis: Axes, facts: WorkloadFacts | None, values: pd.Series) -> None:
    """Label the metric axis; log scale for a minimised, positive metric spanning a
    decade or more (losses)."""
    if facts is None:
        return
    axis.set_ylabel(f"validation {facts.metric} ({facts.direction})")
    finite = values[np.isfinite(values)]
    if facts.direction == "min" and len(finite) and 0 < 10 * finite.min() <= finite.max():
        axis.set_yscale("log")
    if math.isfinite(facts.target):
        axis.axhline(facts.target, color="0.5", linestyle=":", linewidth=1, label="target")


def _empty(axis: Axes, message: str) -> None:
    axis.text(0.5, 0.5, message, ha="center", va="center", transform=axis.transAxes)
    axis.set_xticks([])
    axis.set_yticks([])


def draw_learning_curves(
    data: pd.DataFrame,
    workloads: Sequence[str],
    optimizers: Sequence[str],
    facts: Mapping[str, WorkloadFacts],
) -> Figure:
    """Validation metric against training time (top row) and optimizer steps (bottom):
    median line and inter-quartile band over final-phase seeds."""
    figure, axes = _panels(workloads, rows=2)
    for column, workload in enumerate(workloads):
        rows = data[data["workload"] == workload]
        for row, x in enumerate(("time_s", "steps")):
            axis = axes[row, column]
            if rows.empty:
                _empty(axis, "no final-phase runs")
                continue
            for optimizer, curve in rows.groupby("optimizer", sort=False):
                colour = _colour(optimizers, str(optimizer))
                axis.plot(curve[x], curve["val_median"], color=colour, label=optimizer)
                axis.fill_between(
                    curve[x], curve["val_q25"], curve["val_q75"], color=colour, alpha=0.2
                )
            _metric_axis(axis, facts.get(workload), rows["val_median"])
            axis.set_xlabel("training time (s)" if x == "time_s" else "optimizer steps")
            axis.set_title(workload)
    _legend(figure, optimizers)
    return figure


def draw_lr_sensitivity(
    data: pd.DataFrame,
    workloads: Sequence[str],
    optimizers: Sequence[str],
    facts: Mapping[str, WorkloadFacts],
) -> Figure:
    """Final validation metric against learning rate (log axis), a line per optimizer
    through its completed trials sorted by learning rate; pruned trials as open circles,
    diverged ones as crosses at the worst edge of the panel."""
    figure, axes = _panels(workloads)
    for column, workload in enumerate(workloads):
        axis = axes[0, column]
        rows = data[data["workload"] == workload]
        if rows.empty:
            _empty(axis, "no search trials with a learning rate")
            continue
        values = rows["final_val_metric"].astype(float)
        finite = rows[np.isfinite(values)]
        for optimizer, points in finite.groupby("optimizer", sort=False):
            colour = _colour(optimizers, str(optimizer))
            done = points[points["status"].isin(USABLE)]
            axis.plot(done["lr"], done["final_val_metric"], marker="o", markersize=3, color=colour)
            # A pruned trial's value is from the epoch it stopped at: shown, not joined.
            stopped = points[~points["status"].isin(USABLE)]
            axis.scatter(
                stopped["lr"], stopped["final_val_metric"], facecolors="none", edgecolors=colour
            )
            axis.plot([], [], color=colour, label=optimizer)
        axis.set_xscale("log")
        workload_facts = facts.get(workload)
        _metric_axis(axis, workload_facts, finite["final_val_metric"].astype(float))
        diverged = rows[rows["status"] == "diverged"]
        if not diverged.empty:
            low, high = axis.get_ylim()
            edge = high if workload_facts and workload_facts.direction == "min" else low
            for optimizer, points in diverged.groupby("optimizer", sort=False):
                axis.scatter(
                    points["lr"],
                    [edge] * len(points),
                    marker="x",
                    color=_colour(optimizers, str(optimizer)),
                    clip_on=False,
                )
        axis.set_xlabel("learning rate")
        axis.set_title(workload)
    _legend(figure, optimizers)
    return figure


def draw_importances(
    data: pd.DataFrame, workloads: Sequence[str], optimizers: Sequence[str]
) -> Figure:
    """Per workload, a bar per optimizer split by the importance of each parameter."""
    figure, axes = _panels(workloads)
    params = sorted(data["param"].unique()) if not data.empty else []
    colours = matplotlib.colormaps["Set2"].colors
    for column, workload in enumerate(workloads):
        axis = axes[0, column]
        rows = data[data["workload"] == workload]
        if rows.empty:
            _empty(axis, "no importances")
            continue
        table = rows.pivot(index="optimizer", columns="param", values="importance")
        table = table.reindex(index=[o for o in optimizers if o in table.index]).fillna(0.0)
        left = np.zeros(len(table))
        for index, param in enumerate(params):
            if param not in table.columns:
                continue
            axis.barh(
                table.index,
                table[param],
                left=left,
                color=colours[index % len(colours)],
                label=param,
            )
            left += table[param].to_numpy()
        axis.set_xlim(0, 1)
        axis.invert_yaxis()
        axis.set_xlabel("importance (share)")
        axis.set_title(workload)
    _legend(figure, params)
    return figure


def draw_performance_profile(ratios: pd.DataFrame, optimizers: Sequence[str]) -> Figure:
    """The fraction of workloads each optimizer reaches the target on within τ × the best
    time, for τ from 1 to 4."""
    figure = _figure(6.4, 4.2)
    axis = figure.subplots()
    if ratios.empty:
        _empty(axis, "no final-phase runs")
        return figure
    profile = performance_profile(ratios, PROFILE_PLOT_TAUS)
    for optimizer in profile.columns:
        axis.step(
            profile.index,
            profile[optimizer],
            where="post",
            color=_colour(optimizers, str(optimizer)),
            label=optimizer,
        )
    axis.set_xlim(1, 4)
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel("τ (time-to-target / best time-to-target)")
    axis.set_ylabel("fraction of workloads solved")
    _legend(figure, optimizers)
    return figure


def draw_optimization_history(
    data: pd.DataFrame,
    workloads: Sequence[str],
    optimizers: Sequence[str],
    objective: str,
    directions: Mapping[str, str],
) -> Figure:
    """Per workload: each search trial's objective (dots) and the best so far (line);
    ``directions`` gives the objective's direction per workload (a minimised objective
    spanning a decade or more gets a log axis)."""
    figure, axes = _panels(workloads)
    for column, workload in enumerate(workloads):
        axis = axes[0, column]
        rows = data[data["workload"] == workload]
        if rows.empty:
            _empty(axis, "no search trials")
            continue
        for optimizer, history in rows.groupby("optimizer", sort=False):
            colour = _colour(optimizers, str(optimizer))
            finite = history[np.isfinite(history["value"].astype(float))]
            axis.scatter(finite["trial_number"], finite["value"], color=colour, s=8, alpha=0.5)
            axis.step(
                history["trial_number"],
                history["best_so_far"],
                where="post",
                color=colour,
                label=optimizer,
            )
        axis.set_xlabel("trial")
        axis.set_ylabel(f"objective: {objective}")
        values = rows["value"].astype(float)
        finite = values[np.isfinite(values)]
        minimised = directions.get(workload) == "min"
        if minimised and len(finite) and 0 < 10 * finite.min() <= finite.max():
            axis.set_yscale("log")
        axis.set_title(workload)
    _legend(figure, optimizers)
    return figure


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes (Agg)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def build_figures(records: StudyRecords, tables: ReportTables) -> list[ReportFigure]:
    """Every figure of the report, drawn."""
    workloads = list(dict.fromkeys(tables.summary["workload"])) if not tables.summary.empty else []
    optimizers = (
        list(dict.fromkeys(tables.summary["optimizer"])) if not tables.summary.empty else []
    )
    facts = records.workloads
    curves = learning_curve_data(records.histories, tables.final_run_ids)
    return [
        ReportFigure(
            "learning_curves",
            "Learning curves",
            "Validation metric of the final-phase runs against training time (top) and "
            "optimizer steps (bottom): median and inter-quartile band over seeds; dotted: "
            "the target.",
            png(draw_learning_curves(curves, workloads, optimizers, facts)),
        ),
        ReportFigure(
            "lr_sensitivity",
            "Learning-rate sensitivity",
            "Final validation metric of every search trial against its learning rate; "
            "open circles: pruned trials (their last epoch's value); crosses: diverged "
            "trials.",
            png(
                draw_lr_sensitivity(
                    lr_sensitivity_data(records.trials), workloads, optimizers, facts
                )
            ),
        ),
        ReportFigure(
            "importance",
            "Hyperparameter importance",
            "Share of each searched parameter in the variation of the objective, per arm "
            "(Optuna's PED-ANOVA evaluator over the completed trials).",
            png(draw_importances(records.importances, workloads, optimizers)),
        ),
        ReportFigure(
            "performance_profile",
            "Performance profile",
            "Fraction of workloads on which each optimizer's median final-phase "
            "time-to-target is within τ × the best optimizer's (Dolan & Moré 2002); "
            "never reaching the target counts as infinite.",
            png(draw_performance_profile(tables.ratios, optimizers)),
        ),
        ReportFigure(
            "optimization_history",
            "Optimization history",
            f"Objective ({records.plan.objective}) of each search trial (dots) and the best "
            "so far (line), by trial number.",
            png(
                draw_optimization_history(
                    optimization_history_data(records),
                    workloads,
                    optimizers,
                    records.plan.objective,
                    {w: records.plan.direction(f) for w, f in facts.items()},
                )
            ),
        ),
    ]

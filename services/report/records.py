"""A study's records as pandas tables: MLflow's runs (what every trial did) and, where the
Optuna storage can be opened, what only Optuna knows (hyperparameter importances).

``load_records(tracking_uri, study)`` reads the study's MLflow experiment in pages of
``search_runs`` (one request per 1,000 runs, latest metric values, params and tags
included) and the per-epoch histories of the final-phase runs only (the learning curves'
data; the search runs' histories are not needed by any table or figure). The names read
here are those ``services.tracking`` writes (its module docstring is the contract); they
are kept in this module's constants and nowhere else in the report.

Trials are found by their tags (``phase`` = search / final, ``workload``, ``optimizer``),
not by nesting: a resumed study reuses its trial runs under the new invocation's arm runs.
The plan of the study (its workloads, optimizers, budget, final seeds and objective) comes
from the params of the latest invocation's study run, so arms that have no run yet are
known and reported as missing.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import TrialState

from services import tracking
from services.search import JOURNAL_SCHEME, check_storage_url
from services.spec import OBJECTIVE_METRICS
from services.workloads import WORKLOADS

# ---- names written by services.tracking ----------------------------------------------------

PHASE_TAG = "phase"
STUDY_PHASE, ARM_PHASE = "study", "arm"
TRIAL_PHASES = tracking.PHASES  # ("search", "final")
WORKLOAD_TAG, OPTIMIZER_TAG = "workload", "optimizer"
TRIAL_NUMBER_TAG, SEED_TAG, STATUS_TAG = "trial_number", "seed", "status"
METRIC_TAG, DIRECTION_TAG = "metric", "direction"
STORAGE_TAG, COMMAND_TAG = "storage", "command"
# Tags of ``tracking.run_environment`` the report shows, besides the version.* ones.
GIT_COMMIT_TAG, GIT_DIRTY_TAG, HARDWARE_TAG = "git_commit", "git_dirty", "hardware"
HOST_TAGS = ("host", "platform")
VERSION_TAG_PREFIX = "version."
# Per-epoch metrics the learning curves need (step = epoch).
HISTORY_METRICS = ("val_metric", "train_time_s", "optimizer_steps")
# Latest values read for every trial run: the final metrics, and the last epoch's.
RUN_METRICS = (*tracking.FINAL_METRICS, "reached_target", "val_loss", "train_time_s")
# Params of the study run (the spec, flattened) that the report reads.
PLAN_PARAMS = {
    "workloads": "workloads.",
    "optimizers": "optimizers.",
    "trials": "budget.trials",
    "seeds": "final.seeds.",
    "objective": "objective.metric",
    "objective_direction": "objective.direction",
}
PARAM_PREFIX = "params."
SEARCH_PAGE = 1000
# Concurrent metric-history requests (they wait on the tracking server or database).
HISTORY_THREADS = 8

# ---- statuses ------------------------------------------------------------------------------

# The trainer's statuses, plus the runner's for trials it failed and requeued.
USABLE = ("completed", "early_stopped")
COUNTED = (*USABLE, "pruned", "diverged", "failed")  # count towards the budget
REQUEUED = ("lost", "interrupted")  # replaced by a retry: not counted
RUNNING = "running"


class UnknownStudy(LookupError):
    """The tracking store has no experiment of that name; ``existing`` lists those it has."""

    def __init__(self, study: str, tracking_uri: str, existing: list[str]) -> None:
        self.study = study
        self.existing = existing
        listing = ", ".join(existing) if existing else "none"
        super().__init__(
            f"no study {study!r} in the tracking store {tracking_uri}; studies there: {listing}"
        )


@dataclass(frozen=True)
class WorkloadFacts:
    """What the report needs of a workload: its metric, the metric's direction ("max" or
    "min") and the target of time-to-target."""

    metric: str
    direction: str
    target: float


@dataclass(frozen=True)
class StudyPlan:
    """What the study set out to run, from its latest study run (or, lacking one, from the
    runs found)."""

    workloads: list[str]
    optimizers: list[str]
    trials: int | None
    seeds: list[int]
    objective: str
    objective_direction: str | None  # "max"/"min"; None: the workload metric's

    def arms(self) -> list[tuple[str, str]]:
        """(workload, optimizer) of every planned arm, workloads outermost."""
        return [(w, o) for w in self.workloads for o in self.optimizers]

    def direction(self, facts: WorkloadFacts) -> str:
        """The objective's direction on a workload with ``facts``."""
        if self.objective_direction is not None:
            return self.objective_direction
        fixed = OBJECTIVE_METRICS.get(self.objective)
        return facts.direction if fixed is None else _short_direction(fixed)


@dataclass
class StudyRecords:
    """Everything the report is computed from.

    ``trials``: one row per search or final-phase run: ``run_id``, ``run_name``,
    ``run_status`` (MLflow's), ``start_time`` (ms), ``workload``, ``optimizer``, ``phase``,
    ``trial_number``, ``seed``, ``status`` (the trainer's, ``running`` for a run not ended,
    ``lost``/``interrupted`` for a trial the runner requeued), the ``RUN_METRICS`` (a
    finished run that never reached its target has infinite ``time_to_target_s`` and
    ``steps_to_target``, AlgoPerf's rule) and the run's params as ``params.<dotted key>``.
    ``histories``: ``run_id``, ``epoch`` and the ``HISTORY_METRICS`` of the final-phase
    runs. ``invocations``: the study runs, newest first. ``importances``: ``workload``,
    ``optimizer``, ``param``, ``importance`` from Optuna. ``notes``: what could not be read.
    """

    study: str
    tracking_uri: str
    experiment_id: str
    plan: StudyPlan
    workloads: dict[str, WorkloadFacts]
    trials: pd.DataFrame
    histories: pd.DataFrame
    invocations: pd.DataFrame
    importances: pd.DataFrame
    storage_url: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def latest_invocation(self) -> pd.Series | None:
        """The latest study run (``run_id``, ``status``, ``start_time``, its tags), if any."""
        return None if self.invocations.empty else self.invocations.iloc[0]


# ---- reading MLflow ------------------------------------------------------------------------


def open_client(tracking_uri: str) -> MlflowClient:
    """An MLflow client for ``tracking_uri`` that never creates a store: a SQLite file that
    does not exist raises ``FileNotFoundError`` (MLflow would create an empty one)."""
    uri = tracking.resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not uri.endswith(":memory:"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.exists():
            raise FileNotFoundError(f"no MLflow tracking store at {path}")
    # A report is not a hot path, but minutes of MLflow's default retries are no use either.
    for name, value in tracking.HTTP_SETTINGS.items():
        os.environ.setdefault(name, value)
    return MlflowClient(tracking_uri=uri)


def study_names(client: MlflowClient) -> list[str]:
    """The names of the studies (MLflow experiments, bar MLflow's "Default") in the store."""
    names = []
    page_token = None
    while True:
        page = client.search_experiments(max_results=SEARCH_PAGE, page_token=page_token)
        names += [e.name for e in page if e.name != "Default"]
        page_token = page.token
        if not page_token:
            return sorted(names)


def search_all_runs(client: MlflowClient, experiment_id: str) -> Iterator[Run]:
    """Every active run of the experiment, a page of ``SEARCH_PAGE`` runs per request."""
    page_token = None
    while True:
        page = client.search_runs([experiment_id], max_results=SEARCH_PAGE, page_token=page_token)
        yield from page
        page_token = page.token
        if not page_token:
            return


def load_records(
    tracking_uri: str,
    study: str,
    *,
    storage_url: str | None = None,
    client: MlflowClient | None = None,
) -> StudyRecords:
    """Read ``study`` from the MLflow store at ``tracking_uri`` (through ``client`` if
    given) and its Optuna storage (``storage_url``, default the one the latest study run
    recorded). Raises ``UnknownStudy`` when there is no such experiment; anything missing
    beyond that (arms, runs, the Optuna storage) is recorded in ``notes`` instead."""
    client = client or open_client(tracking_uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        raise UnknownStudy(study, tracking_uri, study_names(client))
    runs = list(search_all_runs(client, experiment.experiment_id))
    invocation_runs = [r for r in runs if r.data.tags.get(PHASE_TAG) == STUDY_PHASE]
    trial_runs = [r for r in runs if r.data.tags.get(PHASE_TAG) in TRIAL_PHASES]
    invocations = _invocations_frame(invocation_runs)
    trials = _trials_frame(trial_runs)
    workloads = _workload_facts(trials)
    plan = _plan(invocation_runs, trials)
    for name in plan.workloads:
        if name not in workloads and name in WORKLOADS:
            registered = WORKLOADS[name]
            workloads[name] = WorkloadFacts(
                registered.metric.name, registered.metric.direction, registered.target
            )
    records = StudyRecords(
        study=study,
        tracking_uri=tracking_uri,
        experiment_id=experiment.experiment_id,
        plan=plan,
        workloads=workloads,
        trials=trials,
        histories=_histories(client, trials),
        invocations=invocations,
        importances=_empty_importances(),
    )
    if not invocations.empty and storage_url is None:
        storage_url = invocations.iloc[0].get(STORAGE_TAG) or None
    records.storage_url = storage_url
    if storage_url is None:
        records.notes.append("no Optuna storage recorded: no hyperparameter importances")
    else:
        records.importances = _importances(records, storage_url)
    return records


def _invocations_frame(runs: list[Run]) -> pd.DataFrame:
    rows = [
        {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": run.info.start_time,
            **run.data.tags,
        }
        for run in runs
    ]
    frame = pd.DataFrame(
        rows or None, columns=None if rows else ["run_id", "status", "start_time"]
    )
    return frame.sort_values("start_time", ascending=False, ignore_index=True)


def _trial_status(run: Run) -> str:
    status = run.data.tags.get(STATUS_TAG)
    if run.info.status == "RUNNING":
        return RUNNING
    if status is None:
        # Ended without a result (the trainer refused its config): a failure.
        return "failed"
    return status


def _trials_frame(runs: list[Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        seed = tags.get(SEED_TAG)
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "run_status": run.info.status,
            "start_time": run.info.start_time,
            "workload": tags.get(WORKLOAD_TAG),
            "optimizer": tags.get(OPTIMIZER_TAG),
            "phase": tags[PHASE_TAG],
            "trial_number": int(tags[TRIAL_NUMBER_TAG]),
            "seed": int(seed) if seed is not None else None,
            "status": _trial_status(run),
            METRIC_TAG: tags.get(METRIC_TAG),
            DIRECTION_TAG: tags.get(DIRECTION_TAG),
            HARDWARE_TAG: tags.get(HARDWARE_TAG),
        }
        for key in RUN_METRICS:
            row[key] = metrics.get(key, math.nan)
        if row["status"] != RUNNING:
            for key in ("time_to_target_s", "steps_to_target"):
                if math.isnan(row[key]):
                    row[key] = math.inf
        row.update({PARAM_PREFIX + key: value for key, value in run.data.params.items()})
        rows.append(row)
    columns = [
        "run_id",
        "run_name",
        "run_status",
        "start_time",
        "workload",
        "optimizer",
        "phase",
        "trial_number",
        "seed",
        "status",
        METRIC_TAG,
        DIRECTION_TAG,
        HARDWARE_TAG,
        *RUN_METRICS,
    ]
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)
    frame["seed"] = frame["seed"].astype("Int64")
    return frame.sort_values(["workload", "optimizer", "phase", "trial_number"], ignore_index=True)


def _short_direction(direction: str) -> str:
    return {"maximize": "max", "minimize": "min"}.get(direction, direction)


def _workload_facts(trials: pd.DataFrame) -> dict[str, WorkloadFacts]:
    """Each workload's metric, direction and target as its runs recorded them (the
    registry's where no run recorded them yet)."""
    facts = {}
    for workload, runs in trials.groupby("workload", sort=True):
        recorded = runs.dropna(subset=[METRIC_TAG, DIRECTION_TAG])
        registered = WORKLOADS.get(str(workload))
        if not recorded.empty:
            first = recorded.iloc[0]
            target = first["target"]
            if math.isnan(target) and registered is not None:
                target = registered.target
            facts[str(workload)] = WorkloadFacts(
                first[METRIC_TAG], _short_direction(first[DIRECTION_TAG]), float(target)
            )
        elif registered is not None:
            facts[str(workload)] = WorkloadFacts(
                registered.metric.name, registered.metric.direction, registered.target
            )
    return facts


def _indexed(params: Mapping[str, str], prefix: str, suffix: str = "") -> list[str]:
    """The values of flattened list ``prefix`` (``workloads.0``, ``workloads.1``, ...), in
    index order; ``suffix`` picks a key of each item (``optimizers.0.name``)."""
    found = {}
    for key, value in params.items():
        if key.startswith(prefix) and key.endswith(suffix):
            index = key[len(prefix) : len(key) - len(suffix)]
            if index.isdigit():
                found[int(index)] = value
    return [found[i] for i in sorted(found)]


def _plan(invocations: list[Run], trials: pd.DataFrame) -> StudyPlan:
    if invocations:
        latest = max(invocations, key=lambda run: run.info.start_time)
        params = latest.data.params
        trials_param = params.get(PLAN_PARAMS["trials"])
        direction = params.get(PLAN_PARAMS["objective_direction"])
        return StudyPlan(
            workloads=_indexed(params, PLAN_PARAMS["workloads"]),
            optimizers=_indexed(params, PLAN_PARAMS["optimizers"], ".name"),
            trials=int(trials_param) if trials_param else None,
            seeds=[int(s) for s in _indexed(params, PLAN_PARAMS["seeds"])],
            objective=params.get(PLAN_PARAMS["objective"], "val_metric"),
            objective_direction=(
                None if direction in (None, "None") else _short_direction(direction)
            ),
        )
    final = trials[trials["phase"] == "final"]
    return StudyPlan(
        workloads=sorted(trials["workload"].dropna().unique()),
        optimizers=sorted(trials["optimizer"].dropna().unique()),
        trials=None,
        seeds=sorted(int(s) for s in final["seed"].dropna().unique()),
        objective="val_metric",
        objective_direction=None,
    )


def _histories(client: MlflowClient, trials: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch ``HISTORY_METRICS`` of the final-phase runs: one request per run and
    metric (MLflow's client has no bulk read), ``HISTORY_THREADS`` at a time; the search
    runs' histories are not read."""
    columns = ["run_id", "epoch", *HISTORY_METRICS]
    final = trials.loc[trials["phase"] == "final", "run_id"].tolist()
    if not final:
        return pd.DataFrame(columns=columns)
    requests = [(run_id, key) for run_id in final for key in HISTORY_METRICS]
    with ThreadPoolExecutor(HISTORY_THREADS) as pool:
        points = pool.map(lambda request: client.get_metric_history(*request), requests)
        rows = [
            (run_id, point.step, key, point.timestamp, point.value)
            for (run_id, key), history in zip(requests, points, strict=True)
            for point in history
        ]
    frame = pd.DataFrame(rows, columns=["run_id", "epoch", "key", "timestamp", "value"])
    # The latest value per step (a retried run may log an epoch twice).
    latest = frame.sort_values("timestamp").drop_duplicates(
        ["run_id", "epoch", "key"], keep="last"
    )
    histories = latest.pivot(index=["run_id", "epoch"], columns="key", values="value")
    histories = histories.reindex(columns=list(HISTORY_METRICS)).reset_index()
    # train_time_s has one more point, at the step after the last epoch, for a trial that
    # ended inside an epoch; the curves follow the validation metric's epochs.
    return histories.dropna(subset=["val_metric"])[columns].reset_index(drop=True)


# ---- reading Optuna ------------------------------------------------------------------------


def _empty_importances() -> pd.DataFrame:
    return pd.DataFrame(columns=["workload", "optimizer", "param", "importance"])


def open_storage_readonly(url: str) -> BaseStorage:
    """The Optuna storage at ``url``, opened without creating anything (no journal file, no
    tables) and without heartbeats; ``FileNotFoundError`` for a missing journal file."""
    url = check_storage_url(url)
    if url.startswith(JOURNAL_SCHEME):
        path = Path(url.removeprefix(JOURNAL_SCHEME))
        if not path.exists():
            raise FileNotFoundError(f"no Optuna journal at {path}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return JournalStorage(JournalFileBackend(str(path)))
    return RDBStorage(url, skip_table_creation=True, engine_kwargs={"pool_pre_ping": True})


def _importances(records: StudyRecords, storage_url: str) -> pd.DataFrame:
    """Optuna's hyperparameter importances (its default evaluator, PED-ANOVA) of each arm's
    search, over its completed trials with a finite objective (a diverged trial's worst
    value would only say that it diverged)."""
    try:
        storage = open_storage_readonly(storage_url)
        names = set(optuna.get_all_study_names(storage))
    except Exception as error:  # any failure costs the importances only
        records.notes.append(f"Optuna storage {storage_url} unreadable ({error}): no importances")
        return _empty_importances()
    rows = []
    try:
        for workload, optimizer in records.plan.arms():
            name = f"{records.study}/{workload}/{optimizer}"
            if name not in names:
                continue
            importances = arm_importances(optuna.load_study(study_name=name, storage=storage))
            rows += [
                {"workload": workload, "optimizer": optimizer, "param": p, "importance": v}
                for p, v in importances.items()
            ]
    finally:
        if isinstance(storage, RDBStorage):
            storage.engine.dispose()
    return pd.DataFrame(rows) if rows else _empty_importances()


def arm_importances(study: optuna.Study) -> dict[str, float]:
    """Importance of each searched parameter of ``study`` (normalised to sum to 1) for its
    first objective, from its COMPLETE trials with a finite value; empty with fewer than
    two such trials or no parameter that varies."""
    usable = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values and np.isfinite(t.values[0]) and t.params
    ]
    names = sorted({name for t in usable for name in t.params})
    varying = [n for n in names if len({repr(t.params.get(n)) for t in usable}) > 1]
    if len(usable) < 2 or not varying:
        return {}
    # The evaluator takes lower target values as better.
    sign = -1.0 if study.directions[0] == StudyDirection.MAXIMIZE else 1.0
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))  # "study created"
    try:
        finite = optuna.create_study(directions=study.directions)
        finite.add_trials(usable)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its notes on experimental and minimised targets
            return optuna.importance.get_param_importances(
                finite, params=varying, target=lambda trial: sign * trial.values[0]
            )
    finally:
        optuna.logging.set_verbosity(verbosity)

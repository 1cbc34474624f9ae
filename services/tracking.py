"""MLflow recording of studies: nested runs, batched metrics, and a local spool for the times
the tracking server cannot be reached.

**Layout.** One MLflow experiment per study (named after it); under it, per invocation of
``optarena run``::

    quickstart · 2026-11-26 14:03          phase=study   the invocation (parent run)
      adam · mnist1d-mlp                   phase=arm     one per workload × optimizer
        adam · mnist1d-mlp · trial 7       phase=search  one per Optuna trial
        adam · mnist1d-mlp · seed 2        phase=final   one per final-phase seed

Nesting is MLflow's own: a child run carries the tag ``mlflow.parentRunId``. Runs are
created in whichever process does the work (the driver creates the study and arm runs,
Ray workers the trial runs); the arm run's id is all a worker needs to nest under it.

**Records.** Every run is tagged with the study, its phase, the git commit of the code the
driver runs, library versions and hardware (``run_environment``); arm and trial runs also
with the arm (``<study>/<workload>/<optimizer>``), workload and optimizer; trial runs with
the Optuna trial number, their status and Optuna state at the end. A trial run's params are
its resolved trial config with dotted keys (``hparams.lr``, ``hparams.betas.1``,
``model.dropout``, ``schedule.name``), the same names in every trial, so MLflow's "compare
runs" plots any of them against a metric. Metrics per epoch (``step`` = epoch):
``train_loss``, ``val_metric``, ``val_loss``, ``lr``, ``epoch_time_s``, ``train_time_s``
(training time so far) and ``optimizer_steps``; at the end, at the last epoch's step:
``final_val_metric``, ``best_val_metric``, ``test_metric``, ``time_to_target_s``,
``steps_to_target``, ``reached_target`` (1 or 0), ``samples_per_s``, ``steps``, ``target``
and, for a divergence, ``diverged_at_step`` (a value the trial did not produce is left out
rather than faked). The latest ``train_time_s`` is the trial's: the last epoch's, or, when
the trial ended inside an epoch (a divergence), the total at the step of that epoch.

**Idempotence.** Every run carries a key tag, ``optarena.key``: ``<arm>/<phase>/<trial
number>`` for trial runs, ``<arm>/arm`` for arm runs (looked up under the given parent
only) and a fresh one per invocation for the study run. Creating a run first searches the
experiment for its key, so a retried or resumed trial, in any process, continues the run
it already has (marked RUNNING again) instead of creating a second one. Calls for one key
are assumed not to race (a trial number runs in one worker at a time).

**Off the hot path.** ``log_epoch`` only appends to an in-memory buffer. Buffers are sent
with ``log_batch`` (at most 1,000 entities per call, MLflow's limit) when a run's buffer
fills a whole batch, when it is older than ``flush_interval_s``, on ``finish_trial`` /
``finish_run`` and on ``flush``. A trial run's params wait in the buffer too and go out
with its first batch: a short trial costs four requests (search, create, one batch, end).

**An unreachable server.** A request that fails for a connection reason (refused, reset,
timed out, 5xx from a proxy, a locked SQLite file) is retried twice with a short backoff
(a timeout is not retried: it already waited); then the record is appended to a JSONL
spool file (``spool_dir/<study>.jsonl``, shared by all processes of the study through a
file lock), a warning says once per process that results are being spooled, and the
study goes on: for ``offline_retry_s`` every further record is spooled without trying
the network. A run that could not be created gets a placeholder id, ``spool:<uuid>``,
that works like a real one in every call. ``replay_spool`` sends the spool in order:
placeholder runs are created (or found by their key) and their records follow; the
placeholder → run id map is kept in ``spool_dir/<study>.runs.json`` so that any process
still holding a placeholder reaches the real run (``resolve_run_id``). A record the
server rejects for good (say, its run was deleted) is moved to ``<study>.rejected.jsonl``
with the error. Errors
that are not about connectivity (a bad request, a permission error) are raised.

MLflow's own HTTP retries wait minutes by default; the first client built in a process
sets ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT=10`` (MLflow
reads them from the environment at every request, so they are process-wide) unless they
are set already, and silences the "View run at" line MLflow prints per finished run.

**Processes.** A :class:`StudyTracker` pickles as its settings only; each process builds its
own ``MlflowClient`` on first use, with its own buffers and spool state. The embedded
default URI ``sqlite:///.optarena/mlflow.db`` is made absolute against the current
directory when the tracker is built, so that workers in another directory write to the
same file; its artifacts go to ``.optarena/mlartifacts`` next to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import getpass
import glob
import importlib.metadata
import json
import logging
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import requests
import sqlalchemy.exc
import torch
import urllib3.exceptions
from mlflow.entities import Metric, Param, RunTag
from mlflow.environment_variables import (
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_HTTP_REQUEST_TIMEOUT,
    MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID, MLFLOW_USER
from mlflow.utils.validation import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from services.trainer import EpochMetrics, TrialConfig, TrialResult

if TYPE_CHECKING:
    from services.spec import Arm

logger = logging.getLogger(__name__)

DEFAULT_SPOOL_DIR = Path(".optarena/spool")
PLACEHOLDER_PREFIX = "spool:"
KEY_TAG = "optarena.key"
# MLflow's UI opens an experiment of this kind on its runs table ("Model training"), not on
# the GenAI traces overview it shows for experiments it cannot classify.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
PHASES = ("search", "final")
# MLflow run status of a trial by the trainer's status. A diverged trial is a result (its
# learning rate was too high), not a crash: FAILED is kept for trials that need a look.
RUN_STATUS_OF_TRIAL = {
    "completed": "FINISHED",
    "early_stopped": "FINISHED",
    "diverged": "FINISHED",
    "pruned": "KILLED",
    "failed": "FAILED",
}
END_STATUSES = ("FINISHED", "FAILED", "KILLED")
OPTUNA_STATES = ("COMPLETE", "PRUNED", "FAIL")
EPOCH_METRICS = ("train_loss", "val_metric", "val_loss", "lr", "epoch_time_s", "train_time_s")
FINAL_METRICS = (
    "final_val_metric",
    "best_val_metric",
    "test_metric",
    "time_to_target_s",
    "steps_to_target",
    "samples_per_s",
    "steps",
    "target",
    "diverged_at_step",
)
# MLflow's defaults retry a dead server for minutes; one fast try here, then our own short
# retries, then the spool.
HTTP_SETTINGS = {
    MLFLOW_HTTP_REQUEST_MAX_RETRIES.name: "0",
    MLFLOW_HTTP_REQUEST_TIMEOUT.name: "10",
    MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.name: "true",
}
RETRY_BACKOFF_S = (0.2, 0.5)
_TRANSIENT_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.RetryError,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlite3.OperationalError,
)
_TIMEOUTS = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
_TRANSIENT_CODES = (
    "TEMPORARILY_UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "REQUEST_LIMIT_EXCEEDED",
    "RESOURCE_EXHAUSTED",
)
_REPO_ROOT = Path(__file__).resolve().parents[1]
_T = TypeVar("_T")


# ---- where things go -----------------------------------------------------------------------


def resolve_tracking_uri(uri: str) -> str:
    """``uri`` with a relative SQLite path made absolute against the current directory; any
    other URI unchanged."""
    path = _sqlite_path(uri)
    return uri if path is None else f"sqlite:///{path.resolve()}"


def artifact_location(tracking_uri: str, study: str) -> str | None:
    """Where a new experiment of ``study`` keeps its artifacts: ``mlartifacts/<study>`` next
    to a SQLite database file (MLflow would use ``./mlruns`` of whatever the current
    directory is); None, the server's choice, for anything else."""
    path = _sqlite_path(tracking_uri)
    if path is None:
        return None
    return (path.resolve().parent / "mlartifacts" / study).as_uri()


def _sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix or uri.endswith(":memory:"):
        return None
    return Path(uri.removeprefix(prefix))


# ---- what a run records about where it ran -------------------------------------------------


def run_environment() -> dict[str, str]:
    """Where and with what the current process runs, as run tags: ``git_commit`` (of this
    repository, or "unknown") and ``git_dirty``, ``version.<package>`` for python, torch,
    optuna, mlflow, ray and optarena ("not installed" when absent), ``hardware`` (the GPU
    model via torch.cuda, else the CPU model and core count), ``host`` and ``platform``.

    Computed once per process; looking at the GPU initialises CUDA in the calling process.
    """
    return {**_git_state(), **_process_environment()}


@functools.cache
def _git_state() -> dict[str, str]:
    def git(*arguments: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(_REPO_ROOT), *arguments],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    changes = git("status", "--porcelain", "--untracked-files=no")
    dirty = "unknown" if changes is None else str(bool(changes)).lower()
    return {"git_commit": commit, "git_dirty": dirty}


@functools.cache
def _process_environment() -> dict[str, str]:
    environment = {"version.python": platform.python_version()}
    for package in ("torch", "optuna", "mlflow", "ray", "optarena"):
        try:
            environment[f"version.{package}"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            environment[f"version.{package}"] = "not installed"
    environment["hardware"] = _hardware()
    environment["host"] = platform.node()
    environment["platform"] = platform.platform()
    return environment


def _hardware() -> str:
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        counted = {name: names.count(name) for name in names}
        return ", ".join(f"{count} × {name}" for name, count in counted.items())
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({os.cpu_count()} CPUs)"


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings and lists as MLflow params with dotted keys and string values:
    ``{"hparams": {"lr": 0.1, "betas": [0.9, 0.99]}}`` → ``{"hparams.lr": "0.1",
    "hparams.betas.0": "0.9", "hparams.betas.1": "0.99"}``. An empty mapping or list is kept
    as ``{}`` / ``[]``; values longer than MLflow allows are cut."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, list | tuple) and value:
            flat.update(flatten_params(dict(enumerate(value)), f"{name}."))
        else:
            flat[name] = _truncate(str(value), MAX_PARAM_VAL_LENGTH)
    return flat


def _truncate(text: str, limit: int, *, keep_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    return "…" + text[-(limit - 1) :] if keep_end else text[: limit - 1] + "…"


# ---- errors --------------------------------------------------------------------------------


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) means the tracking store could not be reached or
    was briefly unavailable, as opposed to a request it refuses."""
    for cause in _causes(error):
        if isinstance(cause, requests.exceptions.SSLError):
            return False
        if isinstance(cause, _TRANSIENT_ERRORS):
            return True
        if isinstance(cause, MlflowException) and cause.error_code in _TRANSIENT_CODES:
            return True
    return False


def _is_timeout(error: BaseException) -> bool:
    # urllib3 files a refused connection (NewConnectionError) under ConnectTimeoutError.
    return any(
        isinstance(cause, _TIMEOUTS)
        and not isinstance(cause, urllib3.exceptions.NewConnectionError)
        for cause in _causes(error)
    )


# ---- the spool -----------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path, *, wait: bool = True) -> Iterator[None]:
    """An exclusive lock between processes (``flock`` on ``path``); ``BlockingIOError`` when
    ``wait`` is False and another process holds it."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            # A line cut short by a process killed mid-write.
            logger.warning("skipping an unreadable line %d of spool file %s", number, path)
    return records


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)


@dataclass
class _RunBuffer:
    """What waits to be sent for one run; ``since`` is when the oldest entry came in."""

    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    since: float | None = None

    def entities(self) -> int:
        return len(self.metrics) + len(self.params) + len(self.tags)

    def take_batch(self) -> dict[str, Any]:
        """Remove and return one ``log_batch`` worth within MLflow's limits."""
        params = list(self.params.items())[:MAX_PARAMS_TAGS_PER_BATCH]
        tags = list(self.tags.items())[:MAX_PARAMS_TAGS_PER_BATCH]
        room = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(params) - len(tags))
        metrics, self.metrics = self.metrics[:room], self.metrics[room:]
        for key, _ in params:
            del self.params[key]
        for key, _ in tags:
            del self.tags[key]
        if not self.entities():
            self.since = None
        return {"metrics": metrics, "params": params, "tags": tags}


# ---- the tracker ---------------------------------------------------------------------------


class StudyTracker:
    """MLflow recording for one study invocation; picklable settings, lazy client.

    Args:
        tracking_uri: ``http(s)://host:port`` of a tracking server, or a database URI such
            as the embedded default ``sqlite:///.optarena/mlflow.db`` (a relative SQLite
            path is made absolute against the current directory; its directory is created
            when the client is first used, so building a tracker writes nothing).
        study: the study's name; names the MLflow experiment.
        spool_dir: where records wait while the server is unreachable (default
            ``.optarena/spool``, made absolute now).
        flush_interval_s: a run's buffered metrics are sent at the next ``log_epoch`` once
            the oldest is this old, so long trials show progress.
        offline_retry_s: after the server was found unreachable, records go straight to the
            spool for this long before the network is tried again.

    Every method that talks to MLflow returns normally when the server cannot be reached
    (see the module docstring); run ids it returns may then be ``spool:`` placeholders.
    Methods are safe to call from several threads of one process.

    Example::

        tracker = StudyTracker("http://127.0.0.1:5000", "quickstart")
        parent = tracker.start_study(spec_dict, tags={})
        arm_run = tracker.arm_run(parent, arm)
        run = tracker.trial_run(arm_run, arm, phase="search", trial_number=7, config=config)
        result = run_trial(config, lambda metrics: tracker.log_epoch(run, metrics))
        tracker.finish_trial(run, result, optuna_state="COMPLETE")
    """

    def __init__(
        self,
        tracking_uri: str,
        study: str,
        *,
        spool_dir: Path | None = None,
        flush_interval_s: float = 30.0,
        offline_retry_s: float = 60.0,
    ) -> None:
        if not study or any(quote in study for quote in "'\"`\\"):
            raise ValueError(f"study name must be non-empty and without quotes, got {study!r}")
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.study = study
        self.spool_dir = Path(DEFAULT_SPOOL_DIR if spool_dir is None else spool_dir).resolve()
        self.flush_interval_s = flush_interval_s
        self.offline_retry_s = offline_retry_s
        # The driver's checkout: workers may run from a copy without .git (Ray's working_dir).
        self.git = _git_state()
        self._start_process_state()

    # -- pickling: settings only --

    _SETTINGS = (
        "tracking_uri",
        "study",
        "spool_dir",
        "flush_interval_s",
        "offline_retry_s",
        "git",
    )

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._SETTINGS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._start_process_state()

    def _start_process_state(self) -> None:
        self._lock = threading.RLock()
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._buffers: dict[str, _RunBuffer] = {}
        self._arm_runs: dict[tuple[str, str], str] = {}
        self._offline_placeholders: dict[str, str] = {}  # run key → placeholder
        self._ids: dict[str, str] = {}  # placeholder → run id
        self._known_params: dict[str, dict[str, str]] = {}
        # Runs with records in the spool: their later records follow them there, in order.
        self._spooled_runs: set[str] = set()
        self._offline_until = 0.0
        self._warned = False

    # -- public API --

    @property
    def client(self) -> MlflowClient:
        """This process's MLflow client (built on first use)."""
        if self._client is None:
            for name, value in HTTP_SETTINGS.items():
                os.environ.setdefault(name, value)
            database = _sqlite_path(self.tracking_uri)
            if database is not None:
                database.parent.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def start_study(self, spec_dict: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """Create this invocation's parent run (a new one every time, also when a study is
        resumed) in the study's experiment (created if missing); returns its run id.

        Tags: ``study``, ``phase=study``, the run environment, ``command`` (this process's
        command line), then ``tags`` (which win). Params: ``spec_dict`` flattened with
        dotted keys (``flatten_params``), sent at once in batches of 100.
        """
        run_tags = {
            **self._environment_tags(),
            "study": self.study,
            "phase": "study",
            "command": shlex.join(sys.argv),
            **{key: str(value) for key, value in tags.items()},
        }
        with self._lock:
            run_id = self._create_run(
                key=f"{self.study}/study/{uuid.uuid4().hex}",
                parent=None,
                match_parent=False,
                name=f"{self.study} · {datetime.now():%Y-%m-%d %H:%M}",
                tags=run_tags,
            )
            buffer = self._buffer(run_id)
            buffer.params.update(flatten_params(spec_dict))
            self._flush_run(run_id, complete=True)
        return run_id

    def arm_run(self, parent_run_id: str, arm: Arm) -> str:
        """The run of ``arm`` under the study run ``parent_run_id``, named like ``adam ·
        mnist1d-mlp``: created on the first call, the same run on any later call with the
        same parent and arm (a resumed invocation has a new parent, hence new arm runs)."""
        self._check_arm(arm)
        with self._lock:
            cached = self._arm_runs.get((parent_run_id, arm.study_name))
            if cached is not None:
                return cached
            run_id = self._create_run(
                key=f"{arm.study_name}/arm",
                parent=parent_run_id,
                match_parent=True,
                name=arm.label,
                tags={**self._arm_tags(arm), "phase": "arm"},
            )
            self._arm_runs[(parent_run_id, arm.study_name)] = run_id
        return run_id

    def trial_run(
        self,
        arm_run_id: str,
        arm: Arm,
        *,
        phase: str,
        trial_number: int,
        config: Mapping[str, Any],
        optuna_trial_id: int | None = None,
        seed: int | None = None,
    ) -> str:
        """The run of one trial (``phase="search"``, named ``adam · mnist1d-mlp · trial 7``)
        or final-phase seed (``phase="final"``, ``... · seed 2``; ``seed`` defaults to the
        config's) under the arm run ``arm_run_id``; returns its run id.

        Keyed by (study, arm, phase, trial number): if a run with that key exists, from any
        process or earlier invocation, it is reused, marked RUNNING and moved under
        ``arm_run_id``; a retry that should continue its trial's run passes that trial's
        number. ``config`` (a trial config, resolved with the workload's defaults here) is
        recorded as params with the first batch of metrics.
        """
        self._check_arm(arm)
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; allowed: {', '.join(PHASES)}")
        if isinstance(trial_number, bool) or not isinstance(trial_number, int) or trial_number < 0:
            raise ValueError(f"trial_number must be an int >= 0, got {trial_number!r}")
        try:
            resolved = TrialConfig.from_dict(config).to_dict()
        except (ValueError, TypeError):
            # The trial will fail on it and record the error; record the config as given.
            resolved = dict(config)
        if phase == "final" and seed is None:
            seed = resolved.get("seed")
        name = f"{arm.label} · " + (
            f"seed {seed}" if phase == "final" else f"trial {trial_number}"
        )
        tags = {**self._arm_tags(arm), "phase": phase, "trial_number": str(trial_number)}
        if optuna_trial_id is not None:
            tags["optuna_trial_id"] = str(optuna_trial_id)
        if seed is not None:
            tags["seed"] = str(seed)
        key = f"{arm.study_name}/{phase}/{trial_number}"
        with self._lock:
            run_id = self._offline_placeholders.get(key)
            if run_id is None or self.resolve_run_id(run_id) is not None:
                run_id = self._create_run(
                    key=key, parent=arm_run_id, match_parent=False, name=name, tags=tags
                )
            self._buffer(run_id).params.update(flatten_params(resolved))
        return run_id

    def log_epoch(self, run_id: str, metrics: EpochMetrics) -> None:
        """Buffer one epoch's metrics (``step`` = epoch) for ``run_id``; no request unless
        the run's buffer fills a batch or is older than ``flush_interval_s``."""
        timestamp = _now_ms()
        values = [(key, getattr(metrics, key)) for key in EPOCH_METRICS]
        values.append(("optimizer_steps", metrics.step))
        with self._lock:
            buffer = self._buffer(run_id)
            buffer.metrics.extend(
                (key, float(value), timestamp, metrics.epoch) for key, value in values
            )
            stale = time.monotonic() - buffer.since >= self.flush_interval_s
            self._flush_run(run_id, complete=stale)

    def finish_trial(self, run_id: str, result: TrialResult, *, optuna_state: str) -> None:
        """Record a trial's outcome and end its run: the final metrics (see the module
        docstring), tags ``status`` (the trainer's), ``optuna_state`` (COMPLETE, PRUNED or
        FAIL), ``metric``, ``direction``, ``device`` and, for a failure, ``error`` and
        ``error_traceback``; run status FINISHED (completed, early_stopped, diverged),
        KILLED (pruned) or FAILED (failed). Sends everything buffered for the run."""
        if optuna_state not in OPTUNA_STATES:
            raise ValueError(
                f"unknown optuna_state {optuna_state!r}; allowed: {', '.join(OPTUNA_STATES)}"
            )
        if result.status not in RUN_STATUS_OF_TRIAL:
            raise ValueError(
                f"unknown trial status {result.status!r}; "
                f"allowed: {', '.join(RUN_STATUS_OF_TRIAL)}"
            )
        last_epoch = len(result.history)
        summary = [
            (key, float(getattr(result, key)), last_epoch)
            for key in FINAL_METRICS
            if getattr(result, key) is not None
        ]
        summary.append(("reached_target", float(result.time_to_target_s is not None), last_epoch))
        if not result.history or result.history[-1].train_time_s != result.train_time_s:
            # Time spent in an epoch that did not finish: its own step, not a second value
            # at the last finished epoch's.
            summary.append(("train_time_s", result.train_time_s, last_epoch + 1))
        tags = {
            "status": result.status,
            "optuna_state": optuna_state,
            "metric": result.metric,
            "direction": result.direction,
            "device": result.device,
        }
        if result.error is not None:
            tags["error"] = result.error
        if result.traceback is not None:
            tags["error_traceback"] = result.traceback
        self._finish(run_id, RUN_STATUS_OF_TRIAL[result.status], summary, tags)

    def finish_run(
        self,
        run_id: str,
        status: str = "FINISHED",
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """End an arm or study run (or a trial run that has no ``TrialResult``) with
        ``status`` (FINISHED, FAILED or KILLED), logging ``metrics`` (at step 0) and
        ``tags`` first. Sends everything buffered for the run."""
        if status not in END_STATUSES:
            raise ValueError(f"unknown run status {status!r}; allowed: {', '.join(END_STATUSES)}")
        summary = [(key, float(value), 0) for key, value in (metrics or {}).items()]
        self._finish(run_id, status, summary, {k: str(v) for k, v in (tags or {}).items()})

    def flush(self) -> None:
        """Send everything buffered, for every run."""
        with self._lock:
            for run_id in list(self._buffers):
                self._flush_run(run_id, complete=True)

    def replay_spool(self) -> int:
        """Send what was spooled while the server was unreachable (by any process of this
        study sharing ``spool_dir``), in the order it was spooled; returns how many records
        were sent. Records that still cannot be sent stay spooled for the next call; if
        another process is replaying the same spool, returns 0 at once."""
        with self._lock:
            self.flush()
            if not (self._path("jsonl").exists() or self._pending_files()):
                return 0  # nothing spooled: touch nothing
            try:
                with _file_lock(self._path("replay.lock"), wait=False):
                    return self._replay()
            except BlockingIOError:
                return 0

    def resolve_run_id(self, run_id: str) -> str | None:
        """The MLflow run id behind ``run_id``: itself unless a ``spool:`` placeholder; for
        one, the run ``replay_spool`` (in any process sharing ``spool_dir``) created for it,
        or None while it has not."""
        if not run_id.startswith(PLACEHOLDER_PREFIX):
            return run_id
        if run_id not in self._ids:
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                self._ids.update(json.loads(self._path("runs.json").read_text()))
        return self._ids.get(run_id)

    # -- building records --

    def _check_arm(self, arm: Arm) -> None:
        if arm.study != self.study:
            raise ValueError(f"arm {arm.study_name!r} is not of study {self.study!r}")

    def _environment_tags(self) -> dict[str, str]:
        environment = {**_process_environment(), **self.git}
        tags = {**environment, MLFLOW_USER: _user()}
        if environment["git_commit"] != "unknown":
            tags[MLFLOW_GIT_COMMIT] = environment["git_commit"]
        return tags

    def _arm_tags(self, arm: Arm) -> dict[str, str]:
        return {
            **self._environment_tags(),
            "study": self.study,
            "arm": arm.study_name,
            "workload": arm.workload,
            "optimizer": arm.optimizer,
        }

    def _buffer(self, run_id: str) -> _RunBuffer:
        buffer = self._buffers.setdefault(run_id, _RunBuffer())
        if buffer.since is None:
            buffer.since = time.monotonic()
        return buffer

    def _create_run(
        self,
        *,
        key: str,
        parent: str | None,
        match_parent: bool,
        name: str,
        tags: Mapping[str, str],
    ) -> str:
        record = {
            "op": "create_run",
            "id": PLACEHOLDER_PREFIX + uuid.uuid4().hex,
            "key": key,
            "parent": parent,
            "match_parent": match_parent,
            "name": name,
            "tags": {k: _truncate(v, MAX_TAG_VAL_LENGTH) for k, v in tags.items()},
            "start_time": _now_ms(),
        }
        run_id = self._submit(record)
        if run_id.startswith(PLACEHOLDER_PREFIX):
            self._offline_placeholders[key] = run_id
        else:
            self._offline_placeholders.pop(key, None)
        return run_id

    def _finish(
        self,
        run_id: str,
        status: str,
        metrics: list[tuple[str, float, int]],
        tags: Mapping[str, str],
    ) -> None:
        """Send ``metrics`` (key, value, step), ``tags`` and the run's buffer; end the run."""
        timestamp = _now_ms()
        with self._lock:
            buffer = self._buffer(run_id)
            buffer.metrics.extend((key, value, timestamp, step) for key, value, step in metrics)
            buffer.tags.update(
                {
                    k: _truncate(v, MAX_TAG_VAL_LENGTH, keep_end=k == "error_traceback")
                    for k, v in tags.items()
                }
            )
            self._flush_run(run_id, complete=True)
            record = {"op": "set_status", "run_id": run_id, "status": status}
            self._submit({**record, "end_time": _now_ms()})

    def _flush_run(self, run_id: str, *, complete: bool) -> None:
        """Send the run's buffer in batches: all of it if ``complete``, else whole batches."""
        buffer = self._buffers.get(run_id)
        while (
            buffer is not None
            and buffer.entities()
            and (complete or buffer.entities() >= MAX_ENTITIES_PER_BATCH)
        ):
            self._submit({"op": "log_batch", "run_id": run_id, **buffer.take_batch()})
        if buffer is not None and not buffer.entities():
            del self._buffers[run_id]

    # -- sending or spooling --

    def _submit(self, record: dict[str, Any]) -> str:
        """Apply ``record`` to MLflow, or spool it; returns the run id it concerns (for a
        spooled new run, its placeholder)."""
        record["time"] = _now_ms()
        concerned = record["id"] if record["op"] == "create_run" else record["run_id"]
        refs = [record["parent"]] if record["op"] == "create_run" else [record["run_id"]]
        online = (
            time.monotonic() >= self._offline_until
            and all(ref is None or self.resolve_run_id(ref) is not None for ref in refs)
            and not (record["op"] != "create_run" and concerned in self._spooled_runs)
        )
        if online:
            try:
                return self._with_retries(lambda: self._apply(record, replaying=False))
            except Exception as error:
                if not is_transient(error):
                    raise
                self._went_offline(error)
        self._spool(record)
        self._spooled_runs.add(concerned)
        return concerned

    def _with_retries(self, send: Callable[[], _T]) -> _T:
        for backoff_s in (*RETRY_BACKOFF_S, None):
            try:
                result = send()
            except Exception as error:
                if backoff_s is None or not is_transient(error) or _is_timeout(error):
                    raise
                time.sleep(backoff_s)
            else:
                if self._warned and self._offline_until:
                    logger.info("MLflow tracking store %s is reachable again", self.tracking_uri)
                self._offline_until = 0.0
                return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _went_offline(self, error: Exception) -> None:
        self._offline_until = time.monotonic() + self.offline_retry_s
        if not self._warned:
            self._warned = True
            logger.warning(
                "MLflow tracking store %s is unreachable (%s); the study goes on and its "
                "records are spooled to %s, to be sent by replay_spool() when it is back",
                self.tracking_uri,
                _first_line(error),
                self._path("jsonl"),
            )

    def _spool(self, record: dict[str, Any]) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self._path("lock")):
            _write_records(self._path("jsonl"), [record])

    def _path(self, suffix: str) -> Path:
        return self.spool_dir / f"{self.study}.{suffix}"

    # -- talking to MLflow --

    def _experiment(self) -> str:
        if self._experiment_id is not None:
            return self._experiment_id
        experiment = self.client.get_experiment_by_name(self.study)
        if experiment is None:
            try:
                self._experiment_id = self.client.create_experiment(
                    self.study,
                    artifact_location=artifact_location(self.tracking_uri, self.study),
                    tags=EXPERIMENT_TAGS,
                )
            except MlflowException as error:
                if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                    raise
                self._experiment_id = self.client.get_experiment_by_name(self.study).experiment_id
        else:
            if experiment.lifecycle_stage == "deleted":
                # MLflow keeps a deleted experiment's name taken; bring it back.
                logger.warning("restoring deleted MLflow experiment %r", self.study)
                self.client.restore_experiment(experiment.experiment_id)
            self._experiment_id = experiment.experiment_id
        return self._experiment_id

    def _apply(self, record: dict[str, Any], *, replaying: bool) -> str:
        if record["op"] == "create_run":
            return self._apply_create(record, replaying=replaying)
        run_id = self.resolve_run_id(record["run_id"])
        assert run_id is not None, "records of placeholder runs wait for their run"
        if record["op"] == "log_batch":
            self._apply_log_batch(run_id, record)
        elif not (replaying and self._superseded(run_id, record)):
            self.client.set_terminated(run_id, record["status"], end_time=record["end_time"])
        return run_id

    def _apply_create(self, record: dict[str, Any], *, replaying: bool) -> str:
        experiment_id = self._experiment()
        tags = dict(record["tags"])
        tags[KEY_TAG] = record["key"]
        search = f"tags.`{KEY_TAG}` = '{record['key']}'"
        if record["parent"] is not None:
            parent = self.resolve_run_id(record["parent"])
            tags[MLFLOW_PARENT_RUN_ID] = parent
            if record["match_parent"]:
                search += f" and tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}'"
        found = self.client.search_runs(
            [experiment_id], search, max_results=1, order_by=["attributes.start_time ASC"]
        )
        if not found:
            run = self.client.create_run(
                experiment_id, start_time=record["start_time"], tags=tags, run_name=record["name"]
            )
            self._known_params[run.info.run_id] = {}
            return run.info.run_id
        run = found[0]
        run_id = run.info.run_id
        self._known_params[run_id] = dict(run.data.params)
        changed = [RunTag(k, v) for k, v in tags.items() if run.data.tags.get(k) != v]
        for start in range(0, len(changed), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=changed[start : start + MAX_PARAMS_TAGS_PER_BATCH])
        # Replayed later, "running again" would be stale: what follows it in the spool says
        # how the attempt ended.
        if not replaying and run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        return run_id

    def _apply_log_batch(self, run_id: str, record: dict[str, Any]) -> None:
        params = []
        if record["params"]:
            known = self._known_params.get(run_id)
            if known is None:
                known = self._known_params[run_id] = dict(self.client.get_run(run_id).data.params)
            for key, value in record["params"]:
                if key not in known:
                    params.append(Param(key, value))
                elif known[key] != value:
                    # MLflow never changes a param; the run keeps its first attempt's.
                    logger.warning(
                        "run %s already has param %s=%r; not recording %r",
                        run_id,
                        key,
                        known[key],
                        value,
                    )
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in record["metrics"]]
        tags = [RunTag(k, v) for k, v in record["tags"]]
        if metrics or params or tags:
            self.client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
            self._known_params.setdefault(run_id, {}).update((p.key, p.value) for p in params)

    def _superseded(self, run_id: str, record: dict[str, Any]) -> bool:
        """Whether the run already ended after this spooled end (a later attempt ended it
        while this record waited)."""
        info = self.client.get_run(run_id).info
        return info.status in END_STATUSES and (info.end_time or 0) > record["end_time"]

    # -- replay --

    def _replay(self) -> int:
        with _file_lock(self._path("lock")):
            live = self._path("jsonl")
            if live.exists():
                live.replace(self._path(f"{uuid.uuid4().hex}.pending"))
        files = self._pending_files()
        records = [record for path in files for record in _read_records(path)]
        records.sort(key=lambda record: record["time"])  # stable: a process's order is kept
        sent, waiting, held, refused = 0, [], set(), set()
        for index, record in enumerate(records):
            concerned = record["id"] if record["op"] == "create_run" else record["run_id"]
            refs = [record["parent"]] if record["op"] == "create_run" else [concerned]
            if any(ref in refused for ref in refs):
                self._reject(record, "MLflow refused to create its run")
                if record["op"] == "create_run":
                    refused.add(concerned)
                continue
            if any(ref in held or self.resolve_run_id(ref) is None for ref in refs if ref):
                waiting.append(record)
                held.add(concerned)
                continue
            try:
                run_id = self._with_retries(lambda r=record: self._apply(r, replaying=True))
            except Exception as error:
                if is_transient(error):
                    self._went_offline(error)
                    waiting.extend(records[index:])
                    break
                self._reject(record, _first_line(error))
                if record["op"] == "create_run":
                    refused.add(concerned)
                continue
            sent += 1
            if record["op"] == "create_run":
                self._ids[record["id"]] = run_id
                self._save_ids()
        if waiting:
            _write_records(self._path(f"{uuid.uuid4().hex}.pending"), waiting)
        for path in files:
            path.unlink()
        self._spooled_runs = {
            record["id"] if record["op"] == "create_run" else record["run_id"]
            for record in waiting
        }
        if sent:
            logger.info("replayed %d spooled MLflow records of study %s", sent, self.study)
        return sent

    def _pending_files(self) -> list[Path]:
        """Spool files taken for replay: exactly ``<study>.<uuid hex>.pending`` (a study
        named ``<study>.x`` has files of its own)."""
        pattern = f"{glob.escape(self.study)}.{'[0-9a-f]' * 32}.pending"
        return sorted(self.spool_dir.glob(pattern))

    def _save_ids(self) -> None:
        path = self._path("runs.json")
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            self._ids = {**json.loads(path.read_text()), **self._ids}
        temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}")
        temporary.write_text(json.dumps(self._ids))
        temporary.replace(path)

    def _reject(self, record: dict[str, Any], reason: str) -> None:
        logger.warning(
            "MLflow refused spooled record %s of study %s (%s); kept in %s",
            record["op"],
            self.study,
            reason,
            self._path("rejected.jsonl"),
        )
        _write_records(self._path("rejected.jsonl"), [{**record, "error": reason}])


def _now_ms() -> int:
    return int(time.time() * 1000)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


@functools.cache
def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


__all__ = [
    "DEFAULT_SPOOL_DIR",
    "EPOCH_METRICS",
    "FINAL_METRICS",
    "StudyTracker",
    "artifact_location",
    "flatten_params",
    "is_transient",
    "resolve_tracking_uri",
    "run_environment",
]

"""The ``optarena`` command.

Each subcommand is a function that adds its parser to the subparsers and sets ``handler``
to the function that runs it; ``COMMANDS`` lists them, so adding a subcommand is one
function and one entry. Exit codes: 0 ok, 1 the run failed (a diverged or failed trial, a
failed study), 2 bad input (unknown name, invalid value, missing data file), 130 a study
interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # the trainer imports torch: loaded only when a command needs it
    from services.report import ReportOutcome
    from services.trainer import EpochMetrics, TrialResult

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
# PyYAML (YAML 1.1) reads "1e-3" as a string: it wants "1.0e-3". Numbers written the
# ordinary way are converted here so that --set hparams.lr=1e-3 means 0.001.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class BadInput(Exception):
    """Input the user has to fix; reported with exit code 2."""


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML (``0.1``, ``1e-3``, ``true``, ``null``, ``[0.9, 0.99]``,
    ``relu``); anything that is not valid YAML stays a string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return _numbers_from_strings(value)


def _numbers_from_strings(value: Any) -> Any:
    if isinstance(value, list):
        return [_numbers_from_strings(v) for v in value]
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return float(value)
    return value


def apply_settings(config: dict[str, Any], settings: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` settings with dotted keys (``hparams.lr=0.01`` sets
    ``config["hparams"]["lr"]``) to a copy of ``config``."""
    result = json.loads(json.dumps(config))
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep or not key:
            raise BadInput(f"--set expects key=value, got {setting!r}")
        *parents, leaf = key.split(".")
        target = result
        for part in parents:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                raise BadInput(f"--set {key}: {part!r} is {child!r}, not a mapping")
            target = child
        target[leaf] = parse_value(text)
    return result


# --- optarena train -------------------------------------------------------------------------


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="run one trial (one workload, optimizer and configuration) and print its result",
        description=(
            "Train one model with one configuration and print the trial's result. Any trial "
            "config key can be set with --set, dotted for nested keys, values as YAML: "
            "--set hparams.lr=0.01 --set model.dropout=0.2 --set schedule.name=cosine. "
            "Exit code 0 for a completed or early-stopped trial, 1 for a diverged or failed "
            "one, 2 for invalid input."
        ),
    )
    parser.add_argument("--workload", required=True, help="workload name, e.g. mnist1d-mlp")
    parser.add_argument("--optimizer", required=True, help="optimizer name, e.g. adam")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a trial config key (repeatable)",
    )
    parser.add_argument("--epochs", type=int, help="epochs (default: the workload's)")
    parser.add_argument("--seed", type=int, help="seed (default 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto")
    parser.add_argument("--data-dir", help="data directory (default $OPTARENA_DATA_DIR)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from services.trainer import TrialConfig, run_trial
    from services.workloads import DataFileMissing

    config: dict[str, Any] = {"workload": args.workload, "optimizer": args.optimizer}
    config = apply_settings(config, args.settings)
    for key, value in (
        ("epochs", args.epochs),
        ("seed", args.seed),
        ("device", args.device),
        ("data_dir", args.data_dir),
    ):
        if value is not None:
            config[key] = value
    try:
        trial_config = TrialConfig.from_dict(config)
        result = run_trial(trial_config, reporter=None if args.json else _print_epoch)
    except (ValueError, DataFileMissing) as error:
        raise BadInput(str(error)) from error
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        _print_summary(result)
    return EXIT_OK if result.status in ("completed", "early_stopped") else EXIT_FAILED


def _print_epoch(metrics: EpochMetrics) -> None:
    print(
        f"epoch {metrics.epoch:>4}  step {metrics.step:>7}  train_loss {metrics.train_loss:.4f}"
        f"  val {metrics.val_metric:.4f}  lr {metrics.lr:.3g}  {metrics.epoch_time_s:.2f}s",
        flush=True,
    )


def _print_summary(result: TrialResult) -> None:
    def fmt(value: float | None, spec: str = ".4f") -> str:
        return "-" if value is None else format(value, spec)

    rows = [
        ("status", result.status),
        (f"final val {result.metric}", fmt(result.final_val_metric)),
        (f"test {result.metric}", fmt(result.test_metric)),
        ("target", f"{result.target} ({result.direction})"),
        (
            "time to target",
            f"{fmt(result.time_to_target_s, '.2f')} s, {fmt(result.steps_to_target, 'd')} steps",
        ),
        (
            "train time",
            f"{result.train_time_s:.2f} s, {result.steps} steps, "
            f"{result.samples_per_s:,.0f} samples/s on {result.device}",
        ),
    ]
    if result.diverged_at_step is not None:
        rows.append(("diverged at step", str(result.diverged_at_step)))
    if result.error is not None:
        rows.append(("error", result.error))
    width = max(len(label) for label, _ in rows) + 2
    print("\n".join(f"{label:<{width}}{value}" for label, value in rows))


# --- optarena run ---------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def add_run_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a study: tune every optimizer of a study file on Ray workers",
        description=(
            "Run the study file SPEC: search each arm's (workload x optimizer) "
            "hyperparameters with the same budget on Ray workers, then re-run each arm's "
            "best configuration with the final-phase seeds; results go to the Optuna "
            "storage and MLflow, and the comparison report is written at the end (see "
            "`optarena report`). Running the same command again resumes a stopped study "
            "without repeating finished trials. Exit code 0 when every arm finished, 1 when "
            "the study failed (or an arm has no completed trial, or the report could not be "
            "written), 2 for invalid input, 130 when interrupted (Ctrl-C)."
        ),
    )
    parser.add_argument(
        "spec", metavar="SPEC", help="the study file, e.g. studies/quickstart.yaml"
    )
    parser.add_argument(
        "--trials", type=positive_int, metavar="N", help="trials per arm (default: the file's)"
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="trials running at once (default: the file's resources.workers)",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage, journal://PATH or postgresql+psycopg://USER@HOST:PORT/DB "
        "(default: $OPTARENA_STORAGE, the file's storage, journal://.optarena/optuna.journal)",
    )
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (default: $OPTARENA_TRACKING_URI, the file's tracking_uri, "
        "sqlite:///.optarena/mlflow.db)",
    )
    parser.add_argument(
        "--address",
        metavar="ADDR",
        help="join the Ray cluster whose head is at ADDR (host:port, or auto) instead of "
        "starting a local one",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the study file and print the plan (arms, budget, trials left, resources, "
        "endpoints) without running anything",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="print one line per finished trial instead of the live table (the default when "
        "stdout is not a terminal)",
    )
    parser.add_argument(
        "--grace-period",
        type=positive_int,
        metavar="S",
        help="seconds without a heartbeat after which a running trial counts as lost and is "
        "retried, e.g. after its worker's machine went away (default 60)",
    )
    parser.add_argument(
        "--dashboard", action="store_true", help="start Ray's dashboard with the local instance"
    )
    parser.add_argument(
        "--report-dir",
        metavar="DIR",
        help="where the report written at the end goes (default: .optarena/reports/STUDY)",
    )
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="do not write the report at the end (`optarena report STUDY` writes it later)",
    )
    parser.set_defaults(handler=run_study_file)


def run_study_file(args: argparse.Namespace) -> int:
    from services.search import GRACE_PERIOD_S
    from services.spec import SpecError, load_spec, parse_spec, resolve_endpoints
    from services.study import format_plan, plan_study, run_study

    try:
        spec = load_spec(args.spec)
        if args.trials is not None or args.workers is not None:
            # Validated again, as if the file said so (a grid has room for so many trials).
            data = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
            if args.trials is not None:
                data["budget"] = {**data["budget"], "trials": args.trials}
            if args.workers is not None:
                data["resources"] = {**data.get("resources", {}), "workers": args.workers}
            spec = parse_spec(data, source=f"{args.spec} with the command's options")
        storage, tracking = resolve_endpoints(
            spec, storage=args.storage, tracking_uri=args.tracking_uri
        )
    except SpecError as error:
        raise BadInput(str(error)) from None
    if args.dry_run:
        print(format_plan(plan_study(spec, storage, tracking, args.address)))
        return EXIT_OK
    outcome = run_study(
        spec,
        storage,
        tracking,
        address=args.address,
        grace_period_s=args.grace_period or GRACE_PERIOD_S,
        quiet=args.quiet,
        dashboard=args.dashboard,
    )
    if outcome.exit_code == EXIT_OK:
        print(outcome.message)
    else:
        print(f"optarena run: {outcome.message}", file=sys.stderr)
    # A study that ran (finished, or failed with some arms recorded) gets its report; one
    # stopped by Ctrl-C or bad input does not, and neither does one that recorded nothing.
    ran = outcome.exit_code in (EXIT_OK, EXIT_FAILED) and outcome.parent_run_id is not None
    if args.no_report or not ran:
        return outcome.exit_code
    reported = write_study_report(spec.study, tracking.uri, storage.uri, args.report_dir)
    return outcome.exit_code if reported else EXIT_FAILED


def write_study_report(
    study: str, tracking_uri: str, storage_url: str | None, out_dir: str | None
) -> bool:
    """Write ``study``'s report and print where it is; a report that cannot be written is
    reported on stderr (the study's records are unaffected) and returns False."""
    from services.report import build_report

    try:
        outcome = build_report(study, tracking_uri, out_dir, storage_url=storage_url)
    except Exception as error:  # the study is recorded: say so and go on
        print(
            f"optarena run: the report could not be written ({type(error).__name__}: {error}); "
            f"the study's records are intact: `optarena report {study}` retries it",
            file=sys.stderr,
        )
        return False
    print_report_outcome(outcome)
    return True


# --- optarena report ------------------------------------------------------------------------


def add_report_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write a study's comparison report (HTML, Markdown, CSV)",
        description=(
            "Read the study's runs from MLflow (and its Optuna storage, for hyperparameter "
            "importances) and write DIR/index.html (self-contained), DIR/report.md and one "
            "CSV per table: per-arm results with confidence intervals over the final-phase "
            "seeds, rankings with significance tests, performance profiles and figures. "
            "They are also logged to the study's latest MLflow run. A partial study is "
            "reported with notes on what is missing. Exit code 2 for a study the tracking "
            "store does not have (the studies it has are listed)."
        ),
    )
    parser.add_argument("study", metavar="STUDY", help="the study's name, e.g. quickstart")
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (default: $OPTARENA_TRACKING_URI, "
        "sqlite:///.optarena/mlflow.db)",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage for the importances (default: the one the study recorded)",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="output directory (default: .optarena/reports/STUDY)"
    )
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    import os

    from services.report import UnknownStudy, build_report
    from services.spec import DEFAULT_TRACKING_URI, TRACKING_URI_ENV

    tracking_uri = args.tracking_uri or os.environ.get(TRACKING_URI_ENV) or DEFAULT_TRACKING_URI
    try:
        outcome = build_report(args.study, tracking_uri, args.out, storage_url=args.storage)
    except (UnknownStudy, FileNotFoundError) as error:
        raise BadInput(str(error)) from error
    print_report_outcome(outcome)
    return EXIT_OK


def print_report_outcome(outcome: ReportOutcome) -> None:
    for note in outcome.notes:
        print(f"note: {note}")
    print(f"report: {outcome.out_dir / 'index.html'}")
    if outcome.logged_to_run:
        print(f"logged to MLflow run {outcome.logged_to_run} (artifacts: report/)")


# --- entry point ----------------------------------------------------------------------------


def add_dashboard_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="serve the MLflow UI over the study records (127.0.0.1 unless --host)",
        description=(
            "Serve MLflow's UI over the tracking store that studies record to, on 127.0.0.1 "
            "by default, and print its URL. A tracking URI that already is a server "
            "(http://...) is only printed. Stop with Ctrl-C."
        ),
    )
    parser.add_argument(
        "--tracking-uri",
        help="default: $OPTARENA_TRACKING_URI, else sqlite:///.optarena/mlflow.db",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=5000, help="default 5000")
    parser.set_defaults(handler=run_dashboard)


def run_dashboard(args: argparse.Namespace) -> int:
    import os

    from services.dashboard import start_dashboard
    from services.spec import DEFAULT_TRACKING_URI, TRACKING_URI_ENV

    uri = args.tracking_uri or os.environ.get(TRACKING_URI_ENV) or DEFAULT_TRACKING_URI
    try:
        dashboard = start_dashboard(uri, host=args.host, port=args.port)
    except FileNotFoundError as error:
        raise BadInput(str(error)) from error
    if dashboard.process is None:
        print(f"the tracking server is the dashboard: {dashboard.url}")
        return EXIT_OK
    try:
        dashboard.wait_until_ready()
        print(f"MLflow dashboard: {dashboard.url}  (Ctrl-C stops it)", flush=True)
        dashboard.process.wait()
    except KeyboardInterrupt:
        return EXIT_OK
    except RuntimeError as error:
        print(f"optarena dashboard: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        dashboard.stop()
    return EXIT_OK


COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_train_parser,
    add_run_parser,
    add_report_parser,
    add_dashboard_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optarena",
        description="Distributed hyperparameter benchmarking of deep-learning optimizers.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``optarena`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except BadInput as error:
        print(f"optarena {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())

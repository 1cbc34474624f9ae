"""Comparison reports: which optimizer and settings win on which workload, by how much, and
how sure we are.

``build_report(study, tracking_uri)`` (the ``optarena report`` command) reads a study's
MLflow runs (and its Optuna storage, for hyperparameter importances) into pandas
(``records``), computes the tables (``tables``, from the plain statistics in
``statistics``) and figures (``figures``: data apart from drawing), and writes
``index.html``, ``report.md`` and one CSV per table (``render``), logged to the study's
latest study run as MLflow artifacts.
"""

from services.report.build import ReportOutcome, build_report, default_out_dir
from services.report.records import StudyRecords, UnknownStudy, load_records
from services.report.tables import ReportTables, build_tables

__all__ = [
    "ReportOutcome",
    "ReportTables",
    "StudyRecords",
    "UnknownStudy",
    "build_report",
    "build_tables",
    "default_out_dir",
    "load_records",
]

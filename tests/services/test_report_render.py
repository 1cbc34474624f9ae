"""Rendering a report: the files it writes hold the tables (HTML, Markdown, CSV) and the
figures (PNG, embedded in the HTML), from synthetic records (``report_records``)."""

from __future__ import annotations

import base64
import io
import math
import re
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from report_records import make_records, scenario_rows

from services.report.build import compose_report
from services.report.render import Report, format_number, markdown_table, write_report

FIGURES = (
    "learning_curves",
    "lr_sensitivity",
    "importance",
    "performance_profile",
    "optimization_history",
)
SHOWN_TABLES = (
    "summary",
    "ranking",
    "overall_ranking",
    "performance_ratios",
    "performance_profile",
)
CSV_TABLES = (*SHOWN_TABLES, "importance", "trials")


@pytest.fixture(scope="module")
def report() -> Report:
    run_ids = [f"digits-mlp-adam-final-{n}" for n in (1, 2, 3)]
    histories = pd.DataFrame(
        {
            "run_id": run_ids * 2,
            "epoch": [1, 1, 1, 2, 2, 2],
            "val_metric": [0.5, 0.6, 0.7, 0.9, 0.95, 0.97],
            "train_time_s": [1.0, 1.1, 1.2, 2.0, 2.1, 2.2],
            "optimizer_steps": [10.0] * 3 + [20.0] * 3,
        }
    )
    importances = pd.DataFrame(
        {
            "workload": ["digits-mlp", "digits-mlp"],
            "optimizer": ["adam", "adam"],
            "param": ["learning_rate", "weight_decay"],
            "importance": [0.8, 0.2],
        }
    )
    records = make_records(scenario_rows(), histories=histories, importances=importances)
    return compose_report(records, "optarena report synthetic")


@pytest.fixture(scope="module")
def out_dir(report: Report, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("report")
    write_report(report, directory)
    return directory


def test_writes_html_markdown_figures_and_one_csv_per_table(out_dir: Path) -> None:
    written = {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()}
    assert written == {
        "index.html",
        "report.md",
        *(f"figures/{name}.png" for name in FIGURES),
        *(f"{name}.csv" for name in CSV_TABLES),
    }


def test_csv_files_hold_the_unformatted_tables(report: Report, out_dir: Path) -> None:
    tables = {table.name: table for table in report.tables}
    summary = pd.read_csv(out_dir / "summary.csv")
    pd.testing.assert_frame_equal(
        summary[["workload", "optimizer", "test_mean", "trials_used"]],
        tables["summary"].data[["workload", "optimizer", "test_mean", "trials_used"]],
        check_dtype=False,
    )
    adam = summary[(summary["workload"] == "digits-mlp") & (summary["optimizer"] == "adam")]
    assert adam["test_mean"].item() == pytest.approx(0.95, rel=1e-12)
    ratios = pd.read_csv(out_dir / "performance_ratios.csv", index_col="workload")
    assert ratios.loc["digits-mlp", "sgd"] == math.inf
    profile = pd.read_csv(out_dir / "performance_profile.csv", index_col="tau")
    assert len(profile) == 31 and profile.index[-1] == 4.0
    trials = pd.read_csv(out_dir / "trials.csv")
    assert len(trials) == len(scenario_rows())


def html_table(page: str, table_id: str) -> str:
    match = re.search(rf'<table[^>]*id="{table_id}"[^>]*>(.*?)</table>', page, re.S)
    assert match, f"no table {table_id}"
    return match.group(1)


def test_html_has_every_table_with_its_rows(out_dir: Path) -> None:
    page = (out_dir / "index.html").read_text(encoding="utf-8")
    for name in SHOWN_TABLES:
        html_table(page, name)
    summary = html_table(page, "summary")
    assert summary.count("<tr") == 1 + 6  # header + one row per arm
    assert "hparams.lr=0.003" in summary
    assert "0.95 ± 0.01" in summary
    assert "2 (67%)" in summary  # median time to target, share of seeds reaching it
    ranking = html_table(page, "ranking")
    assert ranking.count("<tr") == 1 + 6
    provenance = html_table(page, "provenance-table")
    assert "0123abc" in provenance and "torch 2.13.0" in provenance
    commands = html_table(page, "commands-table")
    assert "git checkout 0123abc &amp;&amp; optarena run studies/synthetic.yaml" in commands
    assert "optarena report synthetic" in commands
    assert "nadam · digits-mlp: no runs yet" in page


def test_html_is_self_contained_with_decodable_images(out_dir: Path) -> None:
    page = (out_dir / "index.html").read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing loaded from elsewhere
    assert "<script" not in page
    images = re.findall(r'<img id="img-(\w+)"[^>]*src="data:image/png;base64,([^"]+)"', page)
    assert [name for name, _ in images] == list(FIGURES)
    for name, encoded in images:
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(encoded)), format="png")
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400, name
        assert pixels.std() > 0.05, f"{name} is blank"
        assert base64.b64decode(encoded) == (out_dir / "figures" / f"{name}.png").read_bytes()


def test_markdown_has_the_tables_and_links_the_figures(out_dir: Path) -> None:
    text = (out_dir / "report.md").read_text(encoding="utf-8")
    assert text.startswith("# Study `synthetic`")
    for title in ("## Arms", "## Ranking per workload", "## Overall ranking"):
        assert title in text
    assert "| digits-mlp | adam |" in text
    for name in FIGURES:
        assert f"(figures/{name}.png)" in text


def test_markdown_table_escapes_pipes() -> None:
    frame = pd.DataFrame({"a": ["x|y"], "b": ["2"]})
    assert markdown_table(frame) == "| a | b |\n|---|---|\n| x\\|y | 2 |"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "–"),
        (math.nan, "–"),
        (math.inf, "∞"),
        (-math.inf, "−∞"),
        (True, "yes"),
        (0.000123456, "0.0001235"),
        (3, "3"),
        ("adam", "adam"),
    ],
)
def test_cells_are_formatted_for_reading(value: object, text: str) -> None:
    assert format_number(value) == text

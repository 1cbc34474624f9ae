"""Writing a report: ``index.html`` (self-contained: styles inline, figures embedded as
base64 PNG, no script, opens from disk), ``report.md`` (figures as PNG files beside it, in
``figures/``) and one CSV per table with the unformatted numbers.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from services.report.figures import ReportFigure

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
th { background: #f0f0f0; }
.scroll { overflow-x: auto; }
caption, .caption { caption-side: top; text-align: left; color: #555; margin: 0.3em 0; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f6f6f6; padding: 0 0.2em; }
.notes li { color: #8a5a00; }
"""


@dataclass(frozen=True)
class ReportTable:
    """A table of the report: ``data`` goes to ``<name>.csv`` as it is; ``shown`` (the
    same rows, formatted for reading) to the HTML and Markdown, unless None (a CSV only,
    such as the raw trial records)."""

    name: str
    title: str
    caption: str
    data: pd.DataFrame
    shown: pd.DataFrame | None
    csv_index: bool = False


@dataclass
class Report:
    """Everything a report says, ready to write."""

    study: str
    generated: str
    provenance: list[tuple[str, str]]
    notes: list[str]
    tables: list[ReportTable]
    figures: list[ReportFigure]
    commands: list[tuple[str, str]] = field(default_factory=list)


def format_number(value: object, spec: str = ".4g") -> str:
    """A cell as text: numbers to ``spec``, infinity as ∞, missing as –, booleans yes/no."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if isinstance(value, int | float):
        return format(value, spec)
    return str(value)


def formatted(frame: pd.DataFrame, specs: dict[str, str] | None = None) -> pd.DataFrame:
    """``frame`` with every cell as text (``format_number``; ``specs`` per column)."""
    specs = specs or {}
    shown = frame.astype(object).copy()
    for column in shown.columns:
        spec = specs.get(column, ".4g")
        shown[column] = [format_number(_plain(v), spec) for v in frame[column].tolist()]
    return shown


def _plain(value: object) -> object:
    """numpy scalars as Python ones (``isinstance`` checks above)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def _shown(report: Report) -> list[ReportTable]:
    return [table for table in report.tables if table.shown is not None]


# ---- HTML ----------------------------------------------------------------------------------


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page."""
    escape = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>optarena report · {escape(report.study)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Study <code>{escape(report.study)}</code></h1>",
        f'<p class="caption">Generated {escape(report.generated)}.</p>',
        '<section id="provenance"><h2>Provenance</h2>',
        _html_pairs("provenance-table", report.provenance),
        "<h3>Reproduce</h3>",
        _html_pairs("commands-table", report.commands, code=True),
        "</section>",
    ]
    if report.notes:
        items = "".join(f"<li>{escape(note)}</li>" for note in report.notes)
        parts.append(f'<section id="notes"><h2>Partial data</h2><ul class="notes">{items}</ul>')
        parts.append("</section>")
    for table in _shown(report):
        parts += [
            f'<section id="section-{table.name}"><h2>{escape(table.title)}</h2>',
            f'<p class="caption">{escape(table.caption)}</p>',
            '<div class="scroll">',
            table.shown.to_html(index=False, table_id=table.name, border=0, escape=True),
            "</div>",
            "</section>",
        ]
    for figure in report.figures:
        encoded = base64.b64encode(figure.png).decode("ascii")
        parts += [
            f'<section id="figure-{figure.name}"><h2>{escape(figure.title)}</h2>',
            f'<p class="caption">{escape(figure.caption)}</p>',
            f'<img id="img-{figure.name}" alt="{escape(figure.title)}" '
            f'src="data:image/png;base64,{encoded}">',
            "</section>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_pairs(table_id: str, pairs: list[tuple[str, str]], code: bool = False) -> str:
    escape = html.escape
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{'<code>' if code else ''}{escape(v)}"
        f"{'</code>' if code else ''}</td></tr>"
        for k, v in pairs
    )
    return f'<table id="{table_id}">{rows}</table>'


# ---- Markdown ------------------------------------------------------------------------------


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of text cells (``|`` escaped)."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(c) for c in frame.columns) + " |",
        "|" + "---|" * len(frame.columns),
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines)


def render_markdown(report: Report, figure_dir: str = "figures") -> str:
    """The report as Markdown; figures are linked as ``figure_dir/<name>.png``."""
    parts = [f"# Study `{report.study}`", "", f"Generated {report.generated}.", ""]
    parts += ["## Provenance", ""]
    parts += [f"- {k}: {v}" for k, v in report.provenance]
    parts += ["", "Reproduce:", ""]
    parts += [f"- {k}: `{v}`" for k, v in report.commands]
    if report.notes:
        parts += ["", "## Partial data", ""] + [f"- {note}" for note in report.notes]
    for table in _shown(report):
        parts += ["", f"## {table.title}", "", table.caption, "", markdown_table(table.shown)]
    for figure in report.figures:
        parts += [
            "",
            f"## {figure.title}",
            "",
            figure.caption,
            "",
            f"![{figure.title}]({figure_dir}/{figure.name}.png)",
        ]
    return "\n".join(parts) + "\n"


# ---- files ---------------------------------------------------------------------------------


def write_report(report: Report, out_dir: Path) -> list[Path]:
    """Write ``index.html``, ``report.md``, ``figures/*.png`` and ``<table>.csv`` under
    ``out_dir`` (created); returns the paths written."""
    figure_dir = out_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(path: Path, save: Callable[[Path], object]) -> None:
        save(path)
        written.append(path)

    write(out_dir / "index.html", lambda p: p.write_text(render_html(report), encoding="utf-8"))
    write(out_dir / "report.md", lambda p: p.write_text(render_markdown(report), encoding="utf-8"))
    for figure in report.figures:
        write(figure_dir / f"{figure.name}.png", lambda p, f=figure: p.write_bytes(f.png))
    for table in report.tables:
        write(
            out_dir / f"{table.name}.csv",
            lambda p, t=table: t.data.to_csv(p, index=t.csv_index),
        )
    return written

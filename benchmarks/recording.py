"""Where benchmark figures go: a marked section of docs/BENCHMARKS.md, with the environment.

Every benchmark writes one section between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``
markers and leaves the others alone, so benchmarks can be re-run independently. Each section
names the hardware, library versions and commit that produced its numbers.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Measured figures, each section written by the benchmark script it names. Ratios compare\n"
    "against a reference measured in the same run on the same machine; absolute times only\n"
    "make sense with the hardware line beside them. Re-run with `make bench`.\n"
)


def git_commit() -> str:
    """The short commit of the checkout, with ``+dirty`` when it has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> str:
    """A one-line description of the device the numbers were measured on."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def environment_lines(device: torch.device) -> list[str]:
    return [
        f"- hardware: {hardware(device)}",
        f"- software: Python {platform.python_version()}, torch {torch.__version__}",
        f"- commit: {git_commit()}",
        # Shared machines: a high load average says the absolute times are inflated.
        f"- load average when written (1/5/15 min): "
        f"{' / '.join(f'{load:.1f}' for load in os.getloadavg())}",
    ]


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section ``name`` of ``path`` with ``body``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)

"""``optarena dashboard``: the MLflow UI over a study's records, on loopback by default.

For the embedded store (``sqlite:///.optarena/mlflow.db``) this starts ``mlflow server`` on
127.0.0.1 over the same database, so MLflow's own views work on optarena's runs: the
experiment per study, nested runs per arm and trial, and "compare runs" across trials (the
params and metrics have the same names in every trial run). A tracking URI that already is
a server (``http://...``) needs no process: the dashboard is that server's address.

Binding to anything but loopback exposes every run to the network, so it takes an explicit
``--host``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from services.tracking import resolve_tracking_uri

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
# MLflow's server starts a pool of job-runner processes that the UI never needs.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@dataclass
class Dashboard:
    """A running MLflow UI: its address and the server process (None for a remote one)."""

    url: str
    process: subprocess.Popen[bytes] | None

    def wait_until_ready(self, timeout_s: float = 120.0) -> None:
        """Return once the UI answers ``/health``; ``RuntimeError`` if the server exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)
        raise RuntimeError(f"the dashboard at {self.url} did not answer in {timeout_s:.0f} s")

    def stop(self) -> None:
        """End the server and the workers it started (its own process group)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def server_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """The ``mlflow server`` command line serving the UI over ``tracking_uri``."""
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if tracking_uri.startswith("sqlite:///"):
        # Artifacts the runs logged live beside the database (services/tracking.py).
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        command += ["--artifacts-destination", str(database.parent / "mlartifacts")]
    return command


def start_dashboard(
    tracking_uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> Dashboard:
    """Start the MLflow UI over ``tracking_uri`` (or point at it, if it is a server)."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        return Dashboard(uri.rstrip("/"), None)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise FileNotFoundError(
            f"no tracking database at {uri.removeprefix('sqlite:///')}: run a study first "
            "(`optarena run studies/quickstart.yaml`) or pass --tracking-uri"
        )
    process = subprocess.Popen(
        server_command(uri, host, port),
        env={**os.environ, **SERVER_ENV},
        start_new_session=True,  # its own process group, so stop() reaches its workers
    )
    shown_host = f"[{host}]" if ":" in host else host
    return Dashboard(f"http://{shown_host}:{port}", process)

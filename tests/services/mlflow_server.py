"""A real ``mlflow server`` process on loopback for tests, and a relay to cut it off.

``start_mlflow_server(root)`` starts ``mlflow server`` on 127.0.0.1 on a free port, with a
SQLite backend store and proxied artifacts (``--serve-artifacts``) under ``root``, waits for
``/health`` and returns a :class:`MlflowServer`; ``stop()`` ends its process group. The
``mlflow_server`` fixture starts one per test session (startup takes 10-40 s on a busy
2-core machine); tests share it and keep apart by experiment names. A test that takes the
server down must not use the shared one: it starts its own, or cuts a :class:`TcpRelay`
placed in front of it, which refuses connections while stopped like a server that is down.

Use the fixture from a test module or conftest.py with
``from mlflow_server import mlflow_server  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The server's job runner starts about ten task-queue processes that tracking tests never
# use; on a 2-core machine they only slow the start down.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"}
LOG_BATCH_PATH = "/api/2.0/mlflow/runs/log-batch"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class MlflowServer:
    """A running ``mlflow server`` process (one uvicorn worker) and its access log."""

    url: str
    root: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_lines(self) -> list[str]:
        """The server's log so far, with every request answered before this call in it."""
        marker = f"/health?marker={uuid.uuid4().hex}"
        with urllib.request.urlopen(self.url + marker, timeout=30):
            pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lines = self.log_path.read_text(errors="replace").splitlines()
            if any(marker in line for line in lines):
                return lines
            time.sleep(0.05)
        raise TimeoutError(f"marker request {marker} never reached {self.log_path}")

    def count_requests(self, path: str, since: int = 0) -> int:
        """How many POST requests to ``path`` the server answered after log line ``since``
        (``len(log_lines())`` taken earlier)."""
        return sum(f'"POST {path} HTTP' in line for line in self.log_lines()[since:])

    def stop(self) -> None:
        """End the server and the processes it started (its process group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_mlflow_server(root: Path, *, timeout_s: float = 240.0) -> MlflowServer:
    """Start ``mlflow server`` with its database and artifacts under ``root``; returns once
    ``/health`` answers (``RuntimeError`` with the log if the process exits first)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = root / "server.log"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(root / "mlartifacts"),
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **SERVER_ENV},
            cwd=root,
            start_new_session=True,  # its own process group, so stop() reaches uvicorn too
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", root, log_path, process)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with {process.returncode}:\n{log_path.read_text()}"
            )
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=5) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"mlflow server not healthy after {timeout_s} s:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One ``mlflow server`` for the whole test session; never stop it in a test."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


@dataclass
class TcpRelay:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port``. ``stop()`` closes the port
    and every open connection (clients see refused and reset connections, as from a dead
    server); ``start()`` listens on the same port again."""

    target_port: int
    port: int = field(default_factory=free_port)
    _listener: socket.socket | None = None
    _connections: list[socket.socket] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.1)
        self._listener = listener
        self._spawn(self._accept, listener)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(OSError):  # already shut by the other side
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        # The accept loop first: once it has ended, no thread is added.
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._threads = []

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the relay was stopped, or a side went away
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

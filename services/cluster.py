"""Ray for optarena: the cluster a study runs on and the worker actors its trials run in.

All of optarena's Ray code is in this module. What runs inside a worker (``services.study``'s
trial worker, the trainer) is plain Python that knows nothing of Ray; resources are attached
here, from outside, as Ray Tune does with function trainables.

**The cluster.** ``start_cluster()`` starts a local Ray instance on this machine (the
embedded default), without the dashboard unless asked, or joins an existing cluster at
``address``. A local instance is for this machine only, so its servers listen on 127.0.0.1:
on Linux Ray would otherwise bind them to the address of the machine's network interface.
It never uses Ray's default head port 6379 (Ray picks free ports for a local instance).

**Workers.** A :class:`WorkerPool` keeps ``size`` actors of one class, each placed with
``num_cpus=cpus_per_trial`` and, where the cluster has GPUs, ``num_gpus=gpus_per_trial``: a
fraction, so 0.25 puts four trials on one GPU. An actor runs one task at a time. A dead actor
is not restarted by Ray (``max_restarts=0``) but replaced by the driver (``replace``), which
knows that it died and which slot it held: the replacement gets the slot and the next
generation number, so it can tell itself apart from the actor it replaces (the study runner
uses this to give it fresh sampler seeds and to fail and retry the trial the dead actor
left behind at once, instead of waiting for its heartbeat to go stale).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Ray binds a local instance's servers to the address it would use to reach other machines
# (on Linux, the default route's interface) unless this is off; Ray reads it when imported,
# so it is set before ``import ray``. Joining an existing cluster is unaffected: the driver
# then takes the address of the cluster's node on this machine.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError

# The object store only carries task arguments and results of a few kilobytes; Ray's
# default (30% of memory) would reserve gigabytes of shared memory for nothing.
LOCAL_OBJECT_STORE_BYTES = 128 * 1024**2
# How long joining a cluster waits for its head to answer before giving up.
REACH_TIMEOUT_S = 10.0
# Ray's fixed-point resource unit: quantities are whole multiples of 1/10,000.
RESOURCE_UNITS = 10_000
# How often a worker checks that its raylet still runs.
PARENT_CHECK_S = 0.5


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster a study runs on: its address, whether it is a local instance, whether
    ``start_cluster`` connected this process (else it already was, and stays connected),
    and the nodes, CPUs and GPUs the cluster has."""

    address: str
    local: bool
    connected_here: bool
    nodes: int
    cpus: float
    gpus: float


def start_cluster(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    dashboard: bool = False,
) -> ClusterInfo:
    """Start a local Ray instance, or join the cluster at ``address`` (``host:port`` of its
    head, or ``auto``). ``num_cpus`` and ``num_gpus`` set a local instance's CPUs and GPUs
    (default: what Ray detects on this machine); ``dashboard`` starts Ray's dashboard with
    it. A process already connected to a cluster
    (a notebook, a test) keeps that one and ``address`` is ignored.

    Raises ``ConnectionError`` naming the address when the cluster cannot be reached.
    """
    if ray.is_initialized():
        context = ray.get_runtime_context()
        return _info(address=context.gcs_address, local=address is None, connected_here=False)
    if address is None:
        context = ray.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=dashboard,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            logging_level=logging.WARNING,
        )
    else:
        check_reachable(address)
        try:
            context = ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ConnectionError(f"cannot join the Ray cluster at {address!r}: {error}") from None
    return _info(
        address=context.address_info["address"], local=address is None, connected_here=True
    )


def check_reachable(address: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Raise ``ConnectionError`` unless the head at ``address`` (``host:port``) accepts a
    TCP connection within ``timeout_s``. Ray itself keeps retrying an unreachable head for
    minutes; ``auto`` and ``ray://`` addresses are left to Ray."""
    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address!r}: {error.strerror or error}"
        ) from None


def _info(*, address: str, local: bool, connected_here: bool) -> ClusterInfo:
    resources = ray.cluster_resources()
    return ClusterInfo(
        address=address,
        local=local,
        connected_here=connected_here,
        nodes=sum(node["Alive"] for node in ray.nodes()),
        cpus=resources.get("CPU", 0.0),
        gpus=resources.get("GPU", 0.0),
    )


def stop_cluster() -> None:
    """Disconnect from the cluster; a local instance is shut down with its processes."""
    ray.shutdown()


@dataclass(frozen=True)
class Placement:
    """The resources each worker actor is placed with."""

    num_cpus: float
    num_gpus: float

    def describe(self) -> str:
        gpus = f", {self.num_gpus:g} GPU" if self.num_gpus else ""
        return f"{self.num_cpus:g} CPU{gpus} per worker"

    def fits(self, info: ClusterInfo) -> int:
        """How many workers placed so fit on the cluster at once. Ray counts resources in
        steps of 1/10,000, so ten workers of 0.1 GPU fit on one GPU (where ``1 // 0.1`` is
        9 in floating point)."""
        fit = _count(info.cpus, self.num_cpus)
        if self.num_gpus:
            fit = min(fit, _count(info.gpus, self.num_gpus))
        return fit


def _count(total: float, each: float) -> int:
    return round(total * RESOURCE_UNITS) // round(each * RESOURCE_UNITS)


def placement(
    cpus_per_trial: float, gpus_per_trial: float | None, cluster_gpus: float
) -> Placement:
    """Each worker's resources: a GPU fraction only where the cluster has GPUs (a study file
    that asks for GPUs still runs, on CPUs, on a machine without one)."""
    gpus = gpus_per_trial if gpus_per_trial and cluster_gpus > 0 else 0.0
    return Placement(num_cpus=cpus_per_trial, num_gpus=gpus)


@dataclass(frozen=True)
class TaskEvent:
    """A finished task of a pool's worker: its ``value``, or the exception its method raised
    (``error``), or ``died`` when the actor's process is gone (``error`` then says what Ray
    knows of why; the slot is free, and empty until ``replace``)."""

    slot: int
    generation: int
    value: Any = None
    error: BaseException | None = None
    died: bool = False


class WorkerPool:
    """``size`` actors of ``worker_class``, each built with ``make_args(slot, generation)``
    and placed as ``placement`` says; the driver hands each a task at a time (``submit``)
    and collects finished ones (``wait``)."""

    def __init__(
        self,
        worker_class: type,
        make_args: Callable[[int, int], Sequence[Any]],
        size: int,
        placement: Placement,
    ) -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {size}")
        self._actor_class = ray.remote(
            num_cpus=placement.num_cpus, num_gpus=placement.num_gpus, max_restarts=0
        )(_exits_with_its_raylet(worker_class))
        self._make_args = make_args
        self.generations = [0] * size
        self._actors: list[Any] = [self._start(slot) for slot in range(size)]
        self._running: dict[Any, int] = {}  # the object ref of a task → its slot

    def _start(self, slot: int) -> Any:
        return self._actor_class.remote(*self._make_args(slot, self.generations[slot]))

    @property
    def size(self) -> int:
        """The number of workers."""
        return len(self._actors)

    @property
    def busy(self) -> bool:
        """Whether any worker runs a task."""
        return bool(self._running)

    def idle_slots(self) -> list[int]:
        """Slots whose worker has no task."""
        busy = set(self._running.values())
        return [slot for slot in range(self.size) if slot not in busy]

    def call(self, slot: int, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """Call ``method`` of the worker in ``slot`` and wait for its result (for short calls
        outside the task loop)."""
        return ray.get(getattr(self._actors[slot], method).remote(*args), timeout=timeout_s)

    def submit(self, slot: int, method: str, *args: Any) -> None:
        """Start ``method(*args)`` on the idle worker in ``slot``."""
        if slot not in self.idle_slots():
            raise ValueError(f"worker {slot} already runs a task")
        self._running[getattr(self._actors[slot], method).remote(*args)] = slot

    def wait(self, timeout_s: float) -> list[TaskEvent]:
        """The tasks that finished, waiting up to ``timeout_s`` for the first one (an empty
        list when none finished in time)."""
        if not self._running:
            return []
        ready, _ = ray.wait(list(self._running), num_returns=1, timeout=timeout_s)
        if ready:  # and whatever else finished meanwhile
            ready, _ = ray.wait(list(self._running), num_returns=len(self._running), timeout=0)
        events = []
        for ref in ready:
            slot = self._running.pop(ref)
            generation = self.generations[slot]
            try:
                events.append(TaskEvent(slot, generation, value=ray.get(ref)))
            except RayActorError as error:
                events.append(TaskEvent(slot, generation, error=error, died=True))
            except RayTaskError as error:
                events.append(TaskEvent(slot, generation, error=error.cause or error))
            except RayError as error:  # the task was lost with its node or object
                events.append(TaskEvent(slot, generation, error=error))
        return events

    def replace(self, slot: int) -> int:
        """Kill the worker in ``slot`` if it still runs (an actor Ray reports unreachable may
        not be dead yet) and start the next generation there; returns its generation."""
        self._kill(self._actors[slot])
        self._running = {ref: s for ref, s in self._running.items() if s != slot}
        self.generations[slot] += 1
        self._actors[slot] = self._start(slot)
        return self.generations[slot]

    def shutdown(self) -> None:
        """Kill every worker, interrupting the tasks they run."""
        for actor in self._actors:
            self._kill(actor)
        self._running.clear()

    @staticmethod
    def _kill(actor: Any) -> None:
        # Already gone, or the whole local instance is (Ctrl-C in a terminal reaches Ray's own
        # processes too): either way there is nothing left to stop.
        with contextlib.suppress(RayError, ValueError):
            ray.kill(actor, no_restart=True)


def _exits_with_its_raylet(worker_class: type) -> type:
    """``worker_class`` whose processes end as soon as their parent, the node's raylet, is
    gone. A local instance dies with a killed driver, but its workers outlive it for a
    minute or more, and one in the middle of a study would go on running trials, outside
    any cluster, next to the workers of the run that resumes the study."""

    class Worker(worker_class):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raylet = os.getppid()
            threading.Thread(target=_exit_when_orphaned, args=(raylet,), daemon=True).start()
            super().__init__(*args, **kwargs)

    Worker.__name__ = Worker.__qualname__ = worker_class.__name__
    return Worker


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)  # the trial it ran stays RUNNING for the heartbeat reaper

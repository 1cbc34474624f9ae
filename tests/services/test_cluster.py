"""Ray: the local instance on loopback, worker placement, and the pool's view of tasks that
finish, raise or lose their process; on one real local Ray instance for the module.

The workers here are classes defined inside the tests: Ray ships such classes by value, so
the worker processes need not import this test module.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from services import cluster
from services.cluster import ClusterInfo, Placement, TaskEvent, WorkerPool, placement


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[ClusterInfo]:
    info = cluster.start_cluster(num_cpus=2)
    yield info
    cluster.stop_cluster()


def wait_for(pool: WorkerPool, count: int, timeout_s: float = 60) -> list[TaskEvent]:
    events: list[TaskEvent] = []
    deadline = time.monotonic() + timeout_s
    while len(events) < count and time.monotonic() < deadline:
        events += pool.wait(1.0)
    assert len(events) == count, f"{len(events)} of {count} tasks finished in {timeout_s} s"
    return events


def echo_worker() -> type:
    class Echo:
        def __init__(self, slot: int, generation: int) -> None:
            self.slot, self.generation = slot, generation

        def describe(self) -> dict[str, Any]:
            return {
                "slot": self.slot,
                "generation": self.generation,
                "pid": os.getpid(),
                "threads": os.environ.get("OMP_NUM_THREADS"),
            }

        def fail(self) -> None:
            raise KeyError("no such arm")

        def sleep(self, seconds: float) -> int:
            time.sleep(seconds)
            return os.getpid()

    return Echo


def test_a_local_instance_listens_on_loopback_only(ray_instance: ClusterInfo) -> None:
    import ray

    host, port = ray_instance.address.rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) != 6379  # Redis's port here, and Ray's default head port
    assert [node["NodeManagerAddress"] for node in ray.nodes()] == ["127.0.0.1"]
    assert (ray_instance.local, ray_instance.connected_here) == (True, True)
    assert (ray_instance.nodes, ray_instance.cpus, ray_instance.gpus) == (1, 2.0, 0.0)
    with socket.socket() as probe:  # no dashboard unless asked for
        assert probe.connect_ex(("127.0.0.1", 8265)) != 0


def test_a_connected_process_keeps_its_cluster(ray_instance: ClusterInfo) -> None:
    again = cluster.start_cluster(num_cpus=1)
    assert again.connected_here is False
    assert again.cpus == 2.0  # the module's instance, not a new one with one CPU


def test_workers_get_their_slot_and_one_thread_per_cpu(ray_instance: ClusterInfo) -> None:
    pool = WorkerPool(
        echo_worker(), lambda slot, generation: (slot, generation), 2, Placement(1, 0)
    )
    try:
        assert pool.idle_slots() == [0, 1] and not pool.busy
        for slot in (0, 1):
            pool.submit(slot, "describe")
        assert pool.busy and pool.idle_slots() == []
        with pytest.raises(ValueError, match="worker 0 already runs a task"):
            pool.submit(0, "describe")
        events = sorted(wait_for(pool, 2), key=lambda event: event.slot)
        assert [(e.slot, e.value["slot"], e.value["generation"]) for e in events] == [
            (0, 0, 0),
            (1, 1, 0),
        ]
        assert events[0].value["pid"] != events[1].value["pid"] != os.getpid()
        # Ray sets a worker's thread count to its CPUs: torch then uses one thread per CPU.
        assert [event.value["threads"] for event in events] == ["1", "1"]
    finally:
        pool.shutdown()


def test_an_exception_in_a_task_comes_back_as_its_error(ray_instance: ClusterInfo) -> None:
    pool = WorkerPool(
        echo_worker(), lambda slot, generation: (slot, generation), 1, Placement(1, 0)
    )
    try:
        pool.submit(0, "fail")
        (event,) = wait_for(pool, 1)
        assert isinstance(event.error, KeyError) and not event.died
        assert pool.call(0, "describe")["generation"] == 0  # the worker lives on
    finally:
        pool.shutdown()


def test_a_killed_worker_is_reported_dead_and_replaced(ray_instance: ClusterInfo) -> None:
    pool = WorkerPool(
        echo_worker(), lambda slot, generation: (slot, generation), 1, Placement(1, 0)
    )
    try:
        pid = pool.call(0, "describe")["pid"]
        pool.submit(0, "sleep", 60)
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        (event,) = wait_for(pool, 1, timeout_s=30)
        assert event.died and (event.slot, event.generation) == (0, 0)
        assert event.error is not None
        assert pool.idle_slots() == [0]
        assert pool.replace(0) == 1
        after = pool.call(0, "describe", timeout_s=60)
        assert (after["generation"], after["slot"]) == (1, 0)
        assert after["pid"] != pid
    finally:
        pool.shutdown()


def test_shutdown_interrupts_running_tasks(ray_instance: ClusterInfo) -> None:
    pool = WorkerPool(
        echo_worker(), lambda slot, generation: (slot, generation), 1, Placement(1, 0)
    )
    pid = pool.call(0, "describe")["pid"]
    pool.submit(0, "sleep", 60)
    pool.shutdown()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"worker {pid} still runs 30 s after shutdown")
    assert not pool.busy


def test_gpus_are_asked_for_only_where_the_cluster_has_them() -> None:
    assert placement(1, 0.25, cluster_gpus=1) == Placement(1, 0.25)
    assert placement(1, 0.25, cluster_gpus=0) == Placement(1, 0.0)
    assert placement(2, None, cluster_gpus=4) == Placement(2, 0.0)
    assert Placement(1, 0.25).describe() == "1 CPU, 0.25 GPU per worker"


def test_a_pool_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker, got 0"):
        WorkerPool(echo_worker(), lambda slot, generation: (), 0, Placement(1, 0))


def test_an_unreachable_head_is_a_connection_error_at_once() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(
        ConnectionError, match=f"cannot reach the Ray cluster at '127.0.0.1:{port}'"
    ):
        cluster.check_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 5
    cluster.check_reachable("auto")  # left to Ray

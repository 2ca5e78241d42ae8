"""The CPUs the service may use, each gunicorn worker's own share of them, and which of its
threads gets a CPU first.

Each worker runs on CPUs of its own: as gunicorn forks a worker, it pins it to its part of
an even split (`pin_worker`). A worker runs a request's Python on about one core anyway
(the GIL), and its model thread then shares that core with its own request threads, not
with the other worker's. Left to the kernel, both workers' threads ran on both cores: a
request thread holding its worker's GIL was descheduled for a thread of the other worker,
and every other request of its worker waited meanwhile. At 32 clients on two cores, pinned
workers gave a lower p99 in 12 of 13 alternating rounds (docs/performance.md, "Changes adopted, side
by side").

The one exception is a request alone in the whole service (service/process/worker_activity.py):
its model call borrows the idle workers' cores, so the interpreters for that call are
made `on_service_cpus()`, and their XNNPACK threads may run wherever the service may.

A worker's main thread accepts connections and, under overload, refuses requests from their
bytes (service/process/early_refusal.py). As an ordinary thread it waited for a CPU behind
the worker's request threads, and a refusal waited with it: p99 34-93 ms with the worker
alone on a core. Run first (`run_this_thread_first`: the lowest real-time priority), it
takes a CPU as soon as a request arrives, and the p99 was 11-22 ms in the same rounds
(docs/performance.md). It uses about a twentieth of a core, and the kernel keeps 5% of
every second for ordinary threads whatever a real-time one does. Where the system refuses
(a container without the right, most do: docs/deployment.md), the worker runs as before.
"""

import contextlib
import math
import os
from collections.abc import Iterator, Set

CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"

# In a pinned worker: every CPU the service may use, as it was before the worker was pinned.
_service_cpus: frozenset[int] | None = None


def usable_cores(cpu_max_path: str = CGROUP_CPU_MAX, cpus: Set[int] | None = None) -> int:
    """How many cores `cpus` (default: this thread's affinity) give, capped by a cgroup v2
    CPU quota."""
    cores = len(os.sched_getaffinity(0) if cpus is None else cpus)
    try:
        with open(cpu_max_path, encoding="ascii") as file:
            quota, period = file.read().split()[:2]
        if quota == "max":
            return cores
        share = int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):  # no cgroup v2 file, or not understood
        return cores
    # A container limited to 1.5 CPUs gets 2 threads: XNNPACK splits work evenly anyway.
    return max(1, min(cores, math.ceil(share)))


def service_cpus() -> set[int]:
    """Every CPU the service may use: in a pinned worker, all workers' shares together."""
    return set(_service_cpus) if _service_cpus is not None else os.sched_getaffinity(0)


def service_cores(cpu_max_path: str = CGROUP_CPU_MAX) -> int:
    """How many cores the whole service may use, capped by a cgroup v2 CPU quota."""
    return usable_cores(cpu_max_path, service_cpus())


def worker_share(cpus: Set[int], slot: int | None, workers: int) -> set[int] | None:
    """The CPUs of the worker in `slot`: its part of `cpus` split evenly among `workers`.

    None (run anywhere) for a lone worker, a worker without a slot, or CPUs that do not
    split into equal parts (3 CPUs for 2 workers, say): the connections are shared evenly
    (service/process/gunicorn_worker.py), so a worker with a smaller part would answer its clients
    later, and there the kernel balances the workers better.
    """
    ordered = sorted(cpus)
    if slot is None or workers < 2 or len(ordered) % workers:
        return None
    size = len(ordered) // workers
    # A worker forked while another still stops (a reload) has a higher slot: wrap it.
    part = slot % workers
    return set(ordered[part * size:(part + 1) * size])


def pin_worker(slot: int | None, workers: int) -> None:
    """Run this process's current thread, and every thread it starts from now on, on the
    share of the CPUs that belongs to the worker in `slot` (in a worker, just forked);
    OSError where the system refuses."""
    global _service_cpus
    cpus = os.sched_getaffinity(0)
    share = worker_share(cpus, slot, workers)
    if share is not None:
        os.sched_setaffinity(0, share)
        _service_cpus = frozenset(cpus)


def run_this_thread_first() -> None:
    """Put the calling thread ahead of every ordinary thread for a CPU (SCHED_FIFO at the
    lowest real-time priority); the threads and processes it starts from now on are
    ordinary ones (SCHED_RESET_ON_FORK). OSError where the system refuses."""
    os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))


@contextlib.contextmanager
def on_service_cpus() -> Iterator[None]:
    """Run the body on every CPU of the service, and so the threads it starts (the calling
    thread's own affinity comes back afterwards)."""
    own, wanted = os.sched_getaffinity(0), service_cpus()
    widened = False
    if own != wanted:
        try:
            os.sched_setaffinity(0, wanted)
            widened = True
        except OSError:  # refused: the body runs on this worker's share, only slower
            pass
    try:
        yield
    finally:
        if widened:
            os.sched_setaffinity(0, own)

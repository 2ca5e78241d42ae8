"""What each gunicorn worker is doing, in memory the master shares with them.

Two things per worker:
- **busy**: whether it has a request in flight. A request that finds its worker idle runs
  its model call at once (service/runtime/batcher.py). When every other worker is idle too, that
  call may use their cores as well, and a lone client is answered sooner. When another
  worker is busy, extra threads would only fight it for the cores: two clients, one on
  each worker, lost nearly half their throughput that way (docs/performance.md, "Tried
  and not adopted").
- **connections**: how many it holds, or none while it does not accept. A worker takes a
  new connection only while no other accepting worker holds fewer
  (service/process/gunicorn_worker.py), so kept-alive clients are spread evenly.

The master makes the memory when gunicorn reads its config, before any fork, and gives
each new worker a free slot (`take_slot`, then `release_slot` when it exits). Outside
gunicorn there is no slot and no other worker, so the process counts as alone.
"""

import mmap
import threading

from flask import Flask, g

SLOTS = 64
NOT_ACCEPTING = -1


class WorkerActivity:
    """Per worker slot, a busy flag and a connection count, seen by every process forked later."""

    def __init__(self, slots: int = SLOTS):
        # Anonymous shared mappings: forked workers see the master's, and no file is made.
        self._flags = mmap.mmap(-1, slots)
        self._connections = memoryview(mmap.mmap(-1, 4 * slots)).cast("i")
        for slot in range(slots):
            self._connections[slot] = NOT_ACCEPTING
        self._taken: set[int] = set()  # in the master only
        self.slot: int | None = None  # in a worker: its own
        self._in_flight = 0
        self._lock = threading.Lock()

    def take_slot(self) -> int | None:
        """A free slot for a worker about to be forked (master); None when all are taken."""
        free = next((slot for slot in range(len(self._flags)) if slot not in self._taken), None)
        if free is not None:
            self._taken.add(free)
            self._flags[free] = 0
            self._connections[free] = NOT_ACCEPTING
        return free

    def release_slot(self, slot: int | None) -> None:
        """Free the slot of a worker that exited (master); it no longer counts as busy or
        as accepting."""
        if slot is not None:
            self._taken.discard(slot)
            self._flags[slot] = 0
            self._connections[slot] = NOT_ACCEPTING

    def request_started(self) -> None:
        """Count a request of this worker in; the first one makes the worker busy."""
        with self._lock:
            self._in_flight += 1
            self._set_flag_locked()

    def request_finished(self) -> None:
        """Count a request out; the last one makes the worker idle again."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            self._set_flag_locked()

    def _set_flag_locked(self):
        if self.slot is not None:
            self._flags[self.slot] = 1 if self._in_flight else 0

    def others_idle(self) -> bool:
        """Whether no other worker has a request in flight."""
        if self.slot is None:
            return True
        flags = self._flags[:]
        return flags.count(1) == flags[self.slot]

    def set_connections(self, count: int | None) -> None:
        """Publish how many connections this worker holds; None while it does not accept."""
        if self.slot is not None:
            self._connections[self.slot] = NOT_ACCEPTING if count is None else count

    def fewest_connections_elsewhere(self) -> int | None:
        """The fewest connections any other accepting worker holds; None when there is none."""
        counts = [count for slot, count in enumerate(self._connections)
                  if slot != self.slot and count != NOT_ACCEPTING]
        return min(counts) if self.slot is not None and counts else None


# The one instance: made when gunicorn's master imports its config, inherited by each worker.
activity = WorkerActivity()


def register_worker_activity(app: Flask) -> None:
    """Count every request of `app` in and out of `activity`; register before other hooks."""

    @app.before_request
    def count_in():
        activity.request_started()
        g.counted_in_activity = True

    @app.teardown_request
    def count_out(error):
        # Teardown runs for every request, even one stopped before count_in ran.
        if g.pop("counted_in_activity", False):
            activity.request_finished()

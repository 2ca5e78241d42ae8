"""The batcher: gather concurrent requests in a worker into one model call."""

import collections
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.runtime.admission import AdmissionError

if TYPE_CHECKING:
    from service.models.inference import ServingModel
    from service.runtime.admission import Ticket

log = logging.getLogger("service.runtime.batcher")


@dataclass(eq=False)  # compared by identity: a queued request is taken out by itself
class _Request:
    """A request waiting in the batcher's queue."""

    model: "ServingModel"
    images: np.ndarray
    future: Future
    arrived: float
    ticket: "Ticket | None"


class Batcher:
    """Makes one model call at a time, batching requests that arrive together.

    A request that finds the model idle and nobody else on the way is run at
    once, on its own thread. Otherwise it joins the queue of the batcher's
    thread, which waits for requests still decoding their images (they said so
    with `expect()`), up to `max_wait_seconds` after the oldest queued request
    was submitted, and takes up to `max_batch_size` images in one call. A
    request is never split: one with more images than `max_batch_size` is one
    call of its own. A request run at once may use every core when
    `may_use_all_cores()` says so (no other worker has a request in flight).
    """

    def __init__(self, max_batch_size=32, max_wait_seconds=0.005, on_batch=None,
                 may_use_all_cores=None):
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self.on_batch = on_batch
        self.may_use_all_cores = may_use_all_cores
        self._pending = collections.deque()
        self._pending_images = 0
        self._expected = 0
        self._model_busy = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def expect(self) -> "_Expectation":
        """Announce a request that will submit soon; use as a context manager around decoding."""
        return _Expectation(self)

    def submit(self, model: "ServingModel", images: np.ndarray,
               expectation: "_Expectation | None" = None,
               ticket: "Ticket | None" = None) -> np.ndarray:
        """Return the probabilities `model` gives for `images`, computed in some batch.

        With a `ticket` (service/runtime/admission.py), a request whose deadline passes while it
        waits leaves the queue, and one whose caller has gone is not run: AdmissionError.
        """
        if ticket is not None:
            ticket.check()
        with self._changed:
            if expectation is not None:
                expectation.settle_locked()
            alone = not (self._model_busy or self._pending or self._expected > 0)
            if alone:
                self._model_busy = True
            else:
                queued = _Request(model, images, Future(), time.monotonic(), ticket)
                self._pending.append(queued)
                self._pending_images += len(images)
                self._wake_locked()
        if not alone:
            return self._result(queued)
        # Running here rather than on the batcher's thread saves two thread hand-offs.
        all_cores = self.may_use_all_cores is not None and self.may_use_all_cores()
        try:
            return self._call_model(model, images, all_cores)
        finally:
            with self._changed:
                self._model_busy = False
                if self._pending:
                    self._changed.notify()

    def _result(self, queued: _Request) -> np.ndarray:
        """Wait for a queued request's rows; at its deadline, take it out of the queue."""
        if queued.ticket is None:
            return queued.future.result()
        try:
            return queued.future.result(timeout=max(0.0, queued.ticket.deadline.remaining()))
        except FutureTimeout:
            with self._changed:
                waiting = any(item is queued for item in self._pending)
                if waiting:
                    self._pending.remove(queued)
                    self._pending_images -= len(queued.images)
            if waiting:
                queued.ticket.check()  # raises: the deadline has passed
            return queued.future.result()  # already in a model call: its answer is near

    def _announce(self, change):
        """Count a request in (+1) or out (-1) of the announced ones."""
        with self._changed:
            self._expected += change
            if change < 0:
                self._wake_locked()

    def _wake_locked(self):
        """Wake the batcher only when its decision may change; each wake costs the GIL a switch."""
        if (len(self._pending) == 1 or self._expected <= 0
                or self._pending_images >= self.max_batch_size):
            self._changed.notify()

    def _call_model(self, model, images, all_cores=False):
        """One model call, counted."""
        probabilities = model.infer(images, all_cores=all_cores)
        # Counted before the answers go out, so a client that reads the metrics next sees it.
        if self.on_batch:
            try:
                self.on_batch(len(images))
            except Exception:
                log.exception("the batch callback failed")
        return probabilities

    def _run(self):
        while True:
            batch = self._next_batch()
            try:
                self._run_batch(batch)
            finally:
                with self._changed:
                    self._model_busy = False

    def _next_batch(self):
        """Wait for company while some is announced, then take up to a full batch, oldest first."""
        with self._changed:
            while not self._pending or self._model_busy:
                self._changed.wait()
            deadline = self._pending[0].arrived + self.max_wait_seconds
            while self._expected > 0 and self._pending_images < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            batch = [self._pending.popleft()]
            count = len(batch[0].images)
            while self._pending and count + len(self._pending[0].images) <= self.max_batch_size:
                batch.append(self._pending.popleft())
                count += len(batch[-1].images)
            self._pending_images -= count
            self._model_busy = True
            return batch

    def _run_batch(self, batch):
        """Call each model once for its share of the batch, then hand out the rows."""
        by_model = {}
        for item in _still_wanted(batch):
            by_model.setdefault(id(item.model), []).append(item)
        for items in by_model.values():
            try:
                images = items[0].images if len(items) == 1 else np.concatenate(
                    [item.images for item in items])
                probabilities = self._call_model(items[0].model, images)
            except BaseException as error:
                for item in items:
                    item.future.set_exception(error)
                continue
            start = 0
            for item in items:
                item.future.set_result(probabilities[start:start + len(item.images)])
                start += len(item.images)


def _still_wanted(batch):
    """The requests of `batch` to run: the others (deadline passed, caller gone) get their
    AdmissionError now, before any model time."""
    wanted = []
    for item in batch:
        try:
            if item.ticket is not None:
                item.ticket.check()
        except AdmissionError as refused:
            item.future.set_exception(refused)
            continue
        wanted.append(item)
    return wanted


class _Expectation:
    """Counts a request between its arrival and its submission."""

    def __init__(self, batcher):
        self._batcher = batcher
        self._active = False

    def __enter__(self):
        self._batcher._announce(+1)
        self._active = True
        return self

    def settle_locked(self) -> None:
        """The request has submitted: stop counting it (the caller holds the batcher's lock)."""
        if self._active:
            self._batcher._expected -= 1
            self._active = False

    def done(self) -> None:
        """The request has given up before submitting: stop waiting for it."""
        if self._active:
            self._active = False
            self._batcher._announce(-1)

    def __exit__(self, *exc):
        self.done()

"""The batcher: gather concurrent requests in a worker into one model call."""

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np


class Batcher:
    """Runs every model call on one thread, batching requests that arrive together.

    A request that finds nobody else on the way is run at once. While other
    requests are still decoding their images (they said so with `expect()`),
    the batcher waits for them, up to `max_wait_seconds`, and up to
    `max_batch_size` images in one call.
    """

    def __init__(self, max_batch_size=32, max_wait_seconds=0.005, on_batch=None):
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self.on_batch = on_batch
        self._queue = queue.Queue()
        self._expected = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def expect(self):
        """Announce a request that will submit soon; use as a context manager around decoding."""
        return _Expectation(self)

    def submit(self, model, images, expectation=None):
        """Return the probabilities `model` gives for `images`, computed in some batch."""
        future = Future()
        self._queue.put((model, images, future))
        if expectation is not None:
            expectation.done()
        return future.result()

    def _run(self):
        while True:
            batch = [self._queue.get()]
            count = len(batch[0][1])
            deadline = time.monotonic() + self.max_wait_seconds
            while count < self.max_batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if self._expected <= 0 or remaining <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=min(remaining, 0.0005))
                    except queue.Empty:
                        continue
                batch.append(item)
                count += len(item[1])
            self._run_batch(batch)

    def _run_batch(self, batch):
        """Call each model once for its share of the batch, then hand out the rows."""
        by_model = {}
        for item in batch:
            by_model.setdefault(id(item[0]), []).append(item)
        for items in by_model.values():
            model = items[0][0]
            try:
                images = np.concatenate([item[1] for item in items])
                probabilities = model.infer(images)
            except BaseException as error:
                for item in items:
                    item[2].set_exception(error)
                continue
            if self.on_batch:
                self.on_batch(len(images))
            start = 0
            for _, item_images, future in items:
                future.set_result(probabilities[start:start + len(item_images)])
                start += len(item_images)


class _Expectation:
    """Counts a request between its arrival and its submission."""

    def __init__(self, batcher):
        self._batcher = batcher
        self._active = False

    def __enter__(self):
        with self._batcher._lock:
            self._batcher._expected += 1
        self._active = True
        return self

    def done(self):
        """The request has submitted (or given up): stop waiting for it."""
        if self._active:
            with self._batcher._lock:
                self._batcher._expected -= 1
            self._active = False

    def __exit__(self, *exc):
        self.done()

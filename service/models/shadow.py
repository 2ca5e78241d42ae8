"""Shadow traffic: a canary in shadow mode classifies copies of requests; nobody sees its answers.

Each worker has one shadow thread. A request that the split picked for the shadow gets its
answer from stable as usual; then a copy of its decoded images waits in a short queue for
the shadow thread, which runs the canary on it through the same batcher and counts how
often its top-1 label agrees with the answer the client got, and how long it took. When
the queue is full, the copy is dropped and counted: shadowing may cost model time, but it
never holds up an answer and never grows memory without bound.
"""

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from service.observability import metrics

if TYPE_CHECKING:
    from service.models.inference import ServingModel
    from service.models.routing import Route
    from service.store.recorder import PredictionRecorder

log = logging.getLogger("service.models.shadow")

# Copies waiting for the shadow thread; more are dropped. A copy is at most one request's
# images (MAX_IMAGES_PER_REQUEST of them, decoded: 32 CIFAR images are 96 KiB).
QUEUE_LENGTH = 16

_Copy = collections.namedtuple("_Copy", "name shadow stable_version images answered "
                                        "prediction_ids")


class ShadowRunner:
    """Classifies copies of requests with their shadow version, in the background, and counts."""

    def __init__(self, run: Callable[["ServingModel", np.ndarray], np.ndarray],
                 queue_length: int = QUEUE_LENGTH, recorder: "PredictionRecorder | None" = None):
        self._run_model = run
        # With the prediction store on, the shadow's answers join the rows of the
        # predictions they copy, by prediction id (service/store/recorder.py).
        self._recorder = recorder
        self._queue = collections.deque()
        self._queue_length = queue_length
        self._waiting = threading.Condition()
        self._thread = None

    def offer(self, route: "Route", images: np.ndarray, probabilities: np.ndarray,
              prediction_ids: list[str] | None = None) -> bool:
        """Queue a copy of a request that stable answered with `probabilities` (recorded under
        `prediction_ids`, when the store is on); False if dropped."""
        # Compared by label, not by index: a canary may order (or change) its classes.
        answered = [route.model.classes[index] for index in np.argmax(probabilities, axis=1)]
        with self._waiting:
            if len(self._queue) >= self._queue_length:
                metrics.count_shadow_skipped(route.name, route.shadow, "queue_full")
                return False
            self._queue.append(_Copy(route.name, route.shadow, route.model.version, images,
                                     answered, prediction_ids))
            if self._thread is None:
                # Started on first use, in the worker that uses it (gunicorn forks first).
                self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
                self._thread.start()
            self._waiting.notify()
        return True

    def _run(self):
        while True:
            with self._waiting:
                while not self._queue:
                    self._waiting.wait()
                copy = self._queue.popleft()
            self._classify(copy)

    def _classify(self, copy: _Copy) -> None:
        """Run the shadow version on one copy and count what it did."""
        started = time.perf_counter()
        try:
            probabilities = self._run_model(copy.shadow, copy.images)
        except Exception:
            log.exception("shadow version %s of model %s failed", copy.shadow.version, copy.name)
            metrics.count_shadow_skipped(copy.name, copy.shadow, "failed")
            return
        seconds = time.perf_counter() - started
        labels = [copy.shadow.classes[index] for index in np.argmax(probabilities, axis=1)]
        agreed = sum(label == answer for label, answer in zip(labels, copy.answered, strict=True))
        metrics.count_shadow(copy.name, copy.shadow, copy.stable_version, agreed,
                             len(copy.images), seconds)
        if self._recorder is not None and copy.prediction_ids is not None:
            self._recorder.record_shadow(copy.name, copy.shadow, copy.prediction_ids,
                                         probabilities)

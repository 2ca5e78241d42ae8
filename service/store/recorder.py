"""Recording predictions off the request path: a bounded queue and one writer thread per process.

A request thread only makes each image's prediction id, hashes the image and queues a
record; the writer thread ranks, encodes and writes records in batches. The queue is
bounded in records and in bytes (a kept image may be as large as MAX_REQUEST_BYTES): when
a record does not fit, it is dropped and counted, and the request goes on as if the store
were off. A write that fails (database down, locked, full) drops its batch, counted the
same way; the service keeps answering.

A shadow version answers later, on the shadow thread (service/models/shadow.py): its
answer is queued behind the records it belongs to, and the writer sets it on their rows by
prediction id (an UPDATE); if the row was dropped, there is nothing to join and the shadow's
answer is not kept.
"""

import collections
import hashlib
import io
import json
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from service.observability import metrics
from service.store.database import Database, StoreUnavailableError
from service.store.maintenance import enforce_bounds

if TYPE_CHECKING:
    from service.models.inference import ServingModel
    from service.models.routing import Route

log = logging.getLogger("service.store")

# A record with no kept image still takes memory: its row, scores and strings.
RECORD_BYTES = 1024
# The writer writes what is queued at least this often, in batches of up to BATCH_RECORDS.
FLUSH_SECONDS = 0.2
BATCH_RECORDS = 500
# A prediction id's random part: 16 bytes, 22 URL-safe base64 characters.
RANDOM_BYTES, RANDOM_CHARACTERS = 16, 22
# How often each writer applies the retention and the quota.
MAINTENANCE_SECONDS = 60.0


@dataclass(frozen=True)
class Origin:
    """What a face tells the store about a request: its route, id, client, images as sent."""

    route: str
    request_id: str
    started: float
    # The encoded images in request order; None when the request sent raw pixels.
    encoded: Sequence[bytes] | None = None
    client: str | None = None
    top_k: int | None = None


@dataclass
class _Prediction:
    """One image's record, queued: ranked and written by the writer thread."""

    prediction_id: str
    created_at: float
    origin: Origin
    route: "Route"
    scores: np.ndarray
    latency_ms: float
    sha256: str
    image: bytes | np.ndarray | None
    size: int = field(default=RECORD_BYTES)
    unknown: bool = False  # answered as unknown (below its min_confidence)


@dataclass
class _ShadowAnswer:
    """A shadow version's answers for earlier predictions, to join their rows by id."""

    name: str
    prediction_ids: list[str]
    version: int
    model: "ServingModel"
    scores: np.ndarray
    size: int = field(default=RECORD_BYTES)


def recorder_from(settings) -> "PredictionRecorder | None":
    """The recorder PREDICTION_STORE and its settings ask for; None while the store is off."""
    if not settings.prediction_store:
        return None
    return PredictionRecorder(
        Database(settings.prediction_store), settings.prediction_store_sample,
        settings.prediction_store_queue_records, settings.prediction_store_queue_bytes,
        settings.prediction_store_retention_days, settings.prediction_store_quota_bytes,
        bool(settings.prediction_store_client_addresses))


def new_prediction_id(now: float) -> str:
    """A prediction id: 128 random bits, URL-safe, never guessable from another one, then
    the time it was made in hexadecimal milliseconds (so feedback knows whether its row
    may still be on the way: service/store/feedback.py)."""
    return secrets.token_urlsafe(RANDOM_BYTES) + format(int(now * 1000), "x")


def made_at(prediction_id: str) -> float | None:
    """When an id of new_prediction_id's was made; None for one it did not make."""
    stamp = prediction_id[RANDOM_CHARACTERS:]
    if len(prediction_id) <= RANDOM_CHARACTERS or len(stamp) > 16:
        return None
    try:
        return int(stamp, 16) / 1000
    except ValueError:
        return None


def is_sampled(sha256: str, share: float) -> bool:
    """Whether an image's bytes are kept: decided by its hash, so the same image always gets
    the same answer in every worker and replica, and is kept once."""
    return int(sha256[:8], 16) / 0x1_0000_0000 < share


class PredictionRecorder:
    """Queues what a process predicts and writes it to the store from one thread."""

    def __init__(self, database: Database, sample_share: float, max_records: int,
                 max_bytes: int, retention_days: float, quota_bytes: int,
                 keep_client_addresses: bool = False):
        self.database = database
        self.sample_share = sample_share
        self.max_records, self.max_bytes = max_records, max_bytes
        self.retention_days, self.quota_bytes = retention_days, quota_bytes
        self.keep_client_addresses = keep_client_addresses
        self._queue: collections.deque = collections.deque()
        self._queued_bytes = 0
        self._waiting = threading.Condition()
        self._thread: threading.Thread | None = None
        self._known_versions: set[tuple[str, int]] = set()
        self._next_maintenance = 0.0
        self._writing = False

    def record(self, route: "Route", images: np.ndarray, probabilities: np.ndarray,
               origin: Origin, unknown: Sequence[bool] | None = None) -> list[str]:
        """Queue one record per image; the prediction ids, in image order, for the answer.
        An image answered as unknown (`unknown`) is marked so: it matches no true class in
        live accuracy (service/store/accuracy.py), whatever its top guess."""
        now, latency_ms = time.time(), (time.perf_counter() - origin.started) * 1000
        ids = []
        for index, scores in enumerate(probabilities):
            image = origin.encoded[index] if origin.encoded is not None else images[index]
            raw = image if isinstance(image, bytes | bytearray) else np.ascontiguousarray(image)
            sha256 = hashlib.sha256(raw).hexdigest()
            kept = raw if is_sampled(sha256, self.sample_share) else None
            record = _Prediction(new_prediction_id(now), now, origin, route, scores, latency_ms,
                                 sha256, kept, RECORD_BYTES + _size(kept),
                                 unknown is not None and bool(unknown[index]))
            ids.append(record.prediction_id)
            self._put(record, route.name)
        return ids

    def record_shadow(self, name: str, shadow: "ServingModel", prediction_ids: list[str],
                      probabilities: np.ndarray) -> None:
        """Queue a shadow version's answers, to be set on the rows of `prediction_ids`."""
        self._put(_ShadowAnswer(name, prediction_ids, shadow.version, shadow, probabilities), name)

    def _put(self, record, model_name: str) -> None:
        with self._waiting:
            if (len(self._queue) >= self.max_records
                    or self._queued_bytes + record.size > self.max_bytes):
                metrics.count_store_dropped(model_name, "queue_full")
                return
            self._queue.append(record)
            self._queued_bytes += record.size
            if self._thread is None:
                # Started on first use, in the worker that records (gunicorn forks first).
                self._thread = threading.Thread(target=self._run, name="prediction-store",
                                                daemon=True)
                self._thread.start()
            if len(self._queue) >= BATCH_RECORDS:
                self._waiting.notify()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written or dropped (for tests and stop)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._waiting:
                if not self._queue and not self._writing:
                    return True
                self._waiting.notify()
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        while True:
            with self._waiting:
                if len(self._queue) < BATCH_RECORDS:
                    self._waiting.wait(FLUSH_SECONDS)
                batch = [self._queue.popleft() for _ in range(min(BATCH_RECORDS, len(self._queue)))]
                self._queued_bytes -= sum(record.size for record in batch)
                self._writing = bool(batch)
            try:
                if batch:
                    self._write(batch)
                self._maintain()
            except Exception:  # the writer must outlive any one bad batch
                log.exception("the prediction store's writer failed on a batch")
                for record in batch:
                    metrics.count_store_dropped(_model_name(record), "write_failed")
            finally:
                self._writing = False

    def _write(self, batch: list) -> None:
        """Write one batch in one transaction; on failure, count every record dropped."""
        predictions = [record for record in batch if isinstance(record, _Prediction)]
        shadows = [record for record in batch if isinstance(record, _ShadowAnswer)]
        rows, images, versions = self._rows(predictions)
        try:
            with self.database.transaction() as session:
                session.run_many(
                    "INSERT INTO model_versions (model, version, classes) VALUES (?, ?, ?) "
                    "ON CONFLICT (model, version) DO NOTHING", versions)
                session.run_many(
                    "INSERT INTO predictions (prediction_id, created_at, request_id, model, "
                    "version, version_label, route, top1, top_k, latency_ms, image_sha256, "
                    "client_address, answered_unknown) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                session.run_many(
                    "INSERT INTO images (image_sha256, format, size, created_at, data) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (image_sha256) DO NOTHING", images)
                session.run_many(
                    "UPDATE predictions SET shadow_version = ?, shadow_top_k = ? "
                    "WHERE prediction_id = ?", _shadow_rows(shadows))
        except StoreUnavailableError as error:
            log.warning("prediction store write failed, %d records dropped: %s",
                        len(batch), error)
            for record in batch:
                metrics.count_store_dropped(_model_name(record), "write_failed")
            return
        self._known_versions.update((model, version) for model, version, _ in versions)
        for record in predictions:
            metrics.count_store_written(record.route.name)

    def _rows(self, predictions: list[_Prediction]) -> tuple[list, list, list]:
        """The predictions', kept images' and new versions' rows of a batch."""
        rows, images, versions, seen = [], [], [], set()
        for record in predictions:
            model, origin = record.route.model, record.origin
            ranked = model.rank(record.scores, origin.top_k or 3)
            client = origin.client if self.keep_client_addresses else None
            rows.append((record.prediction_id, record.created_at, origin.request_id,
                         record.route.name, model.version, record.route.label, origin.route,
                         ranked[0]["label"], json.dumps(ranked), round(record.latency_ms, 3),
                         record.sha256, client, int(record.unknown)))
            if record.image is not None and record.sha256 not in seen:
                seen.add(record.sha256)
                image_format, data = _image_file(record.image)
                images.append((record.sha256, image_format, len(data), record.created_at, data))
            key = (record.route.name, model.version)
            if key not in self._known_versions and key not in {v[:2] for v in versions}:
                versions.append((*key, json.dumps(list(model.classes))))
        return rows, images, versions

    def _maintain(self) -> None:
        """Apply the retention and the quota, every MAINTENANCE_SECONDS."""
        if time.monotonic() < self._next_maintenance:
            return
        self._next_maintenance = time.monotonic() + MAINTENANCE_SECONDS
        try:
            enforce_bounds(self.database, self.retention_days, self.quota_bytes)
        except StoreUnavailableError as error:
            log.warning("prediction store upkeep failed: %s", error)


def _model_name(record) -> str:
    return record.name if isinstance(record, _ShadowAnswer) else record.route.name


def _size(kept: bytes | np.ndarray | None) -> int:
    """The bytes a kept image holds in the queue."""
    if kept is None:
        return 0
    return kept.nbytes if isinstance(kept, np.ndarray) else len(kept)


def _shadow_rows(shadows: list[_ShadowAnswer]) -> list[tuple]:
    rows = []
    for answer in shadows:
        for prediction_id, scores in zip(answer.prediction_ids, answer.scores, strict=True):
            rows.append((answer.version, json.dumps(answer.model.rank(scores, 3)), prediction_id))
    return rows


def _image_file(image: bytes | np.ndarray) -> tuple[str, bytes]:
    """A kept image as a file: as sent, or raw pixels as a PNG; and its format's name."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        pixels = image[..., 0] if image.shape[-1] == 1 else image
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return "png", buffer.getvalue()
    try:
        with Image.open(io.BytesIO(image)) as opened:
            return (opened.format or "bin").lower(), bytes(image)
    except Exception:  # a format only the service's other decoders know; kept as it came
        return "bin", bytes(image)

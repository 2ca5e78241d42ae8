"""Prometheus metrics, correct across gunicorn workers through multiprocess mode."""

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

if TYPE_CHECKING:
    from service.inference import ServingModel

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("http_requests_total", "HTTP requests answered.",
                   ["route", "method", "status"])
LATENCY = Histogram("http_request_duration_seconds", "Time to answer an HTTP request.",
                    ["route", "status"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
IMAGES_CLASSIFIED = Counter("images_classified_total", "Images classified.")
PREDICTIONS = Counter("predictions_total", "Images classified, by top-1 label.", ["label"])
BATCH_SIZE = Histogram("model_batch_size", "Images per model call.",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
MODEL_LOAD_SECONDS = Histogram("model_load_seconds", "Time to load and warm a model version.",
                               buckets=(0.5, 1, 2, 5, 10, 20, 60))
MODEL_VERSION = Gauge("model_serving_version", "The model version each worker serves.",
                      multiprocess_mode="liveall")
API_KEYS = Gauge("api_keys_valid", "API keys each worker accepts now (0: none required).",
                 multiprocess_mode="liveall")
API_KEY_RELOADS = Counter("api_key_file_reloads_total",
                          "Reads of API_KEY_FILE, at start and after each change, by outcome.",
                          ["outcome"])


def count_classified(labels: Iterable[str]) -> None:
    """Count classified images, one top-1 label each."""
    labels = list(labels)
    for label in labels:
        PREDICTIONS.labels(label=label).inc()
    IMAGES_CLASSIFIED.inc(len(labels))


def record_model_load(model: "ServingModel", seconds: float) -> None:
    """Note a newly served version and how long it took to load."""
    MODEL_LOAD_SECONDS.observe(seconds)
    MODEL_VERSION.set(model.version)


def record_api_keys(ok: bool, key_count: int) -> None:
    """Note a read of the key file (never a key: only whether it worked and how many)."""
    API_KEY_RELOADS.labels(outcome="loaded" if ok else "failed").inc()
    API_KEYS.set(key_count)


def render() -> tuple[bytes, str]:
    """The metrics page and its content type, summed over workers when there are several."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST

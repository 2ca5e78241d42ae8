"""Prometheus metrics, correct across gunicorn workers through multiprocess mode.

The request series count HTTP requests and gRPC calls alike (gRPC runs over HTTP/2), with
`protocol` (http or grpc); a gRPC call's route is its full method name
(/inference.GRPCInferenceService/ModelInfer) and its status its gRPC status code's name.

Every series about a prediction carries the model's name, the version that answered and
`version_label`: the label it was chosen by (stable, canary, or another label a request
named), or `none` when the request named the version itself.
"""

import os
from typing import TYPE_CHECKING

import numpy as np
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
    from service.models.inference import ServingModel
    from service.models.repository import Model
    from service.models.routing import Route

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
MODEL = ["model", "version", "version_label"]
# A model version, whatever label it answered under.
VERSION = ["model", "version"]

REQUESTS = Counter("http_requests_total", "HTTP requests and gRPC calls answered.",
                   ["protocol", "route", "method", "status"])
LATENCY = Histogram("http_request_duration_seconds",
                    "Time to answer an HTTP request or a gRPC call.",
                    ["protocol", "route", "status"], buckets=LATENCY_BUCKETS)
INFERENCE_REQUESTS = Counter("inference_requests_total",
                             "Classification requests answered, by the version that answered.",
                             MODEL)
INFERENCE_LATENCY = Histogram("inference_request_duration_seconds",
                              "Time to answer a classification request, by the version that "
                              "answered.", MODEL, buckets=LATENCY_BUCKETS)
SPLIT_REQUESTS = Counter("model_split_requests_total",
                         "Requests that named no version or label, by the side of the canary "
                         "split that answered (stable or canary).", ["model", "version_label"])
IMAGES_CLASSIFIED = Counter("images_classified_total", "Images classified.")
PREDICTIONS = Counter("predictions_total", "Images classified, by top-1 label.",
                      [*MODEL, "label"])
UNKNOWN_ANSWERS = Counter("unknown_predictions_total",
                          "Images answered as unknown: top probability below the threshold "
                          "(the version's min_confidence or the request's).", MODEL)
SHADOW_IMAGES = Counter("shadow_images_total",
                        "Images a shadow version classified, by whether its top-1 label agreed "
                        "with the answer the client got.",
                        ["model", "version", "stable_version", "agreement"])
SHADOW_LATENCY = Histogram("shadow_request_duration_seconds",
                           "Time a shadow version took for its copy of a request.",
                           VERSION, buckets=LATENCY_BUCKETS)
SHADOW_SKIPPED = Counter("shadow_requests_skipped_total",
                         "Copies of requests a shadow version did not classify: its queue was "
                         "full, or it failed.", ["model", "version", "reason"])
BATCH_SIZE = Histogram("model_batch_size", "Images per model call.",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
MODEL_LOAD_SECONDS = Histogram("model_load_seconds", "Time to load and warm a model version.",
                               ["model"], buckets=(0.5, 1, 2, 5, 10, 20, 60))
MODEL_VERSION = Gauge("model_serving_version",
                      "The version each label of each model points at, in each worker.",
                      ["model", "version_label"], multiprocess_mode="liveall")
CANARY_PERCENT = Gauge("model_canary_percent",
                       "The share of unpinned requests the canary takes, as set by the policy.",
                       ["model", "mode"], multiprocess_mode="livemax")
POLICY_REJECTED = Gauge("model_policy_rejected",
                        "1 while a model's serving.json cannot be used (the reason is in "
                        "/models and the log), else 0.", ["model"], multiprocess_mode="livemax")
MODEL_MEMORY = Gauge("model_memory_bytes",
                     "Resident memory each loaded version added to the workers that loaded it.",
                     VERSION, multiprocess_mode="livesum")
VERSIONS_REFUSED = Gauge("model_versions_refused",
                         "Versions on disk that do not serve: broken (load_failed) or too large "
                         "for a worker's share of the memory limit (too_large).",
                         ["model", "reason"], multiprocess_mode="livemax")
API_KEYS = Gauge("api_keys_valid", "API keys each worker accepts now (0: none required).",
                 multiprocess_mode="liveall")
API_KEY_RELOADS = Counter("api_key_file_reloads_total",
                          "Reads of API_KEY_FILE, at start and after each change, by outcome.",
                          ["outcome"])
STORE_WRITTEN = Counter("prediction_store_records_written_total",
                        "Predictions written to the prediction store.", ["model"])
STORE_DROPPED = Counter("prediction_store_records_dropped_total",
                        "Records the prediction store did not keep: its queue was full, or the "
                        "write failed (database down, locked, full or read-only).",
                        ["model", "reason"])
FEEDBACK = Counter("feedback_total",
                   "Feedback taken (each prediction's first true class), by the version that "
                   "answered and whether its top-1 label was the true class: the live "
                   "accuracy's counts.", [*MODEL, "outcome"])
DRIFT_PSI = Gauge("model_drift_psi",
                  "Population stability index of a version's last answers in each worker against "
                  "its held-out test images: the top-1 class mix, or the top-1 confidence.",
                  ["model", "version", "aspect"], multiprocess_mode="liveall")
DRIFT_WINDOW = Gauge("model_drift_window_images",
                     "Answers in the drift window the PSI was computed on, per worker.",
                     VERSION, multiprocess_mode="liveall")
QUEUE_DEPTH = Gauge("inference_queue_depth",
                    "Classification requests admitted and not yet answered, by model version "
                    "(waiting for the batcher or in a model call), summed over workers.",
                    VERSION, multiprocess_mode="livesum")
REFUSALS = Counter("requests_refused_total",
                   "Requests refused before any model time, by reason: overloaded, "
                   "deadline_exceeded, caller_gone or invalid_deadline (quota refusals are "
                   "the proxy's: its access log, status 429).", ["reason"])
DEADLINE = Histogram("request_deadline_seconds",
                     "The deadline applied to each admitted classification request, from its "
                     "arrival.",
                     buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 600))


def version_label(route: "Route") -> str:
    """The version_label of a route's metrics."""
    return route.label or "none"


def count_classified(route: "Route", probabilities: np.ndarray) -> None:
    """Count a classification request and its images, one top-1 label each."""
    model = route.model
    labels = (route.name, str(model.version), version_label(route))
    INFERENCE_REQUESTS.labels(*labels).inc()
    if route.split:
        SPLIT_REQUESTS.labels(route.name, version_label(route)).inc()
    for index in np.argmax(probabilities, axis=1).tolist():
        PREDICTIONS.labels(*labels, model.classes[index]).inc()
    IMAGES_CLASSIFIED.inc(len(probabilities))


def count_unknown(route: "Route", unknown: int) -> None:
    """Count the images of a request that were answered as unknown."""
    if unknown:
        UNKNOWN_ANSWERS.labels(route.name, str(route.model.version),
                               version_label(route)).inc(unknown)


def observe_inference(route: "Route", seconds: float) -> None:
    """Note how long a classification request took to answer."""
    INFERENCE_LATENCY.labels(route.name, str(route.model.version),
                             version_label(route)).observe(seconds)


def count_shadow(name: str, shadow: "ServingModel", stable_version: int, agreed: int,
                 images: int, seconds: float) -> None:
    """Count a shadow version's copy of a request: how many top-1 labels agreed, how long."""
    version = str(shadow.version)
    for agreement, count in (("agree", agreed), ("disagree", images - agreed)):
        if count:
            SHADOW_IMAGES.labels(name, version, str(stable_version), agreement).inc(count)
    SHADOW_LATENCY.labels(name, version).observe(seconds)


def count_shadow_skipped(name: str, shadow: "ServingModel", reason: str) -> None:
    """Count a copy the shadow version did not classify, and why (queue_full or failed)."""
    SHADOW_SKIPPED.labels(name, str(shadow.version), reason).inc()


# model name -> versions whose memory this worker reports, so an unloaded one reads 0.
_memory_reported: dict[str, set[int]] = {}


def count_store_written(model: str) -> None:
    """Count a prediction written to the store."""
    STORE_WRITTEN.labels(model).inc()


def count_store_dropped(model: str, reason: str) -> None:
    """Count a record the store did not keep, and why (queue_full or write_failed)."""
    STORE_DROPPED.labels(model, reason).inc()


def count_feedback(model: str, version: int, label: str | None, correct: bool) -> None:
    """Count a prediction's first true class: right (its top-1) or wrong."""
    FEEDBACK.labels(model, str(version), label or "none",
                    "correct" if correct else "wrong").inc()


def record_drift(model: str, version: int, window: int, class_psi: float,
                 confidence_psi: float) -> None:
    """Set a version's drift gauges (service/observability/drift.py)."""
    DRIFT_PSI.labels(model, str(version), "class_mix").set(class_psi)
    DRIFT_PSI.labels(model, str(version), "confidence").set(confidence_psi)
    DRIFT_WINDOW.labels(model, str(version)).set(window)


def record_model_load(name: str, model: "ServingModel", seconds: float) -> None:
    """Note how long a version took to load and warm, and what it holds."""
    MODEL_LOAD_SECONDS.labels(name).observe(seconds)
    MODEL_MEMORY.labels(name, str(model.version)).set(model.memory_bytes)
    _memory_reported.setdefault(name, set()).add(model.version)


def record_model_state(model: "Model") -> None:
    """Set the gauges that show what a model's policy puts where."""
    table = model.table
    for label in ("stable", "canary"):
        MODEL_VERSION.labels(model.name, label).set(table.labels.get(label, 0))
    for mode in ("split", "shadow"):
        percent = table.canary.percent if "canary" in table.labels else 0
        CANARY_PERCENT.labels(model.name, mode).set(percent if table.canary.mode == mode else 0)
    POLICY_REJECTED.labels(model.name).set(1 if model.policy_problem else 0)
    for reason, count in model.refused().items():
        VERSIONS_REFUSED.labels(model.name, reason).set(count)
    reported = _memory_reported.get(model.name, set())
    for version in reported - set(table.versions):  # freed: no table names it any more
        MODEL_MEMORY.labels(model.name, str(version)).set(0)
        reported.discard(version)


def record_api_keys(ok: bool, key_count: int) -> None:
    """Note a read of the key file (never a key: only whether it worked and how many)."""
    API_KEY_RELOADS.labels(outcome="loaded" if ok else "failed").inc()
    API_KEYS.set(key_count)


def _registry() -> CollectorRegistry:
    """What /metrics reads: every worker's files when there are several, else this process."""
    if not os.environ.get(MULTIPROCESS_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def render() -> tuple[bytes, str]:
    """The metrics page and its content type, summed over workers when there are several."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def read(*names: str) -> dict[str, list[tuple[dict, float]]]:
    """The samples named (as /metrics names them), as (labels, value): the same figures
    /metrics shows, for the operator view (service/observability/operations.py)."""
    found: dict[str, list[tuple[dict, float]]] = {name: [] for name in names}
    for family in _registry().collect():
        for sample in family.samples:
            if sample.name in found:
                found[sample.name].append((sample.labels, sample.value))
    return found


def shadow_agreement() -> dict[tuple[str, int], list[dict]]:
    """(model, shadow version) -> its top-1 agreement with the answers clients got, counted
    by the stable version it was compared with, over every worker."""
    counts: dict[tuple[str, int, int], dict] = {}
    for labels, value in read("shadow_images_total")["shadow_images_total"]:
        key = (labels["model"], int(labels["version"]), int(labels["stable_version"]))
        entry = counts.setdefault(key, {"stable_version": key[2], "agreed": 0, "compared": 0})
        entry["compared"] += int(value)
        if labels["agreement"] == "agree":
            entry["agreed"] += int(value)
    found: dict[tuple[str, int], list[dict]] = {}
    for (model, version, _), entry in sorted(counts.items()):
        found.setdefault((model, version), []).append(entry)
    return found


def drift() -> dict[tuple[str, int], dict]:
    """(model, version) -> its drift gauges, from the worker whose window holds the most
    answers (each worker's window is its own share of the traffic)."""
    samples = read("model_drift_psi", "model_drift_window_images")
    workers: dict[tuple, dict] = {}
    for labels, value in samples["model_drift_window_images"]:
        key = (labels["model"], int(labels["version"]), labels.get("pid", ""))
        workers.setdefault(key, {})["window"] = int(value)
    for labels, value in samples["model_drift_psi"]:
        key = (labels["model"], int(labels["version"]), labels.get("pid", ""))
        workers.setdefault(key, {})[f"{labels['aspect']}_psi"] = round(value, 4)
    found: dict[tuple[str, int], dict] = {}
    for (model, version, _), gauges in workers.items():
        if {"window", "class_mix_psi", "confidence_psi"} <= set(gauges) and gauges["window"] > \
                found.get((model, version), {}).get("window", 0):
            found[model, version] = gauges
    return found

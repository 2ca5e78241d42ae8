"""Metrics add up over gunicorn workers, and everything the service prints is a JSON line.

Request ids are tested in-process, in tests/unit/test_routes.py.
"""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests import support


@pytest.fixture(scope="module")
def observed_models(tmp_path_factory, trained_models):
    """The models folder of the shared service below."""
    target = tmp_path_factory.mktemp("observed") / "models"
    shutil.copytree(trained_models, target)
    return target


@pytest.fixture(scope="module")
def observed(observed_models):
    """One service shared by the log tests, which barely change it."""
    server = support.RunningService(observed_models, observed_models.parent / "service.log")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def predict(server, image_count, request_id=None):
    """POST `image_count` drawn JPEGs as one multipart request; return the response."""
    colours = list(support.SHAPE_COLOURS.values())
    files = [("file", (f"{index}.jpg", support.encode(support.draw_picture(
        colours[index % 3], seed=index)), "image/jpeg")) for index in range(image_count)]
    headers = {"X-Request-ID": request_id} if request_id else {}
    return requests.post(server.url("/predict"), files=files, headers=headers, timeout=60)


def samples(server):
    """Every sample on /metrics as (name, labels, value)."""
    response = requests.get(server.url("/metrics"), timeout=10)
    assert response.status_code == 200
    return [(sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples]


def total(metric_samples, name, **labels):
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(value for sample_name, sample_labels, value in metric_samples
               if sample_name == name and labels.items() <= sample_labels.items())


def serving_pids(metric_samples):
    """The worker processes that have loaded a model (the gauge reads 0 until then)."""
    return {labels["pid"] for name, labels, value in metric_samples
            if name == "model_serving_version" and labels["version_label"] == "stable"
            and value >= 1}


def wait_for_workers(server, count, timeout=90):
    """Wait until `count` workers have each loaded the model (both must answer predicts)."""
    support.poll(lambda: len(serving_pids(samples(server))) >= count, timeout,
                 lambda: f"fewer than {count} workers loaded the model:\n{server.log()}")


def json_lines(server):
    """Every line the server printed, parsed; a line that is not a JSON object fails the test."""
    text = server.log()
    entries = []
    # A last line still being written is left for the next look.
    for line in text[:text.rfind("\n") + 1].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        assert isinstance(entry, dict), f"not a JSON log line: {line!r}"
        entries.append(entry)
    return entries


def log_entries(server, timeout=10, **fields):
    """The JSON log lines whose fields include `fields`, waiting briefly for one to appear."""
    return support.poll(
        lambda: [entry for entry in json_lines(server) if fields.items() <= entry.items()],
        timeout, lambda: f"no log line with {fields}:\n{server.log()}")


def test_metrics_add_up_over_two_workers(start_service, models_dir):
    server = start_service(models_dir, workers=2)
    wait_for_workers(server, 2)
    image_counts = [1 + index % 3 for index in range(12)]
    # Concurrent requests on separate connections, so both workers take some of them.
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = [response.status_code for response in pool.map(
            lambda count: predict(server, count), image_counts)]
    assert statuses == [200] * len(image_counts)

    # Whichever worker answers /metrics, it reports the sum over both workers.
    for _ in range(6):
        metric_samples = samples(server)
        assert total(metric_samples, "http_requests_total",
                     route="/predict", method="POST", status="200") == len(image_counts)
        assert total(metric_samples, "images_classified_total") == sum(image_counts)
        assert total(metric_samples, "predictions_total") == sum(image_counts)
        assert total(metric_samples, "model_batch_size_sum") == sum(image_counts)
        assert 1 <= total(metric_samples, "model_batch_size_count") <= sum(image_counts)
        assert total(metric_samples, "http_request_duration_seconds_count",
                     route="/predict", status="200") == len(image_counts)
        assert total(metric_samples, "model_load_seconds_count") == 2
        versions = {labels["pid"]: value for name, labels, value in metric_samples
                    if name == "model_serving_version" and labels["version_label"] == "stable"}
        assert len(versions) == 2 and set(versions.values()) == {1}


def test_metrics_start_from_zero_when_the_service_restarts(start_service, models_dir, tmp_path):
    folder = tmp_path / "prometheus"
    first = start_service(models_dir, prometheus_multiproc_dir=folder)
    assert [predict(first, 1).status_code for _ in range(3)] == [200] * 3
    assert total(samples(first), "images_classified_total") == 3
    assert first.stop() == 0

    second = start_service(models_dir, prometheus_multiproc_dir=folder)
    metric_samples = samples(second)
    assert total(metric_samples, "images_classified_total") == 0
    assert total(metric_samples, "http_requests_total", route="/predict") == 0


def test_each_request_logs_one_json_line(observed):
    response = predict(observed, 2, request_id="log-check-1")
    assert response.status_code == 200
    [entry] = log_entries(observed, request_id="log-check-1")
    assert entry["method"] == "POST" and entry["path"] == "/predict" and entry["status"] == 200
    assert entry["model_version"] == 1 and entry["images"] == 2
    assert isinstance(entry["duration_ms"], (int, float)) and entry["duration_ms"] > 0

    refused = requests.post(observed.url("/predict"), data=b"plain words",
                            headers={"Content-Type": "text/plain", "X-Request-ID": "log-check-2"},
                            timeout=10)
    assert refused.status_code == 415
    [entry] = log_entries(observed, request_id="log-check-2")
    assert entry["status"] == 415 and entry["images"] == 0


def test_model_loads_and_failures_are_logged_with_reasons(observed, observed_models):
    [loaded] = log_entries(observed, event="model_load", model_version=1)
    assert loaded["model"] == "shapes" and loaded["load_seconds"] > 0
    [swap] = log_entries(observed, event="model_swap", model_version=1)
    assert "serving model shapes version 1" in swap["message"]

    # A published version that cannot be read is logged with its reason and skipped.
    broken = observed_models / "shapes" / "2"
    broken.mkdir()
    (broken / "model.tflite").write_bytes(b"not a model")
    (broken / "metadata.json").write_text("{")
    [failure] = log_entries(observed, timeout=20, event="model_load_failed", model_version=2)
    assert failure["level"] == "ERROR" and "metadata.json" in failure["message"]
    assert requests.get(observed.url("/health/ready"), timeout=10).json()["model"]["version"] == 1


# Last in this file: it stops the shared service.
def test_every_line_from_start_to_shutdown_is_json(observed):
    assert observed.stop() == 0
    entries = json_lines(observed)
    gunicorn = [entry["message"] for entry in entries if entry["logger"] == "gunicorn.error"]
    for words in ("Starting gunicorn", "Booting worker", "Handling signal: term",
                  "Worker exiting", "Shutting down: Master"):
        assert any(words in message for message in gunicorn), (words, gunicorn)
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)

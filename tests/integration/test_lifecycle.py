"""The service over time: no model yet, API keys, new and broken versions, shutdown."""

import shutil
import signal
import threading
import time

import requests

from tests import support

IMAGE = support.encode(support.draw_picture(support.SHAPE_COLOURS["green"]))


def post_image(server, headers=None, data=IMAGE, timeout=30):
    headers = {"Content-Type": "image/jpeg", **(headers or {})}
    return requests.post(server.url("/predict"), data=data, headers=headers, timeout=timeout)


def test_without_a_model_the_service_is_live_but_not_ready(start_service, tmp_path, models_dir):
    empty = tmp_path / "empty-models"
    server = start_service(empty, wait_ready=False)
    assert support.wait_for(lambda: requests.get(server.url("/health/live"), timeout=2).ok)
    assert support.wait_for(
        lambda: requests.get(server.url("/health/ready")).json()["status"] == "no_model")
    ready = requests.get(server.url("/health/ready"))
    assert ready.status_code == 503 and "no model version" in ready.json()["reason"]
    response = post_image(server)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_not_ready"
    # Publishing a first version makes it ready without a restart.
    shutil.copytree(models_dir, empty)
    server.wait_ready(timeout=60)
    assert post_image(server).status_code == 200


def test_an_api_key_guards_predict_only(start_service, models_dir):
    server = start_service(models_dir, api_key="open-sesame")
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                    {"Authorization": "open-sesame"}):
        response = post_image(server, headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    assert post_image(server, {"X-API-Key": "open-sesame"}).status_code == 200
    assert post_image(server, {"Authorization": "Bearer open-sesame"}).status_code == 200
    # Either header may carry the key: a stale one in the other header does not hide it.
    assert post_image(server, {"Authorization": "Bearer open-sesame",
                               "X-API-Key": "stale"}).status_code == 200
    for path in ("/health", "/health/live", "/metrics", "/", "/openapi.json"):
        assert requests.get(server.url(path)).status_code == 200


def test_a_new_version_is_served_while_requests_run_and_none_fails(start_service, models_dir):
    server = start_service(models_dir)
    statuses, versions, stop = [], [], threading.Event()

    def client():
        with requests.Session() as session:
            while not stop.is_set():
                response = session.post(server.url("/predict"), data=IMAGE, timeout=30,
                                        headers={"Content-Type": "image/jpeg"})
                statuses.append(response.status_code)
                if response.ok:
                    versions.append(response.json()["model"]["version"])

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(1)
    support.publish_copy(models_dir, 2)
    swapped = support.wait_for(lambda: versions and versions[-1] == 2)
    time.sleep(1)
    stop.set()
    for thread in clients:
        thread.join()
    assert swapped, "version 2 was never served"
    assert set(statuses) == {200} and len(statuses) > 20
    assert versions[0] == 1 and versions[-1] == 2
    assert requests.get(server.url("/model")).json()["version"] == 2
    assert '"event": "model_swap"' in server.log()


def test_a_broken_new_version_is_skipped_and_the_old_keeps_serving(start_service, models_dir):
    server = start_service(models_dir)
    support.publish_copy(models_dir, 2, break_model=True)
    assert support.wait_for(lambda: "model_load_failed" in server.log())
    assert requests.get(server.url("/model")).json()["version"] == 1
    response = post_image(server)
    assert response.status_code == 200 and response.json()["model"]["version"] == 1
    assert requests.get(server.url("/health/ready")).status_code == 200
    # A good version after the broken one is picked up as usual.
    support.publish_copy(models_dir, 3)
    assert support.wait_for(lambda: requests.get(server.url("/model")).json()["version"] == 3)


def test_sigterm_lets_a_request_in_flight_finish_and_starts_no_new_ones(start_service, models_dir):
    server = start_service(models_dir)
    result = {}

    def slow_body():
        # The upload trickles in over about two seconds, so SIGTERM arrives mid-request.
        for start in range(0, len(IMAGE), len(IMAGE) // 8 + 1):
            time.sleep(0.25)
            yield IMAGE[start:start + len(IMAGE) // 8 + 1]

    def slow_request():
        result["response"] = post_image(server, data=slow_body(), timeout=60)

    request_thread = threading.Thread(target=slow_request)
    request_thread.start()
    time.sleep(0.7)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    refused = False
    try:
        requests.get(server.url("/health/live"), timeout=5)
    except requests.ConnectionError:
        refused = True
    request_thread.join(60)
    assert result["response"].status_code == 200
    assert result["response"].json()["predictions"][0]["label"]
    assert refused, "a new connection was accepted after SIGTERM"
    assert server.process.wait(30) == 0

"""API keys under real gunicorn: a key file rotated under load, refusals at start, no key in logs.

Two workers, each with its own copy of the keys, each re-reading the file within a second
of a change (service/api_keys.py).
"""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from service.api_keys import RELOAD_SECONDS
from tests import support

OLD = "old-key-4f1c2a9e8b7d6c5a"
NEW = "new-key-9a8b7c6d5e4f3a2b"
JPEG = support.encode(support.draw_picture(support.SHAPE_COLOURS["blue"]))
# Long enough for every worker to have looked at the file again under load.
SETTLE_SECONDS = 2 * RELOAD_SECONDS + 0.5
LOAD_THREADS = 4


def write(path, text):
    """Rewrite the key file in place, as an operator edits a mounted Docker secret."""
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def predict(server, key, session=requests):
    """POST one JPEG to /predict with `key` as a Bearer token."""
    return session.post(server.url("/predict"), data=JPEG, timeout=30,
                        headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {key}"})


class Clients:
    """Threads that post images with whichever key they are told to use, counting failures."""

    def __init__(self, server):
        self.server, self.key = server, OLD
        self.answers, self.failures = 0, []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(LOAD_THREADS)

    def _run(self):
        session = requests.Session()
        while not self._stop.is_set():
            key = self.key
            try:
                status = predict(self.server, key, session).status_code
            except requests.RequestException as error:
                status = repr(error)
            self.answers += 1
            if status != 200:
                self.failures.append((key[:3], status))

    def __enter__(self):
        self._running = [self._pool.submit(self._run) for _ in range(LOAD_THREADS)]
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._pool.shutdown(wait=True)
        for running in self._running:
            running.result()


def test_a_key_is_rotated_under_load_with_no_failed_request(start_service, models_dir, tmp_path):
    keys = tmp_path / "api-keys"
    keys.write_text(f"# the shop's key\n{OLD}\n")
    server = start_service(models_dir, api_key_file=keys, workers=2, log_level="debug")

    with Clients(server) as clients:
        time.sleep(1)
        # 1. Add the new key beside the old one; 2. once every worker has read it, move the
        # clients; 3. remove the old key.
        write(keys, f"# the shop's key, being rotated\n{OLD}\n{NEW}\n")
        time.sleep(SETTLE_SECONDS)
        clients.key = NEW
        time.sleep(1)
        write(keys, f"# the shop's key\n{NEW}\n")
        removed_at = time.monotonic()
        # Within one reload interval (and the time to answer), the old key is refused by
        # every worker; the clients on the new key go on.
        support.poll(lambda: all(predict(server, OLD).status_code == 401 for _ in range(8)),
                     RELOAD_SECONDS + 1.5, "the removed key was still accepted", interval=0.1)
        refused_after = time.monotonic() - removed_at
        time.sleep(1)

    assert clients.answers > 50, clients.answers
    assert clients.failures == [], clients.failures[:10]
    assert refused_after <= RELOAD_SECONDS + 1.5
    # Every worker reports the one key now valid; neither key is anywhere in the log.
    metrics = requests.get(server.url("/metrics"), timeout=10).text
    valid = {sample.labels["pid"]: sample.value
             for family in text_string_to_metric_families(metrics)
             for sample in family.samples if sample.name == "api_keys_valid"}
    assert valid == {str(pid): 1.0 for pid in support.worker_pids(server)}
    assert OLD not in server.log() and NEW not in server.log()
    assert OLD not in metrics and NEW not in metrics


def test_a_bad_file_at_a_reload_keeps_the_keys_and_logs_why(start_service, models_dir,
                                                            tmp_path):
    keys = tmp_path / "api-keys"
    keys.write_text(f"{OLD}\n")
    server = start_service(models_dir, api_key_file=keys)
    write(keys, f"{NEW} is the new key\n")
    time.sleep(SETTLE_SECONDS)
    assert predict(server, OLD).status_code == 200
    response = predict(server, NEW)
    support.assert_error(response, 401, "unauthorized")
    lines = [json.loads(line) for line in server.log().splitlines()]
    (failed,) = [line for line in lines if line.get("event") == "api_keys_reload_failed"]
    assert failed["level"] == "WARNING" and "line 1 holds more than one word" in failed["message"]
    assert OLD not in server.log() and NEW not in server.log()


@pytest.mark.parametrize("contents, settings, reason", [
    ("", {}, "it holds no key"),
    ("# no key yet\n", {}, "it holds no key"),
    ("too-short\n", {}, "line 1: a key must be at least 16 characters"),
    (None, {}, "cannot read it: No such file or directory"),
    (f"{OLD}\n", {"api_key": NEW}, "Set API_KEY or API_KEY_FILE, not both"),
])
def test_an_unusable_key_file_stops_the_start_with_the_reason(start_service, models_dir,
                                                              tmp_path, contents, settings,
                                                              reason):
    keys = tmp_path / "api-keys"
    if contents is not None:
        keys.write_text(contents)
    server = start_service(models_dir, wait_ready=False, api_key_file=keys, **settings)
    assert server.process.wait(30) == 2, server.log()
    (line,) = [json.loads(line) for line in server.log().splitlines()]
    assert line["level"] == "CRITICAL" and reason in line["message"], line
    assert NEW not in server.log()


def test_answers_name_no_server_version(service):
    for response in (requests.get(service.url("/health"), timeout=10),
                     requests.get(service.url("/no/such/route"), timeout=10)):
        assert response.headers["Server"] == "gunicorn"
        assert response.headers["X-Content-Type-Options"] == "nosniff"

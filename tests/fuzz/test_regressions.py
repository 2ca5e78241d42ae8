"""Every input that ever failed a fuzz target, sent to the real service: each is a 4xx error."""

import importlib
import json
import shutil

import requests

from tests.fuzz.runner import REGRESSIONS_DIR, judged, target_names


def saved_inputs(target):
    """The inputs kept in regressions/TARGET/, sorted by name."""
    folder = REGRESSIONS_DIR / target
    return sorted(folder.iterdir()) if folder.is_dir() else []


def is_error_body(response):
    """DESIGN.md's JSON error {"error": {"code", "message"}}, or the OIP's {"error": "..."}."""
    if response.headers.get("Content-Type") != "application/json":
        return False
    error = response.json().get("error")
    if isinstance(error, dict):
        return bool(error.get("code") and error.get("message"))
    return isinstance(error, str) and bool(error)


def test_every_input_a_fuzzer_found_is_answered_with_a_client_error(service):
    replayed, failures = 0, []
    for target in target_names():
        replay = getattr(importlib.import_module(f"tests.fuzz.targets.{target}"), "replay", None)
        for path in saved_inputs(target) if replay else []:
            response = replay(service.base_url, path.read_bytes())
            replayed += 1
            if not (400 <= response.status_code < 500 and is_error_body(response)):
                failures.append(f"{target}/{path.name}: {response.status_code} "
                                f"{response.text[:300]}")
    assert replayed >= 3
    assert not failures, "\n".join(failures)
    assert '"status": 500' not in service.log()


def test_versions_with_hostile_metadata_are_skipped_and_the_good_one_served(models_dir,
                                                                            start_service):
    versions = models_dir / "shapes"
    hostile = {}
    for number, path in enumerate(saved_inputs("model_repository"), start=2):
        staging = versions / f".tmp-{number}"
        shutil.copytree(versions / "1", staging)
        (staging / "metadata.json").write_bytes(path.read_bytes())
        staging.rename(versions / str(number))
        hostile[number] = path.name
    assert hostile
    server = start_service(models_dir)
    assert requests.get(server.url("/health/ready"), timeout=10).json()["model"]["version"] == 1
    entries = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    skipped = {entry.get("model_version") for entry in entries
               if entry.get("event") == "model_load_failed"}
    assert set(hostile) <= skipped, f"skipped without a logged reason: {hostile}\n{server.log()}"


def test_every_input_found_for_a_target_without_a_replay_is_a_client_error_in_process():
    # The gRPC request target has no HTTP service to replay to: its inputs go through the
    # target itself, judged as the fuzzer judges them (a client error passes).
    checked = 0
    for target in target_names():
        module = importlib.import_module(f"tests.fuzz.targets.{target}")
        if getattr(module, "replay", None):
            continue
        for path in saved_inputs(target):
            judged(module.test_one_input)(path.read_bytes())
            checked += 1
    assert checked >= 1

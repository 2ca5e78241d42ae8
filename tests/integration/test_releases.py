"""Releasing through the real service: several models, the canary split and shadow, promote
and roll back under load, and the training gate."""

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from service.models import release
from service.models.artifact import POLICY_FILE
from tests import support

IMAGE = support.encode(support.draw_picture(support.SHAPE_COLOURS["green"]))
DIGITS = support.ROOT / "models" / "digits"


def predict(server, path="/predict", session=requests, headers=None):
    response = session.post(server.url(path), data=IMAGE, timeout=30,
                            headers={"Content-Type": "image/jpeg", **(headers or {})})
    assert response.status_code == 200, response.text
    return response.json()["model"]


def metric(server, name, **labels):
    """The sum of the samples called `name` whose labels include `labels`."""
    text = requests.get(server.url("/metrics"), timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def models_with_candidate(models_dir):
    """shapes 1 (stable) and 2 (a copy, the candidate)."""
    support.publish_copy(models_dir, 2)
    release.promote(str(models_dir / "shapes"), 1)
    return str(models_dir / "shapes")


def test_several_models_are_served_each_with_its_own_input_and_classes(start_service,
                                                                       models_dir):
    shutil.copytree(DIGITS, models_dir / "digits")
    server = start_service(models_dir)

    def both_loaded():  # ready means the default model; digits may still be loading
        body = requests.get(server.url("/models"), timeout=10).json()
        found = {model["name"]: model for model in body["models"]}
        return body if all(found.get(name, {}).get("input") for name in ("digits", "shapes")) \
            else None

    body = support.poll(both_loaded, 60, "digits and shapes were not both loaded")
    assert body["default"] == "shapes"
    described = {model["name"]: model for model in body["models"]}
    assert described["digits"]["input"] == {"height": 8, "width": 8, "channels": 1}
    assert described["digits"]["classes"] == [str(digit) for digit in range(10)]
    assert described["shapes"]["input"] == {"height": 16, "width": 16, "channels": 3}
    digit = requests.post(server.url("/models/digits/predict"), data=IMAGE, timeout=30,
                          headers={"Content-Type": "image/jpeg"}).json()
    newest = max(int(entry.name) for entry in DIGITS.iterdir() if entry.name.isdigit())
    assert digit["model"] == {"name": "digits", "version": newest, "label": "stable"}
    # A shape is no digit: the answer may be unknown, but it still ranks digits.
    [prediction] = digit["predictions"]
    assert prediction["top_k"][0]["label"] in described["digits"]["classes"]
    assert prediction["label"] in (None, prediction["top_k"][0]["label"])
    assert predict(server)["name"] == "shapes"
    metadata = requests.get(server.url("/v2/models/digits"), timeout=10).json()
    assert metadata["inputs"][1]["shape"] == [-1, 8, 8, 1]
    assert metadata["outputs"][0]["shape"] == [-1, 10]
    index = requests.post(server.url("/v2/repository/index"), timeout=10).json()
    ready = {(entry["name"], entry["version"]) for entry in index if entry["state"] == "READY"}
    assert {name for name, _ in ready} == {"digits", "shapes"} and ("digits", str(newest)) in ready
    # The older shipped digits versions are on disk but not loaded (the default policy).
    assert all(entry["name"] == "digits" and int(entry["version"]) < newest
               for entry in index if entry["state"] != "READY")


def test_the_split_holds_its_share_over_a_thousand_requests(start_service, models_dir):
    folder = models_with_candidate(models_dir)
    release.set_canary(folder, 2, 10, "split")
    server = start_service(models_dir, workers=2)
    support.poll(lambda: requests.get(server.url("/models/shapes"), timeout=5).json()[
        "canary"] is not None, 30, server.log)
    local = threading.local()

    def one(_):
        local.session = getattr(local, "session", None) or requests.Session()
        return predict(server, session=local.session)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(one, range(1200)))
    canary = [answer for answer in answers if answer["version"] == 2]
    assert {answer["label"] for answer in canary} == {"canary"}
    share = len(canary) / len(answers)
    assert 0.07 <= share <= 0.13, f"canary share {share:.3f}"
    # The metrics count the same split.
    assert metric(server, "model_split_requests_total", model="shapes",
                  version_label="canary") == len(canary)
    assert metric(server, "inference_requests_total", model="shapes", version="1",
                  version_label="stable") == len(answers) - len(canary)


def test_a_shadow_canary_is_compared_and_never_answers(start_service, models_dir):
    folder = models_with_candidate(models_dir)
    release.set_canary(folder, 2, 50, "shadow")
    server = start_service(models_dir)
    support.poll(lambda: requests.get(server.url("/models/shapes"), timeout=5).json()[
        "canary"] is not None, 30, server.log)
    with requests.Session() as session:
        answers = [predict(server, session=session) for _ in range(200)]
    assert {(answer["version"], answer["label"]) for answer in answers} == {(1, "stable")}
    # Version 2 is a copy of 1: its copies agree on every image.
    support.poll(lambda: metric(server, "shadow_images_total", model="shapes", version="2",
                                agreement="agree") >= 99, 20, server.log)
    assert metric(server, "shadow_images_total", agreement="disagree") == 0
    assert metric(server, "shadow_request_duration_seconds_count", model="shapes",
                  version="2") >= 99
    # The log line of each request names model, version and label.
    lines = [json.loads(line) for line in server.log().splitlines() if '"path": "/predict"' in line]
    assert lines and all((line["model"], line["model_version"], line["version_label"])
                         == ("shapes", 1, "stable") for line in lines)


def test_canary_promote_and_rollback_under_load_lose_no_request(start_service, models_dir):
    folder = models_with_candidate(models_dir)
    server = start_service(models_dir, workers=2, threads=16)
    poll_window = 0.5 * 2 + 1.0  # MODEL_POLL_SECONDS is 0.5: two polls, and slack
    phases = [(time.monotonic(), {1})]
    answers, failures, stop = [], [], threading.Event()

    def client():
        with requests.Session() as session:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    version = predict(server, session=session)["version"]
                except (AssertionError, requests.RequestException) as error:
                    failures.append(repr(error))
                    continue
                answers.append((started, time.monotonic(), version))

    clients = [threading.Thread(target=client) for _ in range(32)]
    for thread in clients:
        thread.start()
    try:
        for step, allowed in ((lambda: release.set_canary(folder, 2, 50, "split"), {1, 2}),
                              (lambda: release.promote(folder), {2}),
                              (lambda: release.roll_back(folder), {1})):
            time.sleep(2.5)
            step()
            phases.append((time.monotonic(), allowed))
        time.sleep(2.5)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    assert not failures, failures[:5]
    assert len(answers) > 200

    def allowed_between(start, end):
        """Every version some policy in force between `start` and `end` allowed."""
        versions = set()
        for index, (since, allowed) in enumerate(phases):
            until = phases[index + 1][0] if index + 1 < len(phases) else float("inf")
            if since <= end and until >= start:
                versions |= allowed
        return versions

    wrong = [(round(end - phases[0][0], 2), version) for start, end, version in answers
             if version not in allowed_between(start - poll_window, end)]
    assert not wrong, f"answers from versions the policy did not allow: {wrong[:10]}"
    seen = {version for _, end, version in answers if phases[1][0] + poll_window < end
            < phases[2][0]}
    assert seen == {1, 2}


def swapped_labels(source, target):
    """A copy of the image folder `source` whose class folders are misnamed: each class's
    images under the next class's name, as when folders are mixed up."""
    names = sorted(folder.name for folder in source.iterdir())
    for name, wrong_name in zip(names, names[1:] + names[:1], strict=True):
        shutil.copytree(source / name, target / wrong_name)
    return target


def run_training(data, models_dir, *options):
    """Run the training command as a user would; return (status, what it printed)."""
    from model_training.train import main

    return main(["--data-dir", str(data), "--output", str(models_dir), "--name", "shapes",
                 "--epochs", "3", *support.TINY_MODEL_OPTIONS, *options])


def test_the_gate_refuses_a_worse_model_while_stable_keeps_serving(start_service, models_dir,
                                                                  shapes_dataset, tmp_path,
                                                                  capsys):
    server = start_service(models_dir)
    assert predict(server)["version"] == 1
    worse = swapped_labels(shapes_dataset, tmp_path / "swapped")
    capsys.readouterr()
    # Judged on a trusted test set: the held-out share of a mislabelled folder would carry
    # the same wrong labels (docs/models.md, "The release gate").
    assert run_training(worse, models_dir, "--test-dir", str(shapes_dataset)) == 3
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("release gate: version 2 ") and "against stable version 1 " in line
    assert "refused, it is worse than stable by more than the margin" in line
    assert "stable stays version 1" in line
    policy = json.loads((models_dir / "shapes" / POLICY_FILE).read_text())
    assert policy["version_labels"] == {"stable": 1}
    # Version 2 is published and loaded, but only a request that names it gets it.
    support.poll(lambda: 2 in [entry["version"] for entry in requests.get(
        server.url("/models/shapes"), timeout=5).json()["versions"]
        if entry["state"] == "ready"], 30, server.log)
    assert {predict(server)["version"] for _ in range(20)} == {1}
    assert predict(server, "/models/shapes/versions/2/predict")["version"] == 2


def test_a_version_that_passes_can_be_made_the_canary(models_dir, shapes_dataset, capsys):
    # The same data again: the margin is wide so that the test does not hang on run-to-run
    # noise (18 test images: one is 5.6 points).
    status = run_training(shapes_dataset, models_dir, "--release", "canary", "--canary-percent",
                          "30", "--canary-mode", "shadow", "--gate-margin", "0.5")
    assert status == 0
    assert "version 2 is now the canary: 30% of requests, shadow" in capsys.readouterr().out
    policy = json.loads((models_dir / "shapes" / POLICY_FILE).read_text())
    assert policy["version_labels"] == {"stable": 1, "canary": 2}
    assert policy["canary"] == {"percent": 30, "mode": "shadow"}


def test_a_version_with_other_classes_passes_only_when_asked(models_dir, tmp_path, capsys):
    data = support.make_image_folder(tmp_path / "four", per_class=20)
    for index in range(20):
        (data / "yellow").mkdir(exist_ok=True)
        support.draw_picture((230, 220, 40), seed=5000 + index).save(
            data / "yellow" / f"{index}.png")
    assert run_training(data, models_dir) == 3
    assert "refused, its classes differ from stable's (added yellow" in capsys.readouterr().out
    assert run_training(data, models_dir, "--allow-class-change", "--gate-margin", "0.5") == 0
    assert "version 3 is now stable" in capsys.readouterr().out
    policy = json.loads((models_dir / "shapes" / POLICY_FILE).read_text())
    assert policy["version_labels"] == {"stable": 3}
    assert [entry["stable"] for entry in policy["history"]] == [1]


def test_publish_only_leaves_stable_as_it_is(models_dir, shapes_dataset, capsys):
    assert run_training(shapes_dataset, models_dir, "--release", "publish") == 0
    out = capsys.readouterr().out
    assert "published only: stable stays version 1" in out
    policy = json.loads((models_dir / "shapes" / POLICY_FILE).read_text())
    assert policy["version_labels"] == {"stable": 1}


@pytest.mark.parametrize("content", [b'{"version_labels": {"stable": 1},', b"\x00\xff"])
def test_an_unusable_policy_file_stops_training_before_it_starts(models_dir, shapes_dataset,
                                                                 capsys, content):
    (models_dir / "shapes" / POLICY_FILE).write_bytes(content)
    assert run_training(shapes_dataset, models_dir) == 2
    assert "serving.json" in capsys.readouterr().err
    assert sorted(path.name for path in (models_dir / "shapes").iterdir()) == ["1", POLICY_FILE]

"""The real containers through plain `docker compose`: build, serve, retrain, stop.

The tests run in file order against one compose project (tests/e2e/compose.py).
"""

import time

import pytest
import requests

from service.models.artifact import PUBLISHED_FILES, published_versions
from tests import support
from tests.e2e.compose import MODEL_NAME, running_project, skip_without_compose

# A cold build downloads TensorFlow for the trainer; the first test's setup includes it.
pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

skip_without_compose()

TRAIN_SECONDS = 600
# The api image holds no TensorFlow; the issue that made it so set this target.
API_IMAGE_MAX_BYTES = 350_000_000


@pytest.fixture(scope="module")
def compose_project(tmp_path_factory, shapes_dataset):
    """Build the image and start the service on a copy of models/; always `compose down` after."""
    with running_project(tmp_path_factory.mktemp("compose"), shapes_dataset,
                         MODEL_POLL_SECONDS="1") as project:
        yield project


def test_api_serves_the_shipped_model_within_a_minute(compose_project):
    shipped = published_versions(compose_project.models_dir / MODEL_NAME)[-1]
    body = compose_project.wait_ready()
    assert body["model"] == {"name": MODEL_NAME, "version": shipped}


def test_docker_reports_the_api_healthy(compose_project):
    compose_project.wait_ready()
    container = compose_project.api_container()

    def health_status():
        return compose_project.docker("inspect", "--format", "{{.State.Health.Status}}",
                                      container)

    # The image's HEALTHCHECK runs every 10 s; give it a few rounds once /health answers.
    support.poll(lambda: health_status() == "healthy", 60, lambda: (
        f"docker health status is {health_status()!r}{compose_project.logs()}"), interval=1)


def test_api_classifies_a_real_jpeg(compose_project):
    compose_project.wait_ready()
    classes = compose_project.http.get(compose_project.url("/model"), timeout=10).json()["classes"]
    jpeg = support.encode(support.draw_picture(support.SHAPE_COLOURS["red"], size=64), quality=90)
    assert jpeg[:3] == b"\xff\xd8\xff"

    response = compose_project.predict(jpeg, "red.jpg")

    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert prediction["filename"] == "red.jpg"
    best = prediction["top_k"][0]["label"]
    assert best in classes
    assert 0 <= prediction["confidence"] <= 1
    # A drawn shape is none of CIFAR-10's classes: the answer may well be unknown.
    assert prediction["label"] == (None if prediction["unknown"] else best)


def test_api_does_not_run_as_root(compose_project):
    compose_project.wait_ready()
    # Process 1 is the gunicorn master; its workers inherit its user.
    status = compose_project.compose("exec", "-T", "api", "cat", "/proc/1/status").stdout
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    real, effective, saved, filesystem = (int(value) for value in uid_line.split()[1:])
    assert 0 not in (real, effective, saved, filesystem), uid_line
    assert effective == compose_project.user[0]


def test_the_api_image_is_small_read_only_and_has_no_tensorflow_or_compiler(compose_project):
    compose_project.wait_ready()
    probe = ("import importlib.util, shutil; "
             "print([name for name in ('tensorflow', 'keras', 'matplotlib', 'grpc_tools') "
             "if importlib.util.find_spec(name)], "
             "[tool for tool in ('gcc', 'cc', 'c++', 'clang') if shutil.which(tool)])")
    found = compose_project.compose("exec", "-T", "api", "python", "-c", probe).stdout.strip()
    assert found == "[] []"
    container = compose_project.api_container()
    assert compose_project.docker("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}",
                                  container) == "true"
    image = compose_project.docker("inspect", "--format", "{{.Image}}", container)
    size = int(compose_project.docker("image", "inspect", "--format", "{{.Size}}", image))
    assert size <= API_IMAGE_MAX_BYTES, f"the api image is {size / 1e6:.0f} MB"


def retrain(compose_project, *options):
    """Run the trainer through compose on the drawn pictures; return (status, stdout)."""
    result = compose_project.compose(
        "--profile", "train", "run", "--rm", "-T", "trainer",
        "--data-dir", compose_project.training_folder,
        "--epochs", "1", "--batch-size", "16", "--width", "8", "--image-size", "16",
        "--validation-split", "0.2", "--test-split", "0.2", "--precision", "float32",
        *options, timeout=TRAIN_SECONDS, check=False)
    return result.returncode, result.stdout + result.stderr


def release(compose_project, *args):
    """Run the release command through compose, as a user would; return its output."""
    return compose_project.compose("run", "--rm", "-T", "release", *args).stdout


def answered_version(compose_project, expected, headers=None):
    """Poll /predict until version `expected` answers; return that answer."""
    jpeg = support.encode(support.draw_picture(support.SHAPE_COLOURS["blue"], size=48))

    def answered():
        response = compose_project.http.post(
            compose_project.url("/predict"), files={"file": ("blue.jpg", jpeg, "image/jpeg")},
            headers=headers or {}, timeout=30)
        assert response.status_code == 200, response.text
        return response if response.json()["model"]["version"] == expected else None

    # Each worker switches at its own next look (MODEL_POLL_SECONDS=1): the worker that
    # answered /health may have switched while the one that takes this request is about to.
    return support.poll(answered, 15, f"/predict answered by version {expected}")


def test_the_gate_refuses_a_retrained_version_whose_classes_differ(compose_project):
    compose_project.wait_ready()
    versions_dir = compose_project.models_dir / MODEL_NAME
    stable = published_versions(versions_dir)[-1]
    status, output = retrain(compose_project)

    expected = stable + 1
    assert f"published: /app/models/{MODEL_NAME}/{expected}" in output, output
    assert status == 3, output
    assert (f"release gate: version {expected}" in output
            and f"against stable version {stable}" in output
            and "refused, its classes differ from stable's" in output), output
    published = versions_dir / str(expected)
    assert all((published / name).exists() for name in PUBLISHED_FILES)
    assert (published.stat().st_uid, published.stat().st_gid) == compose_project.user
    # Stable keeps serving; the new version answers only when asked for by number.
    time.sleep(2)
    assert answered_version(compose_project, stable).json()["model"]["label"] == "stable"
    pinned = compose_project.http.post(
        compose_project.url(f"/models/{MODEL_NAME}/versions/{expected}/predict"),
        files={"file": ("blue.jpg", support.encode(support.draw_picture(
            support.SHAPE_COLOURS["blue"])), "image/jpeg")}, timeout=30)
    assert pinned.status_code == 200 and pinned.json()["model"]["version"] == expected


def test_the_release_command_promotes_it_and_the_running_api_serves_it(compose_project):
    compose_project.wait_ready()
    versions_dir = compose_project.models_dir / MODEL_NAME
    newest = published_versions(versions_dir)[-1]
    container = compose_project.api_container()
    started_at = compose_project.docker("inspect", "--format", "{{.State.StartedAt}}", container)

    output = release(compose_project, "promote", MODEL_NAME, str(newest))

    assert f"{newest} (stable)" in output and f"rollback goes to: {newest - 1}" in output
    body = compose_project.wait_for_health(
        lambda answer: answer.get("model", {}).get("version") == newest,
        time.monotonic() + 60, f"api serving version {newest}")
    assert body["model"] == {"name": MODEL_NAME, "version": newest}
    response = answered_version(compose_project, newest)
    assert response.json()["model"]["label"] == "stable"
    assert response.json()["predictions"][0]["top_k"][0]["label"] in support.SHAPE_COLOURS
    # The same container, never restarted, made the switch.
    assert compose_project.api_container() == container
    assert compose_project.docker("inspect", "--format", "{{.State.StartedAt}}",
                                  container) == started_at


def test_a_canary_is_served_through_the_proxy_by_two_replicas(compose_project):
    compose_project.compose("up", "--detach", "--no-build", "--scale", "api=2", timeout=180)
    versions_dir = compose_project.models_dir / MODEL_NAME
    stable = published_versions(versions_dir)[-1]
    canary = stable - 1
    support.poll(lambda: len(compose_project.compose("ps", "--quiet", "api").stdout.split()) == 2,
                 60, "two api replicas")
    release(compose_project, "canary", MODEL_NAME, str(canary), "--percent", "50")
    jpeg = support.encode(support.draw_picture(support.SHAPE_COLOURS["green"], size=32))

    def answers(count, headers=None):
        found = []
        for _ in range(count):
            response = compose_project.http.post(
                compose_project.url("/predict"), files={"file": ("g.jpg", jpeg, "image/jpeg")},
                headers=headers or {}, timeout=30)
            assert response.status_code == 200, response.text
            found.append((response.json()["model"]["version"], response.json()["model"]["label"]))
        return found

    # Both replicas and their workers follow within a poll (MODEL_POLL_SECONDS=1).
    support.poll(lambda: {label for _, label in answers(20)} == {"stable", "canary"}, 30,
                 lambda: f"no canary answer{compose_project.logs()}")
    time.sleep(2)
    seen = answers(200)
    assert set(seen) == {(stable, "stable"), (canary, "canary")}
    assert 70 <= sum(label == "canary" for _, label in seen) <= 130, seen
    for key in ("alice", "bob", "carol"):
        assert len(set(answers(10, {"X-Routing-Key": key}))) == 1
    release(compose_project, "canary", MODEL_NAME, "--off")
    support.poll(lambda: set(answers(20)) == {(stable, "stable")}, 30, "the canary ended")


def test_a_retrain_too_heavy_for_the_memory_limit_leaves_the_stable_serving(compose_project):
    # A lower limit than compose's default: each worker's share, (256 - 48) / 2 = 104 MiB,
    # holds the shipped models with about 25 MiB to spare. A width-128 retrain publishes a
    # model.tflite of about 30 MB, which needs more than twice that in each worker.
    compose_project.environment["API_MEMORY_LIMIT"] = "256m"
    try:
        # One replica again (the canary test ran two), recreated with the lower limit.
        compose_project.compose("up", "--detach", "--no-build", "--wait", "--scale", "api=1",
                                "api", timeout=180)
        compose_project.started = time.monotonic()
        compose_project.wait_ready()
        versions_dir = compose_project.models_dir / MODEL_NAME
        stable = answered_version(compose_project, published_versions(versions_dir)[-1])
        stable = stable.json()["model"]["version"]
        container = compose_project.api_container()
        # As the README's retrain: the gate may promote it. Either way stable keeps serving,
        # and so does a replica started afterwards (the `finally` below starts one).
        status, output = retrain(compose_project, "--width", "128", "--image-size", "32")
        heavy = stable + 1
        assert f"published: /app/models/{MODEL_NAME}/{heavy}" in output, output
        support.poll(lambda: "would not fit" in compose_project.logs(), 60,
                     lambda: f"version {heavy} was not refused{compose_project.logs()}")
        answer = answered_version(compose_project, stable)
        assert answer.json()["model"]["version"] == stable
        versions = {entry["version"]: entry for entry in compose_project.http.get(
            compose_project.url(f"/models/{MODEL_NAME}"), timeout=10).json()["versions"]}
        assert "would not fit" in versions[heavy]["reason"], versions[heavy]
        state = compose_project.docker("inspect", "--format",
                                       "{{.RestartCount}} {{.State.OOMKilled}}", container)
        assert state == "0 false" and compose_project.api_container() == container
        assert "Worker (pid" not in compose_project.logs()  # gunicorn: no worker died
    finally:
        del compose_project.environment["API_MEMORY_LIMIT"]
        # A new container: with its healthcheck passing, it serves a stable too.
        compose_project.compose("up", "--detach", "--no-build", "--wait", "--scale", "api=1",
                                "api", timeout=180)


def test_compose_down_leaves_nothing_running(compose_project):
    label = f"label=com.docker.compose.project={compose_project.name}"

    compose_project.compose("down", "--volumes", "--remove-orphans", "--timeout", "40",
                            timeout=180)

    assert compose_project.docker("ps", "--all", "--quiet", "--filter", label) == ""
    assert compose_project.docker("network", "ls", "--quiet", "--filter", label) == ""
    with pytest.raises(requests.ConnectionError):
        compose_project.http.get(compose_project.url("/health/live"), timeout=3)

"""The real containers through plain `docker compose`: build, serve, retrain, stop.

The tests run in file order against one compose project with a unique name, on a
temporary copy of models/, so they never touch the repository's own folders.
COMPOSE_FILE, when set (as .ci/run does), is honoured by compose itself.
"""

import os
import shutil
import subprocess
import time
import uuid

import pytest
import requests

from service.artifact import PUBLISHED_FILES, published_versions
from tests import support

# A cold build downloads TensorFlow for the trainer; the first test's setup includes it.
pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

if not support.docker_engine_answers():
    pytest.skip("no Docker engine answers `docker info`: start Docker to run the container "
                "tests", allow_module_level=True)
if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
    pytest.skip("the Docker Compose v2 plugin (`docker compose`) is not installed",
                allow_module_level=True)

MODEL_NAME = "cifar10"
# The image's own user; compose runs both containers as APP_UID:APP_GID, 1000:1000 by default.
IMAGE_USER = (1000, 1000)
READY_SECONDS = 60
# The api image holds no TensorFlow; the issue that made it so set this target.
API_IMAGE_MAX_BYTES = 350_000_000
BUILD_SECONDS = 1500
TRAIN_SECONDS = 600
LOG_TAIL = 4000


class ComposeProject:
    """One `docker compose` project, run from the repository root with its own settings."""

    def __init__(self, name, environment, models_dir, training_folder, user):
        self.name = name
        self.environment = environment
        self.models_dir = models_dir
        # Where the trainer container sees the drawn dataset.
        self.training_folder = training_folder
        self.user = user
        self.base_url = f"http://127.0.0.1:{environment['API_PORT']}"
        self.started = None
        # Only loopback is ever contacted, so proxy settings in the environment must not apply.
        self.http = requests.Session()
        self.http.trust_env = False

    def compose(self, *args, timeout=120, check=True):
        """Run `docker compose <args>` for this project; fail with its output when it fails."""
        command = ["docker", "compose", "--project-name", self.name, *args]
        try:
            result = subprocess.run(command, cwd=support.ROOT, env=self.environment, text=True,
                                    capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise AssertionError(f"{' '.join(command)} took more than {timeout} s\n"
                                 f"{_text(error.stdout)[-LOG_TAIL:]}{_text(error.stderr)[-LOG_TAIL:]}"
                                 f"{self.logs()}") from None
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited with {result.returncode}\n"
                                 f"{result.stdout[-LOG_TAIL:]}{result.stderr[-LOG_TAIL:]}")
        return result

    def docker(self, *args):
        """Run a plain `docker` command and return what it printed."""
        result = subprocess.run(["docker", *args], text=True, capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def logs(self):
        """The end of the api's log, to explain a failure."""
        try:
            result = subprocess.run(["docker", "compose", "--project-name", self.name, "logs",
                                     "--no-color", "api"], cwd=support.ROOT, env=self.environment,
                                    text=True, capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            return "\n(api log unavailable: docker compose logs timed out)"
        return "\napi log:\n" + (result.stdout + result.stderr)[-LOG_TAIL:]

    def url(self, path):
        """The absolute URL of `path` on the api."""
        return self.base_url + path

    def wait_for_health(self, accept, deadline, what):
        """Poll /health until `accept(body)` holds; fail with the api's log at `deadline`."""
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                response = self.http.get(self.url("/health"), timeout=3)
                body = response.json()
                if response.status_code == 200 and accept(body):
                    return body
                last = f"{response.status_code} {body}"
            except (requests.RequestException, ValueError) as error:
                last = f"{type(error).__name__}"
            time.sleep(0.5)
        raise AssertionError(f"{what}: not seen in time; last /health: {last}{self.logs()}")

    def wait_ready(self):
        """Wait until the api is ready, at most READY_SECONDS after `compose up` returned."""
        return self.wait_for_health(lambda body: body.get("status") == "ready",
                                    self.started + READY_SECONDS,
                                    f"api ready within {READY_SECONDS} s")

    def api_container(self):
        """The id of the running api container."""
        container = self.compose("ps", "--quiet", "api").stdout.strip()
        assert container, f"no api container is running{self.logs()}"
        return container

    def predict(self, jpeg, filename):
        """POST one JPEG to /predict and return the answer."""
        return self.http.post(self.url("/predict"), files={"file": (filename, jpeg, "image/jpeg")},
                              timeout=30)


def _text(output):
    """Captured output as text, whatever subprocess handed back."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def container_user(*folders):
    """Choose the user the containers run as, and make the mounted `folders` theirs.

    A non-root runner passes its own ids, so the containers read and write as the
    runner does. A root runner (CI) keeps the image's user and hands the folders to
    it, as a person would with `chown`: the api must never run as root.
    """
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    for top in folders:
        for folder, _, files in os.walk(top):
            os.chown(folder, *IMAGE_USER)
            for name in files:
                os.chown(os.path.join(folder, name), *IMAGE_USER)
    return IMAGE_USER


@pytest.fixture(scope="module")
def compose_project(tmp_path_factory, shapes_dataset):
    """Build the image and start the api on a copy of models/; always `compose down` after."""
    base = tmp_path_factory.mktemp("compose")
    models_dir = base / "models"
    shutil.copytree(support.ROOT / "models", models_dir,
                    ignore=shutil.ignore_patterns(".tmp-*", "__pycache__"))
    data_dir = base / "data"
    shutil.copytree(shapes_dataset, data_dir / shapes_dataset.name)
    assert published_versions(models_dir / MODEL_NAME), (
        f"models/{MODEL_NAME}/ holds no published version, so the api has nothing to serve")
    user = container_user(models_dir, data_dir)
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("API_KEY", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES")}
    environment.update({
        "MODELS_DIR": str(models_dir),
        "DATA_DIR": str(data_dir),
        "MODEL_NAME": MODEL_NAME,
        "API_PORT": str(support.free_port()),
        "APP_UID": str(user[0]),
        "APP_GID": str(user[1]),
        "MODEL_POLL_SECONDS": "1",
    })
    project = ComposeProject(f"classifier-test-{uuid.uuid4().hex[:8]}", environment,
                             models_dir, f"/data/{shapes_dataset.name}", user)
    try:
        project.compose("--profile", "train", "build", "api", "trainer", timeout=BUILD_SECONDS)
        project.compose("up", "--detach", "--no-build", timeout=180)
        project.started = time.monotonic()
        yield project
    finally:
        project.compose("down", "--volumes", "--remove-orphans", "--timeout", "40",
                        timeout=180, check=False)


def test_api_serves_the_shipped_model_within_a_minute(compose_project):
    shipped = published_versions(compose_project.models_dir / MODEL_NAME)[-1]
    body = compose_project.wait_ready()
    assert body["model"] == {"name": MODEL_NAME, "version": shipped}


def test_docker_reports_the_api_healthy(compose_project):
    compose_project.wait_ready()
    container = compose_project.api_container()
    # The image's HEALTHCHECK runs every 10 s; give it a few rounds once /health answers.
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        status = compose_project.docker("inspect", "--format", "{{.State.Health.Status}}",
                                        container)
        if status == "healthy":
            break
        time.sleep(1)
    assert status == "healthy", f"docker health status is {status!r}{compose_project.logs()}"


def test_api_classifies_a_real_jpeg(compose_project):
    compose_project.wait_ready()
    classes = compose_project.http.get(compose_project.url("/model"), timeout=10).json()["classes"]
    jpeg = support.encode(support.draw_picture(support.SHAPE_COLOURS["red"], size=64), quality=90)
    assert jpeg[:3] == b"\xff\xd8\xff"

    response = compose_project.predict(jpeg, "red.jpg")

    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert prediction["filename"] == "red.jpg"
    assert prediction["label"] in classes
    assert 0 <= prediction["confidence"] <= 1
    assert [guess["label"] for guess in prediction["top_k"]][0] == prediction["label"]


def test_the_api_image_is_small_read_only_and_has_no_tensorflow_or_compiler(compose_project):
    compose_project.wait_ready()
    probe = ("import importlib.util, shutil; "
             "print([name for name in ('tensorflow', 'keras', 'matplotlib') "
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


def test_api_does_not_run_as_root(compose_project):
    compose_project.wait_ready()
    # Process 1 is the gunicorn master; its workers inherit its user.
    status = compose_project.compose("exec", "-T", "api", "cat", "/proc/1/status").stdout
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    real, effective, saved, filesystem = (int(value) for value in uid_line.split()[1:])
    assert 0 not in (real, effective, saved, filesystem), uid_line
    assert effective == compose_project.user[0]


def test_trainer_publishes_a_version_the_running_api_serves(compose_project):
    compose_project.wait_ready()
    versions_dir = compose_project.models_dir / MODEL_NAME
    expected = published_versions(versions_dir)[-1] + 1
    container = compose_project.api_container()
    started_at = compose_project.docker("inspect", "--format", "{{.State.StartedAt}}", container)

    result = compose_project.compose(
        "--profile", "train", "run", "--rm", "-T", "trainer",
        "--data-dir", compose_project.training_folder,
        "--epochs", "1", "--batch-size", "16", "--width", "8", "--image-size", "16",
        "--validation-split", "0.2", "--test-split", "0.2", "--precision", "float32",
        timeout=TRAIN_SECONDS)

    assert f"published: /app/models/{MODEL_NAME}/{expected}" in result.stdout, result.stdout
    published = versions_dir / str(expected)
    assert all((published / name).exists() for name in PUBLISHED_FILES)
    assert (published.stat().st_uid, published.stat().st_gid) == compose_project.user
    body = compose_project.wait_for_health(
        lambda answer: answer.get("model", {}).get("version") == expected,
        time.monotonic() + 60, f"api serving version {expected}")
    assert body["model"] == {"name": MODEL_NAME, "version": expected}

    jpeg = support.encode(support.draw_picture(support.SHAPE_COLOURS["blue"], size=48))
    response = compose_project.predict(jpeg, "blue.jpg")
    assert response.status_code == 200, response.text
    assert response.json()["model"]["version"] == expected
    assert response.json()["predictions"][0]["label"] in support.SHAPE_COLOURS
    # The same container, never restarted, made the switch.
    assert compose_project.api_container() == container
    assert compose_project.docker("inspect", "--format", "{{.State.StartedAt}}",
                                  container) == started_at


def test_compose_down_leaves_nothing_running(compose_project):
    label = f"label=com.docker.compose.project={compose_project.name}"

    compose_project.compose("down", "--volumes", "--remove-orphans", "--timeout", "40",
                            timeout=180)

    assert compose_project.docker("ps", "--all", "--quiet", "--filter", label) == ""
    assert compose_project.docker("network", "ls", "--quiet", "--filter", label) == ""
    with pytest.raises(requests.ConnectionError):
        compose_project.http.get(compose_project.url("/health/live"), timeout=3)

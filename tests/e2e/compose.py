"""A `docker compose` project of the repository's own docker-compose.yml, for the e2e tests.

Each project has a unique name and a temporary copy of models/, so the tests never touch
the repository's own folders. COMPOSE_FILE, when set (as .ci/run does), is honoured by
compose itself. The service is reached only at 127.0.0.1 on the published port.
"""

import contextlib
import os
import shutil
import subprocess
import time
import uuid

import pytest
import requests

from service.models.artifact import published_versions
from tests import support


def skip_without_compose():
    """Skip the calling test module when there is no Docker engine or no Compose v2."""
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
BUILD_SECONDS = 1500
LOG_TAIL = 4000
# Settings of the runner's own that must not reach a test project: it sets them itself.
OWN_SETTINGS = ("API_KEY", "API_KEY_FILE", "API_KEYS_SECRET_FILE", "COMPOSE_PROJECT_NAME",
                "COMPOSE_PROFILES", "PROXY_TLS", "TLS_PORT", "TLS_CERT", "TLS_KEY", "PLAIN_HTTP",
                "HSTS_MAX_AGE", "API_MEMORY_LIMIT", "API_PIDS_LIMIT", "TRAINER_MEMORY_LIMIT")


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
        self.grpc_target = f"127.0.0.1:{environment['API_GRPC_PORT']}"
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

    def logs(self, service="api"):
        """The end of a service's log, to explain a failure."""
        try:
            result = subprocess.run(["docker", "compose", "--project-name", self.name, "logs",
                                     "--no-color", service], cwd=support.ROOT,
                                    env=self.environment, text=True, capture_output=True,
                                    timeout=60)
        except subprocess.TimeoutExpired:
            return f"\n({service} log unavailable: docker compose logs timed out)"
        return f"\n{service} log:\n" + (result.stdout + result.stderr)[-LOG_TAIL:]

    def url(self, path):
        """The absolute URL of `path` on the api."""
        return self.base_url + path

    def wait_for_health(self, accept, deadline, what):
        """Poll /health until `accept(body)` holds; fail with the api's log at `deadline`."""
        last = ["no answer yet"]

        def accepted():
            response = self.http.get(self.url("/health"), timeout=3)
            try:
                body = response.json()
            except ValueError:
                body = response.text[:200]
            last[0] = f"{response.status_code} {body}"
            return body if response.status_code == 200 and accept(body) else None

        return support.poll(accepted, deadline - time.monotonic(), lambda: (
            f"{what}: not seen in time; last /health: {last[0]}{self.logs()}"), interval=0.5)

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




@contextlib.contextmanager
def running_project(base, dataset=None, **settings):
    """Build the image and `compose up` on a copy of models/ under `base`; `down` after.

    `dataset`, a folder, is copied into the data folder the trainer reads; `settings`
    are extra variables for compose (API_PORT is always a free port).
    """
    models_dir = base / "models"
    shutil.copytree(support.ROOT / "models", models_dir,
                    ignore=shutil.ignore_patterns(".tmp-*", "__pycache__"))
    data_dir = base / "data"
    data_dir.mkdir()
    if dataset is not None:
        shutil.copytree(dataset, data_dir / dataset.name)
    assert published_versions(models_dir / MODEL_NAME), (
        f"models/{MODEL_NAME}/ holds no published version, so the api has nothing to serve")
    user = container_user(models_dir, data_dir)
    environment = {key: value for key, value in os.environ.items() if key not in OWN_SETTINGS}
    environment.update({
        "MODELS_DIR": str(models_dir),
        "DATA_DIR": str(data_dir),
        "MODEL_NAME": MODEL_NAME,
        "API_PORT": str(support.free_port()),
        "API_GRPC_PORT": str(support.free_port()),
        "APP_UID": str(user[0]),
        "APP_GID": str(user[1]),
        **settings,
    })
    training_folder = f"/data/{dataset.name}" if dataset is not None else None
    name = f"classifier-test-{uuid.uuid4().hex[:8]}"
    # Images of this project's own tag: another test run on the same engine (another
    # checkout, building at the same time) can never swap them under this one.
    environment["IMAGE_TAG"] = name
    project = ComposeProject(name, environment, models_dir, training_folder, user)
    try:
        project.compose("--profile", "train", "build", "api", "trainer", timeout=BUILD_SECONDS)
        project.compose("up", "--detach", "--no-build", timeout=180)
        project.started = time.monotonic()
        yield project
    finally:
        project.compose("down", "--volumes", "--remove-orphans", "--timeout", "40",
                        timeout=180, check=False)
        # Only the tags go; the layers stay cached for the next build.
        subprocess.run(["docker", "image", "rm", f"image-classifier-api:{name}",
                        f"image-classifier-trainer:{name}"], capture_output=True, timeout=120)

"""Helpers for tests: drawn images, a tiny trained model, and a real gunicorn process."""

import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from PIL import Image, ImageDraw

from service.models.artifact import TFLITE_FILE

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SHAPE_COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 220)}


def draw_picture(colour, size=24, seed=0):
    """A filled shape of `colour` on a random grey background."""
    generator = random.Random(seed)
    grey = generator.randint(0, 90)
    image = Image.new("RGB", (size, size), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    left, top = generator.randint(0, size // 3), generator.randint(0, size // 3)
    extent = generator.randint(size // 2, size - 1 - max(left, top))
    draw.ellipse((left, top, left + extent, top + extent), fill=colour)
    return image


def encode(image, image_format="JPEG", **options):
    """The bytes of `image` saved in `image_format`."""
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def make_image_folder(folder, per_class=30, size=24):
    """Write DIR/<colour>/<n>.png|jpg, the layout the training script reads."""
    for class_index, (name, colour) in enumerate(SHAPE_COLOURS.items()):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = draw_picture(colour, size, seed=class_index * 1000 + index)
            suffix = "png" if index % 2 else "jpg"
            image.save(folder / name / f"{index:03d}.{suffix}")
    return folder


# Training options for a model small enough to train in seconds on the drawn pictures; with
# flip TTA (off by default), so that its averaged graph is what the tests serve and check.
TINY_MODEL_OPTIONS = ("--batch-size", "16", "--width", "8", "--image-size", "16",
                      "--validation-split", "0.2", "--test-split", "0.2", "--precision", "float32",
                      "--flip-tta")


def train_tiny_model(data_dir, output, *extra_args):
    """Train a very small model for a few epochs and publish it under output/; return its folder."""
    from model_training.train import main

    args = ["--data-dir", str(data_dir), "--output", str(output), "--epochs", "3",
            *TINY_MODEL_OPTIONS, *extra_args]
    status = main(args)
    assert status == 0, f"tiny training failed with status {status}"
    versions = sorted(Path(output).glob("*/*/metadata.json"))
    return versions[-1].parent


def publish_copy(models_dir, version, break_model=False, metadata_changes=None, leave_out=()):
    """Publish a copy of version 1 as `version`, the way the trainer does: complete, then renamed.

    `leave_out` names files of the copy to drop, as a version made before they existed lacks them.
    """
    versions = Path(models_dir) / "shapes"
    staging = versions / f".tmp-{version}"
    shutil.copytree(versions / "1", staging)
    if break_model:
        (staging / TFLITE_FILE).write_bytes(b"TFL3 truncated flatbuffer")
    for name in leave_out:
        (staging / name).unlink()
    if metadata_changes:
        metadata = json.loads((staging / "metadata.json").read_text())
        metadata.update(metadata_changes)
        (staging / "metadata.json").write_text(json.dumps(metadata))
    staging.rename(versions / str(version))


def poll(condition, timeout, message, interval=0.2):
    """Call `condition` until it returns a true value, and return that value.

    A request that fails (the server is not listening yet, say) counts as "not yet".
    After `timeout` seconds the test fails with `message`, or with what `message()`
    returns then, so that it can show the latest server log.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            result = condition()
            last = repr(result)
        except requests.RequestException as error:
            result, last = None, f"{type(error).__name__}: {error}"
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text}\n(last check gave {last[:500]})")
        time.sleep(interval)


def assert_error(response, status, code):
    """`response` (from requests or a Flask test client) is DESIGN.md's JSON error, no leaks."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.text)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code and body["error"]["message"]
    assert "Traceback" not in response.text and "/tmp" not in response.text
    assert "/srv" not in response.text


def free_port():
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RunningService:
    """The service under gunicorn, as `gunicorn -c service/process/gunicorn_conf.py` starts it."""

    def __init__(self, models_dir, log_path, model_name="shapes", **settings):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # gRPC is off unless a test asks for it (grpc_enabled=1): its port is a free one,
        # never 8001, which another server on this machine (or another test's) may hold.
        self.log_path = log_path
        environment = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port),
                       "GRPC_PORT": str(free_port()), "GRPC_ENABLED": "0",
                       "MODEL_DIR": str(models_dir), "MODEL_NAME": model_name,
                       "WORKERS": "1", "THREADS": "8", "MODEL_POLL_SECONDS": "0.5",
                       "TF_CPP_MIN_LOG_LEVEL": "2"}
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        environment.update({key.upper(): str(value) for key, value in settings.items()})
        self.grpc_port = int(environment["GRPC_PORT"])
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "service/process/gunicorn_conf.py"],
            cwd=ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT)

    def url(self, path):
        """The absolute URL of `path` on this server."""
        return self.base_url + path

    def wait_ready(self, timeout=90):
        """Block until /health/ready answers 200; fail with the server's log otherwise."""
        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"service exited with {self.process.returncode}:\n"
                                     f"{self.log()}")
            return requests.get(self.url("/health/ready"), timeout=2).status_code == 200

        poll(ready, timeout, lambda: f"service not ready after {timeout} s:\n{self.log()}")
        return self

    def wait_grpc_ready(self, workers=1, timeout=90):
        """Block until `workers` workers listen for gRPC and the health service says SERVING."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"service exited with {self.process.returncode}:\n"
                                     f"{self.log()}")
            if self.log().count('"event": "grpc_listening"') < workers:
                return False
            with grpc.insecure_channel(self.grpc_target) as channel:
                try:
                    answer = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=2)
                except grpc.RpcError:
                    return False
            return answer.status == health_pb2.HealthCheckResponse.SERVING

        poll(ready, timeout, lambda: f"gRPC not ready after {timeout} s:\n{self.log()}")
        return self

    def log(self):
        """Everything the server printed so far."""
        return Path(self.log_path).read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=40):
        """Send `sig` and wait for the server to exit; return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def docker_engine_answers():
    """True when a docker client is installed and its engine replies."""
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def worker_pids(server):
    """The pids of the server's gunicorn workers (the master's children)."""
    children = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == server.process.pid:
            children.append(int(entry))
    return sorted(children)


def forked_workers(server, count):
    """The pids of the server's `count` workers, once that many have been forked."""
    poll(lambda: len(worker_pids(server)) == count, 30, server.log)
    return worker_pids(server)

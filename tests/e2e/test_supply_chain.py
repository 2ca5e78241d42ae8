"""The supply chain in real builds: the locks install only with their hashes, and the SBOM
of the api image lists exactly what its lock holds.

`docker build --network host` as tests/deploy/test_pod_in_docker.py builds (the package
index is reached from the build). The fresh builds download the api's packages (about
60 MB) twice; the image itself comes from the cache the other tests fill.
"""

import json
import os
import re
import shutil
import subprocess
import uuid

import pytest
from packaging.markers import Marker

from scripts import lockfiles
from tests import support

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

if not support.docker_engine_answers():
    pytest.skip("no Docker engine answers `docker info`: start Docker to run the container "
                "tests", allow_module_level=True)

BUILD_SECONDS = 1500
LOG_TAIL = 4000
SERVING_LOCK = "requirements-serving.lock"


def build(context, *options):
    """`docker build --network host <options> <context>`; the finished process."""
    return subprocess.run(["docker", "build", "--network", "host", "--force-rm", *options,
                           str(context)], capture_output=True, text=True, timeout=BUILD_SECONDS)


def fresh_packages_build(folder, lock_text):
    """The api-packages stage built with no cache from the Dockerfile and this lock in
    `folder`; the finished process. The images the build made are removed again.

    The classic builder takes the newest image with the same parent and instruction as the
    cache for a step. Left behind, this build's `python -m venv` step would become that cache
    for both package stages, so the next builds (tests, CI, a user's) would miss from there
    on and install the trainer's 1.5 GB of packages again, leaving another copy each run.
    """
    folder.mkdir()
    shutil.copy(support.ROOT / "Dockerfile", folder / "Dockerfile")
    (folder / SERVING_LOCK).write_text(lock_text)
    built = build(folder, "--no-cache", "--target", "api-packages")
    layers = re.findall(r"^ ---> ([0-9a-f]{12})$", built.stdout, re.M)[1:]  # [0]: the base
    if layers:  # the last image removes its untagged parents with it
        subprocess.run(["docker", "image", "rm", layers[-1]], capture_output=True, timeout=120)
    return built


def normalized(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def test_a_fresh_build_installs_the_lock_and_refuses_a_wheel_that_differs(tmp_path):
    lock = (support.ROOT / SERVING_LOCK).read_text()
    fresh = fresh_packages_build(tmp_path / "fresh", lock)
    assert fresh.returncode == 0, (fresh.stdout + fresh.stderr)[-LOG_TAIL:]

    # Every hash of one package changed by a digit: whichever file pip fetches for it no
    # longer matches, as when a release is replaced on the index.
    entry = re.search(r"^multipart==\S+ \\\n(?:\s+--hash=sha256:\w+(?: \\)?\n)+", lock, re.M)
    tampered = lock.replace(entry[0], re.sub(r"sha256:(\w)", lambda match: "sha256:" + (
        "0" if match[1] != "0" else "1"), entry[0]))
    refused = fresh_packages_build(tmp_path / "tampered", tampered)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output[-LOG_TAIL:]
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in output and "multipart" in output, (
        output[-LOG_TAIL:])


def locked_for_linux(lock_name, machine):
    """{name: version} of the lock's requirements whose markers hold on Linux `machine`."""
    environment = {"python_version": lockfiles.PYTHON_VERSION, "python_full_version": "3.11.2",
                   "sys_platform": "linux", "platform_system": "Linux",
                   "platform_machine": machine, "implementation_name": "cpython",
                   "platform_python_implementation": "CPython", "os_name": "posix"}
    found = {}
    for requirement, _ in lockfiles.locked_requirements(support.ROOT / lock_name):
        pin, _, marker = requirement.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate(environment):
            continue
        name, version = pin.strip().split("==")
        found[normalized(name)] = version
    return found


def test_the_sbom_of_the_api_image_lists_exactly_its_locked_packages(tmp_path):
    tag = f"image-classifier-api:sbom-test-{uuid.uuid4().hex[:8]}"
    built = build(support.ROOT, "--target", "api", "--tag", tag)
    assert built.returncode == 0, (built.stdout + built.stderr)[-LOG_TAIL:]
    try:
        result = subprocess.run([str(support.ROOT / "scripts" / "sbom.sh"), tag],
                                env={**os.environ, "SBOM_DIR": str(tmp_path)},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        machine = subprocess.run(["docker", "image", "inspect", "--format",
                                  "{{.Architecture}}", tag], capture_output=True, text=True,
                                 check=True).stdout.strip()
    finally:
        subprocess.run(["docker", "image", "rm", tag], capture_output=True)
    (path,) = tmp_path.glob("*.cdx.json")
    bom = json.loads(path.read_text())
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    subject = bom["metadata"]["component"]
    assert subject["type"] == "container" and subject["version"] == tag.split(":")[1]
    listed = {normalized(component["name"]): component["version"]
              for component in bom["components"]}
    locked = locked_for_linux(SERVING_LOCK, {"amd64": "x86_64", "arm64": "aarch64"}[machine])
    # Exactly the lock: nothing missing, nothing unlocked (no pip, no setuptools).
    assert listed == locked
    assert all(component["purl"].startswith("pkg:pypi/") for component in bom["components"])


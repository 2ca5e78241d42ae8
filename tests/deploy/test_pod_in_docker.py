"""The pod specs are not fiction: our images run under them and answer their probes.

The api pod of each rendered overlay, and the pod KServe makes for our serving runtime,
is translated to `docker run`: each container's user and groups, read-only root, dropped
capabilities, no privilege escalation, memory limit and CPU share; each memory emptyDir
as a tmpfs and any other as a shared folder; the models volume as a read-only bind mount
of models/; the environment from the rendered ConfigMap (with a key standing in for the
Secret). Init containers run to completion first, as the kubelet runs them. Then the
startup, readiness and liveness probes are run the way the kubelet runs them, within the
budgets the manifest gives them. The training Job's pod runs the same way on a copy of
models/ and publishes a tiny model's version.
"""

import json
import os
import re
import shutil
import subprocess
import time
import uuid

import pytest
import requests

from service.models.artifact import POLICY_FILE, published_versions
from tests import support
from tests.deploy.manifests import KUBECTL, find, pods, port_number, render, settings_of

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

if KUBECTL is None:
    pytest.skip("kubectl is not installed: the Kubernetes manifests cannot be rendered",
                allow_module_level=True)
if not support.docker_engine_answers():
    pytest.skip("no Docker engine answers `docker info`: start Docker to run the pod spec "
                "in a container", allow_module_level=True)

# The images this run built, as image-classifier-<target>:k8s-test.
BUILT = set()
TRAIN_SECONDS = 600
BUILD_SECONDS = 1500
# Readiness has no deadline in Kubernetes (the pod just takes no traffic); here it must
# come within this long after the startup probe passed.
READY_SECONDS = 60
LOG_TAIL = 4000
# What the Secret image-classifier-api-key holds in these tests.
API_KEY = uuid.uuid4().hex
BINARY_UNITS = {"Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3}
DECIMAL_UNITS = {"k": 1000, "M": 1000 ** 2, "G": 1000 ** 3}


def quantity_bytes(quantity):
    """A Kubernetes memory quantity ("512Mi", "1G", "1048576") in bytes."""
    number, unit = re.fullmatch(r"(\d+)([KMG]i|[kMG])?", str(quantity)).groups()
    return int(number) * {**BINARY_UNITS, **DECIMAL_UNITS, None: 1}[unit]


def cpu_shares(quantity):
    """A CPU request ("1", "500m") as Docker's --cpu-shares, which is what the kubelet sets."""
    text = str(quantity)
    cores = int(text[:-1]) / 1000 if text.endswith("m") else float(text)
    return max(2, int(cores * 1024))


def docker(*args, timeout=120, check=True):
    """Run `docker <args>`; fail with its output when it fails."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])}... exited with {result.returncode}:\n"
                             f"{result.stdout[-LOG_TAIL:]}{result.stderr[-LOG_TAIL:]}")
    return result.stdout.strip()


def container_arguments(pod, container, volumes, config_maps, secrets):
    """The `docker run` options that give a container what `pod` gives it.

    `volumes` maps each of the pod's volume names to the `--mount` source of its stand-in;
    `config_maps` and `secrets` map names to the data the cluster would hold.
    """
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    arguments = ["--user", f"{security['runAsUser']}:{security['runAsGroup']}"]
    if "fsGroup" in security:
        arguments += ["--group-add", str(security["fsGroup"])]
    if security.get("readOnlyRootFilesystem"):
        arguments.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        arguments += ["--security-opt", "no-new-privileges"]
    arguments += [f"--cap-drop={capability}"
                  for capability in security.get("capabilities", {}).get("drop", [])]
    # Docker's default seccomp profile is what RuntimeDefault means under Docker.
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    resources = container["resources"]
    arguments += ["--memory", str(quantity_bytes(resources["limits"]["memory"])),
                  "--cpu-shares", str(cpu_shares(resources["requests"]["cpu"]))]
    read_only_claims = {volume["name"] for volume in pod["volumes"]
                        if volume.get("persistentVolumeClaim", {}).get("readOnly")}
    for mount in container.get("volumeMounts", []):
        read_only = mount.get("readOnly") or mount["name"] in read_only_claims
        arguments += ["--mount", f"{volumes[mount['name']]},dst={mount['mountPath']}"
                                 f"{',readonly' if read_only else ''}"]
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"{container['name']}: envFrom {source}: no translation"
        for key, value in config_maps[source["configMapRef"]["name"]].items():
            arguments += ["--env", f"{key}={value}"]
    for entry in container.get("env", []):
        reference = entry["valueFrom"]["secretKeyRef"]
        value = secrets.get(reference["name"], {}).get(reference["key"])
        if value is None:
            # The kubelet leaves the variable unset when an optional Secret or key is absent.
            assert reference.get("optional"), f"Secret {reference['name']} is required"
            continue
        arguments += ["--env", f"{entry['name']}={value}"]
    if "command" in container:
        arguments += ["--entrypoint", container["command"][0]]
    return arguments


def container_command(container):
    """What follows the image on the `docker run` line: the rest of command, then args."""
    return container.get("command", [])[1:] + container.get("args", [])


def volume_sources(pod, folder, claims, secrets=None):
    """A stand-in for each of the pod's volumes: {volume name: `--mount` source}.

    A memory emptyDir is a tmpfs of its size (Docker cannot share one between containers,
    so only one container may mount it); any other emptyDir is a world-writable folder
    under `folder`, as the kubelet makes one on the node's disk; a claim is a bind mount
    of the host folder `claims` gives for its name; a Secret is a folder of its entries
    from `secrets` ({name: {key: value}}), in the mode it asks for and owned by the pod's
    fsGroup, as the kubelet writes one.
    """
    mounts = [mount["name"] for container in pod["containers"] + pod.get("initContainers", [])
              for mount in container.get("volumeMounts", [])]
    sources = {}
    for volume in pod["volumes"]:
        empty_dir = volume.get("emptyDir")
        if empty_dir is not None and empty_dir.get("medium") == "Memory":
            assert mounts.count(volume["name"]) == 1, f"tmpfs {volume['name']} cannot be shared"
            size = empty_dir.get("sizeLimit")
            sources[volume["name"]] = ("type=tmpfs,tmpfs-mode=1777"
                                       + (f",tmpfs-size={quantity_bytes(size)}" if size else ""))
        elif empty_dir is not None:
            path = folder / volume["name"]
            path.mkdir()
            path.chmod(0o1777)
            sources[volume["name"]] = f"type=bind,src={path}"
        elif "secret" in volume:
            sources[volume["name"]] = secret_folder(pod, volume["secret"], folder / volume["name"],
                                                    (secrets or {}).get(
                                                        volume["secret"]["secretName"]))
        else:
            assert "persistentVolumeClaim" in volume, f"volume {volume['name']}: no translation"
            sources[volume["name"]] = (
                f"type=bind,src={claims[volume['persistentVolumeClaim']['claimName']]}")
    return sources


def secret_folder(pod, secret, path, data):
    """The folder the kubelet would mount for `secret`: its items, or empty if it is optional
    and missing."""
    path.mkdir()
    if data is None:
        assert secret.get("optional"), f"Secret {secret['secretName']} is required"
    else:
        group = pod.get("securityContext", {}).get("fsGroup", 0)
        items = secret.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            file = path / item["path"]
            file.write_text(data[item["key"]])
            if os.geteuid() == 0:
                os.chown(file, 0, group)
                file.chmod(secret.get("defaultMode", 0o644))
            else:  # a runner that cannot hand the file to the group opens it to all
                file.chmod(0o444)
    return f"type=bind,src={path}"


def built_image(image):
    """Build, once, the Dockerfile target that `image` ([registry/]image-classifier-<target>)
    names."""
    repository = image.rpartition("/")[2].split(":")[0]
    target = repository.removeprefix("image-classifier-")
    tag = f"image-classifier-{target}:k8s-test"
    if tag not in BUILT:
        docker("build", "--network", "host", "--target", target, "--tag", tag, str(support.ROOT),
               timeout=BUILD_SECONDS)
        BUILT.add(tag)
    return tag


def config_map_data(objects):
    """{name: data} of the ConfigMaps among `objects`, as the cluster would hold them."""
    return {item["metadata"]["name"]: item.get("data", {}) for item in find(objects, "ConfigMap")}


class Kubelet:
    """Runs a container's probes (httpGet and grpc) against the container's published ports."""

    def __init__(self, container, host_ports, http_port):
        self.container = container
        # {container port: the host port it is published on}
        self.host_ports = host_ports
        self.base_url = f"http://127.0.0.1:{host_ports[http_port]}"
        # Only loopback is ever contacted, so proxy settings in the environment must not apply.
        self.http = requests.Session()
        self.http.trust_env = False

    def succeeds(self, name):
        """One run of probe `name`: an HTTP status from 200 to 399, or grpc.health.v1's
        SERVING, within its timeout passes (as the kubelet judges them)."""
        probe = self.container[name]
        timeout = probe.get("timeoutSeconds", 1)
        if "grpc" in probe:
            return grpc_serving(self.host_ports[probe["grpc"]["port"]],
                                probe["grpc"].get("service", ""), timeout)
        port = self.host_ports[probe_port(self.container, probe)]
        try:
            response = self.http.get(f"http://127.0.0.1:{port}{probe['httpGet']['path']}",
                                     timeout=timeout)
        except requests.RequestException:
            return False
        return 200 <= response.status_code < 400

    def first_success(self, name, budget):
        """Seconds until probe `name` first passes, tried each periodSeconds; None past `budget`."""
        probe = self.container[name]
        started = time.monotonic()
        time.sleep(probe.get("initialDelaySeconds", 0))
        while time.monotonic() - started <= budget:
            if self.succeeds(name):
                return time.monotonic() - started
            time.sleep(probe.get("periodSeconds", 10))
        return None

    def startup_budget(self):
        """How long the kubelet waits for the startup probe before it restarts the container."""
        probe = self.container["startupProbe"]
        return (probe.get("initialDelaySeconds", 0)
                + probe.get("failureThreshold", 3) * probe.get("periodSeconds", 10))


# The api pod of each overlay, and KServe's pod for our runtime.
API_PODS = [("overlays/dev", "Deployment/image-classifier-api"),
            ("overlays/production", "Deployment/image-classifier-api"),
            ("kserve", "InferenceService/image-classifier"),
            ("kserve", "InferenceService/image-classifier-grpc")]
# What KServe's webhook adds for a pvc:// storageUri: the claim, read-only at /mnt/models.
KSERVE_MODEL_MOUNT = {"name": "kserve-pvc-source", "mountPath": "/mnt/models", "readOnly": True}


def api_pod(kustomization, where):
    """The objects, pod spec and api container of `kustomization`'s api, as a cluster runs them."""
    objects = render(kustomization)
    (pod,) = [pod for pod in pods(objects) if pod.where == where]
    spec, (api,) = dict(pod.spec), pod.containers
    spec["initContainers"] = pod.init_containers
    if "model" in spec:
        claim = spec["model"]["storageUri"].removeprefix("pvc://").split("/")[0]
        spec["volumes"] = spec.get("volumes", []) + [{
            "name": KSERVE_MODEL_MOUNT["name"],
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}]
        api = {**api, "volumeMounts": api.get("volumeMounts", []) + [KSERVE_MODEL_MOUNT]}
    spec["containers"] = [api]
    return objects, spec, api


@pytest.fixture(scope="module", params=API_PODS,
                ids=[f"{name}:{where.split('/')[1]}" for name, where in API_PODS])
def running_pod(request, tmp_path_factory):
    """The api pod of an overlay (or KServe's), started as its spec says; always removed after."""
    objects, pod, api = api_pod(*request.param)
    settings = settings_of(objects, api)
    config_maps = config_map_data(objects)
    secrets = {"image-classifier-api-key": {"API_KEY": f"# the pod's key\n{API_KEY}\n"}}
    name = f"classifier-k8s-test-{uuid.uuid4().hex[:8]}"
    # The kubelet reaches every port of the pod, declared or not (KServe's gRPC pod
    # declares only h2c, and is probed on HTTP too): each is published here.
    probed = {probe_port(api, api[probe]) for probe in ("startupProbe", "readinessProbe",
                                                        "livenessProbe")}
    host_ports = {port: support.free_port() for port in
                  {entry["containerPort"] for entry in api["ports"]} | probed
                  | {int(settings["PORT"])}}
    published = [option for container_port, host_port in host_ports.items()
                 for option in ("--publish", f"127.0.0.1:{host_port}:{container_port}")]
    docker("network", "create", name)
    try:
        volumes = volume_sources(pod, tmp_path_factory.mktemp("volumes"),
                                 {"image-classifier-models": support.ROOT / "models"}, secrets)
        for init in pod["initContainers"]:
            docker("run", "--rm", "--name", f"{name}-{init['name']}", "--network", name,
                   *container_arguments(pod, init, volumes, config_maps, secrets),
                   built_image(init["image"]), *container_command(init))
        docker("run", "--detach", "--name", name, "--network", name,
               *published,
               *container_arguments(pod, api, volumes, config_maps, secrets),
               built_image(api["image"]), *container_command(api))
        yield name, Kubelet(api, host_ports, int(settings["PORT"])), settings
    finally:
        docker("rm", "--force", name, check=False)
        docker("network", "rm", name, check=False)


def probe_port(container, probe):
    """The port number a probe reaches."""
    if "grpc" in probe:
        return probe["grpc"]["port"]
    return port_number(container, probe["httpGet"]["port"])


def grpc_serving(port, service, timeout):
    """Whether grpc.health.v1 on 127.0.0.1:`port` says SERVING for `service`."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}",
                               options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def logs(name):
    """The end of the container's log, to explain a failure."""
    result = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=60)
    return "\ncontainer log:\n" + (result.stdout + result.stderr)[-LOG_TAIL:]


def test_the_startup_probe_passes_within_its_budget(running_pod):
    name, kubelet, _ = running_pod
    seconds = kubelet.first_success("startupProbe", kubelet.startup_budget())
    assert seconds is not None, (
        f"startup probe never passed in {kubelet.startup_budget()} s: the kubelet would restart "
        f"the container{logs(name)}")


def test_the_readiness_probe_passes_once_the_model_is_loaded(running_pod):
    name, kubelet, settings = running_pod
    kubelet.first_success("startupProbe", kubelet.startup_budget())
    seconds = kubelet.first_success("readinessProbe", READY_SECONDS)
    assert seconds is not None, f"not ready within {READY_SECONDS} s{logs(name)}"
    # Ready means the model the settings name, from the read-only models folder.
    answer = kubelet.http.get(kubelet.base_url + "/health/ready", timeout=5).json()
    assert answer["model"]["name"] == settings["MODEL_NAME"], answer


def test_the_liveness_probe_keeps_passing(running_pod):
    name, kubelet, _ = running_pod
    kubelet.first_success("readinessProbe", READY_SECONDS)
    probe = kubelet.container["livenessProbe"]
    # The kubelet restarts after failureThreshold failures in a row; here not one may fail.
    for _ in range(probe.get("failureThreshold", 3) + 1):
        assert kubelet.succeeds("livenessProbe"), f"liveness probe failed{logs(name)}"
        time.sleep(1)


def test_the_container_is_not_restarted_or_killed(running_pod):
    name, kubelet, _ = running_pod
    kubelet.first_success("readinessProbe", READY_SECONDS)
    state = docker("inspect", "--format", "{{.State.Status}} {{.State.OOMKilled}} "
                   "{{.RestartCount}}", name)
    assert state == "running false 0", f"{state}{logs(name)}"


def test_predictions_need_the_secret_s_key_where_the_settings_name_a_key_file(running_pod):
    name, kubelet, settings = running_pod
    kubelet.first_success("readinessProbe", READY_SECONDS)
    # KServe's runtime speaks the Open Inference Protocol, and its HTTP probes say so.
    probed = [kubelet.container[probe]["httpGet"]["path"]
              for probe in ("startupProbe", "readinessProbe", "livenessProbe")
              if "httpGet" in kubelet.container.get(probe, {})]
    path = ("/v2/models/cifar10/infer" if any(path.startswith("/v2/") for path in probed)
            else "/predict")
    for key, expected in ((None, 401), ("wrong-key-0123456789", 401), (API_KEY, 400)):
        headers = {"X-API-Key": key} if key else {}
        # An empty JSON body: refused as unreadable (400) once the key is accepted.
        response = kubelet.http.post(kubelet.base_url + path, json={}, headers=headers,
                                     timeout=10)
        if not settings["API_KEY_FILE"]:
            assert response.status_code == 400, f"{response.text}{logs(name)}"
        else:
            assert response.status_code == expected, f"{key}: {response.text}{logs(name)}"


def writable_by(folder, uid, gid):
    """Hand `folder` to uid:gid when the runner may (root, as in CI), else open it to all.

    What fsGroup does for a pod's volume: the pod's user can write the versions it publishes.
    """
    for path in [folder, *folder.rglob("*")]:
        if os.geteuid() == 0:
            os.chown(path, uid, gid)
        else:
            path.chmod(path.stat().st_mode | 0o777 if path.is_dir() else 0o666)


def job_on_models_copy(name, tmp_path, prepare=None):
    """The Job `name` renders: (its objects, its pod, a copy of models/ its pod may write).

    `prepare(models_dir)` changes the copy first.
    """
    objects = render(name)
    (job,) = find(objects, "Job")
    pod = job["spec"]["template"]["spec"]
    models_dir = tmp_path / "models"
    shutil.copytree(support.ROOT / "models", models_dir,
                    ignore=shutil.ignore_patterns(".tmp-*", "__pycache__"))
    if prepare:
        prepare(models_dir)
    security = pod["securityContext"]
    writable_by(models_dir, security["runAsUser"], security["fsGroup"])
    return objects, pod, models_dir


def test_the_training_job_publishes_a_version_under_its_pod_spec(tmp_path, shapes_dataset):
    objects, pod, models_dir = job_on_models_copy("jobs/train", tmp_path)
    (trainer,) = pod["containers"]
    security = pod["securityContext"]
    versions = models_dir / trainer["args"][trainer["args"].index("--name") + 1]
    expected = max(int(entry.name) for entry in versions.iterdir() if entry.name.isdigit()) + 1
    volumes = volume_sources(pod, tmp_path, {"image-classifier-models": models_dir,
                                              "image-classifier-training-data": shapes_dataset})
    name = f"classifier-k8s-test-{uuid.uuid4().hex[:8]}"
    docker("network", "create", name)
    try:
        # The Job's own command and arguments, then a tiny model instead of an hour of
        # CIFAR-10 (a later option wins).
        result = subprocess.run(
            ["docker", "run", "--rm", "--name", name, "--network", name,
             *container_arguments(pod, trainer, volumes, config_map_data(objects), {}),
             built_image(trainer["image"]), *container_command(trainer),
             "--epochs", "1", *support.TINY_MODEL_OPTIONS],
            capture_output=True, text=True, timeout=TRAIN_SECONDS)
    finally:
        docker("rm", "--force", name, check=False)
        docker("network", "rm", name, check=False)
    output = result.stdout + result.stderr
    assert f"published: /app/models/{versions.name}/{expected}" in output, output[-LOG_TAIL:]
    published = versions / str(expected)
    assert (published / "metadata.json").is_file()
    assert published.stat().st_uid == security["runAsUser"]
    # Three drawn colours are not CIFAR-10's ten classes: the gate keeps the shipped stable.
    assert result.returncode == 3, output[-LOG_TAIL:]
    assert "refused, its classes differ from stable's" in output
    policy = json.loads((versions / POLICY_FILE).read_text())
    assert policy["version_labels"]["stable"] == expected - 1


def test_the_release_job_sets_a_canary_under_its_pod_spec(tmp_path):
    shipped = max(published_versions(support.ROOT / "models" / "cifar10"))

    def add_candidate(models_dir):
        # A candidate published beside the shipped stable, as the gate leaves a refused one.
        shutil.copytree(models_dir / "cifar10" / str(shipped),
                        models_dir / "cifar10" / str(shipped + 1))
        (models_dir / "cifar10" / POLICY_FILE).write_text(
            json.dumps({"version_labels": {"stable": shipped}}))

    objects, pod, models_dir = job_on_models_copy("jobs/release", tmp_path, add_candidate)
    (container,) = pod["containers"]
    volumes = volume_sources(pod, tmp_path, {"image-classifier-models": models_dir})
    config_maps = config_map_data(objects)
    (name,) = config_maps
    config_maps[name] = {"RELEASE": f"canary cifar10 {shipped + 1} --percent 10"}
    output = docker("run", "--rm", "--network", "none",
                    *container_arguments(pod, container, volumes, config_maps, {}),
                    built_image(container["image"]), *container_command(container))
    assert f"canary: version {shipped + 1}, 10% of unpinned requests, split" in output
    policy = json.loads((models_dir / "cifar10" / POLICY_FILE).read_text())
    assert policy["version_labels"] == {"stable": shipped, "canary": shipped + 1}


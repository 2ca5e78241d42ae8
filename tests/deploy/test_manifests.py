"""deploy/kubernetes/ rendered by kubectl kustomize: valid for Kubernetes 1.32, held to our policy.

No cluster is needed: built-in kinds are validated strictly against the 1.32 schemas that
kubernetes-validate bundles, and the custom resources against their CRDs' schemas.
"""

import ast
import base64
import dataclasses
import re
import tomllib
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from service.config import Settings
from service.observability import metrics
from tests import support
from tests.deploy import crd_schemas, pod_security
from tests.deploy.manifests import (
    KUBECTL,
    KUSTOMIZE_ROOT,
    SETTINGS_CONFIG_MAP,
    applied_directly,
    dockerfile_targets,
    find,
    images,
    pods,
    port_number,
    render,
    settings_of,
)

if KUBECTL is None:
    pytest.skip("kubectl is not installed: the Kubernetes manifests cannot be rendered",
                allow_module_level=True)

KUBERNETES_VERSION = "1.32.0"
TOP_LEVEL = applied_directly()
SECURE_CONTEXT = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                  "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}


def rendered_pods():
    """(kustomization, pod) for every pod template of every kustomization applied directly."""
    return [(name, pod) for name in TOP_LEVEL for pod in pods(render(name))]


def settings_containers():
    """(kustomization, pod, container, settings) for every container that reads our settings."""
    found = []
    for name, pod in rendered_pods():
        for container in pod.containers:
            if any(source.get("configMapRef", {}).get("name", "").startswith(SETTINGS_CONFIG_MAP)
                   for source in container.get("envFrom", [])):
                found.append((name, pod, container, settings_of(render(name), container)))
    return found


def gunicorn_graceful_timeout():
    """graceful_timeout in service/process/gunicorn_conf.py, read without running the file."""
    tree = ast.parse((support.ROOT / "service" / "process" / "gunicorn_conf.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "graceful_timeout"):
            return ast.literal_eval(node.value)
    raise AssertionError("service/process/gunicorn_conf.py sets no graceful_timeout")


def nginx_size(value):
    """An nginx size ("20m", "512k", "1g", "1000") in bytes."""
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()
    return int(number) * 1024 ** " kmg".index(unit.lower() or " ")


def test_the_expected_kustomizations_are_applied_directly():
    assert {"overlays/dev", "overlays/production", "jobs/train", "jobs/publish-model",
            "jobs/release", "kserve"} <= set(TOP_LEVEL)


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_every_object_validates_strictly_against_its_schema(name):
    custom = crd_schemas.load()
    failures = []
    for item in render(name):
        where = f"{name}: {item['kind']}/{item['metadata']['name']}"
        validator = custom.get((item["apiVersion"], item["kind"]))
        try:
            if validator is None:
                # Unknown kinds raise SchemaNotFoundError: nothing is skipped silently.
                kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
                continue
            # The CRD schema leaves metadata open; the API server checks it as ObjectMeta.
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": item["metadata"]},
                                         KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            failures.append(f"{where}: {error.message} at {'/'.join(map(str, error.path))}")
            continue
        except kubernetes_validate.SchemaNotFoundError:
            failures.append(f"{where}: no schema for {item['apiVersion']} {item['kind']}")
            continue
        failures += [f"{where}: {error.message} at {'/'.join(map(str, error.absolute_path))}"
                     for error in validator.iter_errors(item)]
    assert not failures, "\n".join(failures)


def test_strict_validation_refuses_an_unknown_field():
    # The check above can fail: a misspelt field in a custom resource is refused too.
    validator = crd_schemas.load()["serving.kserve.io/v1beta1", "InferenceService"]
    service = find(render("kserve"), "InferenceService")[0]
    service["spec"]["predictor"]["model"]["storageURI"] = "pvc://typo"
    assert any("storageURI" in error.message for error in validator.iter_errors(service))


def test_the_settings_config_map_holds_every_setting_but_the_secret():
    expected = {setting.name.upper() for setting in dataclasses.fields(Settings)} - {"API_KEY"}
    containers = settings_containers()
    assert containers
    for name, pod, _container, settings in containers:
        assert set(settings) == expected, (
            f"{name} {pod.where}: missing {sorted(expected - set(settings))}, "
            f"unknown {sorted(set(settings) - expected)}")
        # Every value is one the service accepts (empty keeps its default).
        Settings.from_env(settings)


def test_the_api_keys_come_from_a_secret_file_never_the_environment():
    for name, pod, container, settings in settings_containers():
        where = f"{name} {pod.where}"
        assert "API_KEY" not in {entry["name"] for entry in container.get("env", [])}, where
        assert "API_KEY" not in settings, where
        if not settings["API_KEY_FILE"]:
            assert name == "overlays/dev", f"{where}: only dev may be open"
            continue
        folder, file = settings["API_KEY_FILE"].rsplit("/", 1)
        (mount,) = [mount for mount in container["volumeMounts"] if mount["mountPath"] == folder]
        # The folder, not a subPath: only then does the kubelet bring a changed Secret in.
        assert mount.get("readOnly") is True and "subPath" not in mount, where
        (volume,) = [volume for volume in pod.spec["volumes"] if volume["name"] == mount["name"]]
        secret = volume["secret"]
        assert secret["secretName"] == "image-classifier-api-key", where
        assert [item["path"] for item in secret["items"]] == [file], where
        # Readable by the pod's group, nobody else; and no pod starts without the keys.
        assert secret["defaultMode"] == 0o440 and secret["optional"] is False, where


def test_every_container_has_requests_and_a_memory_limit():
    for name, pod in rendered_pods():
        for container in pod.containers + pod.init_containers:
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), (
                f"{name} {pod.where} {container['name']}")
            assert "memory" in resources.get("limits", {}), (
                f"{name} {pod.where} {container['name']}")


def test_every_long_running_container_has_startup_readiness_and_liveness_probes():
    for name, pod in rendered_pods():
        if pod.runs_to_completion:
            continue
        for container in pod.containers:
            missing = {"startupProbe", "readinessProbe", "livenessProbe"} - set(container)
            assert not missing, f"{name} {pod.where} {container['name']} lacks {missing}"


def test_every_container_runs_locked_down():
    for name, pod in rendered_pods():
        for container in pod.containers + pod.init_containers:
            where = f"{name} {pod.where} {container['name']}"
            security = pod.security(container)
            assert {key: security.get(key) for key in SECURE_CONTEXT} == SECURE_CONTEXT, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not security.get("capabilities", {}).get("add"), where
            assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where


def test_every_pod_meets_the_restricted_pod_security_standard():
    for name, pod in rendered_pods():
        spec = {**pod.spec, "containers": pod.containers, "initContainers": pod.init_containers}
        assert pod_security.violations(spec) == [], f"{name} {pod.where}"
    namespaces = [item for name in TOP_LEVEL for item in find(render(name), "Namespace")]
    assert namespaces
    for namespace in namespaces:
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted", namespace


def test_the_pod_security_check_finds_every_kind_of_breach():
    # The check above can fail: a pod that breaks each rule is caught on each.
    container = {"name": "bad", "ports": [{"containerPort": 80, "hostPort": 80}],
                 "securityContext": {"privileged": True, "procMount": "Unmasked",
                                     "capabilities": {"add": ["SYS_ADMIN"]},
                                     "seLinuxOptions": {"type": "spc_t"}}}
    spec = {"hostNetwork": True, "hostPID": True, "containers": [container],
            "securityContext": {"runAsUser": 0, "seccompProfile": {"type": "Unconfined"},
                                "sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
            "volumes": [{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}]}
    found = " | ".join(pod_security.violations(
        spec, {"container.apparmor.security.beta.kubernetes.io/bad": "unconfined"}))
    for rule in ("host namespaces: hostNetwork", "host namespaces: hostPID", "AppArmor",
                 "privileged containers", "host ports", "/proc mount type", "SELinux",
                 "sysctls", "capabilities (baseline)", "HostPath volumes", "volume types",
                 "privilege escalation", "running as non-root: bad",
                 "running as non-root user", "seccomp", "capabilities: bad does not drop ALL"):
        assert rule in found, rule


def test_every_image_is_one_the_dockerfile_builds_by_the_project_version():
    version = tomllib.loads((support.ROOT / "pyproject.toml").read_text())["project"]["version"]
    targets = dockerfile_targets()
    for name in TOP_LEVEL:
        for image in images(render(name)):
            # A registry in front (registry.example.com/image-classifier-api) is fine.
            repository, _, tag = image.rpartition("/")[2].partition(":")
            target = repository.removeprefix("image-classifier-")
            assert repository.startswith("image-classifier-") and target in targets, (
                f"{name}: {image} is not image-classifier-<a Dockerfile target: {sorted(targets)}>")
            assert tag == version, f"{name}: {image} is not tagged {version} (pyproject.toml)"


def test_no_object_in_production_uses_latest():
    for name in TOP_LEVEL:
        if name.startswith("overlays/") and name != "overlays/production":
            continue
        for image in images(render(name)):
            assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"


def test_the_container_listens_where_its_probes_and_ports_say():
    for name, pod, container, settings in settings_containers():
        port, grpc_port = int(settings["PORT"]), int(settings["GRPC_PORT"])
        where = f"{name} {pod.where}"
        # KServe exposes one port per InferenceService: REST, or gRPC (grpc-v2, named h2c).
        listening = [entry["containerPort"] for entry in container["ports"]]
        assert listening in ([port, grpc_port], [port], [grpc_port]), where
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if "grpc" in container[probe]:
                # grpc.health.v1 on GRPC_PORT (a grpc probe takes a number, not a name).
                assert container[probe]["grpc"]["port"] == grpc_port, f"{where} {probe}"
                continue
            http = container[probe]["httpGet"]
            assert port_number(container, http["port"]) == port, f"{where} {probe}"
        readiness = container["readinessProbe"]
        assert "grpc" in readiness or readiness["httpGet"]["path"].endswith("/health/ready"), where
        assert container["livenessProbe"]["httpGet"]["path"].endswith("/health/live"), where
        assert int(settings.get("GRPC_ENABLED") or Settings().grpc_enabled) == 1, where


def test_the_deployment_is_ready_by_grpc_health_and_serves_both_ports():
    for name in ("overlays/dev", "overlays/production"):
        objects = render(name)
        container = find(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["grpc"] == {"port": 8001}
        service = find(objects, "Service", "image-classifier-api")[0]
        ports = {entry["name"]: entry for entry in service["spec"]["ports"]}
        assert set(ports) == {"http", "grpc"}
        assert port_number(container, ports["grpc"]["targetPort"]) == 8001
        assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"


def test_the_api_reads_its_models_from_a_read_only_mount():
    for name, pod, container, settings in settings_containers():
        mounts = {mount["mountPath"]: mount for mount in container.get("volumeMounts", [])}
        if pod.where.startswith("Deployment/"):
            assert mounts[settings["MODEL_DIR"]].get("readOnly") is True, f"{name} {pod.where}"
        elif pod.where.startswith("ServingRuntime/"):
            # KServe mounts the InferenceService's storageUri there, read-only.
            assert settings["MODEL_DIR"] == "/mnt/models", f"{name} {pod.where}"
    for name in TOP_LEVEL:
        for service in find(render(name), "InferenceService"):
            assert service["spec"]["predictor"]["model"]["storageUri"].startswith("pvc://")


def test_our_python_containers_write_only_to_an_empty_dir_at_tmp():
    # HOME is /tmp in our images: gunicorn, the metrics, Keras and Matplotlib write there.
    for name, pod in rendered_pods():
        volumes = {volume["name"]: volume for volume in pod.spec.get("volumes", [])}
        for container in pod.containers:
            if not container.get("image", "").startswith(("image-classifier-api:",
                                                          "image-classifier-trainer:")):
                continue
            tmp = [mount["name"] for mount in container.get("volumeMounts", [])
                   if mount["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]], f"{name} {pod.where}"


def test_termination_lets_endpoints_go_then_gunicorn_drain():
    deployment = find(render("overlays/production"), "Deployment", "image-classifier-api")[0]
    spec = deployment["spec"]["template"]["spec"]
    pause = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause >= 5
    assert spec["terminationGracePeriodSeconds"] > pause + gunicorn_graceful_timeout()
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_services_selectors_and_references_meet_the_pods():
    for name in ("overlays/dev", "overlays/production"):
        objects = render(name)
        deployment = find(objects, "Deployment", "image-classifier-api")[0]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        selected = [find(objects, "Service")[0]["spec"]["selector"]]
        selected += [item["spec"]["selector"]["matchLabels"]
                     for kind in ("PodDisruptionBudget", "ServiceMonitor")
                     for item in find(objects, kind)]
        selected += [item["spec"]["podSelector"]["matchLabels"]
                     for item in find(objects, "NetworkPolicy")]
        for selector in selected:
            assert selector.items() <= labels.items(), f"{name}: {selector} selects no api pod"
        service = find(objects, "Service", "image-classifier-api")[0]
        for entry in service["spec"]["ports"]:
            assert port_number(container, entry["targetPort"]) in [
                port["containerPort"] for port in container["ports"]]
        service_port = next(entry for entry in service["spec"]["ports"]
                            if entry["name"] == "http")
        (rule,) = find(objects, "Ingress")[0]["spec"]["rules"]
        backend = rule["http"]["paths"][0]["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] == service_port["name"]
        for monitor in find(objects, "ServiceMonitor"):
            assert monitor["spec"]["endpoints"][0]["port"] == service_port["name"]
        (policy,) = find(objects, "NetworkPolicy")
        (rule,) = policy["spec"]["ingress"]
        assert [port_number(container, entry["port"]) for entry in rule["ports"]] == [
            port["containerPort"] for port in container["ports"]], (
            f"{name}: the policy admits other ports")
        (autoscaler,) = find(objects, "HorizontalPodAutoscaler")
        assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert autoscaler["spec"]["minReplicas"] == deployment["spec"]["replicas"]


def test_the_ingress_body_limit_is_the_service_limit():
    for name in ("overlays/dev", "overlays/production"):
        objects = render(name)
        container = find(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        limit = Settings.from_env(settings_of(objects, container)).max_request_bytes
        annotations = find(objects, "Ingress")[0]["metadata"]["annotations"]
        assert nginx_size(annotations["nginx.ingress.kubernetes.io/proxy-body-size"]) == limit


def test_production_models_live_on_one_volume_the_jobs_and_kserve_share():
    production = render("overlays/production")
    (claim,) = find(production, "PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    namespace = claim["metadata"]["namespace"]
    deployment = find(production, "Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    model_name = settings_of(production, container)["MODEL_NAME"]
    claims = {volume["persistentVolumeClaim"]["claimName"]
              for volume in deployment["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in volume}
    assert claims == {claim["metadata"]["name"]}
    for name in ("jobs/train", "jobs/publish-model", "jobs/release", "kserve"):
        for item in render(name):
            assert item["metadata"].get("namespace") == namespace, f"{name}: {item['kind']}"
    train = find(render("jobs/train"), "Job")[0]["spec"]["template"]["spec"]
    args = train["containers"][0]["args"]
    assert args[args.index("--name") + 1] == model_name
    assert args[args.index("--output") + 1] == settings_of(production, container)["MODEL_DIR"]
    for name in ("jobs/train", "jobs/publish-model", "jobs/release"):
        job = find(render(name), "Job")[0]["spec"]["template"]["spec"]
        claims = {volume.get("persistentVolumeClaim", {}).get("claimName")
                  for volume in job["volumes"]}
        assert claim["metadata"]["name"] in claims
    uris = {service["metadata"]["name"]: service["spec"]["predictor"]["model"]["storageUri"]
            for service in find(render("kserve"), "InferenceService")}
    assert uris == {"image-classifier": f"pvc://{claim['metadata']['name']}",
                    "image-classifier-grpc": f"pvc://{claim['metadata']['name']}",
                    "image-classifier-tf": f"pvc://{claim['metadata']['name']}/{model_name}"}


def test_the_kserve_runtime_speaks_the_open_inference_protocol():
    objects = render("kserve")
    (runtime,) = find(objects, "ServingRuntime")
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    for name, protocol in (("image-classifier", "v2"), ("image-classifier-grpc", "grpc-v2")):
        service = find(objects, "InferenceService", name)[0]
        model = service["spec"]["predictor"]["model"]
        assert (model["runtime"], model["protocolVersion"]) == (runtime["metadata"]["name"],
                                                                protocol)
        assert model["modelFormat"]["name"] in {entry["name"] for entry in
                                                runtime["spec"]["supportedModelFormats"]}
    # Over gRPC, KServe routes to the container port named h2c: the runtime's GRPC_PORT.
    model = find(objects, "InferenceService", "image-classifier-grpc")[0]["spec"]["predictor"][
        "model"]
    settings = settings_of(objects, runtime["spec"]["containers"][0])
    assert model["ports"] == [{"name": "h2c", "containerPort": int(settings["GRPC_PORT"]),
                               "protocol": "TCP"}]
    assert model["readinessProbe"]["grpc"]["port"] == int(settings["GRPC_PORT"])
    container = runtime["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"].startswith("/v2/health/")


def test_dev_ships_the_model_in_an_image_with_no_volume():
    objects = render("overlays/dev")
    assert not find(objects, "PersistentVolumeClaim")
    spec = find(objects, "Deployment")[0]["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    # No storage: empty folders, and the (optional) Secret of API keys.
    assert all(set(volume) in ({"name", "emptyDir"}, {"name", "secret"})
               for volume in volumes.values()), volumes
    (init,) = spec["initContainers"]
    api = spec["containers"][0]
    target = settings_of(objects, api)["MODEL_DIR"]
    assert init["image"].startswith("image-classifier-model:")
    assert init["command"][-1] == target
    assert [mount["name"] for mount in init["volumeMounts"] if mount["mountPath"] == target] == [
        mount["name"] for mount in api["volumeMounts"] if mount["mountPath"] == target]


def test_the_api_and_the_release_job_read_the_prediction_store_from_one_secret():
    # Optional: without the Secret the store stays off, and nothing fails to start.
    reference = {"secretKeyRef": {"name": "image-classifier-prediction-store", "key": "url",
                                  "optional": True}}
    api = find(render("overlays/production"), "Deployment", "image-classifier-api")[0]
    job = find(render("jobs/release"), "Job")[0]
    for pod in (api, job):
        container = pod["spec"]["template"]["spec"]["containers"][0]
        store = [entry for entry in container.get("env", []) if entry["name"] == "PREDICTION_STORE"]
        assert store == [{"name": "PREDICTION_STORE", "valueFrom": reference}], pod["kind"]


def test_production_scales_on_the_queue_depth_the_api_exports_through_the_adapter():
    objects = render("overlays/production")
    (hpa,) = find(objects, "HorizontalPodAutoscaler", "image-classifier-api")
    pods = [metric["pods"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Pods"]
    assert [entry["metric"]["name"] for entry in pods] == [metrics.QUEUE_DEPTH._name]
    (rules,) = find(objects, "ConfigMap", "image-classifier-prometheus-adapter-rules")
    (rule,) = yaml.safe_load(rules["data"]["config.yaml"])["rules"]
    # The adapter serves the series the api exports, under the name the HPA asks for.
    assert rule["seriesQuery"].startswith(metrics.QUEUE_DEPTH._name + "{")
    assert rule["name"]["as"] == pods[0]["metric"]["name"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_the_prediction_store_overlay_makes_the_secret_the_api_and_the_release_job_read():
    objects = render("overlays/prediction-store")
    (secret,) = find(objects, "Secret")
    (api,) = find(objects, "Deployment", "image-classifier-api")
    (job,) = find(render("jobs/release"), "Job")
    name = secret["metadata"]["name"]
    assert secret["type"] == "Opaque" and set(secret["data"]) == {"url"}
    # Where the pods that read it run, under the one name both of them ask for.
    assert secret["metadata"]["namespace"] == api["metadata"]["namespace"] == \
        job["metadata"]["namespace"]
    for pod, optional in ((api, False), (job, True)):
        (container,) = pod["spec"]["template"]["spec"]["containers"]
        assert {"name": "PREDICTION_STORE", "valueFrom": {"secretKeyRef": {
            "name": name, "key": "url", "optional": optional}}} in container["env"], pod["kind"]
    # The URL is one the service takes as a PostgreSQL store.
    url = base64.b64decode(secret["data"]["url"]).decode()
    assert Settings.from_env({"PREDICTION_STORE": url}).prediction_store.startswith(
        "postgresql://")


def test_the_committed_store_url_is_a_placeholder():
    # In a clone this is what git holds; a work tree with a real URL written fails here, a
    # reminder not to commit it.
    env_file = KUSTOMIZE_ROOT / "overlays" / "prediction-store" / "prediction-store.env"
    lines = [line for line in env_file.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert [line.split("=", 1)[0] for line in lines] == ["url"]
    url = urlsplit(lines[0].split("=", 1)[1])
    # A .invalid host resolves nowhere; the password says what to do. What git holds is
    # never a real credential (a deployment writes its own URL into the file, uncommitted).
    assert url.hostname.endswith(".invalid") and url.password == "CHANGE-ME"

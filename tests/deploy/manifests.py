"""The Kubernetes manifests as rendered by `kubectl kustomize`, and the pods they describe."""

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass, field

import yaml

from tests import support

KUSTOMIZE_ROOT = support.ROOT / "deploy" / "kubernetes"
KUBECTL = shutil.which("kubectl")
SETTINGS_CONFIG_MAP = "image-classifier-settings"


def kustomizations():
    """{folder: parsed kustomization.yaml} for every kustomization and component."""
    return {path.parent: yaml.safe_load(path.read_text())
            for path in sorted(KUSTOMIZE_ROOT.rglob("kustomization.yaml"))}


def applied_directly():
    """The kustomizations a person applies (`kubectl apply -k`), relative to deploy/kubernetes.

    Every overlay (one may build on another: overlays/prediction-store on production), and
    every other kustomization that none lists as a resource or component, so a new overlay
    is rendered and checked without being named here.
    """
    found = kustomizations()
    referenced = set()
    for folder, kustomization in found.items():
        for entry in kustomization.get("resources", []) + kustomization.get("components", []):
            referenced.add((folder / entry).resolve())
    return sorted(str(folder.relative_to(KUSTOMIZE_ROOT)) for folder, kustomization in found.items()
                  if kustomization.get("kind", "Kustomization") == "Kustomization"
                  and (folder.parent.name == "overlays" or folder.resolve() not in referenced))


@functools.cache
def render(name):
    """The objects `kubectl kustomize deploy/kubernetes/<name>` prints."""
    result = subprocess.run([KUBECTL, "kustomize", str(KUSTOMIZE_ROOT / name)],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {name} failed:\n{result.stderr}")
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def find(objects, kind, name=None):
    """The objects of `kind` (and `name`, when given)."""
    return [item for item in objects if item["kind"] == kind
            and (name is None or item["metadata"]["name"] == name)]


def settings_of(objects, container):
    """The data of the settings ConfigMap that `container` reads through envFrom."""
    names = [source["configMapRef"]["name"] for source in container.get("envFrom", [])
             if "configMapRef" in source]
    maps = [item for item in find(objects, "ConfigMap") if item["metadata"]["name"] in names]
    assert len(maps) == 1, f"container {container['name']} reads {names}, found {len(maps)}"
    return maps[0].get("data", {})


@dataclass
class Pod:
    """One pod template: where it comes from, its pod-level fields and its containers."""

    where: str
    spec: dict
    containers: list
    init_containers: list = field(default_factory=list)
    # A Job's pod ends when its work does: it has no probes to answer.
    runs_to_completion: bool = False

    def security(self, container):
        """The container's effective security context: the pod's, overridden by its own."""
        return {**self.spec.get("securityContext", {}), **container.get("securityContext", {})}


def pods(objects):
    """Every pod template in `objects`, KServe's included.

    An InferenceService's model container is merged over the container of the
    ServingRuntime it names, and the runtime's volumes join the pod's, as KServe does,
    when that runtime is among `objects`.
    """
    runtimes = {item["metadata"]["name"]: item for item in find(objects, "ServingRuntime")}
    for item in objects:
        where = f"{item['kind']}/{item['metadata']['name']}"
        spec = item.get("spec", {})
        if item["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            template = spec["template"]["spec"]
            yield Pod(where, template, template["containers"], template.get("initContainers", []),
                      runs_to_completion=item["kind"] == "Job")
        elif item["kind"] == "ServingRuntime":
            # A runtime has no pod security context: its containers carry their own.
            yield Pod(where, spec, spec["containers"])
        elif item["kind"] == "InferenceService":
            predictor = dict(spec["predictor"])
            containers = list(predictor.get("containers", []))
            if "model" in predictor:
                model = predictor["model"]
                runtime = runtimes.get(model.get("runtime"))
                base = runtime["spec"]["containers"][0] if runtime else {"name": "kserve-container"}
                if runtime:
                    predictor["volumes"] = (runtime["spec"].get("volumes", [])
                                            + predictor.get("volumes", []))
                containers.append({**base, **{key: value for key, value in model.items()
                                              if key not in ("runtime", "modelFormat",
                                                             "protocolVersion", "storageUri")}})
            yield Pod(where, predictor, containers, predictor.get("initContainers", []))


def images(node):
    """Every `image` value anywhere in `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from images(value)
    elif isinstance(node, list):
        for value in node:
            yield from images(value)


def dockerfile_targets():
    """The named build stages of the Dockerfile (`FROM ... AS <name>`)."""
    text = (support.ROOT / "Dockerfile").read_text()
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.IGNORECASE | re.MULTILINE))


def port_number(container, port):
    """A probe's or Service's port as a number, resolving a container port's name."""
    if isinstance(port, int):
        return port
    named = {entry.get("name"): entry["containerPort"] for entry in container.get("ports", [])}
    assert port in named, f"{container['name']} has no port named {port!r}"
    return named[port]

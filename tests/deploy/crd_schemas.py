"""The OpenAPI schemas of our custom resources (KServe, Prometheus Operator), checked strictly.

The schemas are committed under schemas/, taken from each project's CustomResourceDefinition
without descriptions (the refresh command is below), so the tests need no network. Refresh:
    python -m tests.deploy.crd_schemas CRD.yaml VERSION "SOURCE" > tests/deploy/schemas/<kind>.json
"""

import json
import sys
from pathlib import Path

import jsonschema
import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"


def extract(crd, version, source):
    """The schema of one served version of `crd`, without descriptions, with its provenance."""
    served = {entry["name"]: entry for entry in crd["spec"]["versions"]}
    return {"apiVersion": f"{crd['spec']['group']}/{version}",
            "kind": crd["spec"]["names"]["kind"],
            "source": source,
            "schema": _without_descriptions(served[version]["schema"]["openAPIV3Schema"])}


def _without_descriptions(node):
    """`node` with every `description` dropped: they are most of a CRD's bytes."""
    if isinstance(node, dict):
        return {key: _without_descriptions(value) for key, value in node.items()
                if key != "description"}
    if isinstance(node, list):
        return [_without_descriptions(value) for value in node]
    return node


def strict(node):
    """`node` with unknown fields refused where the API server would refuse them.

    A structural CRD schema allows any field it does not list; the API server's strict
    field validation (kubectl's default) rejects them instead, unless the schema says
    x-kubernetes-preserve-unknown-fields. A typo in a manifest must fail here, not be
    dropped silently in the cluster.
    """
    if isinstance(node, list):
        return [strict(value) for value in node]
    if not isinstance(node, dict):
        return node
    result = {key: strict(value) for key, value in node.items()}
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        result["additionalProperties"] = False
    return result


def load():
    """{(apiVersion, kind): validator} for every committed custom resource schema."""
    validators = {}
    for path in sorted(SCHEMAS.glob("*.json")):
        entry = json.loads(path.read_text())
        validators[entry["apiVersion"], entry["kind"]] = jsonschema.Draft4Validator(
            strict(entry["schema"]))
    return validators


def main(argv):
    """Print the schema file for one version of the CRD in a YAML file."""
    path, version, source = argv
    crd = yaml.safe_load(Path(path).read_text())
    json.dump(extract(crd, version, source), sys.stdout, separators=(",", ":"), sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])

"""The OpenAPI document is valid, covers every route, and the running service keeps to it."""

import re
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
import requests
from openapi_spec_validator import validate

from service.config import Settings
from service.http.openapi import openapi_document
from tests import support

# Routes DESIGN.md promises, with their methods; the document must describe exactly these.
ROUTES = {("/predict", "post"), ("/health/live", "get"), ("/health/ready", "get"),
          ("/health", "get"), ("/model", "get"), ("/metrics", "get"),
          ("/openapi.json", "get"), ("/", "get"), ("/feedback", "post"),
          # The operator view and its data.
          ("/operations", "get"), ("/operations/models", "get"),
          # The model repository: every model, and predict by model, version or label.
          ("/models", "get"), ("/models/{name}", "get"), ("/models/{name}/predict", "post"),
          ("/models/{name}/versions/{version}/predict", "post"),
          ("/models/{name}/labels/{label}/predict", "post"), ("/v2/repository/index", "post"),
          # The Open Inference Protocol's routes, each with and without a version.
          ("/v2", "get"), ("/v2/health/live", "get"), ("/v2/health/ready", "get"),
          *((f"/v2/models/{{name}}{version}{suffix}", method)
            for version in ("", "/versions/{version}")
            for suffix, method in (("", "get"), ("/ready", "get"), ("/infer", "post")))}

# Responses must match the document in status, content type, headers and body; no 500;
# invalid input must be refused; undeclared methods must answer 405.
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance",
          "negative_data_rejection", "unsupported_method")

# Invalid input may also be refused as too large (413) or not an image (415). A schema cannot
# say "these bytes are a picture", so generated /v2 inference requests are refused (400, 415):
# the warnings that say so are expected there.
SCHEMATHESIS_CONFIG = """\
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "404", "405", "413", "415"]

[[operations]]
include-path-regex = "/infer$"
warnings = ["missing_auth", "base_url_mismatch", "missing_deserializer", "unused_openapi_auth",
            "unsupported_regex"]
"""


def operations(document):
    """The (path, method) pairs a document describes."""
    return {(path, method) for path, item in document["paths"].items() for method in item}


@pytest.mark.parametrize("api_key", ["", "secret"])
def test_the_document_is_valid_openapi_and_covers_every_route(api_key):
    document = openapi_document(Settings(api_key=api_key))
    validate(document)
    assert operations(document) == ROUTES


def test_the_document_lists_every_route_the_app_serves():
    from service.app import create_app

    app = create_app(Settings(), start_models=False)
    # Flask writes a path parameter as <name>, OpenAPI as {name}.
    served = {(re.sub(r"<(\w+)>", r"{\1}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules()
              if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == operations(openapi_document(Settings()))


def test_every_predict_body_form_and_error_is_described():
    predict = openapi_document(Settings(max_images_per_request=7))["paths"]["/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {
        "multipart/form-data", "image/*", "application/octet-stream", "application/json"}
    assert {"200", "400", "401", "413", "415", "503"} <= set(predict["responses"])
    assert "7" in predict["description"]


def test_predict_requires_a_key_only_when_one_is_configured():
    def security(settings):
        return openapi_document(settings)["paths"]["/predict"]["post"]["security"]

    with_key = security(Settings(api_key="secret"))
    assert {} not in with_key
    assert {"bearer": []} in with_key and {"apiKey": []} in with_key
    assert {} in security(Settings())


def schemathesis_command():
    """The schemathesis CLI installed beside this Python."""
    installed = Path(sys.executable).with_name("schemathesis")
    if installed.exists():
        return [str(installed)]
    return [shutil.which("schemathesis") or "schemathesis"]


@pytest.mark.parametrize("api_key", ["", "sesame"], ids=["open", "with-api-key"])
def test_the_running_service_keeps_to_its_document(start_service, models_dir, tmp_path, api_key):
    # With the prediction store on, so that /feedback reads what it is sent.
    service = start_service(models_dir, api_key=api_key,
                            prediction_store=str(tmp_path / "store"))
    served = requests.get(service.url("/openapi.json"), timeout=10).json()
    validate(served)
    assert operations(served) == ROUTES

    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    artifacts = support.ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    report = artifacts / f"schemathesis-{'with-api-key' if api_key else 'open'}.xml"
    checks = CHECKS
    key_options = []
    if api_key:
        # Requests carry the key; ignored_auth resends them without it and wants a 401.
        checks += ("ignored_auth",)
        key_options = ["--header", f"Authorization: Bearer {api_key}"]
    command = [*schemathesis_command(), "--config-file", str(config), "--no-color", "run",
               service.url("/openapi.json"), "--checks", ",".join(checks), *key_options,
               # Bounded and repeatable: a fixed seed and a cap on cases per operation. One
               # worker: CPython 3.11.7's ast.parse, which hypothesis calls, is not thread-safe.
               "--max-examples", "40", "--seed", "20261127", "--workers", "1",
               "--generation-database", "none", "--request-timeout", "30",
               "--report", "junit", "--report-junit-path", str(report)]
    # Run from a scratch folder so nothing schemathesis writes lands in the work tree.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert "No issues found" in output, output[-3000:]
    # The /v2 routes share path parameters, so schemathesis also chains them ("Stateful tests").
    tested = {case.get("name") for case in ElementTree.parse(report).iter("testcase")}
    tested.discard("Stateful tests")
    # Schemathesis does not fuzz the route that serves the document it reads.
    assert tested == {f"{method.upper()} {path}" for path, method in ROUTES} - {"GET /openapi.json"}
    assert '"status": 500' not in service.log()

"""deploy/postgres/compose.postgres.yml: every service that reads the store gets its URL, and
the release service leaves `network_mode: none` to reach the database."""

import shutil
import subprocess

import pytest
import yaml

from tests.support import ROOT

OVERRIDE = "deploy/postgres/compose.postgres.yml"


def rendered(environment):
    """`docker compose config` of the stack with the override, every profile on."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI to render the compose files with")
    result = subprocess.run(["docker", "compose", "-f", "docker-compose.yml", "-f", OVERRIDE,
                             "--profile", "train", "--profile", "release", "config"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin:/usr/local/bin", **environment})
    if "docker: 'compose' is not a docker command" in result.stderr:
        pytest.skip("no docker compose plugin")
    return result


def test_the_store_services_get_the_database_url():
    result = rendered({"POSTGRES_PASSWORD": "s3cret"})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    url = "postgresql://classifier:s3cret@postgres:5432/predictions"
    for name in ("api", "release", "trainer"):
        assert services[name]["environment"]["PREDICTION_STORE"] == url, name
    assert "network_mode" not in services["release"]
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["postgres"]["image"] == "postgres:15-bookworm"
    assert services["postgres"]["cap_drop"] == ["ALL"] and services["postgres"]["read_only"]


def test_without_a_password_compose_refuses_to_start():
    result = rendered({})
    assert result.returncode != 0 and "set POSTGRES_PASSWORD" in result.stderr

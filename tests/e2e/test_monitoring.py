"""The `monitoring` profile: a real Prometheus scrapes the api replicas, loads the alert rules
of deploy/prometheus/, and an alert made to fire is read as firing from its API."""

import pytest

from service.models.artifact import POLICY_FILE
from tests import support
from tests.e2e.compose import MODEL_NAME, running_project, skip_without_compose

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

skip_without_compose()


def test_a_refused_policy_fires_its_alert_in_prometheus(tmp_path_factory):
    port = support.free_port()
    with running_project(tmp_path_factory.mktemp("monitoring"), COMPOSE_PROFILES="monitoring",
                         PROMETHEUS_PORT=str(port)) as project:
        project.wait_ready()
        prometheus = f"http://127.0.0.1:{port}"

        def api_targets_up():
            targets = project.http.get(f"{prometheus}/api/v1/targets", timeout=5).json()
            return [target for target in targets["data"]["activeTargets"]
                    if target["health"] == "up"]

        support.poll(api_targets_up, 120, lambda: project.logs("prometheus"))
        rules = project.http.get(f"{prometheus}/api/v1/rules", timeout=5).json()
        loaded = {rule["name"] for group in rules["data"]["groups"] for rule in group["rules"]}
        assert "ImageClassifierPolicyRefused" in loaded
        # A release step gone wrong: serving.json that no policy parser accepts.
        (project.models_dir / MODEL_NAME / POLICY_FILE).write_text("{not json")

        def firing():
            alerts = project.http.get(f"{prometheus}/api/v1/alerts", timeout=5).json()
            return [alert for alert in alerts["data"]["alerts"]
                    if alert["labels"]["alertname"] == "ImageClassifierPolicyRefused"
                    and alert["state"] == "firing"]

        found = support.poll(firing, 240, lambda: project.logs("prometheus"))
        assert found[0]["labels"]["model"] == MODEL_NAME
        # The last good policy still serves.
        assert project.http.get(project.url("/health/ready"), timeout=10).status_code == 200

"""The alert rules in deploy/prometheus/: valid, tested with promtool, and about real metrics."""

import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from service.observability import metrics
from tests.support import ROOT

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
# What in PromQL is not a metric name: label matchers and ranges, label lists of by, on and
# the like, and the operators spelt as words. What is left, not followed by "(", is a metric.
NOT_NAMES = re.compile(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|on|without|ignoring)\s*\([^)]*\)")
KEYWORDS = {"and", "or", "unless", "bool", "group_left", "group_right", "offset"}
IDENTIFIER = re.compile(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def promtool():
    """promtool's path; skip, saying how to get it, without it."""
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("no promtool (apt-get install -y prometheus gives it; .ci/run does)")
    return found


def exported_names():
    """Every series name service/observability/metrics.py exports."""
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            names |= {value._name + suffix for suffix in SUFFIXES[value._type]}
    return names


def alert_rules():
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def test_promtool_accepts_the_rules():
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_and_stays_quiet_as_its_tests_say():
    result = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested():
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test.get("alert_rule_test", ()) if case.get("exp_alerts")}
    assert tested == {rule["alert"] for rule in alert_rules()}


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_metric_a_rule_reads_is_one_the_service_exports(rule):
    read = set(IDENTIFIER.findall(NOT_NAMES.sub(" ", rule["expr"]))) - KEYWORDS
    assert read and read <= exported_names(), sorted(read - exported_names())


def test_the_monitoring_profile_s_config_is_valid_and_loads_the_rules():
    config = RULES.parent / "prometheus.yml"
    result = subprocess.run([promtool(), "check", "config", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load(config.read_text())["rule_files"] == [RULES.name]

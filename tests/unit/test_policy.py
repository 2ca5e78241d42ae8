"""Serving policies: what serving.json may say, every refusal, and the release steps on it."""

import json

import pytest

from service.models.policy import (
    ALL,
    LATEST,
    SPECIFIC,
    Canary,
    PolicyError,
    ServingPolicy,
    VersionPolicy,
    parse_policy,
)


def parse(document):
    return parse_policy(json.dumps(document).encode())


def test_an_empty_object_is_the_default_policy():
    policy = parse({})
    assert policy == ServingPolicy()
    assert policy.versions == VersionPolicy(LATEST, num_versions=1)
    assert policy.stable is None and policy.canary_version is None


def test_a_full_policy_is_read_and_written_back_the_same():
    document = {"model_version_policy": {"specific": {"versions": [3, 2]}},
                "version_labels": {"canary": 3, "stable": 2, "beta-1": 3},
                "canary": {"percent": 12.5, "mode": "shadow"},
                "history": [{"stable": 1, "until": "2026-12-01T00:00:00+00:00", "by": "promote"}]}
    policy = parse(document)
    assert policy.versions == VersionPolicy(SPECIFIC, versions=(2, 3))
    assert policy.stable == 2 and policy.canary_version == 3
    assert policy.canary == Canary(12.5, "shadow")
    again = parse_policy(policy.encode())
    assert again == policy
    assert json.loads(policy.encode())["model_version_policy"] == {"specific": {"versions": [2, 3]}}


@pytest.mark.parametrize("kind, settings, expected", [
    ("latest", {"num_versions": 3}, VersionPolicy(LATEST, num_versions=3)),
    ("latest", {}, VersionPolicy(LATEST, num_versions=1)),
    ("all", {}, VersionPolicy(ALL)),
])
def test_each_version_policy_kind(kind, settings, expected):
    assert parse({"model_version_policy": {kind: settings}}).versions == expected


@pytest.mark.parametrize("data, words", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "must hold a JSON object"),
    (b"[" * 100_000, "not valid JSON"),
    (b'{"version_label": {"stable": 1}}', "unknown key 'version_label'"),
    (b'{"model_version_policy": {"newest": {}}}', "is not latest, specific or all"),
    (b'{"model_version_policy": {"latest": {}, "all": {}}}', "must be one of"),
    (b'{"model_version_policy": {"latest": {"num_versions": 0}}}', "at least 1, not 0"),
    (b'{"model_version_policy": {"latest": {"num_versions": 1.5}}}', "whole number"),
    (b'{"model_version_policy": {"latest": {"count": 2}}}', "unknown setting 'count'"),
    (b'{"model_version_policy": {"specific": {"versions": []}}}', "non-empty list"),
    (b'{"model_version_policy": {"specific": {"versions": ["2"]}}}', "whole number"),
    (b'{"version_labels": [2]}', "version_labels must be an object"),
    (b'{"version_labels": {"Stable": 2}}', "label 'Stable' is not a name"),
    (b'{"version_labels": {"stable": -2}}', "at least 1, not -2"),
    (b'{"version_labels": {"stable": true}}', "whole number"),
    (b'{"version_labels": {"canary": 3}, "canary": {"percent": 101}}', "from 0 to 100, not 101"),
    (b'{"version_labels": {"canary": 3}, "canary": {"percent": -1}}', "from 0 to 100"),
    (b'{"version_labels": {"canary": 3}, "canary": {"percent": "10"}}', "from 0 to 100"),
    (b'{"version_labels": {"canary": 3}, "canary": {"percent": NaN}}', "from 0 to 100"),
    (b'{"version_labels": {"canary": 3}, "canary": {"mode": "mirror"}}', "'split' or 'shadow'"),
    (b'{"version_labels": {"canary": 3}, "canary": {"share": 5}}', "canary must be an object"),
    (b'{"canary": {"percent": 10}}', "no version carries the label 'canary'"),
    (b'{"version_labels": {"stable": 3, "canary": 3}}', "both stable and canary"),
    (b'{"history": {"stable": 1}}', "history must be a list"),
    (b'{"history": [{"version": 1}]}', 'history[0] must be an object with "stable"'),
])
def test_a_policy_that_cannot_be_used_is_refused_with_the_reason(data, words):
    with pytest.raises(PolicyError, match=None) as refused:
        parse_policy(data)
    assert words in str(refused.value)


def test_setting_and_ending_a_canary():
    policy = ServingPolicy(labels={"stable": 2})
    canary = policy.with_canary(3, 10, "split")
    assert canary.canary_version == 3 and canary.canary == Canary(10, "split")
    assert canary.without_canary() == policy
    with pytest.raises(PolicyError, match="both stable and canary"):
        policy.with_canary(2, 10, "split")


def test_promoting_the_canary_ends_it_and_keeps_the_old_stable_for_rollback():
    policy = ServingPolicy(labels={"stable": 2}).with_canary(3, 10, "shadow")
    promoted = policy.promoted(3, 2, by="promote")
    assert promoted.stable == 3 and promoted.canary_version is None
    assert promoted.canary == Canary()
    [entry] = promoted.history
    assert entry["stable"] == 2 and entry["by"] == "promote" and entry["until"]
    rolled_back = promoted.rolled_back()
    assert rolled_back.stable == 2 and rolled_back.history == ()
    with pytest.raises(PolicyError, match="no earlier stable version"):
        rolled_back.rolled_back()


def test_promoting_the_stable_version_again_adds_no_history():
    policy = ServingPolicy(labels={"stable": 2})
    assert policy.promoted(2, 2, by="promote").history == ()


def test_the_history_keeps_the_last_twenty_stables():
    policy = ServingPolicy(labels={"stable": 1})
    for version in range(2, 30):
        policy = policy.promoted(version, version - 1, by="promote")
    assert len(policy.history) == 20 and policy.history[-1]["stable"] == 28
    assert policy.rolled_back().stable == 28


def test_rolling_back_onto_the_canary_ends_the_canary():
    policy = ServingPolicy(labels={"stable": 3, "canary": 2}, canary=Canary(5, "split"),
                           history=({"stable": 2},))
    rolled_back = policy.rolled_back()
    assert rolled_back.stable == 2 and rolled_back.canary_version is None


@pytest.mark.parametrize("kept, expected", [
    (VersionPolicy(), (2, 4)),  # latest 1 would keep 5, the version rolled back from
    (VersionPolicy("all"), (2, 4)),
    (VersionPolicy("specific", versions=(1, 4, 5)), (1, 2, 4)),
])
def test_a_rollback_keeps_loaded_only_what_serves_or_was_listed(kept, expected):
    policy = ServingPolicy(versions=kept, labels={"stable": 5, "canary": 4},
                           canary=Canary(10, "split"), history=({"stable": 2},))
    rolled_back = policy.rolled_back()
    assert rolled_back.stable == 2 and rolled_back.canary_version == 4
    assert rolled_back.versions == VersionPolicy("specific", versions=expected)

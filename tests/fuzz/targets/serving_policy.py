"""Fuzz target: a model's serving.json, as the service's model repository rereads it on a poll.

Whatever the file holds, the poll must not raise, and the version that answers must be one
a usable policy names: the file's own when every label in it points at a version that
loads, else the last good policy's (stable 1 here). The versions are stand-ins, so an input
costs no model load.
"""

import functools
import json
import logging
import tempfile
from pathlib import Path

from service.models.artifact import POLICY_FILE
from service.models.policy import PolicyError, parse_policy
from service.models.repository import ModelRepository
from tests.unit.fakes import ColourLoader, publish_fake

DICTIONARY = "json.dict"
VERSIONS = (1, 2, 3)
LAST_GOOD = b'{"version_labels": {"stable": 1}}'


@functools.cache
def models_folder():
    """A models folder with versions 1 to 3 of one model; the service's log kept quiet."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-serving-policy-"))
    for version in VERSIONS:
        publish_fake(folder, "fuzzed", version)
    logging.getLogger("service").addHandler(logging.NullHandler())
    logging.getLogger("service").propagate = False
    logging.getLogger("service").setLevel(logging.CRITICAL)
    return folder


def test_one_input(data):
    """Serve with a good policy, replace the file with `data`, poll, and check who serves."""
    folder = models_folder()
    policy_file = folder / "fuzzed" / POLICY_FILE
    policy_file.write_bytes(LAST_GOOD)
    repository = ModelRepository(str(folder), "fuzzed", load=ColourLoader())
    repository.refresh()
    policy_file.write_bytes(data)
    repository.refresh()
    model = repository.default
    stable = model.table.stable.version
    json.dumps(model.describe())
    try:
        policy = parse_policy(data)
    except PolicyError:
        policy = None
    usable = policy is not None and set(policy.labels.values()) <= set(VERSIONS)
    if not usable:
        if stable != 1 or not model.policy_problem:
            raise AssertionError(f"an unusable policy changed what serves ({stable}) or gave "
                                 "no reason")
    elif policy.stable is not None and stable != policy.stable:
        raise AssertionError(f"the policy names stable {policy.stable}, but {stable} serves")
    elif model.table.labels.get("canary") != policy.canary_version:
        raise AssertionError("the canary served is not the policy's")

"""A model's serving policy: the file models/<name>/serving.json beside its versions.

It says which versions stay loaded (TF Serving's `model_version_policy`: the latest N,
specific versions, or all), which versions carry labels (`version_labels`, with `stable`
answering requests that name no version and `canary` the candidate), how much of that
unpinned traffic the canary takes and whether it answers it (`split`) or only sees a copy
(`shadow`), and the stable versions that came before, for rollback:

    {"model_version_policy": {"latest": {"num_versions": 2}},
     "version_labels": {"stable": 2, "canary": 3},
     "canary": {"percent": 10, "mode": "split"},
     "history": [{"stable": 1, "until": "2026-12-06T10:00:00+00:00", "by": "promote"}],
     "min_confidence": 0.6}

`min_confidence` (0 to 1) overrides every version's own threshold of the "unknown" answer
(service/models/confidence.py); a request's own still wins. Write it only once every replica
and the release command run a version that knows the key: an older one refuses the file.

Every key is optional; with no file at all, the default holds: the newest version that
loads serves. This module parses, checks and rewrites policies as values; it reads and
writes no file (service/models/release.py does, under a lock).
"""

import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

STABLE, CANARY = "stable", "canary"
SPLIT, SHADOW = "split", "shadow"
LATEST, SPECIFIC, ALL = "latest", "specific", "all"
# Labels appear in URLs (/models/<name>/labels/<label>/predict) and metric labels.
LABEL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# Enough to roll back through a season of releases; older entries drop off the front.
HISTORY_LENGTH = 20
KEYS = ("model_version_policy", "version_labels", "canary", "history", "min_confidence")


class PolicyError(ValueError):
    """A policy that cannot be used; the message says which part and why."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions stay loaded: the latest `num_versions`, the `versions` listed, or all."""

    kind: str = LATEST
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def as_json(self) -> dict:
        """The policy as serving.json writes it."""
        if self.kind == LATEST:
            return {LATEST: {"num_versions": self.num_versions}}
        if self.kind == SPECIFIC:
            return {SPECIFIC: {"versions": list(self.versions)}}
        return {ALL: {}}


@dataclass(frozen=True)
class Canary:
    """The share of unpinned requests (0-100) the canary takes, as answers or as copies."""

    percent: float = 0
    mode: str = SPLIT


@dataclass(frozen=True)
class ServingPolicy:
    """A parsed, checked serving.json; the default is the service's behaviour without one."""

    versions: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)
    canary: Canary = Canary()
    history: tuple[dict, ...] = ()
    # The model's threshold of the unknown answer, over each version's own; None: theirs.
    min_confidence: float | None = None

    @property
    def stable(self) -> int | None:
        """The version labelled stable, or None: then the newest loaded version is stable."""
        return self.labels.get(STABLE)

    @property
    def canary_version(self) -> int | None:
        """The version labelled canary, or None."""
        return self.labels.get(CANARY)

    def as_json(self) -> dict:
        """The policy as serving.json holds it, keys in a fixed order."""
        document = {"model_version_policy": self.versions.as_json(),
                    "version_labels": dict(sorted(self.labels.items()))}
        if self.canary_version is not None:
            document["canary"] = {"percent": self.canary.percent, "mode": self.canary.mode}
        if self.history:
            document["history"] = list(self.history)
        if self.min_confidence is not None:
            document["min_confidence"] = self.min_confidence
        return document

    def encode(self) -> bytes:
        """serving.json's bytes: indented for people, one trailing newline."""
        return (json.dumps(self.as_json(), indent=2) + "\n").encode()

    # Release steps: each returns a new policy; service/models/release.py writes it.

    def with_canary(self, version: int, percent: float, mode: str) -> "ServingPolicy":
        """`version` as the canary, taking `percent` of unpinned requests in `mode`."""
        labels = {**self.labels, CANARY: version}
        return _checked(replace(self, labels=labels, canary=Canary(percent, mode)))

    def without_canary(self) -> "ServingPolicy":
        """No canary: stable answers every unpinned request again."""
        labels = {name: version for name, version in self.labels.items() if name != CANARY}
        return replace(self, labels=labels, canary=Canary())

    def promoted(self, version: int, stable_now: int | None, by: str) -> "ServingPolicy":
        """`version` as stable; the stable it replaces (`stable_now`) goes on the history.

        Promoting the canary ends the canary.
        """
        policy = self.without_canary() if self.canary_version == version else self
        history = policy.history
        if stable_now is not None and stable_now != version:
            history = (*history, {"stable": stable_now, "until": _now(), "by": by})
        labels = {**policy.labels, STABLE: version}
        return _checked(replace(policy, labels=labels, history=history[-HISTORY_LENGTH:]))

    def rolled_back(self) -> "ServingPolicy":
        """The previous stable from the history as stable again; a canary on it ends.

        The version rolled back from leaves memory: the versions kept loaded become the
        labelled ones (and any other the policy listed by number), since `latest` or `all`
        would keep the newest loaded, and a rollback is often for the memory it takes.
        """
        if not self.history:
            raise PolicyError("there is no earlier stable version in the history to roll back to")
        previous = self.history[-1]["stable"]
        policy = self.without_canary() if self.canary_version == previous else self
        labels = {**policy.labels, STABLE: previous}
        listed = set(policy.versions.versions) if policy.versions.kind == SPECIFIC else set()
        kept = sorted((listed - {self.stable}) | set(labels.values()))
        return _checked(replace(policy, labels=labels, history=self.history[:-1],
                                versions=VersionPolicy(SPECIFIC, versions=tuple(kept))))


def parse_policy(data: bytes) -> ServingPolicy:
    """Read serving.json's bytes; PolicyError says what is wrong with them."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:  # also bad UTF-8; RecursionError: deep nesting
        raise PolicyError(f"not valid JSON ({_short(error)})") from None
    if not isinstance(document, dict):
        raise PolicyError("the file must hold a JSON object")
    unknown = sorted(set(document) - set(KEYS))
    if unknown:
        raise PolicyError(f"unknown key {_quote(unknown[0])}; the keys are {', '.join(KEYS)}")
    versions = _version_policy(document.get("model_version_policy", {LATEST: {}}))
    labels = _labels(document.get("version_labels", {}))
    canary = _canary(document.get("canary"))
    history = _history(document.get("history", []))
    threshold = _min_confidence(document.get("min_confidence"))
    return _checked(ServingPolicy(versions, labels, canary, history, threshold))


def _checked(policy: ServingPolicy) -> ServingPolicy:
    """Refuse combinations that cannot mean what the user wants."""
    if policy.canary.percent and policy.canary_version is None:
        raise PolicyError(f"canary.percent is {policy.canary.percent:g} but no version carries "
                          f"the label {CANARY!r}")
    if policy.canary_version is not None and policy.canary_version == policy.stable:
        raise PolicyError(f"version {policy.stable} is both stable and canary; promote it "
                          "(which ends the canary) or choose another canary")
    return policy


def _version_policy(value) -> VersionPolicy:
    """model_version_policy: exactly one of latest, specific or all."""
    if not isinstance(value, dict) or len(value) != 1:
        raise PolicyError('model_version_policy must be one of {"latest": {"num_versions": N}}, '
                          '{"specific": {"versions": [...]}} or {"all": {}}')
    [(kind, settings)] = value.items()
    if kind not in (LATEST, SPECIFIC, ALL) or not isinstance(settings, dict):
        raise PolicyError(f"model_version_policy {_quote(kind)} is not latest, specific or all "
                          "with an object of settings")
    allowed = {LATEST: {"num_versions"}, SPECIFIC: {"versions"}, ALL: set()}[kind]
    extra = sorted(set(settings) - allowed)
    if extra:
        raise PolicyError(f"model_version_policy.{kind} has an unknown setting {_quote(extra[0])}")
    if kind == LATEST:
        return VersionPolicy(LATEST, num_versions=_version(settings.get("num_versions", 1),
                                                           f"{kind}.num_versions"))
    if kind == SPECIFIC:
        listed = settings.get("versions")
        if not isinstance(listed, list) or not listed:
            raise PolicyError("model_version_policy.specific.versions must be a non-empty list "
                              "of version numbers")
        numbers = [_version(item, "specific.versions") for item in listed]
        return VersionPolicy(SPECIFIC, versions=tuple(sorted(set(numbers))))
    return VersionPolicy(ALL)


def _labels(value) -> dict[str, int]:
    """version_labels: label name -> version number."""
    if not isinstance(value, dict):
        raise PolicyError('version_labels must be an object such as {"stable": 2, "canary": 3}')
    labels = {}
    for name, version in value.items():
        if not LABEL_NAME.match(name):
            raise PolicyError(f"label {_quote(name)} is not a name of lower-case letters, digits, "
                              "- and _ (starting with a letter, at most 63)")
        labels[name] = _version(version, f"version_labels.{name}")
    return labels


def _canary(value) -> Canary:
    """canary: the percent of unpinned requests (0-100) and the mode, split or shadow."""
    if value is None:
        return Canary()
    if not isinstance(value, dict) or set(value) - {"percent", "mode"}:
        raise PolicyError('canary must be an object {"percent": 0-100, "mode": "split" or '
                          '"shadow"}')
    percent = value.get("percent", 0)
    if type(percent) not in (int, float) or not 0 <= percent <= 100:
        raise PolicyError(f"canary.percent must be a number from 0 to 100, not "
                          f"{_quote(percent)}")
    mode = value.get("mode", SPLIT)
    if mode not in (SPLIT, SHADOW):
        raise PolicyError(f"canary.mode must be {SPLIT!r} or {SHADOW!r}, not {_quote(mode)}")
    return Canary(percent, mode)


def _min_confidence(value) -> float | None:
    """min_confidence: a number from 0 to 1, or absent."""
    if value is None:
        return None
    if type(value) not in (int, float) or not 0 <= value <= 1:
        raise PolicyError(f"min_confidence must be a number from 0 to 1, not {_quote(value)}")
    return value


def _history(value) -> tuple[dict, ...]:
    """history: earlier stable versions, oldest first, each {"stable": N, ...}."""
    if not isinstance(value, list):
        raise PolicyError("history must be a list of earlier stable versions")
    entries = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict) or "stable" not in entry:
            raise PolicyError(f'history[{index}] must be an object with "stable": a version')
        entries.append({**entry, "stable": _version(entry["stable"], f"history[{index}].stable")})
    return tuple(entries)


def _version(value, where) -> int:
    """A positive whole number: a version, or a count of versions."""
    if type(value) is not int or value < 1:
        raise PolicyError(f"{where} must be a whole number of at least 1, not {_quote(value)}")
    return value


def _quote(value) -> str:
    """A value from the file, quoted and cut short for a message."""
    if isinstance(value, dict | list):
        return "an object" if isinstance(value, dict) else "a list"
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _short(error) -> str:
    """An exception's message, cut short for a message."""
    text = str(error)
    return text if len(text) <= 80 else text[:77] + "..."


def _now() -> str:
    """The time now, as ISO 8601 UTC to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

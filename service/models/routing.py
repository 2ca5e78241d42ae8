"""Which loaded version answers a request: the one it names, its label's, or the canary split's.

A request that names neither a version nor a label is "unpinned": stable answers it,
except for the canary's share. Which requests make up that share:
- with a routing key (the X-Routing-Key header), a hash of the key and the model's name,
  so the same user stays on the same side across requests, workers and replicas, and a
  user in a 5% canary is still in it at 10%;
- without one, every request takes the next point of a golden-ratio sequence, whose
  points spread evenly over [0, 1), so the share holds within a request or two of the
  set percentage in every worker, where random draws would wander by a few points.
"""

import hashlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.models.policy import CANARY, SHADOW, STABLE, Canary

if TYPE_CHECKING:
    from service.models.inference import ServingModel

GOLDEN_RATIO_FRACTION = 0.6180339887498949


class RoutingError(LookupError):
    """No loaded version fits the request; `kind` is the snake_case error code."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Route:
    """The version that answers a request, the label it was chosen by, and a shadow if any."""

    name: str
    model: "ServingModel"
    # None when the request named the version itself.
    label: str | None
    # Sees a copy of the request; its answer is compared with `model`'s, never returned.
    shadow: "ServingModel | None" = None
    # Whether the canary split chose it (the request named neither a version nor a label).
    split: bool = False


class Splitter:
    """Decides whether an unpinned request belongs to the canary's share."""

    def __init__(self):
        self._count = itertools.count()

    def in_share(self, percent: float, name: str, routing_key: str | None) -> bool:
        """Whether this request is among the `percent` of requests that go to the canary."""
        if percent <= 0:
            return False
        if percent >= 100:
            return True
        if routing_key:
            digest = hashlib.blake2b(f"{name}\0{routing_key}".encode(), digest_size=8).digest()
            point = int.from_bytes(digest, "big") / 2 ** 64
        else:
            point = (next(self._count) * GOLDEN_RATIO_FRACTION) % 1.0
        return point < percent / 100


@dataclass(frozen=True)
class RoutingTable:
    """One model's loaded versions and labels at one moment; requests read it, never change it."""

    name: str
    versions: Mapping[int, "ServingModel"]
    labels: Mapping[str, int]
    canary: Canary = Canary()

    @property
    def stable(self) -> "ServingModel | None":
        """The version that answers unpinned requests, or None while there is none."""
        return self.versions.get(self.labels.get(STABLE))

    def labels_of(self, version: int) -> list[str]:
        """The labels that point at `version`."""
        return sorted(label for label, labelled in self.labels.items() if labelled == version)

    def route(self, splitter: Splitter, version: str | None = None, label: str | None = None,
              routing_key: str | None = None) -> Route:
        """The version for a request that names `version`, `label` or neither."""
        if version is not None:
            number = int(version) if version.isascii() and version.isdigit() else None
            if number not in self.versions:
                raise RoutingError("version_not_found",
                                   f"Version {version[:40]!r} of model {self.name!r} is not "
                                   f"loaded; loaded versions: {self._listed_versions()}.")
            return Route(self.name, self.versions[number], None)
        if label is not None:
            if label not in self.labels:
                raise RoutingError("label_not_found",
                                   f"Model {self.name!r} has no label {label[:40]!r}; its "
                                   f"labels: {self._listed_labels()}.")
            return Route(self.name, self.versions[self.labels[label]], label)
        stable = self.stable
        if stable is None:
            raise RoutingError("model_not_ready", f"No version of model {self.name!r} is ready.")
        canary = self.versions.get(self.labels.get(CANARY))
        if canary is None or not splitter.in_share(self.canary.percent, self.name, routing_key):
            return Route(self.name, stable, STABLE, split=True)
        if self.canary.mode == SHADOW:
            return Route(self.name, stable, STABLE, shadow=canary, split=True)
        return Route(self.name, canary, CANARY, split=True)

    def _listed_versions(self) -> str:
        return ", ".join(str(number) for number in sorted(self.versions)) or "none"

    def _listed_labels(self) -> str:
        return ", ".join(f"{label} (version {version})"
                         for label, version in sorted(self.labels.items())) or "none"

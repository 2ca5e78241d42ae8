"""What every route that classifies shares: settings, routing to a version, the API key.

`Serving` does the work without Flask, so that the gRPC face (service/grpc/) routes,
decodes and classifies exactly as the HTTP routes do; the functions below it are the
HTTP routes' view of the same, for the app of the current request.
"""

import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from flask import Flask, current_app, g, request

from service.api_keys import ApiKeys
from service.config import Settings, allowed_network
from service.http.errors import ApiError
from service.models.confidence import unknown_mask
from service.models.inference import ServingModel
from service.models.repository import ModelRepository
from service.models.routing import Route
from service.models.shadow import ShadowRunner
from service.observability import metrics
from service.observability.drift import DriftMonitor
from service.runtime.admission import (
    ARRIVAL_HEADER,
    DEADLINE_HEADER,
    Admission,
    Deadline,
    Ticket,
    deadline_of,
    socket_closed,
)
from service.runtime.batcher import Batcher
from service.runtime.images import decode_image
from service.store.recorder import Origin, PredictionRecorder

# A worker that is still loading its first models holds a request this long rather than
# refuse it, so a multi-worker service does not answer 503 while its siblings serve.
FIRST_LOAD_WAIT_SECONDS = 30
KEY_REQUIRED = ("A valid API key is required: send 'Authorization: Bearer <key>' or "
                "'X-API-Key: <key>'.")
# Requests with the same key land on the same side of a canary split (service/models/routing.py).
ROUTING_KEY_HEADER = "X-Routing-Key"


@dataclass(frozen=True)
class Serving:
    """One worker's models, batcher and shadow runner, and the settings they run under."""

    settings: Settings
    repository: ModelRepository
    batcher: Batcher
    shadow: ShadowRunner
    keys: ApiKeys
    admission: Admission
    # None while the prediction store is off (PREDICTION_STORE empty).
    recorder: PredictionRecorder | None = None
    drift: DriftMonitor = DriftMonitor(0)

    def key_is_valid(self, offered: Iterable[str]) -> bool:
        """Whether a request that offers these keys may classify: none is required, or one
        of them is valid (service/api_keys.py). The one check of both faces (HTTP here,
        gRPC in service/grpc/servicer.py); the keys are never repeated back.
        """
        return self.keys.accepts(offered)

    def accepted_key(self, offered: Iterable[str]) -> str | None:
        """The offered key that is valid, for a hashed record of who sent what; None when
        no key is required or none is offered."""
        if not self.settings.requires_api_key:
            return None
        return next((key for key in offered if key and self.keys.accepts([key])), None)

    def route(self, name: str | None = None, version: str | None = None,
              label: str | None = None, routing_key: str | None = None) -> Route:
        """The version that answers a request for model `name` (default: MODEL_NAME).

        RoutingError (404 or 503) when the model, version or label is unknown or not ready.
        """
        model = self.repository.model(name or self.settings.model_name, FIRST_LOAD_WAIT_SECONDS)
        return model.route(self.repository.splitter, version, label, routing_key)

    def admit(self, chosen: Route, deadline: Deadline, gone=lambda: False):
        """Admission for the chosen version (service/runtime/admission.py): a context
        manager giving the request's Ticket, or AdmissionError at once."""
        return self.admission.admit(chosen.name, chosen.model.version, deadline, gone)

    def classify(self, chosen: Route, images: np.ndarray, expectation, origin: Origin,
                 ticket: Ticket | None = None, threshold: float | None = None
                 ) -> tuple[np.ndarray, list[str] | None, np.ndarray]:
        """Class probabilities from the chosen version, through the batcher; the images'
        prediction ids (None with the store off); which are answered as unknown (below the
        request's `threshold`, as `unknown` decides). The store records them, a shadow gets a
        copy unless the service is overloaded (a copy never takes a caller's place), the
        request and its images are counted. The one hook of every face."""
        probabilities = self.batcher.submit(chosen.model, images, expectation, ticket)
        verdicts = self.unknown(chosen, probabilities, threshold)
        ids = None
        if self.recorder is not None:
            ids = self.recorder.record(chosen, images, probabilities, origin, verdicts)
        if chosen.shadow is not None and not self.admission.overloaded():
            self.shadow.offer(chosen, images, probabilities, ids)
        metrics.count_classified(chosen, probabilities)
        self.drift.observe(chosen.name, chosen.model, probabilities)
        return probabilities, ids, verdicts

    def unknown(self, chosen: Route, probabilities: np.ndarray,
                threshold: float | None = None) -> np.ndarray:
        """Which images are answered as unknown: top probability below `threshold` (the
        request's), else the model's serving.json min_confidence, else the version's own;
        they are counted. Both faces ask here."""
        if threshold is None:
            found = self.repository.models.get(chosen.name)
            policy = found.policy if found is not None else None
            threshold = policy.min_confidence if policy is not None else None
        if threshold is None:
            threshold = chosen.model.min_confidence
        mask = unknown_mask(probabilities, threshold)
        metrics.count_unknown(chosen, int(mask.sum()))
        return mask

    def decode_batch(self, encoded: Iterable[bytes], model: ServingModel) -> np.ndarray:
        """Decode encoded images into one uint8 batch in `model`'s input size, under the
        pixel limit."""
        height, width, channels = model.input_shape
        return np.stack([decode_image(data, height, width, channels,
                                      self.settings.max_image_pixels) for data in encoded])


def serving_of(app: Flask) -> Serving:
    """The Serving that `app` was created with (service/app.py)."""
    return Serving(app.config["SETTINGS"], app.extensions["model_repository"],
                   app.extensions["batcher"], app.extensions["shadow"], app.extensions["api_keys"],
                   app.extensions["admission"], app.extensions.get("prediction_recorder"),
                   app.extensions["drift"])


def offered_keys(authorization: str, api_key: str) -> list[str]:
    """The API keys a request offers: its X-API-Key, and the token of a Bearer Authorization."""
    offered = [api_key]
    if authorization[:7].lower() == "bearer ":
        offered.append(authorization[7:].strip())
    return offered


def settings() -> Settings:
    """The Settings this app was created with."""
    return current_app.config["SETTINGS"]


def repository() -> ModelRepository:
    """The model repository of this worker."""
    return current_app.extensions["model_repository"]


def route(name: str | None = None, version: str | None = None,
          label: str | None = None) -> Route:
    """The version that answers this request for model `name` (default: MODEL_NAME)."""
    return serving_of(current_app).route(name, version, label,
                                         request.headers.get(ROUTING_KEY_HEADER) or None)


def stable_version(name: str | None = None) -> ServingModel:
    """The stable version of model `name` (default: MODEL_NAME); RoutingError if none."""
    return repository().model(name or settings().model_name, FIRST_LOAD_WAIT_SECONDS).stable()


def request_deadline() -> Deadline:
    """This request's deadline: its X-Request-Timeout or DEFAULT_DEADLINE_MS, from its
    arrival as the trusted proxy stamped it (X-Request-Start), else from now."""
    trusted = settings().trusted_proxy_hops > 0
    return deadline_of(request.headers.get(DEADLINE_HEADER),
                       request.headers.get(ARRIVAL_HEADER) if trusted else None,
                       settings().default_deadline_ms)


def caller_gone_check() -> Callable[[], bool]:
    """A check, callable from any thread, of whether this request's client has closed its
    connection (gunicorn's socket; behind nginx, nginx closes it when its client leaves)."""
    environ = request.environ
    return lambda: socket_closed(environ.get("gunicorn.socket"))


def admit(chosen: Route):
    """Admission for this request (Serving.admit), with its deadline and its connection."""
    return serving_of(current_app).admit(chosen, request_deadline(), caller_gone_check())


def classify(chosen: Route, images: np.ndarray, expectation,
             encoded: list[bytes] | None = None, top_k: int | None = None,
             ticket: Ticket | None = None, threshold: float | None = None
             ) -> tuple[np.ndarray, list[str] | None, np.ndarray]:
    """Class probabilities, prediction ids and unknown verdicts from the chosen version
    (Serving.classify), noted for the log; `encoded` are the images as sent, for the store."""
    answer = serving_of(current_app).classify(
        chosen, images, expectation, request_origin(encoded, top_k), ticket, threshold)
    g.route, g.image_count = chosen, len(images)
    return answer


def request_origin(encoded: list[bytes] | None, top_k: int | None = None) -> Origin:
    """What the prediction store keeps of this HTTP request besides its answer."""
    rule = request.url_rule.rule if request.url_rule else request.path
    return Origin(rule, g.get("request_id", ""), g.get("started", time.perf_counter()),
                  encoded, request.remote_addr, top_k)


def request_keys() -> list[str]:
    """The API keys this request offers (offered_keys)."""
    return offered_keys(request.headers.get("Authorization", ""),
                        request.headers.get("X-API-Key", ""))


def check_api_key() -> None:
    """When API_KEY or API_KEY_FILE is set, require a valid key as a Bearer token or an
    X-API-Key header (service/api_keys.py decides which keys are valid)."""
    if not serving_of(current_app).key_is_valid(request_keys()):
        raise ApiError(401, "unauthorized", KEY_REQUIRED)


def address_allowed(allow: str, address: str | None) -> bool:
    """Whether `address` is one that `allow` (METRICS_ALLOW: an address, a CIDR range or
    all) names; an address that is no IP address (a Unix socket's) is not."""
    network = allowed_network(allow)
    if network is None:
        return True
    try:
        found = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    # An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d.
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        found = found.ipv4_mapped
    return found in network


def check_operator_access() -> None:
    """Open the operator view where /metrics is open (the client's address, as
    TRUSTED_PROXY_HOPS gives it, in METRICS_ALLOW), or, with API keys on, to a valid key:
    401 for a wrong key, 403 for an address outside it without one."""
    if address_allowed(settings().metrics_allow, request.remote_addr):
        return
    offered = request_keys()
    if serving_of(current_app).accepted_key(offered) is not None:
        return
    if settings().requires_api_key and any(offered):
        raise ApiError(401, "unauthorized", KEY_REQUIRED)
    with_key = " or with a valid API key" if settings().requires_api_key else ""
    raise ApiError(403, "forbidden", "The operator view is open only to the addresses "
                                     f"METRICS_ALLOW names{with_key}, as /metrics is.")


def decode_batch(encoded: Iterable[bytes], model: ServingModel) -> np.ndarray:
    """Decode encoded images into one uint8 batch in `model`'s input size, under the pixel limit."""
    return serving_of(current_app).decode_batch(encoded, model)

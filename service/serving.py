"""What every route that classifies shares: settings, routing to a version, the API key."""

from collections.abc import Iterable

import numpy as np
from flask import current_app, g, request

from service import metrics
from service.config import Settings
from service.errors import ApiError
from service.images import decode_image
from service.models.inference import ServingModel
from service.models.repository import ModelRepository
from service.models.routing import Route

# A worker that is still loading its first models holds a request this long rather than
# refuse it, so a multi-worker service does not answer 503 while its siblings serve.
FIRST_LOAD_WAIT_SECONDS = 30
# Requests with the same key land on the same side of a canary split (service/models/routing.py).
ROUTING_KEY_HEADER = "X-Routing-Key"


def settings() -> Settings:
    """The Settings this app was created with."""
    return current_app.config["SETTINGS"]


def repository() -> ModelRepository:
    """The model repository of this worker."""
    return current_app.extensions["model_repository"]


def route(name: str | None = None, version: str | None = None,
          label: str | None = None) -> Route:
    """The version that answers this request for model `name` (default: MODEL_NAME).

    RoutingError (404 or 503) when the model, version or label is unknown or not ready.
    """
    models = repository()
    model = models.model(name or settings().model_name, FIRST_LOAD_WAIT_SECONDS)
    return model.route(models.splitter, version, label,
                       request.headers.get(ROUTING_KEY_HEADER) or None)


def stable_version(name: str | None = None) -> ServingModel:
    """The stable version of model `name` (default: MODEL_NAME); RoutingError if none."""
    return repository().model(name or settings().model_name, FIRST_LOAD_WAIT_SECONDS).stable()


def classify(chosen: Route, images: np.ndarray, expectation) -> np.ndarray:
    """Class probabilities from the chosen version, through the batcher; a shadow gets a copy."""
    probabilities = current_app.extensions["batcher"].submit(chosen.model, images, expectation)
    if chosen.shadow is not None:
        current_app.extensions["shadow"].offer(chosen, images, probabilities)
    g.route, g.image_count = chosen, len(images)
    metrics.count_classified(chosen, probabilities)
    return probabilities


def check_api_key() -> None:
    """When API_KEY or API_KEY_FILE is set, require a valid key as a Bearer token or an
    X-API-Key header (service/api_keys.py decides which keys are valid)."""
    keys = current_app.extensions["api_keys"]
    if not keys.required:
        return
    offered = [request.headers.get("X-API-Key", "")]
    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        offered.append(authorization[7:].strip())
    # Either header may carry a valid key. The message never repeats what was sent.
    if not keys.accepts(offered):
        raise ApiError(401, "unauthorized",
                       "A valid API key is required: send 'Authorization: Bearer <key>' "
                       "or 'X-API-Key: <key>'.")


def decode_batch(encoded: Iterable[bytes], model: ServingModel) -> np.ndarray:
    """Decode encoded images into one uint8 batch in `model`'s input size, under the pixel limit."""
    height, width, channels = model.input_shape
    return np.stack([decode_image(data, height, width, channels, settings().max_image_pixels)
                     for data in encoded])

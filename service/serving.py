"""What every route that serves the model shares: settings, the serving model and the API key."""

from collections.abc import Iterable

import numpy as np
from flask import current_app, request

from service.config import Settings
from service.errors import ApiError
from service.images import decode_image
from service.inference import ServingModel

FIRST_LOAD_WAIT_SECONDS = 30


def settings() -> Settings:
    """The Settings this app was created with."""
    return current_app.config["SETTINGS"]


def serving_model() -> ServingModel:
    """The model that answers this request, or a 503 when none is ready."""
    store = current_app.extensions["model_store"]
    # A worker that is still loading its first model holds the request briefly instead of
    # refusing it, so a multi-worker service does not answer 503 while its siblings serve.
    model = store.wait_for_model(FIRST_LOAD_WAIT_SECONDS)
    if model is None:
        raise ApiError(503, "model_not_ready", f"No model is ready: {store.reason}. Retry shortly.")
    return model


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

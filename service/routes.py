"""The HTTP routes of DESIGN.md: predict, health, model, metrics, OpenAPI and the page."""

from flask import Blueprint, Response, current_app, g, jsonify, render_template, request
from flask.typing import ResponseReturnValue

from service import metrics
from service.errors import ApiError
from service.openapi import openapi_document
from service.serving import check_api_key, decode_batch, serving_model, settings
from service.uploads import read_uploads

blueprint = Blueprint("api", __name__)


def parse_top_k(class_count: int) -> int:
    """Read ?top_k=, between 1 and the number of classes."""
    raw = request.args.get("top_k")
    if raw is None:
        return min(settings().default_top_k, class_count)
    try:
        top_k = int(raw)
    except ValueError:
        top_k = 0
    if not 1 <= top_k <= class_count:
        raise ApiError(400, "invalid_top_k",
                       f"top_k must be an integer from 1 to {class_count}, not {raw!r}.")
    return top_k


@blueprint.post("/predict")
def predict() -> Response:
    """Classify every image in the request."""
    check_api_key()
    model = serving_model()
    top_k = parse_top_k(len(model.classes))
    batcher = current_app.extensions["batcher"]
    with batcher.expect() as expectation:
        uploads = read_uploads(request, settings().max_images_per_request)
        images = decode_batch((data for _, data in uploads), model)
        probabilities = batcher.submit(model, images, expectation)
    g.model_version, g.image_count = model.version, len(uploads)
    predictions = []
    for (filename, _), scores in zip(uploads, probabilities, strict=True):
        ranked = model.rank(scores, top_k)
        predictions.append({"filename": filename, **ranked[0], "top_k": ranked})
    metrics.count_classified(prediction["label"] for prediction in predictions)
    return jsonify({"model": {"name": model.name, "version": model.version},
                    "predictions": predictions})


@blueprint.get("/health/live")
def live() -> Response:
    """The process is up and answering."""
    return jsonify({"status": "ok"})


@blueprint.get("/health/ready")
@blueprint.get("/health")
def ready() -> ResponseReturnValue:
    """Ready once a model is loaded and warmed; 503 with the reason until then."""
    store = current_app.extensions["model_store"]
    model = store.current
    if model is None:
        return jsonify({"status": store.state, "reason": store.reason}), 503
    g.model_version = model.version
    return jsonify({"status": "ready", "model": {"name": model.name, "version": model.version}})


@blueprint.get("/model")
def model_info() -> Response:
    """The serving version's metadata.json and when it was loaded."""
    model = serving_model()
    g.model_version = model.version
    return jsonify(model.describe())


@blueprint.get("/metrics")
def metrics_page() -> ResponseReturnValue:
    """Prometheus text format, summed over every worker."""
    body, content_type = metrics.render()
    return body, 200, {"Content-Type": content_type}


@blueprint.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3 description of this API."""
    model = current_app.extensions["model_store"].current
    return jsonify(openapi_document(settings(), model.version if model else None))


@blueprint.get("/")
def page() -> str:
    """A small page to upload an image and see the answer."""
    return render_template("index.html")

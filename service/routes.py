"""The HTTP routes of DESIGN.md: predict, health, models, metrics, OpenAPI and the page."""

from flask import Blueprint, Response, current_app, g, jsonify, render_template, request
from flask.typing import ResponseReturnValue

from service import metrics
from service.errors import ApiError
from service.openapi import openapi_document
from service.serving import (
    admit,
    check_api_key,
    classify,
    decode_batch,
    repository,
    route,
    settings,
    stable_version,
)
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
    """Classify every image in the request with the default model (MODEL_NAME)."""
    return _predict()


@blueprint.post("/models/<name>/predict")
@blueprint.post("/models/<name>/versions/<version>/predict")
@blueprint.post("/models/<name>/labels/<label>/predict")
def predict_with(name: str, version: str | None = None, label: str | None = None) -> Response:
    """Classify with one model: its split, one of its loaded versions, or a label's version."""
    return _predict(name, version, label)


def _predict(name=None, version=None, label=None):
    """/predict's work for whichever model, version or label the path names."""
    check_api_key()
    chosen = route(name, version, label)
    model = chosen.model
    top_k = parse_top_k(len(model.classes))
    # Admitted (or refused) before the body is read.
    with admit(chosen) as ticket, current_app.extensions["batcher"].expect() as expectation:
        uploads = read_uploads(request, settings().max_images_per_request)
        images = decode_batch((data for _, data in uploads), model)
        probabilities = classify(chosen, images, expectation, ticket)
    predictions = []
    for (filename, _), scores in zip(uploads, probabilities, strict=True):
        ranked = model.rank(scores, top_k)
        predictions.append({"filename": filename, **ranked[0], "top_k": ranked})
    return jsonify({"model": {"name": chosen.name, "version": model.version,
                              "label": chosen.label},
                    "predictions": predictions})


@blueprint.get("/health/live")
def live() -> Response:
    """The process is up and answering."""
    return jsonify({"status": "ok"})


@blueprint.get("/health/ready")
@blueprint.get("/health")
def ready() -> ResponseReturnValue:
    """Ready once the default model's stable version is loaded and warmed; else 503 and why."""
    models = repository()
    default = models.default
    stable = default.table.stable if default else None
    if stable is None:
        state, reason = models.readiness()
        return jsonify({"status": state, "reason": reason}), 503
    g.model_version = stable.version
    return jsonify({"status": "ready", "model": {"name": default.name, "version": stable.version}})


@blueprint.get("/model")
def model_info() -> Response:
    """The default model's stable version: what a client needs of its metadata.json."""
    model = stable_version()
    g.model_version = model.version
    return jsonify(model.describe())


@blueprint.get("/models")
def models_info() -> Response:
    """Every model: its versions, labels, canary, policy, state and the reason for a problem."""
    models = repository()
    return jsonify({"default": settings().model_name,
                    "models": [model.describe() for _, model in sorted(models.models.items())]})


@blueprint.get("/models/<name>")
def one_model_info(name: str) -> Response:
    """One model as /models describes it."""
    return jsonify(repository().model(name).describe())


@blueprint.get("/metrics")
def metrics_page() -> ResponseReturnValue:
    """Prometheus text format, summed over every worker."""
    body, content_type = metrics.render()
    return body, 200, {"Content-Type": content_type}


@blueprint.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3 description of this API."""
    return jsonify(openapi_document(settings(), repository()))


@blueprint.get("/")
def page() -> str:
    """A small page to upload an image and see the answer."""
    return render_template("index.html")

"""The HTTP routes of DESIGN.md: predict, health, models, metrics, OpenAPI and the page."""

from flask import Blueprint, Response, current_app, g, jsonify, render_template, request
from flask.typing import ResponseReturnValue

from service.http.errors import ApiError
from service.http.openapi import openapi_document
from service.http.uploads import read_uploads
from service.models.confidence import PARAMETER, ThresholdError, parse_threshold, prediction
from service.observability import metrics, operations
from service.serving import (
    admit,
    check_api_key,
    check_operator_access,
    classify,
    decode_batch,
    repository,
    request_keys,
    route,
    serving_of,
    settings,
    stable_version,
)
from service.store.accuracy import live_accuracy_or_none
from service.store.feedback import give_feedback, key_id, parse_feedback

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


def parse_min_confidence() -> float | None:
    """Read ?min_confidence=, a number from 0 to 1 (None: the version's own)."""
    raw = request.args.get(PARAMETER)
    if raw is None:
        return None
    try:
        return parse_threshold(raw)
    except ThresholdError as error:
        raise ApiError(400, "invalid_min_confidence", str(error)) from None


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
    threshold = parse_min_confidence()
    # Admitted (or refused) before the body is read.
    with admit(chosen) as ticket, current_app.extensions["batcher"].expect() as expectation:
        uploads = read_uploads(request, settings().max_images_per_request)
        images = decode_batch((data for _, data in uploads), model)
        probabilities, ids, verdicts = classify(chosen, images, expectation,
                                                [data for _, data in uploads], top_k, ticket,
                                                threshold)
    predictions = []
    for index, ((filename, _), scores, verdict) in enumerate(
            zip(uploads, probabilities, verdicts, strict=True)):
        predictions.append({"filename": filename,
                            **prediction(model.rank(scores, top_k), verdict)})
        if ids is not None:
            predictions[-1]["prediction_id"] = ids[index]
    return jsonify({"model": {"name": chosen.name, "version": model.version,
                              "label": chosen.label},
                    "predictions": predictions})


@blueprint.post("/feedback")
def feedback() -> Response:
    """Take the true class of earlier predictions, by prediction id (service/store/feedback.py)."""
    check_api_key()
    serving = serving_of(current_app)
    if serving.recorder is None:
        raise ApiError(501, "prediction_store_off",
                       "Feedback needs the prediction store, which is off on this server: "
                       "set PREDICTION_STORE (docs/operations.md).")
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       "Send feedback as application/json.")
    items, many = parse_feedback(request.get_data(cache=False),
                                 settings().feedback_max_items)
    sender = serving.accepted_key(request_keys())
    results = give_feedback(serving.recorder.database, items,
                            settings().prediction_store_retention_days,
                            key_id(sender) if sender else None)
    for result in results:
        if result.pop("new"):
            metrics.count_feedback(result["model"], result["version"],
                                   result["version_label"], result["correct"])
    return jsonify({"feedback": results} if many else results[0])


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
    """One model as /models describes it; with the prediction store on, each version's live
    accuracy by label, as counts (service/store/accuracy.py)."""
    described = repository().model(name).describe()
    recorder = serving_of(current_app).recorder
    if recorder is not None:
        # The store is down: no counts (null), no error.
        found = live_accuracy_or_none(recorder.database, name)
        described["live_accuracy"] = None if found is None else [
            {"version": version, "version_label": label, **counts.describe()}
            for (_, version, label), counts in sorted(found.items())]
    return jsonify(described)


@blueprint.get("/metrics")
def metrics_page() -> ResponseReturnValue:
    """Prometheus text format, summed over every worker."""
    body, content_type = metrics.render()
    return body, 200, {"Content-Type": content_type}


@blueprint.get("/operations/models")
def operations_data() -> Response:
    """The operator view's data: every model's versions, labels, canary, live accuracy,
    shadow agreement and drift (service/observability/operations.py); open where /metrics
    is (METRICS_ALLOW), or with a valid API key."""
    check_operator_access()
    recorder = serving_of(current_app).recorder
    return jsonify(operations.gather(repository(), recorder.database if recorder else None))


@blueprint.get("/operations")
def operations_page() -> str:
    """The operator view: a page that shows /operations/models and refreshes it. The page
    itself holds no figures; its data is guarded as /operations/models is."""
    return render_template("operations.html")


@blueprint.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3 description of this API."""
    return jsonify(openapi_document(settings(), repository()))


@blueprint.get("/")
def page() -> str:
    """A small page to upload an image and see the answer."""
    return render_template("index.html")

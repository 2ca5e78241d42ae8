"""The OpenAPI 3 document served at /openapi.json."""

from typing import TYPE_CHECKING

from service.config import Settings
from service.runtime.images import SUPPORTED_FORMATS

if TYPE_CHECKING:
    from service.models.repository import ModelRepository

# Under /v2 errors take the Open Inference Protocol's own shape, {"error": "message"}.
PROTOCOL_ERROR_STATUSES = {
    "ProtocolBadRequest": "An inference request that cannot be read: JSON, tensors, datatype, "
                          "shape, binary data, unknown input or output, or an undecodable image.",
    "ProtocolUnauthorized": "Missing or wrong API key; only when API_KEY or API_KEY_FILE "
                            "is configured.",
    "ProtocolNotFound": "Unknown model, or a version that is not loaded.",
    "ProtocolBadIndexRequest": "The index request is not empty and not a JSON object with a "
                               "boolean \"ready\".",
    "ProtocolTooLarge": "Body, image or batch too large.",
    "ProtocolUnsupportedMediaType": "Not an accepted Content-Type or Content-Encoding, or not an "
                                    "image in a supported format.",
    "ProtocolNotReady": "No model is loaded yet; retry shortly.",
}

ERROR_STATUSES = {
    "BadRequest": "Malformed request or undecodable image (e.g. invalid_top_k, invalid_json, "
                  "invalid_base64, invalid_multipart, no_images, empty_image, corrupt_image); "
                  "for feedback, invalid_feedback or unknown_class (not a class of the version "
                  "that answered).",
    "Unauthorized": "Missing or wrong API key (unauthorized); only when API_KEY or "
                    "API_KEY_FILE is configured.",
    "Forbidden": "The operator view's data from an address METRICS_ALLOW does not name, "
                 "without a valid API key (forbidden).",
    "NotFound": "No such route (not_found), model (model_not_found), loaded version "
                "(version_not_found) or label (label_not_found); the message lists those there "
                "are.",
    "MethodNotAllowed": "The route exists but not for this method (method_not_allowed); "
                        "the Allow header lists the methods it takes.",
    "TooLarge": "Body, image or batch too large (request_too_large, image_too_large, "
                "too_many_images, too_many_parts).",
    "UnsupportedMediaType": "Not an accepted Content-Type (unsupported_media_type) or not an "
                            "image in a supported format (unsupported_image).",
    "ModelNotReady": "No model is loaded yet (model_not_ready); retry shortly.",
    "PredictionNotFound": "No kept prediction has this id (prediction_not_found): unknown, or "
                          "older than PREDICTION_STORE_RETENTION_DAYS.",
    "FeedbackConflict": "The prediction already has a different true class "
                        "(feedback_conflict); the same class again is a 200.",
    "StoreOff": "The prediction store is off on this server (prediction_store_off).",
    "StoreUnavailable": "The prediction store cannot be reached now "
                        "(prediction_store_unavailable); send it again after Retry-After.",
}


# Parts of answers that only the prediction store adds (service/store/).
PREDICTION_ID = {"type": "string", "description": "With the prediction store on: this "
                 "prediction's id, for POST /feedback."}
# One version's feedback under one label: service/store/accuracy.py's LiveAccuracy.describe().
LIVE_COUNTS = {
    "version_label": {"type": "string"}, "labelled": {"type": "integer", "minimum": 1},
    "correct": {"type": "integer", "minimum": 0},
    "interval_95": {"type": "array", "items": {"type": "number"}, "minItems": 2,
                    "maxItems": 2, "nullable": True}}
LIVE_ACCURACY = {
    "type": "array", "nullable": True, "items": {
        "type": "object", "additionalProperties": False,
        "required": ["version", *LIVE_COUNTS],
        "properties": {"version": {"type": "integer", "minimum": 1}, **LIVE_COUNTS}},
    "description": "With the prediction store on (GET /models/{name} only): each version's "
                   "feedback by label, as counts with Wilson's 95% interval of the share "
                   "right; null while the store is down."}

# The canary a model's policy sets: its version and its share of unpinned requests.
CANARY = {"type": "object", "nullable": True, "additionalProperties": False,
          "required": ["version", "percent", "mode"], "properties": {
              "version": {"type": "integer"},
              "percent": {"type": "number", "minimum": 0, "maximum": 100},
              "mode": {"type": "string", "enum": ["split", "shadow"]}}}


def openapi_document(settings: Settings, models: "ModelRepository | None" = None) -> dict:
    """Describe every route, request form, answer and error of this service.

    `models`, when given, names the models, versions and labels the paths accept.
    """
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Image classification service",
            "version": "1.0.0",
            "description": "Classify images with published Keras models: each model's stable "
                           "version, its canary, or any loaded version or label. Every error, "
                           "from any route, is JSON {\"error\": {\"code\", \"message\"}} (under "
                           "/v2, {\"error\": \"message\"}): unknown paths answer 404 and "
                           "unsupported methods 405 in that format too.",
        },
        "paths": {
            "/predict": {"post": _predict(settings, "predict", "Classify one or more images with "
                                          "the default model (MODEL_NAME).")},
            **_model_paths(settings),
            "/feedback": {"post": _feedback(settings)},
            "/health/live": {"get": _operation(
                "live", "The process is up and answering.", "Health",
                {"200": _json("The process answers.", "Live")})},
            "/health/ready": {"get": _ready("ready")},
            "/health": {"get": _ready("health")},
            "/model": {"get": _operation(
                "model", "The default model's stable version: its classes, input, accuracy and "
                         "when it was loaded.", "Model",
                {"200": _json("The serving model's metadata.", "ModelInfo"),
                 "503": {"$ref": "#/components/responses/ModelNotReady"}})},
            "/metrics": {"get": _operation(
                "metrics", "Prometheus metrics, summed over every worker.", "Observability",
                {"200": _content("Prometheus text exposition format.", "text/plain",
                                 {"type": "string"})})},
            **_operations_paths(),
            "/openapi.json": {"get": _operation(
                "openapi", "This document.", "Observability",
                {"200": _content("The OpenAPI 3 document.", "application/json",
                                 {"type": "object"})})},
            "/": {"get": _operation(
                "page", "A small page to upload an image and see the answer.", "Page",
                {"200": _content("The HTML page.", "text/html", {"type": "string"})})},
            **_inference_protocol_paths(settings),
        },
        "components": {
            "schemas": {**_schemas(settings.max_images_per_request), **_feedback_schemas(),
                        **_operations_schemas(),
                        **_inference_protocol_schemas()},
            "responses": {**{name: _json(description, "Error")
                             for name, description in ERROR_STATUSES.items()},
                          **{name: _json(description, "ProtocolError")
                             for name, description in PROTOCOL_ERROR_STATUSES.items()}},
            "parameters": {**_model_parameters(models),
                           **_inference_protocol_parameters(),
                           "RoutingKey": {
                "name": "X-Routing-Key", "in": "header", "required": False,
                "description": "Requests with the same key land on the same side of a canary "
                               "split, in every worker and replica.",
                "schema": {"type": "string"}},
                           "RequestId": {
                "name": "X-Request-ID", "in": "header", "required": False,
                "description": "Your id for this request (1-128 of A-Z a-z 0-9 . _ : -), echoed "
                               "back and logged; otherwise the service makes one.",
                "schema": {"type": "string"}}},
            "headers": {"RequestId": {
                "description": "The request's id, as given or generated; it is in the log line.",
                "required": True, "schema": {"type": "string", "minLength": 1}},
                "InferenceHeaderLength": {
                    "description": "With binary outputs: the length of the JSON before them.",
                    "required": False, "schema": {"type": "integer", "minimum": 1}}},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "Authorization: Bearer <key>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _model_paths(settings):
    """/models and the per-model routes: describe, and predict by split, version or label."""
    base = "/models/{name}"
    describe = {"200": _json("The model, as /models lists it.", "ModelStatus"),
                "404": {"$ref": "#/components/responses/NotFound"}}
    return {
        "/models": {"get": _operation(
            "models", "Every model: its versions, labels, canary, policy, state and reasons.",
            "Model", {"200": _json("The models folder as the service serves it.", "Models")})},
        base: {"get": _operation("model_status", "One model, as /models lists it.", "Model",
                                 describe, ["ModelName"])},
        base + "/predict": {"post": _predict(
            settings, "model_predict", "Classify with this model: its stable version, or the "
            "canary for the canary's share.", ["ModelName"])},
        base + "/versions/{version}/predict": {"post": _predict(
            settings, "model_version_predict", "Classify with one loaded version.",
            ["ModelName", "ModelVersion"])},
        base + "/labels/{label}/predict": {"post": _predict(
            settings, "model_label_predict", "Classify with the version a label points at.",
            ["ModelName", "VersionLabel"])},
    }


def _predict(settings, operation_id, summary, path_parameters=()):
    """A predict operation: three body forms, top_k, the answer and its errors."""
    max_images = settings.max_images_per_request
    binary = {"type": "string", "format": "binary"}
    errors = [("400", "BadRequest"), ("401", "Unauthorized"), ("413", "TooLarge"),
              ("415", "UnsupportedMediaType"), ("503", "ModelNotReady")]
    if path_parameters:
        errors.append(("404", "NotFound"))
    operation = _operation(
        operation_id, summary, "Predict",
        {"200": _json("One prediction per image, in the order sent.", "Prediction"),
         **{status: {"$ref": f"#/components/responses/{name}"} for status, name in errors}},
        [*path_parameters, "RoutingKey"])
    operation["description"] = (
        f"Send up to {max_images} images (each at most {settings.max_image_pixels} pixels, the "
        f"body at most {settings.max_request_bytes} bytes) in {', '.join(SUPPORTED_FORMATS)}.")
    operation["security"] = _security(settings)
    operation["parameters"].append({
        "name": "top_k", "in": "query", "required": False,
        "description": "How many labels to rank per image: 1 to the number of classes of the "
                       "version that answers (GET /models lists them); more is a 400.",
        "schema": {"type": "integer", "minimum": 1, "default": settings.default_top_k}})
    operation["parameters"].append({
        "name": "min_confidence", "in": "query", "required": False,
        "description": "Answer 'unknown' (label null) for an image whose top confidence is "
                       "below this, instead of the version's own min_confidence (GET /model). "
                       "0: never unknown.",
        "schema": {"type": "number", "minimum": 0, "maximum": 1}})
    operation["requestBody"] = {"required": True, "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"],
                       "description": "Each file part is one image, in order; any field name "
                                      "is accepted.",
                       "properties": {"file": {"type": "array", "items": binary,
                                               "minItems": 1, "maxItems": max_images}}}},
        "image/*": {"schema": binary},
        "application/octet-stream": {"schema": binary},
        "application/json": {"schema": {"$ref": "#/components/schemas/ImagesJson"}},
    }}
    return operation


def _feedback(settings):
    """POST /feedback: the true class of earlier predictions, one or a list."""
    errors = [("400", "BadRequest"), ("401", "Unauthorized"), ("404", "PredictionNotFound"),
              ("409", "FeedbackConflict"), ("413", "TooLarge"), ("415", "UnsupportedMediaType"),
              ("501", "StoreOff"), ("503", "StoreUnavailable")]
    operation = _operation(
        "feedback", "Give the true class of earlier predictions, by prediction id.", "Feedback",
        {"200": {**_json("Taken (or the same as before): whether each answer was right.",
                         "FeedbackResult"),
                 "content": {"application/json": {"schema": {"oneOf": [
                     {"$ref": "#/components/schemas/FeedbackResult"},
                     _object({"feedback": {"type": "array", "items": {
                         "$ref": "#/components/schemas/FeedbackResult"}}})]}}}},
         **{status: {"$ref": f"#/components/responses/{name}"} for status, name in errors}})
    operation["description"] = (
        "Needs the prediction store (PREDICTION_STORE). One object, or a list of up to "
        f"{settings.feedback_max_items}, all taken or none. A prediction takes one true class: "
        "the same again is a 200, a different one a 409.")
    operation["security"] = _security(settings)
    operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
        "oneOf": [{"$ref": "#/components/schemas/FeedbackItem"},
                  {"type": "array", "minItems": 1, "maxItems": settings.feedback_max_items,
                   "items": {"$ref": "#/components/schemas/FeedbackItem"}}]}}}}
    return operation


def _operations_paths():
    """The operator view: its page, and the data it shows, open where /metrics is."""
    refusals = {status: {"$ref": f"#/components/responses/{name}"}
                for status, name in (("401", "Unauthorized"), ("403", "Forbidden"))}
    summary = ("Every model's versions, labels, canary, live accuracy with its counts, "
               "shadow agreement and drift: the operator view's data.")
    data = _operation("operations", summary, "Observability", {
        "200": _json("Every model, as the operator view shows it.", "Operations"), **refusals})
    data["description"] = (
        "Open to the addresses METRICS_ALLOW names (as /metrics is, through compose's proxy), "
        "or, with API keys on, to a valid key from any address (401 for a wrong one).")
    # From an allowed address no key is needed; elsewhere a key is the only way in.
    data["security"] = [{}, {"bearer": []}, {"apiKey": []}]
    return {
        "/operations": {"get": _operation(
            "operations_page", "The operator view: a page that shows /operations/models and "
            "refreshes it every few seconds.", "Page",
            {"200": _content("The HTML page.", "text/html", {"type": "string"})})},
        "/operations/models": {"get": data},
    }


def _operations_schemas():
    """GET /operations/models: each model and each of its versions, with their figures."""
    string, count = {"type": "string"}, {"type": "integer", "minimum": 0}
    nullable = {"type": "string", "nullable": True}
    version = _object({
        "version": {"type": "integer", "minimum": 1},
        "state": {"type": "string", "enum": ["ready", "unavailable"]},
        "labels": {"type": "array", "items": string},
        "reason": {**nullable, "description": "Why it does not serve, if it does not."},
        "live_accuracy": {
            "type": "array", "nullable": True, "items": _object(LIVE_COUNTS),
            "description": "Its feedback by the label it answered under, as counts with "
                           "Wilson's 95% interval; null with the store off or down."},
        "shadow_agreement": {"type": "array", "items": _object({
            "stable_version": {"type": "integer", "minimum": 1}, "agreed": count,
            "compared": count}), "description": "As a shadow: how many of its top-1 labels "
                                                "agreed with the answers clients got."},
        "drift": {**_object({"window": count, "class_mix_psi": {"type": "number"},
                             "confidence_psi": {"type": "number"}}), "nullable": True,
                  "description": "Population stability index of its last `window` answers "
                                 "against its held-out images; null before any."}})
    return {
        "Operations": _object({
            "prediction_store": {"type": "string", "enum": ["off", "on", "unavailable"]},
            "models": {"type": "array", "items": _object({
                "name": string, "state": string, "reason": string,
                "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
                "canary": CANARY, "policy_problem": nullable,
                "versions": {"type": "array", "items": version}})}}),
    }


def _security(settings):
    """With an API key configured either scheme is required; without one, none is checked."""
    security = [{"bearer": []}, {"apiKey": []}]
    return security if settings.requires_api_key else [{}, *security]


def _ready(operation_id):
    """GET /health/ready and its alias GET /health."""
    return _operation(
        operation_id, "Ready once a model is loaded and warmed.", "Health",
        {"200": _json("A model is loaded and warmed.", "Ready"),
         "503": _json("No model is ready yet; the reason says why.", "NotReady")})


def _operation(operation_id, summary, tag, responses, parameters=()):
    """An operation that takes an optional X-Request-ID (every answer echoes it)."""
    return {"operationId": operation_id, "summary": summary, "tags": [tag],
            "parameters": [*({"$ref": f"#/components/parameters/{name}"} for name in parameters),
                           {"$ref": "#/components/parameters/RequestId"}],
            "responses": responses}


def _json(description, schema_name):
    """A JSON response whose body follows components/schemas/`schema_name`."""
    return _content(description, "application/json",
                    {"$ref": f"#/components/schemas/{schema_name}"})


def _content(description, media_type, schema):
    """A response with one media type and the X-Request-ID header."""
    return {"description": description, "content": {media_type: {"schema": schema}},
            "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}}


def _schemas(max_images):
    """The bodies: the JSON request form, the answers and the error."""
    string = {"type": "string"}
    confidence = {"type": "number", "minimum": 0, "maximum": 1}
    model = _object({"name": string, "version": {"type": "integer", "minimum": 1}})
    answered_by = _object({
        "name": string, "version": {"type": "integer", "minimum": 1},
        "label": {"type": "string", "nullable": True,
                  "description": "The label the version was chosen by (stable, canary, or the "
                                 "label the path named); null when the path named the version."}})
    ranked = _object({"label": string, "confidence": confidence})
    version_status = {
        "type": "object", "required": ["version", "state", "labels"],
        "additionalProperties": False, "properties": {
            "version": {"type": "integer", "minimum": 1},
            "state": {"type": "string", "enum": ["ready", "unavailable"]},
            "labels": {"type": "array", "items": string},
            "loaded_at": {"type": "string", "format": "date-time"},
            "memory_bytes": {"type": "integer", "minimum": 0,
                             "description": "What loading it added to the worker that "
                                            "answered (resident memory)."},
            "reason": string}}
    shape = _object({"height": {"type": "integer"}, "width": {"type": "integer"},
                     "channels": {"type": "integer"}})
    return {
        # Other keys beside "images" are ignored, so the request object is left open.
        "ImagesJson": {**_object({"images": {
            "type": "array", "minItems": 1, "maxItems": max_images,
            "items": {"type": "string", "format": "byte",
                      "description": "Base64 image bytes, or a data: URL."}}}),
            "additionalProperties": True},
        "Prediction": _object({"model": answered_by, "predictions": {
            "type": "array", "items": _with_optional(_object({
                "filename": {"type": "string", "nullable": True,
                             "description": "The multipart file name; null for other forms."},
                "label": {"type": "string", "nullable": True,
                          "description": "The top label; null when the answer is unknown."},
                "confidence": confidence,
                "unknown": {"type": "boolean",
                            "description": "True when the top confidence is below the "
                                           "threshold (the version's min_confidence, or the "
                                           "request's): the picture is likely of none of the "
                                           "classes. top_k still ranks the best guesses."},
                "top_k": {"type": "array", "minItems": 1, "items": ranked}}),
                prediction_id=PREDICTION_ID)}}),
        "Live": _object({"status": {"type": "string", "enum": ["ok"]}}),
        "Ready": _object({"status": {"type": "string", "enum": ["ready"]}, "model": model}),
        "NotReady": _object({"status": string, "reason": string}),
        "ModelInfo": {**_object({"name": string, "version": {"type": "integer", "minimum": 1},
                                 "classes": {"type": "array", "items": string},
                                 "input": shape,
                                 "metrics": {"type": "object", "additionalProperties": True},
                                 "min_confidence": {
                                     **confidence, "description": "Below this top "
                                     "confidence an answer is unknown (0: never)."},
                                 "calibration": {
                                     "type": "object", "nullable": True,
                                     "additionalProperties": True,
                                     "description": "The fitted temperature, and the ECE and "
                                     "NLL on the test split before and after."},
                                 "created_at": {"type": "string", "nullable": True},
                                 "framework": {"type": "object", "nullable": True,
                                               "additionalProperties": True},
                                 "loaded_at": {"type": "string", "format": "date-time"}}),
                      "description": "What a client needs of metadata.json: the training "
                                     "command and paths stay on disk."},
        "ModelStatus": _with_optional(_object({
            "name": string, "state": string, "reason": string,
            "versions": {"type": "array", "items": version_status},
            "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
            "canary": CANARY,
            "policy": {"type": "object", "required": ["source", "problem"],
                       "additionalProperties": True, "properties": {
                           "source": {"type": "string", "enum": ["file", "default"]},
                           "problem": string}},
            "classes": {"type": "array", "items": string, "nullable": True},
            "input": {**shape, "nullable": True}}), live_accuracy=LIVE_ACCURACY),
        "Models": _object({"default": string,
                           "models": {"type": "array",
                                      "items": {"$ref": "#/components/schemas/ModelStatus"}}}),
        "Error": _object({"error": _object({
            "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
            "message": string})}),
    }


def _feedback_schemas():
    """POST /feedback's item and the answer for each."""
    string = {"type": "string"}
    return {
        "FeedbackItem": _object({
            "prediction_id": {"type": "string", "minLength": 1, "maxLength": 200},
            "class": {"type": "string", "minLength": 1, "maxLength": 200,
                      "description": "The true class: one of the answering version's."}}),
        "FeedbackResult": _object({
            "prediction_id": string, "class": string,
            "correct": {"type": "boolean", "description": "Whether the top-1 answer was it."},
            "model": string, "version": {"type": "integer", "minimum": 1},
            "version_label": {"type": "string", "nullable": True}}),
    }


def _with_optional(schema, **properties):
    """`schema` with more properties that an answer may leave out."""
    return {**schema, "properties": {**schema["properties"], **properties}}


def _object(properties):
    """A closed JSON object that requires every property listed."""
    return {"type": "object", "required": list(properties), "properties": properties,
            "additionalProperties": False}


def _inference_protocol_paths(settings):
    """The Open Inference Protocol (KServe V2) routes under /v2, with and without a version."""
    model = "/v2/models/{name}"
    versioned = model + "/versions/{version}"
    paths = {
        "/v2": {"get": _operation(
            "v2_server_metadata", "Server Metadata: name, version and extensions.", "V2",
            {"200": _json("The server's metadata.", "ServerMetadata")})},
        "/v2/health/live": {"get": _operation(
            "v2_server_live", "Server Live.", "V2",
            {"200": _json("The server answers.", "Live2")})},
        "/v2/health/ready": {"get": _operation(
            "v2_server_ready", "Server Ready, told by the status code.", "V2",
            {"200": _json("The default model is loaded.", "Ready2"),
             "503": _json("The default model is not loaded yet.", "Ready2")})},
        "/v2/repository/index": {"post": _repository_index()},
    }
    for path, suffix, parameters in ((model, "", ["ModelName"]),
                                     (versioned, "_version", ["ModelName", "ModelVersion"])):
        errors = {"404": _protocol_error("ProtocolNotFound"),
                  "503": _protocol_error("ProtocolNotReady")}
        paths[path] = {"get": _operation(
            "v2_model_metadata" + suffix, "Model Metadata: inputs and outputs.", "V2",
            {"200": _json("The model's metadata.", "ModelMetadata"), **errors}, parameters)}
        paths[path + "/ready"] = {"get": _operation(
            "v2_model_ready" + suffix, "Model Ready, told by the status code.", "V2",
            {"200": _json("The model is ready.", "ModelReady"),
             "404": _protocol_error("ProtocolNotFound"),
             "503": _json("No model is loaded yet.", "ModelReady")}, parameters)}
        paths[path + "/infer"] = {"post": _infer(settings, "v2_infer" + suffix, parameters)}
    return paths


def _repository_index():
    """POST /v2/repository/index: every model and version with its state."""
    operation = _operation(
        "v2_repository_index", "Model Repository Extension, Index: every model and version, "
        "its state and the reason it does not serve.", "V2",
        {"200": _json("The index.", "RepositoryIndex"),
         "400": _protocol_error("ProtocolBadIndexRequest")})
    operation["requestBody"] = {"required": False, "content": {"application/json": {
        "schema": {"type": "object", "properties": {"ready": {
            "type": "boolean", "description": "Only the versions that serve."}}}}}}
    return operation


def _infer(settings, operation_id, parameters):
    """POST .../infer: JSON, or JSON followed by binary tensor data."""
    responses = {"200": {
        **_json("The outputs, as JSON or followed by binary data.", "InferenceResponse"),
        "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"},
                    "Inference-Header-Content-Length": {
                        "$ref": "#/components/headers/InferenceHeaderLength"}}}}
    responses["200"]["content"]["application/octet-stream"] = {
        "schema": {"type": "string", "format": "binary"}}
    responses.update({status: _protocol_error(name) for status, name in (
        ("400", "ProtocolBadRequest"), ("401", "ProtocolUnauthorized"),
        ("404", "ProtocolNotFound"), ("413", "ProtocolTooLarge"),
        ("415", "ProtocolUnsupportedMediaType"), ("503", "ProtocolNotReady"))})
    operation = _operation(operation_id, "Inference: classify images or pixels.", "V2",
                           responses, [*parameters, "InferenceHeaderLength", "RoutingKey"])
    operation["description"] = (
        f"One input: \"image\", BYTES [N] of encoded images ({', '.join(SUPPORTED_FORMATS)}; "
        "base64 strings in JSON, raw in binary data), or \"pixels\", UINT8 [N, H, W, C] in the "
        f"model's size. N is at most {settings.max_images_per_request}. Output "
        "\"probabilities\", FP32 [N, classes], or with the classification parameter BYTES "
        "\"<score>:<index>:<label>\" [N, K]; output \"unknown\", BOOL [N]: true where the top "
        "probability is below the version's min_confidence, or the request parameter "
        "\"min_confidence\" (0 to 1). Binary tensor data: JSON first, its length in "
        "Inference-Header-Content-Length, then each input's bytes (BYTES elements prefixed "
        "by a 4-byte little-endian length).")
    operation["security"] = _security(settings)
    operation["requestBody"] = {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    return operation


def _protocol_error(name):
    """A reference to one of the /v2 error responses."""
    return {"$ref": f"#/components/responses/{name}"}


def _model_parameters(models):
    """The path parameters that name a model, a loaded version and a label."""
    names = sorted(models.models) if models else []
    tables = [model.table for model in models.models.values()] if models else []
    versions = sorted({str(version) for table in tables for version in table.versions}, key=int)
    labels = sorted({label for table in tables for label in table.labels})

    def choices(values, pattern):
        return {"type": "string", "enum": values} if values else {"type": "string",
                                                                  "pattern": pattern}

    return {
        "ModelName": {"name": "name", "in": "path", "required": True,
                      "description": "A model's name: its folder under MODEL_DIR (GET /models "
                                     "lists them); others are a 404.",
                      "schema": choices(names, "^[A-Za-z0-9][A-Za-z0-9_.-]*$")},
        "ModelVersion": {"name": "version", "in": "path", "required": True,
                         "description": "A loaded version's number; others are a 404 that "
                                        "lists the loaded ones.",
                         "schema": choices(versions, "^[0-9]+$")},
        "VersionLabel": {"name": "label", "in": "path", "required": True,
                         "description": "A label of the model's policy, such as stable or "
                                        "canary; others are a 404 that lists its labels.",
                         "schema": choices(labels, "^[a-z][a-z0-9_-]*$")},
    }


def _inference_protocol_parameters():
    """The binary-data header of the /v2 routes."""
    return {
        "InferenceHeaderLength": {
            "name": "Inference-Header-Content-Length", "in": "header", "required": False,
            "description": "Binary Tensor Data Extension: the JSON's length in bytes; the "
                           "binary data of the inputs follows it in the body.",
            "schema": {"type": "integer", "minimum": 1}},
    }


def _inference_protocol_schemas():
    """The Open Inference Protocol's JSON objects, as this service reads and writes them."""
    string, boolean = {"type": "string"}, {"type": "boolean"}
    shape = {"type": "array", "items": {"type": "integer"}}
    tensor = _object({"name": string, "datatype": string, "shape": shape})
    parameters = {"type": "object", "additionalProperties": True}
    datatypes = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                 "FP16", "FP32", "FP64", "BYTES"]
    request_input = {
        "type": "object", "required": ["name", "datatype", "shape"], "properties": {
            "name": {"type": "string", "minLength": 1},
            "datatype": {"type": "string", "enum": datatypes},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "parameters": {**parameters, "properties": {
                "binary_data_size": {"type": "integer", "minimum": 0}}},
            "data": {"description": "Elements, flat or nested: base64 strings for BYTES, "
                                    "0-255 for UINT8."}}}
    request_output = {
        "type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "minLength": 1},
            "parameters": {**parameters, "properties": {
                "binary_data": boolean, "classification": {"type": "integer", "minimum": 0}}}}}
    response_output = {
        "type": "object", "required": ["name", "datatype", "shape"], "properties": {
            "name": string, "datatype": {"type": "string", "enum": ["FP32", "BYTES", "BOOL"]},
            "shape": shape, "parameters": parameters, "data": {"type": "array"}}}
    return {
        "InferenceRequest": {
            "type": "object", "required": ["inputs"], "properties": {
                "id": string,
                "parameters": {**parameters, "properties": {
                    "binary_data_output": boolean,
                    "min_confidence": {"type": "number", "minimum": 0, "maximum": 1}}},
                "inputs": {"type": "array", "minItems": 1, "items": request_input},
                "outputs": {"type": "array", "items": request_output}}},
        "InferenceResponse": {
            "type": "object", "required": ["model_name", "model_version", "outputs"],
            "properties": {"model_name": string, "model_version": string, "id": string,
                           "parameters": {"type": "object", "properties": {"prediction_ids": {
                               "type": "string", "description": "With the prediction store "
                               "on: each image's prediction id, in order, comma-separated, "
                               "for POST /feedback."}}},
                           "outputs": {"type": "array", "items": response_output}}},
        "ServerMetadata": _object({"name": string, "version": string,
                                   "extensions": {"type": "array", "items": string}}),
        "ModelMetadata": _object({
            "name": string, "versions": {"type": "array", "items": string}, "platform": string,
            "inputs": {"type": "array", "items": tensor},
            "outputs": {"type": "array", "items": tensor},
            "parameters": _object({
                "classes": {"type": "array", "items": string},
                "min_confidence": {"type": "number", "minimum": 0, "maximum": 1,
                                   "description": "The version's threshold of the output "
                                                  "\"unknown\"."}})}),
        "Live2": _object({"live": boolean}),
        "Ready2": _object({"ready": boolean}),
        "ModelReady": _object({"name": string, "ready": boolean}),
        "ProtocolError": _object({"error": string}),
        "RepositoryIndex": {"type": "array", "items": {
            "type": "object", "required": ["name", "state", "reason"],
            "additionalProperties": False, "properties": {
                "name": string, "version": string,
                "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]},
                "reason": string}}},
    }

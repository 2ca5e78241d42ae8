"""The OpenAPI 3 document served at /openapi.json."""

from service.images import SUPPORTED_FORMATS

ERROR_STATUSES = {
    "BadRequest": "Malformed request or undecodable image (e.g. invalid_top_k, invalid_json, "
                  "invalid_base64, no_images, empty_image, corrupt_image).",
    "Unauthorized": "Missing or wrong API key (unauthorized); only when API_KEY is configured.",
    "NotFound": "No such route (not_found).",
    "MethodNotAllowed": "The route exists but not for this method (method_not_allowed); "
                        "the Allow header lists the methods it takes.",
    "TooLarge": "Body, image or batch too large (request_too_large, image_too_large, "
                "too_many_images).",
    "UnsupportedMediaType": "Not an accepted Content-Type (unsupported_media_type) or not an "
                            "image in a supported format (unsupported_image).",
    "ModelNotReady": "No model is loaded yet (model_not_ready); retry shortly.",
}


def openapi_document(settings):
    """Describe every route, request form, answer and error of this service."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Image classification service",
            "version": "1.0.0",
            "description": "Classify images with the newest published Keras model. Every error, "
                           "from any route, is JSON {\"error\": {\"code\", \"message\"}}: unknown "
                           "paths answer 404 and unsupported methods 405 in that format too.",
        },
        "paths": {
            "/predict": {"post": _predict(settings)},
            "/health/live": {"get": _operation(
                "live", "The process is up and answering.", "Health",
                {"200": _json("The process answers.", "Live")})},
            "/health/ready": {"get": _ready("ready")},
            "/health": {"get": _ready("health")},
            "/model": {"get": _operation(
                "model", "The serving version's metadata.json, plus when it was loaded.", "Model",
                {"200": _json("The serving model's metadata.", "ModelInfo"),
                 "503": {"$ref": "#/components/responses/ModelNotReady"}})},
            "/metrics": {"get": _operation(
                "metrics", "Prometheus metrics, summed over every worker.", "Observability",
                {"200": _content("Prometheus text exposition format.", "text/plain",
                                 {"type": "string"})})},
            "/openapi.json": {"get": _operation(
                "openapi", "This document.", "Observability",
                {"200": _content("The OpenAPI 3 document.", "application/json",
                                 {"type": "object"})})},
            "/": {"get": _operation(
                "page", "A small page to upload an image and see the answer.", "Page",
                {"200": _content("The HTML page.", "text/html", {"type": "string"})})},
        },
        "components": {
            "schemas": _schemas(settings.max_images_per_request),
            "responses": {name: _json(description, "Error")
                          for name, description in ERROR_STATUSES.items()},
            "parameters": {"RequestId": {
                "name": "X-Request-ID", "in": "header", "required": False,
                "description": "Your id for this request (1-128 of A-Z a-z 0-9 . _ : -), echoed "
                               "back and logged; otherwise the service makes one.",
                "schema": {"type": "string"}}},
            "headers": {"RequestId": {
                "description": "The request's id, as given or generated; it is in the log line.",
                "required": True, "schema": {"type": "string", "minLength": 1}}},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "Authorization: Bearer <API_KEY>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _predict(settings):
    """The POST /predict operation: three body forms, top_k, the answer and its errors."""
    max_images = settings.max_images_per_request
    binary = {"type": "string", "format": "binary"}
    # With an API key configured either scheme is required; without one, none is checked.
    security = [{"bearer": []}, {"apiKey": []}]
    operation = _operation(
        "predict", "Classify one or more images.", "Predict",
        {"200": _json("One prediction per image, in the order sent.", "Prediction"),
         **{status: {"$ref": f"#/components/responses/{name}"} for status, name in (
             ("400", "BadRequest"), ("401", "Unauthorized"), ("413", "TooLarge"),
             ("415", "UnsupportedMediaType"), ("503", "ModelNotReady"))}})
    operation["description"] = (
        f"Send up to {max_images} images (each at most {settings.max_image_pixels} pixels, the "
        f"body at most {settings.max_request_bytes} bytes) in {', '.join(SUPPORTED_FORMATS)}.")
    operation["security"] = security if settings.api_key else [{}, *security]
    operation["parameters"].append({
        "name": "top_k", "in": "query", "required": False,
        "description": "How many labels to rank per image: 1 to the number of classes of the "
                       "serving model (GET /model lists them); more is a 400.",
        "schema": {"type": "integer", "minimum": 1, "default": settings.default_top_k}})
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


def _ready(operation_id):
    """GET /health/ready and its alias GET /health."""
    return _operation(
        operation_id, "Ready once a model is loaded and warmed.", "Health",
        {"200": _json("A model is loaded and warmed.", "Ready"),
         "503": _json("No model is ready yet; the reason says why.", "NotReady")})


def _operation(operation_id, summary, tag, responses):
    """An operation that takes an optional X-Request-ID (every answer echoes it)."""
    return {"operationId": operation_id, "summary": summary, "tags": [tag],
            "parameters": [{"$ref": "#/components/parameters/RequestId"}],
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
    ranked = _object({"label": string, "confidence": confidence})
    return {
        # Other keys beside "images" are ignored, so the request object is left open.
        "ImagesJson": {**_object({"images": {
            "type": "array", "minItems": 1, "maxItems": max_images,
            "items": {"type": "string", "format": "byte",
                      "description": "Base64 image bytes, or a data: URL."}}}),
            "additionalProperties": True},
        "Prediction": _object({"model": model, "predictions": {"type": "array", "items": _object(
            {"filename": {"type": "string", "nullable": True,
                          "description": "The multipart file name; null for other forms."},
             "label": string, "confidence": confidence,
             "top_k": {"type": "array", "minItems": 1, "items": ranked}})}}),
        "Live": _object({"status": {"type": "string", "enum": ["ok"]}}),
        "Ready": _object({"status": {"type": "string", "enum": ["ready"]}, "model": model}),
        "NotReady": _object({"status": string, "reason": string}),
        "ModelInfo": {**_object({"name": string, "version": {"type": "integer", "minimum": 1},
                                 "classes": {"type": "array", "items": string},
                                 "loaded_at": {"type": "string", "format": "date-time"}}),
                      "additionalProperties": True,
                      "description": "metadata.json: also input, metrics, dataset, training, "
                                     "created_at and framework versions."},
        "Error": _object({"error": _object({
            "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
            "message": string})}),
    }


def _object(properties):
    """A closed JSON object that requires every property listed."""
    return {"type": "object", "required": list(properties), "properties": properties,
            "additionalProperties": False}

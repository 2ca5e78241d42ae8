"""The edge where errors become HTTP: the one JSON error body every route answers with.

Below this layer, code raises domain errors that know nothing of HTTP (ImageError,
UploadError, TensorError, RoutingError, AdmissionError); the table here decides the status
and code a client sees for each.
"""

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from service.http.uploads import UploadError
from service.models.routing import RoutingError
from service.open_inference.tensors import INVALID, TensorError
from service.runtime.admission import AdmissionError
from service.runtime.images import ImageError
from service.store.database import StoreSchemaError, StoreUnavailableError
from service.store.feedback import CONFLICT, NOT_FOUND, UNKNOWN_CLASS, FeedbackError
from service.store.feedback import INVALID as INVALID_FEEDBACK

# Each domain error kind's HTTP status and error code.
DOMAIN_ERRORS = {
    ImageError: {"empty": (400, "empty_image"), "undecodable": (400, "corrupt_image"),
                 "unsupported": (415, "unsupported_image"), "too_large": (413, "image_too_large")},
    UploadError: {"invalid_json": (400, "invalid_json"), "invalid_base64": (400, "invalid_base64"),
                  "invalid_multipart": (400, "invalid_multipart"), "no_images": (400, "no_images"),
                  "too_many_images": (413, "too_many_images"),
                  "too_many_parts": (413, "too_many_parts"),
                  "unsupported_media_type": (415, "unsupported_media_type")},
    TensorError: {INVALID: (400, INVALID), "too_many_images": (413, "too_many_images")},
    FeedbackError: {INVALID_FEEDBACK: (400, INVALID_FEEDBACK), UNKNOWN_CLASS: (400, UNKNOWN_CLASS),
                    NOT_FOUND: (404, NOT_FOUND), CONFLICT: (409, CONFLICT)},
    # 499: nginx's "client closed request"; nobody reads it, the log and metrics do.
    AdmissionError: {"overloaded": (503, "overloaded"),
                     "deadline_exceeded": (504, "deadline_exceeded"),
                     "caller_gone": (499, "caller_gone"),
                     "invalid_deadline": (400, "invalid_deadline")},
    RoutingError: {"model_not_found": (404, "model_not_found"),
                   "version_not_found": (404, "version_not_found"),
                   "label_not_found": (404, "label_not_found"),
                   "model_not_ready": (503, "model_not_ready")},
}


class ApiError(Exception):
    """A client-facing error with an HTTP status, a snake_case code and a message."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def as_api_error(error: ImageError | UploadError | TensorError | RoutingError | FeedbackError
                 | AdmissionError) -> ApiError:
    """The client-facing ApiError for a domain error raised below the HTTP layer."""
    status, code = DOMAIN_ERRORS[type(error)][error.kind]
    return ApiError(status, code, str(error))


# Routes of the Open Inference Protocol answer errors in the protocol's own shape.
INFERENCE_PROTOCOL_PREFIX = "/v2"


def error_response(status: int, code: str, message: str) -> Response:
    """Build the JSON answer DESIGN.md fixes for every error, or the protocol's under /v2."""
    path = request.path
    if path == INFERENCE_PROTOCOL_PREFIX or path.startswith(INFERENCE_PROTOCOL_PREFIX + "/"):
        # Open Inference Protocol, "Inference Response JSON Error Object": {"error": message}.
        response = jsonify({"error": message})
    else:
        response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Turn every exception, expected or not, into the JSON error format."""

    @app.errorhandler(ApiError)
    def handle_api_error(error):
        return error_response(error.status, error.code, error.message)

    @app.errorhandler(ImageError)
    @app.errorhandler(UploadError)
    @app.errorhandler(TensorError)
    @app.errorhandler(RoutingError)
    @app.errorhandler(FeedbackError)
    @app.errorhandler(AdmissionError)
    def handle_domain_error(error):
        response = handle_api_error(as_api_error(error))
        if getattr(error, "retry_after", None) is not None:
            response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.errorhandler(StoreUnavailableError)
    @app.errorhandler(StoreSchemaError)
    def handle_store_unavailable(error):
        # The reason goes to the log: it may name the database's host.
        app.logger.warning("prediction store unavailable: %s", error)
        response = error_response(503, "prediction_store_unavailable",
                                  "The prediction store cannot be reached now; send the "
                                  "feedback again later.")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(HTTPException)
    def handle_http_exception(error):
        code = (error.name or "error").lower().replace(" ", "_")
        message = {
            404: "No such route. See /openapi.json for the API.",
            405: f"{request.method} is not allowed on this route. See /openapi.json for the API.",
            413: (f"The request body is larger than {current_app.config['MAX_CONTENT_LENGTH']} "
                  "bytes."),
        }.get(error.code, error.description or error.name)
        if error.code == 413:
            code = "request_too_large"
        response = error_response(error.code, code, message)
        if getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(error):
        app.logger.exception("unhandled error")
        return error_response(500, "internal_error",
                              "The service hit an unexpected error; it has been logged.")

"""The Open Inference Protocol (KServe V2) REST face: /v2, on the same model, batcher, limits.

Reference: kserve/open-inference-protocol, specification/protocol/inference_rest.md, with Triton's
"Binary Tensor Data Extension" and "Classification Extension". What the model takes and gives,
and every check after a request is read, is shared with the gRPC face
(service/open_inference/protocol.py); this module reads and writes the REST encodings.
"""

import json

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from service.http.errors import ApiError
from service.open_inference import protocol
from service.open_inference.tensors import encode_infer_response, parse_infer_request
from service.serving import (
    ROUTING_KEY_HEADER,
    caller_gone_check,
    check_api_key,
    request_deadline,
    request_origin,
    serving_of,
)

blueprint = Blueprint("inference_protocol", __name__, url_prefix="/v2")

SERVER_NAME, SERVER_VERSION = protocol.SERVER_NAME, protocol.SERVER_VERSION
# "Server Metadata": only the extensions this face implements; schedule_policy is Triton's
# "timeout" request parameter (service/runtime/admission.py).
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository", "schedule_policy"]

HEADER_LENGTH = "Inference-Header-Content-Length"
# Triton's clients send no Content-Type; JSON and binary bodies may also say what they are.
BODY_TYPES = ("", "application/json", "application/octet-stream")


@blueprint.get("")
def server_metadata() -> Response:
    """"Server Metadata": name, version and the extensions implemented."""
    return jsonify({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})


@blueprint.get("/health/live")
def server_live() -> ResponseReturnValue:
    """"Server Live": the process answers."""
    return jsonify({"live": True})


@blueprint.get("/health/ready")
def server_ready() -> ResponseReturnValue:
    """"Server Ready": told by the status code, 200 once the default model serves, else 503."""
    ready = protocol.server_ready(serving_of(current_app))
    return jsonify({"ready": ready}), 200 if ready else 503


@blueprint.get("/models/<name>")
@blueprint.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None) -> Response:
    """"Model Metadata": inputs and outputs, -1 for the batch dimension."""
    metadata = protocol.model_metadata(serving_of(current_app), name, version)
    parameters = {"classes": metadata.pop("classes"),
                  "min_confidence": metadata.pop("min_confidence")}
    return jsonify({**metadata, "parameters": parameters})


@blueprint.get("/models/<name>/ready")
@blueprint.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None) -> ResponseReturnValue:
    """"Model Ready": 200 when this model (and version) serves, 503 while none is loaded."""
    if not protocol.model_ready(serving_of(current_app), name, version):
        return jsonify({"name": name, "ready": False}), 503
    return jsonify({"name": name, "ready": True})


@blueprint.post("/repository/index")
def repository_index() -> Response:
    """Model Repository Extension, "Index": every model and version, its state and why.

    With {"ready": true} in the body, only the versions that serve.
    """
    ready_only = _index_request().get("ready", False)
    return jsonify(protocol.repository_index(serving_of(current_app), ready_only))


@blueprint.post("/models/<name>/infer")
@blueprint.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None) -> Response:
    """"Inference": classify a BYTES or UINT8 input through the shared batcher."""
    check_api_key()
    answer = protocol.infer(
        serving_of(current_app), name, version, request.headers.get(ROUTING_KEY_HEADER) or None,
        lambda: parse_infer_request(_body(), request.headers.get(HEADER_LENGTH)),
        request_origin(None), request_deadline(), caller_gone_check())
    g.route, g.image_count = answer.route, answer.image_count
    body, header_length = encode_infer_response(answer.header(name), answer.outputs)
    if header_length is None:
        return current_app.response_class(body, mimetype="application/json")
    response = current_app.response_class(body, mimetype="application/octet-stream")
    response.headers[HEADER_LENGTH] = str(header_length)
    return response


def _index_request():
    """The repository index request: an empty body, or a JSON object with "ready"."""
    body = request.get_data(cache=False)
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("ready", False), bool):
        raise ApiError(400, "invalid_index_request",
                       'The index request is an empty body or a JSON object such as '
                       '{"ready": true}.')
    return parsed


def _body():
    """The request body; MAX_REQUEST_BYTES applies (413) and encodings are refused (415)."""
    if request.content_encoding not in (None, "", "identity"):
        raise ApiError(415, "unsupported_encoding",
                       f"Content-Encoding {request.content_encoding!r} is not accepted: send the "
                       "body uncompressed.")
    if request.mimetype not in BODY_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type {request.mimetype!r} is not accepted: send the inference "
                       "request as application/json, or application/octet-stream with binary "
                       f"tensor data and {HEADER_LENGTH}.")
    return request.get_data(cache=False)

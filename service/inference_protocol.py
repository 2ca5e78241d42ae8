"""The Open Inference Protocol (KServe V2) REST face: /v2, on the same model, batcher, limits.

Reference: kserve/open-inference-protocol, specification/protocol/inference_rest.md, with Triton's
"Binary Tensor Data Extension" and "Classification Extension". The model takes one of two inputs:
"image", a BYTES tensor [N] of encoded image files, decoded as /predict decodes them, or
"pixels", a UINT8 tensor [N, H, W, C] in the model's own size. It gives one output,
"probabilities", FP32 [N, classes].
"""

import json

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from service.errors import ApiError
from service.models.routing import RoutingError
from service.serving import check_api_key, classify, decode_batch, repository, route, settings
from service.tensors import (
    OutputTensor,
    RequestedOutput,
    TensorError,
    encode_infer_response,
    parse_infer_request,
)

blueprint = Blueprint("inference_protocol", __name__, url_prefix="/v2")

SERVER_NAME = "image-classifier-service"
SERVER_VERSION = "0.1.0"
# "Server Metadata": only the extensions this face implements.
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository"]
PLATFORM = "litert_tflite"

IMAGE_INPUT, PIXELS_INPUT, OUTPUT = "image", "pixels", "probabilities"
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
    default = repository().default
    ready = default is not None and default.table.stable is not None
    return jsonify({"ready": ready}), 200 if ready else 503


@blueprint.get("/models/<name>")
@blueprint.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None) -> Response:
    """"Model Metadata": inputs and outputs, -1 for the batch dimension."""
    model = route(name, version).model if version else route(name, label="stable").model
    found = repository().model(name)
    height, width, channels = model.input_shape
    return jsonify({
        "name": name, "versions": [str(number) for number in sorted(found.table.versions)],
        "platform": PLATFORM,
        "inputs": [{"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
                   {"name": PIXELS_INPUT, "datatype": "UINT8",
                    "shape": [-1, height, width, channels]}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, len(model.classes)]}],
        "parameters": {"classes": model.classes}})


@blueprint.get("/models/<name>/ready")
@blueprint.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None) -> ResponseReturnValue:
    """"Model Ready": 200 when this model (and version) serves, 503 while none is loaded."""
    try:
        found = repository().model(name)
    except RoutingError as error:
        if error.kind != "model_not_ready":
            raise
        found = None  # the default model, not published yet
    if found is None or found.table.stable is None:
        return jsonify({"name": name, "ready": False}), 503
    if version is not None:
        found.route(repository().splitter, version=version)  # 404 unless loaded
    return jsonify({"name": name, "ready": True})


@blueprint.post("/repository/index")
def repository_index() -> Response:
    """Model Repository Extension, "Index": every model and version, its state and why.

    With {"ready": true} in the body, only the versions that serve.
    """
    ready_only = _index_request().get("ready", False)
    index = []
    for name, model in sorted(repository().models.items()):
        versions = model.describe()["versions"]
        if not versions and not ready_only:
            index.append({"name": name, "state": "UNAVAILABLE", "reason": model.reason})
        for entry in versions:
            ready = entry["state"] == "ready"
            if ready or not ready_only:
                index.append({"name": name, "version": str(entry["version"]),
                              "state": "READY" if ready else "UNAVAILABLE",
                              "reason": entry.get("reason", "")})
    return jsonify(index)


@blueprint.post("/models/<name>/infer")
@blueprint.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None) -> Response:
    """"Inference": classify a BYTES or UINT8 input through the shared batcher."""
    check_api_key()
    chosen = route(name, version)
    model = chosen.model
    with current_app.extensions["batcher"].expect() as expectation:
        parsed = parse_infer_request(_body(), request.headers.get(HEADER_LENGTH))
        outputs = _requested_outputs(parsed, model)
        images = _images(parsed.inputs, model)
        probabilities = classify(chosen, images, expectation)
    header = {"model_name": name, "model_version": str(model.version)}
    if parsed.id is not None:
        header["id"] = parsed.id
    body, header_length = encode_infer_response(
        header, [_output(requested, model, probabilities) for requested in outputs])
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


def _images(inputs, model):
    """The batch of uint8 pixels from the request's one input, within every /predict limit."""
    height, width, channels = model.input_shape
    if len(inputs) != 1 or inputs[0].name not in (IMAGE_INPUT, PIXELS_INPUT):
        names = ", ".join(repr(tensor.name[:40]) for tensor in inputs[:5])
        raise TensorError(f"Send exactly one input, {IMAGE_INPUT!r} (BYTES [N], encoded images) "
                          f"or {PIXELS_INPUT!r} (UINT8 [N, {height}, {width}, {channels}]), "
                          f"not {names}.")
    tensor = inputs[0]
    expected = "BYTES" if tensor.name == IMAGE_INPUT else "UINT8"
    if tensor.datatype != expected:
        raise TensorError(f"Input {tensor.name!r} is {expected}, not {tensor.datatype}.")
    wanted = [None] if tensor.name == IMAGE_INPUT else [None, height, width, channels]
    fits = len(tensor.shape) == len(wanted) and all(
        size in (None, actual) for size, actual in zip(wanted, tensor.shape, strict=True))
    if not fits:
        shape = "[N]" if tensor.name == IMAGE_INPUT else f"[N, {height}, {width}, {channels}]"
        raise TensorError(f"Input {tensor.name!r} has shape {list(tensor.shape)}; "
                          f"it must be {shape}.")
    count, limit = tensor.shape[0], settings().max_images_per_request
    if count == 0:
        raise TensorError(f"Input {tensor.name!r} holds no image.")
    if count > limit:
        raise TensorError(f"The request holds {count} images; the limit is {limit}.",
                          "too_many_images")
    if tensor.name == PIXELS_INPUT:
        return np.ascontiguousarray(tensor.data)
    return decode_batch(tensor.data, model)


def _requested_outputs(parsed, model):
    """The outputs to answer with; every output when the request names none."""
    if not parsed.outputs:
        # "Request Output": when none is named, every output comes back with default settings.
        return [RequestedOutput(OUTPUT, parsed.binary_output)]
    for requested in parsed.outputs:
        if requested.name != OUTPUT:
            raise TensorError(f"Unknown output {requested.name[:100]!r}: the model gives "
                              f"{OUTPUT!r}.")
        if requested.classification > len(model.classes):
            raise TensorError(f"classification must be from 1 to {len(model.classes)}, the "
                              f"number of classes, not {requested.classification}.")
    return parsed.outputs


def _output(requested, model, probabilities):
    """Raw probabilities, or the top K "<score>:<index>:<label>" (Classification Extension)."""
    if not requested.classification:
        return OutputTensor(requested.name, "FP32", probabilities.shape, probabilities,
                            requested.binary)
    ranked = []
    for scores in probabilities:
        # Ranked by ServingModel.rank, so the order (ties included) is the one /predict gives.
        for item in model.rank(scores, requested.classification):
            index = model.classes.index(item["label"])
            ranked.append(f"{scores[index]}:{index}:{item['label']}".encode())
    return OutputTensor(requested.name, "BYTES", (len(probabilities), requested.classification),
                        ranked, requested.binary)

"""The Open Inference Protocol (KServe V2) REST face: /v2, on the same model, batcher, limits.

Reference: kserve/open-inference-protocol, specification/protocol/inference_rest.md, with Triton's
"Binary Tensor Data Extension" and "Classification Extension". The model takes one of two inputs:
"image", a BYTES tensor [N] of encoded image files, decoded as /predict decodes them, or
"pixels", a UINT8 tensor [N, H, W, C] in the model's own size. It gives one output,
"probabilities", FP32 [N, classes].
"""

import numpy as np
from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from service import metrics
from service.errors import ApiError
from service.serving import check_api_key, decode_batch, serving_model, settings
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
EXTENSIONS = ["binary_tensor_data", "classification"]
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
    """"Server Ready": told by the status code, 200 once the model is loaded, else 503."""
    ready = current_app.extensions["model_store"].current is not None
    return jsonify({"ready": ready}), 200 if ready else 503


@blueprint.get("/models/<name>")
@blueprint.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None) -> Response:
    """"Model Metadata": inputs and outputs, -1 for the batch dimension."""
    model = _model(name, version)
    height, width, channels = model.input_shape
    return jsonify({
        "name": name, "versions": [str(model.version)], "platform": PLATFORM,
        "inputs": [{"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
                   {"name": PIXELS_INPUT, "datatype": "UINT8",
                    "shape": [-1, height, width, channels]}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, len(model.classes)]}],
        "parameters": {"classes": model.classes}})


@blueprint.get("/models/<name>/ready")
@blueprint.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None) -> ResponseReturnValue:
    """"Model Ready": 200 when this model (and version) serves, 503 while none is loaded."""
    _check_name(name)
    model = current_app.extensions["model_store"].current
    if model is None:
        return jsonify({"name": name, "ready": False}), 503
    _check_version(name, version, model)
    return jsonify({"name": name, "ready": True})


@blueprint.post("/models/<name>/infer")
@blueprint.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None) -> Response:
    """"Inference": classify a BYTES or UINT8 input through the shared batcher."""
    check_api_key()
    model = _model(name, version)
    batcher = current_app.extensions["batcher"]
    with batcher.expect() as expectation:
        parsed = parse_infer_request(_body(), request.headers.get(HEADER_LENGTH))
        outputs = _requested_outputs(parsed, model)
        images = _images(parsed.inputs, model)
        probabilities = batcher.submit(model, images, expectation)
    g.model_version, g.image_count = model.version, len(images)
    metrics.count_classified(model.rank(scores, 1)[0]["label"] for scores in probabilities)
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


def _check_name(name):
    """Only the served model has a name here."""
    served = settings().model_name
    if name != served:
        raise ApiError(404, "model_not_found",
                       f"Unknown model {name[:100]!r}: this server serves {served!r}.")


def _check_version(name, version, model):
    """Only the version being served may be asked for by number."""
    if version is not None and version != str(model.version):
        raise ApiError(404, "version_not_found",
                       f"Version {version[:40]!r} of model {name!r} is not loaded; "
                       f"version {model.version} is served.")


def _model(name, version):
    """The serving model, when the path names it (404) and one is ready (503)."""
    _check_name(name)
    model = serving_model()
    _check_version(name, version, model)
    return model


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

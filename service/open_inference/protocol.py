"""The Open Inference Protocol's model of this service, shared by its two faces.

The REST face (service/http/v2.py) and the gRPC face (service/grpc/) read
requests in their own encodings into the tensors of service/open_inference/tensors.py;
everything after that is here, once: which inputs and outputs the model has, their checks
and limits, metadata, readiness, the repository index, and an inference through the shared batcher.
So both faces give the same answers, and the same probabilities for the same image.

The model takes one of two inputs: "image", a BYTES tensor [N] of encoded image files,
decoded as /predict decodes them, or "pixels", a UINT8 tensor [N, H, W, C] in the model's
own size. It gives two outputs: "probabilities", FP32 [N, classes], or with the
classification extension the top K as BYTES "<probability>:<index>:<label>"; and "unknown",
BOOL [N], true where the top probability is below the version's min_confidence or the
request parameter "min_confidence" (service/models/confidence.py).
"""

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from service.models.routing import Route, RoutingError
from service.open_inference.tensors import InferRequest, OutputTensor, RequestedOutput, TensorError
from service.runtime.admission import Deadline, timeout_seconds
from service.serving import Serving
from service.store.recorder import Origin

SERVER_NAME = "image-classifier-service"
SERVER_VERSION = "0.1.0"
PLATFORM = "litert_tflite"
IMAGE_INPUT, PIXELS_INPUT, OUTPUT = "image", "pixels", "probabilities"
# The answer's parameter that carries the prediction ids, with the prediction store on.
PREDICTION_IDS = "prediction_ids"
UNKNOWN_OUTPUT = "unknown"


@dataclass(frozen=True)
class Inference:
    """An answered inference request: the route that answered, the request, the outputs."""

    route: Route
    request: InferRequest
    outputs: list[OutputTensor]
    image_count: int
    # One per image, in batch order; None while the prediction store is off.
    prediction_ids: list[str] | None = None

    def header(self, name: str) -> dict:
        """The answer's model_name, model_version, (when the request had one) id, and the
        prediction ids as the parameter "prediction_ids" (comma-separated, batch order)."""
        header = {"model_name": name, "model_version": str(self.route.model.version)}
        if self.request.id is not None:
            header["id"] = self.request.id
        if self.prediction_ids is not None:
            # Parameters hold scalars only, in both encodings: one string of ids.
            header["parameters"] = {PREDICTION_IDS: ",".join(self.prediction_ids)}
        return header


def infer(serving: Serving, name: str, version: str | None, routing_key: str | None,
          parse: Callable[[], InferRequest], origin: Origin, deadline: Deadline,
          gone: Callable[[], bool]) -> Inference:
    """Route, admit (service/runtime/admission.py), read the request (`parse`), check it,
    classify through the batcher, answer. `origin` is the request as the prediction store
    keeps it, without its images. The request's "timeout" parameter (Triton's schedule
    policy, microseconds) tightens `deadline`; one already passed is refused, not run."""
    chosen = serving.route(name, version, routing_key=routing_key)
    model = chosen.model
    with serving.admit(chosen, deadline, gone) as ticket, \
            serving.batcher.expect() as expectation:
        parsed = parse()
        ticket.tighten(timeout_seconds(parsed.timeout_us))
        outputs = requested_outputs(parsed, model)
        images = batch_images(parsed.inputs, model, serving)
        encoded = parsed.inputs[0].data if parsed.inputs[0].name == IMAGE_INPUT else None
        probabilities, ids, unknown = serving.classify(
            chosen, images, expectation, replace(origin, encoded=encoded), ticket,
            parsed.min_confidence)
    return Inference(chosen, parsed, [output_tensor(requested, model, probabilities, unknown)
                                      for requested in outputs], len(images), ids)


def server_ready(serving: Serving) -> bool:
    """"Server Ready": the default model (MODEL_NAME) has a stable version that serves."""
    default = serving.repository.default
    return default is not None and default.table.stable is not None


def model_ready(serving: Serving, name: str, version: str | None = None) -> bool:
    """"Model Ready": whether model `name` (and `version`) serves; False while it loads.

    RoutingError (404) for a model or a version this server does not have.
    """
    repository = serving.repository
    try:
        found = repository.model(name)
    except RoutingError as error:
        if error.kind != "model_not_ready":
            raise
        return False  # the default model, not published yet
    if found.table.stable is None:
        return False
    if version is not None:
        found.route(repository.splitter, version=version)  # 404 unless loaded
    return True


def model_metadata(serving: Serving, name: str, version: str | None = None) -> dict:
    """"Model Metadata": inputs and outputs, -1 for the batch dimension, and the classes."""
    model = serving.route(name, version, None if version else "stable").model
    found = serving.repository.model(name)
    height, width, channels = model.input_shape
    return {
        "name": name, "versions": [str(number) for number in sorted(found.table.versions)],
        "platform": PLATFORM,
        "inputs": [{"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
                   {"name": PIXELS_INPUT, "datatype": "UINT8",
                    "shape": [-1, height, width, channels]}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, len(model.classes)]},
                    {"name": UNKNOWN_OUTPUT, "datatype": "BOOL", "shape": [-1]}],
        "min_confidence": model.min_confidence,
        "classes": model.classes}


def repository_index(serving: Serving, ready_only: bool = False) -> list[dict]:
    """Model Repository Extension, "Index": every model and version, its state and why."""
    index = []
    for name, model in sorted(serving.repository.models.items()):
        versions = model.describe()["versions"]
        if not versions and not ready_only:
            index.append({"name": name, "state": "UNAVAILABLE", "reason": model.reason})
        for entry in versions:
            ready = entry["state"] == "ready"
            if ready or not ready_only:
                index.append({"name": name, "version": str(entry["version"]),
                              "state": "READY" if ready else "UNAVAILABLE",
                              "reason": entry.get("reason", "")})
    return index


def batch_images(inputs, model, serving: Serving) -> np.ndarray:
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
    count, limit = tensor.shape[0], serving.settings.max_images_per_request
    if count == 0:
        raise TensorError(f"Input {tensor.name!r} holds no image.")
    if count > limit:
        raise TensorError(f"The request holds {count} images; the limit is {limit}.",
                          "too_many_images")
    if tensor.name == PIXELS_INPUT:
        return np.ascontiguousarray(tensor.data)
    return serving.decode_batch(tensor.data, model)


def requested_outputs(parsed: InferRequest, model) -> list[RequestedOutput]:
    """The outputs to answer with; every output when the request names none."""
    if not parsed.outputs:
        # "Request Output": when none is named, every output comes back with default settings.
        return [RequestedOutput(OUTPUT, parsed.binary_output),
                RequestedOutput(UNKNOWN_OUTPUT, parsed.binary_output)]
    for requested in parsed.outputs:
        if requested.name not in (OUTPUT, UNKNOWN_OUTPUT):
            raise TensorError(f"Unknown output {requested.name[:100]!r}: the model gives "
                              f"{OUTPUT!r} and {UNKNOWN_OUTPUT!r}.")
        if requested.name == UNKNOWN_OUTPUT and requested.classification:
            raise TensorError(f"classification applies to {OUTPUT!r}, not {UNKNOWN_OUTPUT!r}.")
        if requested.classification > len(model.classes):
            raise TensorError(f"classification must be from 1 to {len(model.classes)}, the "
                              f"number of classes, not {requested.classification}.")
    return list(parsed.outputs)


def output_tensor(requested: RequestedOutput, model, probabilities: np.ndarray,
                  unknown: np.ndarray) -> OutputTensor:
    """Raw probabilities, or the top K "<score>:<index>:<label>" (Classification Extension);
    or the unknown verdicts."""
    if requested.name == UNKNOWN_OUTPUT:
        return OutputTensor(requested.name, "BOOL", (len(unknown),), unknown, requested.binary)
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

"""Fuzz target: a gRPC ModelInferRequest, read as the ModelInfer RPC reads it.

The first byte chooses how the rest is taken. Even: the rest is the serialized message,
any bytes a client could send. Odd: the rest drives the building of a message that is
well formed as protobuf but arbitrary as a request (names, datatypes, shapes, typed or raw
contents that may not match the shape or each other, parameters of any type, outputs), so
that the checks after parsing are reached far more often than random bytes reach them.
Then the model's checks run on it as they do before any image is decoded
(service/open_inference/protocol.py), on a stand-in model; decoding has a target of its own.

No `replay`: the regression replays post to the HTTP service. An input found here, kept in
tests/fuzz/regressions/grpc_infer_request/, goes through this target in-process instead
(tests/fuzz/test_regressions.py); tests/integration/test_grpc.py sends such bytes to the
real server.
"""

import types

import numpy as np

from service.config import Settings
from service.grpc.messages import inference
from service.grpc.tensors import parse_message, read_request
from service.models.confidence import unknown_mask
from service.open_inference import protocol
from service.open_inference.tensors import DATATYPES
from tests.unit.fakes import ColourModel

MODEL = ColourModel()
SERVING = types.SimpleNamespace(
    settings=Settings(),
    decode_batch=lambda encoded, model: np.zeros((len(encoded), *model.input_shape), np.uint8))
NAMES = ["image", "pixels", "probabilities", "", "x"]
PARAMETERS = ["binary_data_output", "binary_data", "classification", "binary_data_size", "other"]


def test_one_input(data):
    """Read the message, then check it against the model as ModelInfer does."""
    if not data:
        return
    if data[0] % 2 == 0:
        message = parse_message(inference.ModelInferRequest, data[1:])
    else:
        message = build(data[1:])
    parsed = read_request(message)
    outputs = protocol.requested_outputs(parsed, MODEL)
    images = protocol.batch_images(parsed.inputs, MODEL, SERVING)
    probabilities = MODEL.infer(images)
    # The request's own threshold, as Serving.unknown takes it first (0.5 without one).
    threshold = 0.5 if parsed.min_confidence is None else parsed.min_confidence
    unknown = unknown_mask(probabilities, threshold)
    for requested in outputs:
        protocol.output_tensor(requested, MODEL, probabilities, unknown)


def build(data):
    """A well-formed ModelInferRequest whose every field the fuzzer chooses."""
    import atheris

    given = atheris.FuzzedDataProvider(data)
    message = inference.ModelInferRequest(model_name="colours",
                                          id=given.ConsumeUnicodeNoSurrogates(4))
    raw_inputs = given.ConsumeBool()
    for _ in range(given.ConsumeIntInRange(0, 3)):
        tensor = message.inputs.add(
            name=given.PickValueInList(NAMES),
            datatype=given.PickValueInList([*DATATYPES, "", "uint8"]),
            shape=[given.ConsumeIntInRange(-2, 20) for _ in range(given.ConsumeIntInRange(0, 5))])
        if raw_inputs and given.ConsumeProbability() < 0.9:
            message.raw_input_contents.append(given.ConsumeBytes(given.ConsumeIntInRange(0, 2048)))
        if not raw_inputs or given.ConsumeProbability() < 0.1:
            fill_contents(tensor.contents, given)
        add_parameters(tensor.parameters, given)
    for _ in range(given.ConsumeIntInRange(0, 2)):
        output = message.outputs.add(name=given.PickValueInList(NAMES))
        add_parameters(output.parameters, given)
    add_parameters(message.parameters, given)
    return message


def fill_contents(contents, given):
    """Typed contents in one field or another, of any length."""
    count = given.ConsumeIntInRange(0, 64)
    field = given.ConsumeIntInRange(0, 3)
    if field == 0:
        contents.bytes_contents.extend(given.ConsumeBytes(given.ConsumeIntInRange(0, 256))
                                       for _ in range(count))
    elif field == 1:
        contents.uint_contents.extend(given.ConsumeIntListInRange(count, 0, 300))
    elif field == 2:
        contents.fp32_contents.extend(given.ConsumeFloatList(count))
    else:
        contents.bool_contents.extend(given.ConsumeBool() for _ in range(count))


def add_parameters(parameters, given):
    """A few parameters with the protocol's names, each of any of InferParameter's types."""
    for _ in range(given.ConsumeIntInRange(0, 2)):
        parameter = parameters[given.PickValueInList(PARAMETERS)]
        choice = given.ConsumeIntInRange(0, 5)
        if choice == 0:
            parameter.bool_param = given.ConsumeBool()
        elif choice == 1:
            parameter.int64_param = given.ConsumeIntInRange(-5, 20)
        elif choice == 2:
            parameter.string_param = given.ConsumeUnicodeNoSurrogates(4)
        elif choice == 3:
            parameter.double_param = given.ConsumeRegularFloat()
        elif choice == 4:
            parameter.uint64_param = given.ConsumeIntInRange(0, 2**64 - 1)

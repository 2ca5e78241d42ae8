"""A ModelInferRequest read into the shared tensors (open_inference/tensors.py); its answer.

Pure functions of messages, with no server in them, so that unit tests and the fuzz target
call them directly; a request that cannot be used raises TensorError. What the model then
makes of the tensors is shared with the REST face (service/open_inference/protocol.py).

Raw and typed data, as the protocol's .proto describes them: an input's elements come in
`raw_input_contents` (one entry per input, in order; BYTES as 4-byte little-endian lengths
each followed by the element, as the REST binary extension has them) or in its typed
`contents` (`bytes_contents` for BYTES, `uint_contents` for UINT8), never both. Outputs go
in `raw_output_contents` when the client asks for raw data: when it sent its inputs raw (as
Triton's clients always do), or with the parameter "binary_data_output" (request) or
"binary_data" (output) set true; otherwise in typed contents.
"""

import numpy as np
from google.protobuf.message import DecodeError

from service.grpc.messages import inference
from service.open_inference.tensors import (
    InferRequest,
    OutputTensor,
    TensorError,
    check_input,
    check_unique,
    flag,
    min_confidence,
    requested_output,
    tensor_from_raw,
    tensor_from_values,
    timeout_parameter,
    to_binary,
)

# Where each readable datatype's elements go in InferTensorContents.
TYPED_FIELDS = {"BYTES": "bytes_contents", "UINT8": "uint_contents"}


def parse_message(message_class, data: bytes):
    """`data` read as a `message_class`; TensorError when it is not one."""
    try:
        return message_class.FromString(data)
    except (DecodeError, RuntimeWarning) as error:
        raise TensorError(f"The request is not a serialized {message_class.DESCRIPTOR.name}: "
                          f"{error}.") from None


def read_request(message: inference.ModelInferRequest) -> InferRequest:
    """The inputs, outputs and parameters of a ModelInferRequest, checked as the REST face's."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise TensorError(f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} "
                          "inputs: give one per input, in order, or use typed contents.")
    if not message.inputs:
        raise TensorError('"inputs" is empty: send at least one input tensor.')
    inputs = [_input(tensor, index, raw[index] if raw else None)
              for index, tensor in enumerate(message.inputs)]
    check_unique([tensor.name for tensor in inputs], "input")
    parameters = parameter_values(message.parameters, "the request")
    # Raw inputs ask for raw outputs, unless the request says otherwise.
    binary_output = (flag(parameters, "binary_data_output", "the request")
                     if "binary_data_output" in parameters else bool(raw))
    outputs = tuple(requested_output({"name": output.name, "parameters": parameter_values(
        output.parameters, f"outputs[{index}]")}, index, binary_output)
        for index, output in enumerate(message.outputs))
    check_unique([output.name for output in outputs], "output")
    return InferRequest(message.id or None, tuple(inputs), outputs, binary_output,
                        min_confidence(parameters), timeout_parameter(parameters))


def parameter_values(parameters, where: str) -> dict:
    """A map of InferParameter as plain values (bool, int, str, float), as JSON gives them."""
    values = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            raise TensorError(f"Parameter {key[:100]!r} of {where} has no value.")
        values[key] = getattr(parameter, choice)
    return values


def _input(tensor, index: int, raw: bytes | None):
    """One InferInputTensor, its data from its raw entry or from its typed contents."""
    if not tensor.name:
        raise TensorError(f'inputs[{index}] needs "name": a non-empty string.')
    where = f"input {tensor.name[:100]!r}"
    shape = list(tensor.shape)
    check_input(tensor.datatype, shape, where)
    given = [field.name for field, _ in tensor.contents.ListFields()]
    if raw is not None:
        if given:
            raise TensorError(f"{where} has both typed contents and raw_input_contents: "
                              "send its data in one of them.")
        return tensor_from_raw(tensor.name, tensor.datatype, shape, raw, where)
    field = TYPED_FIELDS[tensor.datatype]
    if set(given) - {field}:
        raise TensorError(f"{where} is {tensor.datatype}: its elements go in contents.{field}, "
                          f"not {', '.join(sorted(set(given) - {field}))}.")
    return tensor_from_values(tensor.name, tensor.datatype, shape,
                              list(getattr(tensor.contents, field)), where)


def write_response(header: dict, outputs: list[OutputTensor]) -> inference.ModelInferResponse:
    """The ModelInferResponse of an answer: every output raw when any asks for raw data
    (the .proto allows raw for all outputs or none), else typed."""
    header = dict(header)
    parameters = header.pop("parameters", {})
    response = inference.ModelInferResponse(**header)
    for key, value in parameters.items():
        response.parameters[key].string_param = value
    raw = any(output.binary for output in outputs)
    for output in outputs:
        tensor = response.outputs.add(name=output.name, datatype=output.datatype,
                                      shape=list(output.shape))
        if raw:
            response.raw_output_contents.append(to_binary(output))
        elif output.datatype == "BYTES":
            tensor.contents.bytes_contents.extend(output.data)
        elif output.datatype == "BOOL":
            tensor.contents.bool_contents.extend(np.asarray(output.data).ravel().tolist())
        else:
            tensor.contents.fp32_contents.extend(np.asarray(output.data).ravel().tolist())
    return response

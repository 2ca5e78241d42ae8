"""Tensors of the Open Inference Protocol (KServe V2): parse an inference request, encode an answer.

Pure functions of bytes and header values, with no Flask in them, so that unit tests and fuzz
targets can call them directly. A request the parser cannot accept raises TensorError.

References: kserve/open-inference-protocol, specification/protocol/inference_rest.md ("Inference
Request JSON Object", "Tensor Data"), and Triton's "Binary Tensor Data Extension"
(docs/protocol/extension_binary_data.md).
"""

import collections
import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from service.http.uploads import decode_base64
from service.models.confidence import PARAMETER, ThresholdError, parse_threshold

# "Tensor Data Types": every type of the protocol, with its size in bytes (BYTES varies).
DATATYPES = {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1,
             "INT16": 2, "INT32": 4, "INT64": 8, "FP16": 2, "FP32": 4, "FP64": 8, "BYTES": None}

# The types this service reads from a request: encoded images and raw pixels.
READABLE = ("BYTES", "UINT8")

# Binary Tensor Data Extension: a BYTES element is a 4-byte little-endian length, then its bytes.
LENGTH_PREFIX = struct.Struct("<I")


# No real tensor has more elements than this, whatever its shape says; numpy could not
# even make an empty array of a shape beyond it.
MAX_SHAPE_ELEMENTS = 2**40

# The kind of every error of this module: the request does not follow the protocol.
INVALID = "invalid_inference_request"

# The numpy types of the numeric outputs this service answers with, little-endian.
LITTLE_ENDIAN = {"FP32": "<f4", "UINT8": "u1", "BOOL": "?"}


class TensorError(Exception):
    """An inference request that cannot be used; `kind` is the snake_case error code."""

    def __init__(self, message, kind=INVALID):
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Tensor:
    """One input tensor: BYTES data is a list of bytes, UINT8 data a numpy array of its shape."""

    name: str
    datatype: str
    shape: tuple
    data: object


@dataclass(frozen=True)
class RequestedOutput:
    """An output the request asks for: as JSON or binary, as raw scores or the top K labels."""

    name: str
    binary: bool = False
    classification: int = 0


@dataclass(frozen=True)
class InferRequest:
    """A parsed inference request; `outputs` is empty when the request names none."""

    id: object
    inputs: tuple
    outputs: tuple
    binary_output: bool = False
    # The request parameter "min_confidence" (service/models/confidence.py); None: the version's.
    min_confidence: float | None = None
    # Triton's schedule policy extension: the request's own deadline, in microseconds.
    timeout_us: int | None = None


@dataclass(frozen=True)
class OutputTensor:
    """One output of an answer: FP32 data is a numpy array, BYTES data a list of bytes."""

    name: str
    datatype: str
    shape: tuple
    data: object
    binary: bool = False


def parse_infer_request(body: bytes, header_length: str | None = None) -> "InferRequest":
    """Read an inference request from its body and Inference-Header-Content-Length header."""
    header, binary = _split(body, header_length)
    request = _json_object(header)
    request_id = request.get("id")
    if "id" in request and not isinstance(request_id, str):
        raise TensorError('"id" must be a string.')
    parameters = _parameters(request, "the request")
    binary_output = flag(parameters, "binary_data_output", "the request")
    inputs = _list(request, "inputs", required=True)
    if not inputs:
        raise TensorError('"inputs" is empty: send at least one input tensor.')
    parsed, offset = [], 0
    for index, item in enumerate(inputs):
        tensor, offset = _input(item, index, binary, offset)
        parsed.append(tensor)
    if offset != len(binary):
        # Binary Tensor Data Extension: the binary data is exactly the inputs' data, in order.
        raise TensorError(f"{len(binary) - offset} bytes after the JSON header belong to no "
                          "input: the inputs' binary_data_size values must add up to them.")
    check_unique([tensor.name for tensor in parsed], "input")
    outputs = tuple(requested_output(item, index, binary_output)
                    for index, item in enumerate(_list(request, "outputs", required=False)))
    check_unique([output.name for output in outputs], "output")
    return InferRequest(request_id, tuple(parsed), outputs, binary_output,
                        min_confidence(parameters), timeout_parameter(parameters))


def min_confidence(parameters: dict) -> float | None:
    """The request parameter "min_confidence": a number from 0 to 1, or None when absent."""
    if PARAMETER not in parameters:
        return None
    try:
        return parse_threshold(parameters[PARAMETER], f'The request parameter "{PARAMETER}"')
    except ThresholdError as error:
        raise TensorError(str(error)) from None


def encode_infer_response(header: dict,
                          outputs: list["OutputTensor"]) -> tuple[bytes, int | None]:
    """The body of an answer and its Inference-Header-Content-Length (None if all JSON)."""
    described, chunks = [], []
    for output in outputs:
        entry = {"name": output.name, "datatype": output.datatype, "shape": list(output.shape)}
        if output.binary:
            raw = to_binary(output)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif output.datatype == "BYTES":
            entry["data"] = [element.decode("utf-8") for element in output.data]
        else:
            entry["data"] = np.asarray(output.data).ravel().tolist()
        described.append(entry)
    encoded = json.dumps({**header, "outputs": described}, separators=(",", ":")).encode()
    if not chunks:
        return encoded, None
    return b"".join([encoded, *chunks]), len(encoded)


def encode_bytes_elements(elements: list[bytes]) -> bytes:
    """BYTES elements in the binary form: each one's 4-byte length, then its bytes."""
    return b"".join(LENGTH_PREFIX.pack(len(element)) + element for element in elements)


def _split(body, header_length):
    """The JSON header and the binary data after it (Binary Tensor Data Extension)."""
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= len(body):
        raise TensorError(f"Inference-Header-Content-Length must be the JSON header's length in "
                          f"bytes, from 1 to the body's {len(body)}, not {header_length[:40]!r}.")
    return body[:int(text)], body[int(text):]


def _json_object(header):
    """The inference request object."""
    try:
        request = json.loads(header)
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8 too; RecursionError, absurdly deep nesting.
        raise TensorError("The inference request is not valid JSON (with binary tensor data, "
                          "Inference-Header-Content-Length must give the JSON's length).") from None
    if not isinstance(request, dict):
        raise TensorError("The inference request must be a JSON object with \"inputs\".")
    return request


def _list(container, key, required):
    """A list-valued member of a JSON object."""
    if key not in container and not required:
        return []
    value = container.get(key)
    if not isinstance(value, list):
        raise TensorError(f'"{key}" must be a list of tensor objects.')
    return value


def _parameters(container, where):
    """The "parameters" object of a request, input or output ("Parameters")."""
    parameters = container.get("parameters", {})
    if not isinstance(parameters, dict):
        raise TensorError(f'"parameters" of {where} must be an object.')
    return parameters


def flag(parameters: dict, key: str, where: str) -> bool:
    """A boolean parameter, false when absent."""
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise TensorError(f'Parameter "{key}" of {where} must be true or false.')
    return value


def timeout_parameter(parameters: dict) -> int | None:
    """Triton's schedule policy "timeout" of a request: microseconds, a non-negative integer."""
    if "timeout" in parameters and parameters["timeout"] is None:
        raise TensorError('Parameter "timeout" of the request must be a non-negative integer.')
    return _count(parameters, "timeout", "the request")


def _count(parameters, key, where):
    """A non-negative integer parameter, or None when absent."""
    value = parameters.get(key)
    if value is not None and (type(value) is not int or value < 0):
        raise TensorError(f'Parameter "{key}" of {where} must be a non-negative integer.')
    return value


def _string(item, key, where):
    """A string member of a tensor object."""
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise TensorError(f'{where} needs "{key}": a non-empty string.')
    return value


def _input(item, index, binary, offset):
    """One $request_input, reading its data from JSON or from the binary data at `offset`."""
    where = f"inputs[{index}]"
    if not isinstance(item, dict):
        raise TensorError(f"{where} must be a tensor object.")
    name = _string(item, "name", where)
    where = f"input {name[:100]!r}"
    datatype = _string(item, "datatype", where)
    shape = item.get("shape")
    check_input(datatype, shape, where)
    size = _count(_parameters(item, where), "binary_data_size", where)
    if size is not None:
        if offset + size > len(binary):
            raise TensorError(f"{where} announces {size} bytes of binary data, but only "
                              f"{len(binary) - offset} are left in the body.")
        return tensor_from_raw(name, datatype, shape, binary[offset:offset + size],
                               where), offset + size
    if "data" not in item:
        raise TensorError(f'{where} has neither "data" nor a binary_data_size parameter.')
    values = _flatten(item["data"], where)
    if datatype == "BYTES":
        _check_count(values, shape, where)
        values = _bytes_from_json(values, where)
    return tensor_from_values(name, datatype, shape, values, where), offset


def check_input(datatype, shape, where: str) -> None:
    """An input's datatype is one this service reads, and its shape a list of sizes."""
    if datatype not in DATATYPES:
        raise TensorError(f"{where} has an unknown datatype {str(datatype)[:40]!r}; the "
                          f"protocol's are {', '.join(DATATYPES)}.")
    if datatype not in READABLE:
        raise TensorError(f"{where} is {datatype}; this service reads BYTES (encoded images) "
                          "and UINT8 (pixels) inputs only.")
    if not isinstance(shape, list) or not all(type(size) is int and size >= 0 for size in shape):
        raise TensorError(f'{where} needs "shape": a list of non-negative integers.')
    # numpy refuses such a shape even with a zero in it ("array is too big").
    if math.prod(size for size in shape if size) > MAX_SHAPE_ELEMENTS:
        raise TensorError(f"{where} has shape {str(shape)[:100]}: far more elements than any "
                          "request could hold.")


def tensor_from_raw(name: str, datatype: str, shape: list, raw: bytes, where: str) -> Tensor:
    """An input whose data is in the binary form (the Binary Tensor Data Extension's, and
    the gRPC face's raw_input_contents): BYTES length-prefixed, UINT8 one byte each."""
    elements = math.prod(shape)
    data = (_bytes_from_binary(raw, elements, where) if datatype == "BYTES"
            else _uint8_from_binary(raw, shape, elements, where))
    return Tensor(name, datatype, tuple(shape), data)


def tensor_from_values(name: str, datatype: str, shape: list, values: list, where: str) -> Tensor:
    """An input whose elements are given one by one: BYTES as bytes, UINT8 as numbers."""
    _check_count(values, shape, where)
    data = list(values) if datatype == "BYTES" else _uint8_from_json(values, shape, where)
    return Tensor(name, datatype, tuple(shape), data)


def _check_count(values, shape, where):
    """As many elements as the shape says."""
    elements = math.prod(shape)
    if len(values) != elements:
        raise TensorError(f"{where} has {len(values)} elements, but its shape {shape} "
                          f"needs {elements}.")


def _flatten(data, where):
    """The elements of JSON tensor data, nested or flat, in row-major order ("Tensor Data")."""
    if not isinstance(data, list):
        return [data]
    flat, stack = [], [iter(data)]
    # Iterative rather than recursive: nesting as deep as the JSON parser allows is fine.
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _bytes_from_json(values, where):
    """BYTES elements given in JSON: base64 strings (JSON strings cannot hold raw bytes)."""
    elements = []
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise TensorError(f"{where}: element {index} must be a base64 string.")
        try:
            elements.append(decode_base64(value))
        except ValueError:
            raise TensorError(f"{where}: element {index} is not valid base64.") from None
    return elements


def _uint8_from_json(values, shape, where):
    """UINT8 elements given in JSON: whole numbers from 0 to 255.

    "Tensor Data" lets the server coerce elements; whole floats such as 7.0 are taken, since
    some generated clients send every JSON number as a float.
    """
    if not all(type(value) in (int, float) and 0 <= value <= 255 and float(value).is_integer()
               for value in values):
        raise TensorError(f"{where} is UINT8: every element must be a whole number from 0 to 255.")
    return np.array(values, dtype=np.uint8).reshape(shape)


def _bytes_from_binary(raw, elements, where):
    """BYTES elements in binary form: a 4-byte little-endian length before each."""
    found, offset = [], 0
    while offset < len(raw):
        if offset + LENGTH_PREFIX.size > len(raw):
            raise TensorError(f"{where}: the binary data ends inside an element's 4-byte length.")
        (length,) = LENGTH_PREFIX.unpack_from(raw, offset)
        offset += LENGTH_PREFIX.size
        if offset + length > len(raw):
            raise TensorError(f"{where}: element {len(found)} announces {length} bytes, but only "
                              f"{len(raw) - offset} are left in its binary data.")
        found.append(raw[offset:offset + length])
        offset += length
        if len(found) > elements:
            break
    if len(found) > elements:
        raise TensorError(f"{where} holds more than {elements} elements, as its shape says.")
    if len(found) < elements:
        raise TensorError(f"{where} holds {len(found)} elements, but its shape needs {elements}.")
    return found


def _uint8_from_binary(raw, shape, elements, where):
    """UINT8 elements in binary form: one byte each, row-major."""
    if len(raw) != elements:
        raise TensorError(f"{where} has {len(raw)} bytes of binary data, but its shape {shape} "
                          f"needs {elements}.")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def requested_output(item: dict, index: int, binary_output: bool) -> RequestedOutput:
    """One $request_output: its name, binary_data and classification parameters."""
    where = f"outputs[{index}]"
    if not isinstance(item, dict):
        raise TensorError(f"{where} must be an object with a \"name\".")
    name = _string(item, "name", where)
    where = f"output {name[:100]!r}"
    parameters = _parameters(item, where)
    # Binary Tensor Data Extension: "binary_data" on an output overrides "binary_data_output".
    binary = (flag(parameters, "binary_data", where) if "binary_data" in parameters
              else binary_output)
    classification = _count(parameters, "classification", where) or 0
    return RequestedOutput(name, binary, classification)


def check_unique(names: list, kind: str) -> None:
    """Refuse a tensor named twice."""
    repeated = [name for name, count in collections.Counter(names).items() if count > 1]
    if repeated:
        raise TensorError(f"The {kind} {repeated[0][:100]!r} is given more than once.")


def to_binary(output: OutputTensor) -> bytes:
    """An output's data in the binary form: little-endian, row-major, BYTES length-prefixed."""
    if output.datatype == "BYTES":
        return encode_bytes_elements(output.data)
    return np.ascontiguousarray(output.data, dtype=LITTLE_ENDIAN[output.datatype]).tobytes()

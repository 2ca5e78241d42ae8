"""The gRPC face's messages read into the shared tensors and written back, without a server."""

import struct

import grpc
import numpy as np
import pytest

from service.grpc import codegen
from service.grpc.messages import SERVICE, inference
from service.grpc.status import DOMAIN_STATUS, status_of
from service.grpc.tensors import parse_message, read_request, write_response
from service.http.errors import DOMAIN_ERRORS
from service.models.routing import RoutingError
from service.open_inference.tensors import OutputTensor, TensorError
from service.runtime.images import ImageError

Code = grpc.StatusCode


def request(**fields):
    """A ModelInferRequest with `fields`."""
    return inference.ModelInferRequest(model_name="colours", **fields)


def refused(message):
    """The message of the TensorError read_request raises for `message`."""
    with pytest.raises(TensorError) as raised:
        read_request(message)
    return raised.value.message


def length_prefixed(*elements):
    """BYTES elements in the raw form: a 4-byte little-endian length before each."""
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def test_the_compiled_interface_is_current_and_has_the_protocols_rpcs():
    assert codegen.is_current()
    assert [method.name for method in SERVICE.methods] == [
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
        "ModelInfer"]


def test_raw_bytes_and_pixels_are_read_and_ask_for_raw_outputs():
    message = request(id="7", raw_input_contents=[length_prefixed(b"first", b"second")])
    message.inputs.add(name="image", datatype="BYTES", shape=[2])
    parsed = read_request(message)
    assert parsed.id == "7" and parsed.binary_output
    (tensor,) = parsed.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("image", "BYTES", (2,))
    assert tensor.data == [b"first", b"second"]
    pixels = np.arange(2 * 3, dtype=np.uint8).reshape(1, 2, 3)
    message = request(raw_input_contents=[pixels.tobytes()])
    message.inputs.add(name="pixels", datatype="UINT8", shape=[1, 2, 3])
    (tensor,) = read_request(message).inputs
    assert np.array_equal(tensor.data, pixels)


def test_typed_contents_are_read_and_ask_for_typed_outputs_unless_told():
    message = request()
    message.inputs.add(name="image", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        b"file")
    parsed = read_request(message)
    assert parsed.inputs[0].data == [b"file"] and not parsed.binary_output
    message.parameters["binary_data_output"].bool_param = True
    output = message.outputs.add(name="probabilities")
    output.parameters["classification"].int64_param = 2
    parsed = read_request(message)
    assert parsed.binary_output
    assert (parsed.outputs[0].classification, parsed.outputs[0].binary) == (2, True)
    message = request()
    message.inputs.add(name="pixels", datatype="UINT8", shape=[1, 2]).contents.uint_contents.extend(
        [0, 255])
    assert read_request(message).inputs[0].data.tolist() == [[0, 255]]


@pytest.mark.parametrize("build, expected", [
    (lambda m: None, "at least one input"),
    (lambda m: m.inputs.add(name="image", datatype="FP32", shape=[1]), "reads BYTES"),
    (lambda m: m.inputs.add(name="image", datatype="COLOUR", shape=[1]), "unknown datatype"),
    (lambda m: m.inputs.add(name="image", datatype="BYTES", shape=[-1]), "non-negative"),
    (lambda m: m.inputs.add(name="", datatype="BYTES", shape=[1]), '"name"'),
    (lambda m: m.inputs.add(name="image", datatype="BYTES", shape=[2]).contents.bytes_contents
     .append(b"one"), "needs 2"),
    (lambda m: m.inputs.add(name="pixels", datatype="UINT8", shape=[1]).contents.fp32_contents
     .append(1.0), "contents.uint_contents"),
    (lambda m: m.inputs.add(name="pixels", datatype="UINT8", shape=[1]).contents.uint_contents
     .append(256), "from 0 to 255"),
], ids=["no-input", "unreadable-datatype", "unknown-datatype", "negative-shape", "no-name",
        "too-few-elements", "wrong-contents-field", "not-a-byte"])
def test_bad_typed_inputs_are_refused_with_the_reason(build, expected):
    message = request()
    build(message)
    assert expected in refused(message)


def test_raw_contents_must_match_the_inputs_and_their_shapes():
    message = request(raw_input_contents=[b"a", b"b"])
    message.inputs.add(name="image", datatype="BYTES", shape=[1])
    assert "2 entries for 1 inputs" in refused(message)
    message = request(raw_input_contents=[b"\0" * 5])
    message.inputs.add(name="pixels", datatype="UINT8", shape=[1, 2, 3])
    assert "needs 6" in refused(message)
    message = request(raw_input_contents=[length_prefixed(b"x")])
    message.inputs.add(name="image", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        b"x")
    assert "both typed contents and raw_input_contents" in refused(message)
    message = request(raw_input_contents=[length_prefixed(b"x"), length_prefixed(b"y")])
    message.inputs.add(name="image", datatype="BYTES", shape=[1])
    message.inputs.add(name="image", datatype="BYTES", shape=[1])
    assert "more than once" in refused(message)


def test_a_parameter_without_a_value_or_of_the_wrong_type_is_refused():
    message = request()
    message.inputs.add(name="image", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        b"x")
    message.parameters["binary_data_output"].CopyFrom(inference.InferParameter())
    assert "has no value" in refused(message)
    message.parameters["binary_data_output"].string_param = "yes"
    assert "true or false" in refused(message)


def test_bytes_that_are_no_message_are_a_tensor_error():
    with pytest.raises(TensorError, match="ModelInferRequest"):
        parse_message(inference.ModelInferRequest, b"\xff\xff\xff\xff")
    assert parse_message(inference.ModelInferRequest, b"").model_name == ""


def test_answers_are_raw_for_all_outputs_or_typed():
    probabilities = np.array([[0.25, 0.75]], np.float32)
    labels = OutputTensor("labels", "BYTES", (1, 1), [b"0.75:1:red"], binary=False)
    header = {"model_name": "colours", "model_version": "7", "id": "x"}
    typed = write_response(header, [OutputTensor("probabilities", "FP32", (1, 2), probabilities),
                                    labels])
    assert not typed.raw_output_contents and typed.id == "x"
    assert list(typed.outputs[0].contents.fp32_contents) == [0.25, 0.75]
    assert list(typed.outputs[1].contents.bytes_contents) == [b"0.75:1:red"]
    raw = write_response(header, [OutputTensor("probabilities", "FP32", (1, 2), probabilities,
                                               binary=True), labels])
    assert raw.raw_output_contents == [probabilities.tobytes(), length_prefixed(b"0.75:1:red")]
    assert list(raw.outputs[0].shape) == [1, 2] and not raw.outputs[0].HasField("contents")


def test_every_domain_error_kind_has_a_status_code_that_is_not_unknown():
    assert DOMAIN_STATUS.keys() == DOMAIN_ERRORS.keys()
    for error_class, kinds in DOMAIN_ERRORS.items():
        assert DOMAIN_STATUS[error_class].keys() == kinds.keys()
        for kind, (http_status, _) in kinds.items():
            code, message = status_of(error_class(kind, "what went wrong")
                                      if error_class is not TensorError
                                      else TensorError("what went wrong", kind))
            assert message == "what went wrong"
            expected = {400: Code.INVALID_ARGUMENT, 415: Code.INVALID_ARGUMENT,
                        413: Code.RESOURCE_EXHAUSTED, 404: Code.NOT_FOUND,
                        409: Code.ALREADY_EXISTS, 503: Code.UNAVAILABLE,
                        504: Code.DEADLINE_EXCEEDED, 499: Code.CANCELLED}[http_status]
            assert code == expected, (error_class, kind)


def test_anything_else_is_internal_and_says_nothing_of_itself():
    assert status_of(RuntimeError("/srv/secret")) == (grpc.StatusCode.INTERNAL,
                                                       "The service hit an unexpected error; "
                                                       "it has been logged.")
    assert status_of(ImageError("no_such_kind", "x"))[0] == grpc.StatusCode.INTERNAL
    assert status_of(RoutingError("model_not_ready", "later"))[0] == grpc.StatusCode.UNAVAILABLE

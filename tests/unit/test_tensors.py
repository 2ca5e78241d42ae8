"""The Open Inference Protocol's tensor parser and encoder, without a server."""

import base64
import json
import struct

import numpy as np
import pytest

from service.open_inference.tensors import (
    OutputTensor,
    TensorError,
    encode_bytes_elements,
    encode_infer_response,
    parse_infer_request,
)


def binary_request(header, *chunks):
    """A body with binary tensor data, and its Inference-Header-Content-Length."""
    encoded = json.dumps(header).encode()
    return encoded + b"".join(chunks), str(len(encoded))


def refused(body, header_length=None):
    """The message of the TensorError the parser raises for `body`."""
    with pytest.raises(TensorError) as raised:
        parse_infer_request(body, header_length)
    assert raised.value.kind == "invalid_inference_request"
    return raised.value.message


def test_json_bytes_are_base64_and_may_be_nested_or_flat():
    encoded = [base64.b64encode(b"first").decode(), base64.b64encode(b"second").decode()]
    for data in (encoded, [[encoded[0]], [encoded[1]]]):
        body = json.dumps({"id": "7", "inputs": [{"name": "image", "datatype": "BYTES",
                                                  "shape": [2], "data": data}]}).encode()
        request = parse_infer_request(body)
        assert request.id == "7" and request.outputs == ()
        (tensor,) = request.inputs
        assert (tensor.name, tensor.datatype, tensor.shape) == ("image", "BYTES", (2,))
        assert tensor.data == [b"first", b"second"]


def test_binary_bytes_are_length_prefixed_and_outputs_keep_their_parameters():
    elements = [b"\xff\xd8 jpeg", b"", b"png"]
    raw = encode_bytes_elements(elements)
    assert raw[:4] == struct.pack("<I", 7)
    body, length = binary_request({
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [3],
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
        "parameters": {"binary_data_output": True}}, raw)
    request = parse_infer_request(body, length)
    assert request.inputs[0].data == elements
    (output,) = request.outputs
    assert output.classification == 2 and output.binary  # binary_data_output applies


def test_binary_data_on_an_output_overrides_binary_data_output():
    body = json.dumps({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [1]}],
                       "parameters": {"binary_data_output": True},
                       "outputs": [{"name": "a", "parameters": {"binary_data": False}},
                                   {"name": "b"}]}).encode()
    first, second = parse_infer_request(body).outputs
    assert not first.binary and second.binary


@pytest.mark.parametrize("binary", [True, False])
def test_uint8_pixels_in_json_or_binary(binary):
    pixels = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    tensor = {"name": "pixels", "datatype": "UINT8", "shape": list(pixels.shape)}
    if binary:
        tensor["parameters"] = {"binary_data_size": pixels.nbytes}
        body, length = binary_request({"inputs": [tensor]}, pixels.tobytes())
    else:
        tensor["data"] = pixels.tolist()
        body, length = json.dumps({"inputs": [tensor]}).encode(), None
    parsed = parse_infer_request(body, length).inputs[0].data
    assert parsed.dtype == np.uint8 and np.array_equal(parsed, pixels)


def test_whole_floats_are_taken_as_uint8():
    body = json.dumps({"inputs": [{"name": "p", "datatype": "UINT8", "shape": [2],
                                   "data": [3.0, 255]}]}).encode()
    assert parse_infer_request(body).inputs[0].data.tolist() == [3, 255]


# A valid one-element UINT8 input, as JSON.
PIXEL = b'{"name": "a", "datatype": "UINT8", "shape": [1], "data": [1]}'


def input_body(**tensor):
    """A JSON request with one input made of `tensor`'s fields."""
    return json.dumps({"inputs": [{"name": "image", **tensor}]}).encode()


@pytest.mark.parametrize("body, words", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b"[]", "JSON object"),
    (b'{"inputs": []}', "empty"),
    (b'{"inputs": {}}', '"inputs" must be a list'),
    (b'{"inputs": [1]}', "tensor object"),
    (b'{"id": 5, "inputs": []}', '"id" must be a string'),
    (b'{"id": null, "inputs": []}', '"id" must be a string'),
    (b'{"parameters": [], "inputs": []}', "must be an object"),
    (b'{"parameters": {"binary_data_output": "yes"}, "inputs": []}', "true or false"),
    (input_body(datatype="BYTES", shape=[1]), 'neither "data"'),
    (input_body(datatype="FLOAT", shape=[1], data=[1]), "unknown datatype"),
    (input_body(datatype="FP32", shape=[1], data=[1.5]), "reads BYTES"),
    (input_body(datatype="BYTES", shape=[-1], data=["aGk="]), "non-negative integers"),
    (input_body(datatype="BYTES", shape=[1.0], data=["aGk="]), "non-negative integers"),
    (input_body(datatype="BYTES", shape=[2], data=["aGk="]), "needs 2"),
    (input_body(datatype="BYTES", shape=[1], data=[7]), "base64 string"),
    (input_body(datatype="BYTES", shape=[1], data=["%%%"]), "not valid base64"),
    (input_body(datatype="UINT8", shape=[1], data=[256]), "0 to 255"),
    (input_body(datatype="UINT8", shape=[1], data=[True]), "0 to 255"),
    (input_body(datatype="UINT8", shape=[1], data=[1.5]), "0 to 255"),
    (input_body(datatype="UINT8", shape=[1], data=["1"]), "0 to 255"),
    (input_body(datatype="UINT8", shape=[1], data=[1], parameters={"binary_data_size": -1}),
     "non-negative integer"),
    (b'{"inputs": [%s, %s]}' % (PIXEL, PIXEL), "more than once"),
    (b'{"inputs": [%s], "outputs": [{"name": "o", "parameters": {"classification": -2}}]}'
     % PIXEL, "non-negative"),
    (b'{"inputs": [%s], "outputs": [{"parameters": {}}]}' % PIXEL, '"name"'),
    (b'{"inputs": [%s], "outputs": null}' % PIXEL, "must be a list"),
])
def test_malformed_requests_are_refused_with_a_reason(body, words):
    assert words in refused(body)


def test_binary_data_must_match_what_the_header_announces():
    tensor = {"name": "p", "datatype": "UINT8", "shape": [4],
              "parameters": {"binary_data_size": 4}}
    body, length = binary_request({"inputs": [tensor]}, b"\1\2\3")
    assert "only 3 are left" in refused(body, length)
    body, length = binary_request({"inputs": [tensor]}, b"\1\2\3\4\5")
    assert "1 bytes after the JSON header belong to no input" in refused(body, length)
    tensor["parameters"]["binary_data_size"] = 3
    body, length = binary_request({"inputs": [tensor]}, b"\1\2\3")
    assert "needs 4" in refused(body, length)


@pytest.mark.parametrize("length", ["0", "-3", "abc", "1e3", "٣", "100000"])
def test_a_bad_header_length_is_refused(length):
    assert "Inference-Header-Content-Length" in refused(b'{"inputs": []}', length)


@pytest.mark.parametrize("raw, words", [
    (b"\x05\x00", "inside an element's 4-byte length"),
    (struct.pack("<I", 9) + b"short", "announces 9 bytes"),
    (encode_bytes_elements([b"a", b"b"]), "more than 1 elements"),
    (b"", "holds 0 elements"),
])
def test_broken_binary_bytes_elements_are_refused(raw, words):
    body, length = binary_request({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                               "parameters": {"binary_data_size": len(raw)}}]},
                                  raw)
    assert words in refused(body, length)


def test_a_huge_declared_shape_allocates_nothing():
    body, length = binary_request({"inputs": [{"name": "p", "datatype": "UINT8",
                                               "shape": [10**12, 10**12],
                                               "parameters": {"binary_data_size": 1}}]}, b"\0")
    assert "far more elements than any request could hold" in refused(body, length)
    # Nor with a zero among the sizes, which numpy could not even make an empty array of.
    body, length = binary_request({"inputs": [{"name": "p", "datatype": "UINT8",
                                               "shape": [0, 2**32, 2**32, 2**32], "data": []}]})
    assert "far more elements than any request could hold" in refused(body, length)


def test_an_answer_in_json_has_no_header_length():
    probabilities = np.array([[0.25, 0.75]], np.float32)
    body, length = encode_infer_response(
        {"model_name": "m", "id": "1"},
        [OutputTensor("probabilities", "FP32", probabilities.shape, probabilities),
         OutputTensor("labels", "BYTES", (1, 1), [b"0.75:1:dog"])])
    assert length is None
    answer = json.loads(body)
    assert answer["id"] == "1" and answer["model_name"] == "m"
    assert answer["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]},
        {"name": "labels", "datatype": "BYTES", "shape": [1, 1], "data": ["0.75:1:dog"]}]


def test_an_answer_with_binary_outputs_puts_them_after_the_json_in_order():
    probabilities = np.array([[0.25, 0.75]], np.float32)
    body, length = encode_infer_response(
        {"model_name": "m"},
        [OutputTensor("probabilities", "FP32", (1, 2), probabilities, binary=True),
         OutputTensor("labels", "BYTES", (1, 1), [b"0.75:1:dog"], binary=True)])
    header = json.loads(body[:length])
    sizes = [output["parameters"]["binary_data_size"] for output in header["outputs"]]
    assert sizes == [8, 14] and len(body) == length + 22
    assert np.frombuffer(body[length:length + 8], "<f4").tolist() == [0.25, 0.75]
    assert body[length + 8:] == struct.pack("<I", 10) + b"0.75:1:dog"
    assert all("data" not in output for output in header["outputs"])

"""The Open Inference Protocol (KServe V2) face, driven by two clients we did not write."""

import base64

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from open_inference.openapi import (
    BadRequestError,
    InferenceRequest,
    NotFoundError,
    RequestInput,
    RequestOutput,
)
from open_inference.openapi.client import OpenInferenceClient
from open_inference.openapi.core import ApiError
from tritonclient.utils import InferenceServerException

from service.runtime.images import decode_image
from tests import support

MODEL = "shapes"
IMAGE_SIZE = (16, 16, 3)
COLOURS = list(support.SHAPE_COLOURS.values())


@pytest.fixture
def client(server):
    """Triton's HTTP client, pointed at the service."""
    connection = triton.InferenceServerClient(server.base_url.removeprefix("http://"),
                                              network_timeout=30)
    yield connection
    connection.close()


def jpegs(count, size=24):
    """`count` different JPEG files of drawn shapes."""
    return [support.encode(support.draw_picture(COLOURS[n % 3], size, seed=n))
            for n in range(count)]


def bytes_input(images, binary=True, name="image"):
    """A BYTES input of encoded images: raw bytes in binary, base64 strings in JSON."""
    elements = images if binary else [base64.b64encode(image) for image in images]
    tensor = triton.InferInput(name, [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    return tensor


def pixels_input(pixels, binary=True):
    """A UINT8 input of decoded pixels."""
    tensor = triton.InferInput("pixels", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    return tensor


def predict_answers(server, images):
    """What /predict says of the same images, with every class ranked."""
    files = [("file", (f"{n}.jpg", image, "image/jpeg")) for n, image in enumerate(images)]
    response = requests.post(server.url("/predict"), files=files, params={"top_k": 3}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def text(element):
    """A BYTES element as the client gives it: bytes from binary data, str from JSON."""
    return element.decode() if isinstance(element, bytes) else element


def assert_same_as_predict(probabilities, predictions):
    """FP32 probabilities rank and score the images as /predict does."""
    assert probabilities.shape == (len(predictions), 3)
    assert probabilities.dtype == np.float32
    classes = ["blue", "green", "red"]
    for scores, prediction in zip(probabilities, predictions, strict=True):
        ranked = [{"label": classes[i], "confidence": round(float(scores[i]), 4)}
                  for i in np.argsort(scores)[::-1]]
        assert ranked == prediction["top_k"]


def assert_v2_error(response, status):
    """The protocol's error shape: {"error": "message"}, nothing leaked."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.text and "/tmp" not in response.text


def infer_error(client, inputs, model=MODEL, version="", outputs=None, **options):
    """The status and message of an inference the client reports as failed."""
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, inputs, model_version=version, outputs=outputs, **options)
    return int(raised.value.status()), raised.value.message()


# Health and metadata.

def test_the_server_and_model_are_live_and_ready(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready(MODEL, "2")
    assert not client.is_model_ready("cats")


def test_server_metadata_names_the_extensions_it_implements(client):
    metadata = client.get_server_metadata()
    assert metadata["name"] and metadata["version"]
    assert metadata["extensions"] == ["binary_tensor_data", "classification", "model_repository",
                                      "schedule_policy"]


@pytest.mark.parametrize("version", ["", "1"])
def test_model_metadata_gives_inputs_and_outputs_with_a_batch_dimension(client, version):
    metadata = client.get_model_metadata(MODEL, version)
    assert metadata["name"] == MODEL and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
        {"name": "pixels", "datatype": "UINT8", "shape": [-1, *IMAGE_SIZE]}]
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
                                   {"name": "unknown", "datatype": "BOOL", "shape": [-1]}]
    assert metadata["platform"]


def test_health_answers_by_status_code(server):
    assert requests.get(server.url("/v2/health/live")).json() == {"live": True}
    assert requests.get(server.url("/v2/health/ready")).json() == {"ready": True}
    ready = requests.get(server.url(f"/v2/models/{MODEL}/ready"))
    assert ready.status_code == 200 and ready.json() == {"name": MODEL, "ready": True}


# Inference: every input form gives /predict's answer.

@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_input_gives_the_same_answers_as_predict(server, client, binary):
    images = jpegs(3)
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer(MODEL, [bytes_input(images, binary)], outputs=outputs)
    assert_same_as_predict(result.as_numpy("probabilities"), predict_answers(server, images))
    answer = result.get_response()
    assert answer["model_name"] == MODEL and answer["model_version"] == "1"
    assert ("data" in answer["outputs"][0]) is not binary


def test_without_named_outputs_every_output_comes_back(server, client):
    images = jpegs(2)
    result = client.infer(MODEL, [bytes_input(images)], model_version="1")
    assert_same_as_predict(result.as_numpy("probabilities"), predict_answers(server, images))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_uint8_pixels_give_the_same_answers_as_predict(server, client, binary):
    images = jpegs(2)
    pixels = np.stack([decode_image(image, *IMAGE_SIZE, max_pixels=10**6) for image in images])
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer(MODEL, [pixels_input(pixels, binary)], outputs=outputs)
    assert_same_as_predict(result.as_numpy("probabilities"), predict_answers(server, images))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_gives_the_top_labels_of_predict(server, client, binary):
    images = jpegs(2)
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)]
    result = client.infer(MODEL, [bytes_input(images)], outputs=outputs)
    labels = result.as_numpy("probabilities")
    assert labels.shape == (2, 3)
    for row, prediction in zip(labels, predict_answers(server, images), strict=True):
        entries = [text(element).split(":") for element in row]
        assert [label for _, _, label in entries] == [p["label"] for p in prediction["top_k"]]
        assert [round(float(score), 4) for score, _, _ in entries] == [
            p["confidence"] for p in prediction["top_k"]]
        assert [["blue", "green", "red"][int(index)] for _, index, _ in entries] == [
            label for _, _, label in entries]


def test_classification_of_one_gives_the_predicted_label(server, client):
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=False, class_count=1)]
    images = jpegs(1)
    result = client.infer(MODEL, [bytes_input(images)], outputs=outputs)
    (element,) = result.as_numpy("probabilities").ravel()
    assert text(element).split(":")[2] == predict_answers(server, images)[0]["label"]


def test_the_request_id_comes_back(server, client):
    result = client.infer(MODEL, [bytes_input(jpegs(1))], request_id="order-42")
    assert result.get_response()["id"] == "order-42"
    response = requests.post(server.url(f"/v2/models/{MODEL}/infer"),
                             headers={"X-Request-ID": "trace-7"},
                             json={"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                               "data": [base64.b64encode(jpegs(1)[0]).decode()]}]})
    assert response.status_code == 200 and "id" not in response.json()
    assert response.headers["X-Request-ID"] == "trace-7"


def test_a_plain_json_request_without_a_client(server):
    pixels = np.zeros((1, *IMAGE_SIZE), np.uint8)
    response = requests.post(server.url(f"/v2/models/{MODEL}/versions/1/infer"), json={
        "id": "plain",
        "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": list(pixels.shape),
                    "data": pixels.tolist()}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    (output,) = response.json()["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [1, 2]
    assert all(len(element.split(":")) == 3 for element in output["data"])


# Errors: the client sees the protocol's {"error": message} with an honest status.

def test_an_unknown_model_or_version_is_404(client):
    status, message = infer_error(client, [bytes_input(jpegs(1))], model="cats")
    assert status == 404 and "cats" in message
    status, message = infer_error(client, [bytes_input(jpegs(1))], version="2")
    assert status == 404 and "loaded versions: 1" in message
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata(MODEL, "7")
    assert raised.value.status() == "404"


def test_a_wrong_datatype_is_400(client):
    tensor = triton.InferInput("image", [1, *IMAGE_SIZE], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, *IMAGE_SIZE), np.uint8))
    status, message = infer_error(client, [tensor])
    assert status == 400 and "BYTES" in message
    tensor = triton.InferInput("pixels", [1, *IMAGE_SIZE], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, *IMAGE_SIZE), np.float32))
    status, message = infer_error(client, [tensor])
    assert status == 400 and "UINT8" in message


def test_a_wrong_shape_is_400(client):
    status, message = infer_error(client, [pixels_input(np.zeros((1, 8, 8, 3), np.uint8))])
    assert status == 400 and "[N, 16, 16, 3]" in message
    tensor = triton.InferInput("image", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[jpegs(1)[0]]], dtype=np.object_))
    status, message = infer_error(client, [tensor])
    assert status == 400 and "[N]" in message


def test_an_undecodable_image_is_refused(client):
    status, _ = infer_error(client, [bytes_input([b"hello, I am text"])])
    assert status == 415
    image = jpegs(1, size=64)[0]
    status, _ = infer_error(client, [bytes_input([image[: len(image) // 2]])])
    assert status == 400
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array(["%%%"], dtype=np.object_), binary_data=False)
    status, message = infer_error(client, [tensor])
    assert status == 400 and "base64" in message


def test_too_many_images_is_413(client):
    status, message = infer_error(client, [bytes_input(jpegs(5))])
    assert status == 413 and "limit is 4" in message


def test_an_unknown_input_or_output_or_class_count_is_400(client):
    status, _ = infer_error(client, [bytes_input(jpegs(1), name="photo")])
    assert status == 400
    outputs = [triton.InferRequestedOutput("logits")]
    assert infer_error(client, [bytes_input(jpegs(1))], outputs=outputs)[0] == 400
    outputs = [triton.InferRequestedOutput("probabilities", class_count=4)]
    assert infer_error(client, [bytes_input(jpegs(1))], outputs=outputs)[0] == 400


def test_malformed_bodies_are_400_413_and_415(server):
    url = server.url(f"/v2/models/{MODEL}/infer")
    assert_v2_error(requests.post(url, data=b"{not json"), 400)
    assert_v2_error(requests.post(url, data=b'{"inputs": []}xx',
                                  headers={"Inference-Header-Content-Length": "99"}), 400)
    assert_v2_error(requests.post(url, data=b"\0" * 2_500_000), 413)
    assert_v2_error(requests.post(url, data="{}", headers={"Content-Type": "text/plain"}), 415)
    assert_v2_error(requests.post(url, data=b"{}", headers={"Content-Encoding": "gzip"}), 415)


def test_unknown_v2_routes_and_methods_answer_in_the_protocol_shape(server):
    assert_v2_error(requests.get(server.url("/v2/no/such/route")), 404)
    response = requests.delete(server.url(f"/v2/models/{MODEL}"))
    assert_v2_error(response, 405)
    assert "GET" in response.headers["Allow"]
    # The rest of the API keeps its own error shape.
    assert requests.get(server.url("/no/such/route")).json()["error"]["code"] == "not_found"


# Limits, metrics and logs are shared with /predict.

def images_classified(server):
    """The images_classified_total counter."""
    metrics = requests.get(server.url("/metrics")).text
    return float(next(line.split()[1] for line in metrics.splitlines()
                      if line.startswith("images_classified_total ")))


def test_v2_requests_are_counted_and_logged(server, client):
    before = images_classified(server)
    client.infer(MODEL, [bytes_input(jpegs(2))], headers={"X-Request-ID": "counted-v2"})
    assert images_classified(server) == before + 2
    metrics = requests.get(server.url("/metrics")).text
    assert 'route="/v2/models/<name>/infer"' in metrics
    log_lines = [line for line in server.log().splitlines() if "counted-v2" in line]
    assert log_lines and '"path": "/v2/models/shapes/infer"' in log_lines[0]
    assert '"images": 2' in log_lines[0] and '"model_version": 1' in log_lines[0]


def test_the_api_key_applies_to_inference(start_service, models_dir):
    server = start_service(models_dir, api_key="sesame")
    client = triton.InferenceServerClient(server.base_url.removeprefix("http://"))
    try:
        status, message = infer_error(client, [bytes_input(jpegs(1))])
        assert status == 401 and "API key" in message
        result = client.infer(MODEL, [bytes_input(jpegs(1))],
                              headers={"Authorization": "Bearer sesame"})
        assert result.as_numpy("probabilities").shape == (1, 3)
        assert client.is_server_ready() and client.get_model_metadata(MODEL)["name"] == MODEL
    finally:
        client.close()


def test_without_a_model_readiness_is_503(start_service, tmp_path):
    server = start_service(tmp_path / "empty", wait_ready=False)
    support.poll(lambda: requests.get(server.url("/v2/health/live"), timeout=2).ok, 30,
                 lambda: f"never live:\n{server.log()}")
    support.poll(lambda: requests.get(server.url("/health/ready")).json()["status"] == "no_model",
                 30, lambda: f"never reported no_model:\n{server.log()}")
    assert requests.get(server.url("/v2/health/ready")).status_code == 503
    assert requests.get(server.url(f"/v2/models/{MODEL}/ready")).status_code == 503
    assert_v2_error(requests.get(server.url(f"/v2/models/{MODEL}")), 503)
    assert_v2_error(requests.post(server.url(f"/v2/models/{MODEL}/infer"), json={}), 503)


# A second client: the one generated from the protocol's own OpenAPI document.

@pytest.fixture
def generated(server):
    """open-inference-openapi's client, pointed at the service."""
    return OpenInferenceClient(base_url=server.base_url, timeout=30)


def test_the_generated_client_reads_health_and_metadata(generated):
    generated.check_server_liveness()
    generated.check_server_readiness()
    generated.check_model_readiness(MODEL)
    generated.check_model_version_readiness(MODEL, "1")
    with pytest.raises(NotFoundError):
        generated.check_model_version_readiness(MODEL, "2")
    assert generated.read_server_metadata().extensions == ["binary_tensor_data", "classification",
                                                           "model_repository", "schedule_policy"]
    metadata = generated.read_model_version_metadata(MODEL, "1")
    assert [tensor.name for tensor in metadata.inputs] == ["image", "pixels"]
    assert metadata.outputs[0].shape == [-1, 3]


def test_the_generated_client_gets_the_answers_of_predict(server, generated):
    images = jpegs(2)
    encoded = [base64.b64encode(image).decode() for image in images]
    answer = generated.model_infer(MODEL, request=InferenceRequest(
        id="generated", inputs=[RequestInput(name="image", shape=[2], datatype="BYTES",
                                             data=encoded)]))
    assert answer.id == "generated" and answer.model_version == "1"
    # With no output named, both: the probabilities and the unknown verdicts.
    outputs = {output.name: output for output in answer.outputs}
    assert sorted(outputs) == ["probabilities", "unknown"]
    output = outputs["probabilities"]
    probabilities = np.array(output.data.__root__, dtype=np.float32).reshape(output.shape)
    predictions = predict_answers(server, images)
    assert_same_as_predict(probabilities, predictions)

    # UINT8 pixels, which this client sends as JSON floats, and the classification extension.
    pixels = np.stack([decode_image(image, *IMAGE_SIZE, max_pixels=10**6) for image in images])
    answer = generated.model_version_infer(MODEL, "1", request=InferenceRequest(
        inputs=[RequestInput(name="pixels", shape=list(pixels.shape), datatype="UINT8",
                             data=pixels.ravel().tolist())],
        outputs=[RequestOutput(name="probabilities", parameters={"classification": 1})]))
    labels = [element.split(":")[2] for element in answer.outputs[0].data.__root__]
    assert labels == [prediction["label"] for prediction in predictions]


def test_the_generated_client_sees_protocol_errors(generated):
    request = InferenceRequest(inputs=[RequestInput(name="image", shape=[1], datatype="BYTES",
                                                    data=["%%%"])])
    with pytest.raises(BadRequestError) as raised:
        generated.model_infer(MODEL, request=request)
    assert "base64" in raised.value.body["error"]
    with pytest.raises(ApiError) as raised:
        generated.model_infer("cats", request=request)
    assert raised.value.status_code == 404 and "cats" in raised.value.body["error"]


def test_tritonclients_timeout_in_microseconds_is_the_requests_deadline(client):
    # Triton's schedule-policy "timeout" (µs) as its HTTP client sends it.
    status, message = infer_error(client, [bytes_input(jpegs(1))], timeout=1)
    assert status == 504 and "deadline" in message
    answer = client.infer(MODEL, [bytes_input(jpegs(1))], timeout=5_000_000)
    assert answer.as_numpy("probabilities").shape == (1, 3)


"""The Open Inference Protocol over gRPC, driven by Triton's gRPC client against real workers.

The messages the tests build themselves are Triton's (tritonclient.grpc.service_pb2, from
Triton's own grpc_service.proto), so nothing here reads the service's .proto: what passes
is what Triton's users send. Every status code a client's mistake can cause is checked.
"""

import base64
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from PIL import Image
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from service.runtime.images import decode_image
from tests import support

MODEL = "shapes"
IMAGE_SIZE = (16, 16, 3)
COLOURS = list(support.SHAPE_COLOURS.values())
SERVICE = "inference.GRPCInferenceService"
# Limits of the shared server, small enough to hit.
MAX_IMAGES, MAX_BYTES = 4, 2_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_models):
    """One service with gRPC on, for the module, with small limits."""
    models = tmp_path_factory.mktemp("grpc") / "models"
    shutil.copytree(trained_models, models)
    running = support.RunningService(models, models.parent / "service.log", grpc_enabled=1,
                                     max_images_per_request=MAX_IMAGES,
                                     max_request_bytes=MAX_BYTES)
    try:
        yield running.wait_ready().wait_grpc_ready()
    finally:
        running.stop()


@pytest.fixture
def client(server):
    """Triton's gRPC client, pointed at the service."""
    connection = triton.InferenceServerClient(server.grpc_target)
    yield connection
    connection.close()


def jpegs(count, size=24):
    """`count` different JPEG files of drawn shapes."""
    return [support.encode(support.draw_picture(COLOURS[n % 3], size, seed=n))
            for n in range(count)]


def bytes_input(images, name="image"):
    """A BYTES input of encoded images (tritonclient sends it as raw_input_contents)."""
    tensor = triton.InferInput(name, [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


def pixels_of(images):
    """The decoded pixels of encoded images, in the model's size."""
    return np.stack([decode_image(image, *IMAGE_SIZE, max_pixels=10**6) for image in images])


def rest_probabilities(server, images, class_count=0):
    """What the REST face (/v2, binary tensor data) answers for the same images."""
    client = triton_http.InferenceServerClient(server.base_url.removeprefix("http://"))
    try:
        tensor = triton_http.InferInput("image", [len(images)], "BYTES")
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
        output = triton_http.InferRequestedOutput("probabilities", binary_data=True,
                                                  class_count=class_count)
        return client.infer(MODEL, [tensor], outputs=[output]).as_numpy("probabilities")
    finally:
        client.close()


def grpc_error(call, *args, **kwargs):
    """The status and message of a call the client reports as failed."""
    with pytest.raises(InferenceServerException) as raised:
        call(*args, **kwargs)
    return raised.value.status(), raised.value.message()


def raw_call(server, method, request, response_class=None, metadata=None):
    """Call `method` with Triton's message `request` (or raw bytes): (answer, trailing metadata)."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        serializer = None if isinstance(request, bytes) else type(request).SerializeToString
        stub = channel.unary_unary(
            f"/{SERVICE}/{method}", request_serializer=serializer,
            response_deserializer=response_class.FromString if response_class else None)
        answer, call = stub.with_call(request, metadata=metadata, timeout=30)
    return answer, dict(call.trailing_metadata())


def raw_error(server, method, request, metadata=None):
    """The gRPC status code and details of a call that fails."""
    with pytest.raises(grpc.RpcError) as raised:
        raw_call(server, method, request, metadata=metadata)
    return raised.value.code(), raised.value.details()


def typed_request(images=None, pixels=None, parameters=None):
    """A ModelInferRequest (Triton's message) with typed contents, no raw_input_contents."""
    request = service_pb2.ModelInferRequest(model_name=MODEL, id="typed")
    if images is not None:
        tensor = request.inputs.add(name="image", datatype="BYTES", shape=[len(images)])
        tensor.contents.bytes_contents.extend(images)
    if pixels is not None:
        tensor = request.inputs.add(name="pixels", datatype="UINT8", shape=list(pixels.shape))
        tensor.contents.uint_contents.extend(pixels.ravel().tolist())
    for key, value in (parameters or {}).items():
        request.parameters[key].bool_param = value
    return request


# Health, metadata and the repository index.

def test_the_server_and_model_are_live_and_ready(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    # As Triton answers: not ready, rather than an error, for what is not served.
    assert not client.is_model_ready(MODEL, "2")
    assert not client.is_model_ready("cats")


def test_server_and_model_metadata(client):
    metadata = client.get_server_metadata()
    assert metadata.name and metadata.version
    assert list(metadata.extensions) == ["classification", "model_repository", "schedule_policy"]
    for version in ("", "1"):
        model = client.get_model_metadata(MODEL, version, as_json=True)
        assert model["name"] == MODEL and model["versions"] == ["1"] and model["platform"]
        assert model["inputs"] == [
            {"name": "image", "datatype": "BYTES", "shape": ["-1"]},
            {"name": "pixels", "datatype": "UINT8", "shape": ["-1", "16", "16", "3"]}]
        assert model["outputs"] == [
            {"name": "probabilities", "datatype": "FP32", "shape": ["-1", "3"]},
            {"name": "unknown", "datatype": "BOOL", "shape": ["-1"]}]


def test_model_metadata_names_the_classes(server):
    # Triton's message has no properties field; read ours from the raw answer.
    answer, _ = raw_call(server, "ModelMetadata", service_pb2.ModelMetadataRequest(name=MODEL))
    assert b'["blue", "green", "red"]' in answer


def test_the_repository_index_lists_every_version(client):
    index = client.get_model_repository_index(as_json=True)["models"]
    assert index == [{"name": MODEL, "version": "1", "state": "READY"}]


# Inference: the same probabilities as the REST face, bit for bit.

def test_bytes_input_gives_the_probabilities_of_the_rest_face_bit_for_bit(server, client):
    images = jpegs(3) + [support.encode(support.draw_picture(COLOURS[1], 40, seed=9), "PNG")]
    result = client.infer(MODEL, [bytes_input(images)], request_id="same-as-rest")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (4, 3)
    assert probabilities.tobytes() == rest_probabilities(server, images).tobytes()
    answer = result.get_response()
    assert (answer.model_name, answer.model_version, answer.id) == (MODEL, "1", "same-as-rest")
    # tritonclient sends its inputs raw, so the answer comes back raw: both outputs, as no
    # output was named, the verdict as tritonclient reads a BOOL tensor.
    assert len(answer.raw_output_contents) == 2
    unknown = result.as_numpy("unknown")
    assert unknown.dtype == np.bool_ and unknown.shape == (4,)


def test_uint8_pixels_give_the_same_probabilities_as_the_encoded_images(client):
    images = jpegs(2)
    tensor = triton.InferInput("pixels", [2, *IMAGE_SIZE], "UINT8")
    tensor.set_data_from_numpy(pixels_of(images))
    from_pixels = client.infer(MODEL, [tensor], model_version="1").as_numpy("probabilities")
    from_images = client.infer(MODEL, [bytes_input(images)]).as_numpy("probabilities")
    assert from_pixels.tobytes() == from_images.tobytes()


def test_classification_gives_the_rest_faces_labels(server, client):
    images = jpegs(2)
    outputs = [triton.InferRequestedOutput("probabilities", class_count=3)]
    labels = client.infer(MODEL, [bytes_input(images)], outputs=outputs).as_numpy("probabilities")
    assert labels.shape == (2, 3) and labels.dtype == np.object_
    assert labels.tolist() == rest_probabilities(server, images, class_count=3).tolist()
    assert all(len(element.split(b":")) == 3 for element in labels.ravel())


def test_typed_contents_in_give_typed_contents_out(client, server):
    images = jpegs(2)
    raw = client.infer(MODEL, [bytes_input(images)]).as_numpy("probabilities")
    answer, _ = raw_call(server, "ModelInfer", typed_request(images=images),
                         service_pb2.ModelInferResponse)
    assert not answer.raw_output_contents and answer.id == "typed"
    output, unknown = answer.outputs
    assert unknown.datatype == "BOOL" and len(unknown.contents.bool_contents) == 2
    typed = np.array(output.contents.fp32_contents, np.float32).reshape(output.shape)
    assert typed.tobytes() == raw.tobytes()
    answer, _ = raw_call(server, "ModelInfer", typed_request(pixels=pixels_of(images)),
                         service_pb2.ModelInferResponse)
    typed = np.array(answer.outputs[0].contents.fp32_contents, np.float32)
    assert typed.tobytes() == raw.tobytes()
    # Asked for, raw data comes back raw even for typed inputs (binary_data_output).
    answer, _ = raw_call(server, "ModelInfer",
                         typed_request(images=images, parameters={"binary_data_output": True}),
                         service_pb2.ModelInferResponse)
    assert answer.raw_output_contents[0] == raw.tobytes()


def test_typed_classification_comes_back_as_bytes_contents(server):
    request = typed_request(images=jpegs(1))
    request.outputs.add(name="probabilities").parameters["classification"].int64_param = 2
    answer, _ = raw_call(server, "ModelInfer", request, service_pb2.ModelInferResponse)
    (output,) = answer.outputs
    assert output.datatype == "BYTES" and list(output.shape) == [1, 2]
    assert len(output.contents.bytes_contents) == 2


def test_the_request_id_comes_back_and_is_logged(server):
    request_id = f"grpc-{uuid.uuid4().hex[:12]}"
    _, trailing = raw_call(server, "ModelInfer", typed_request(images=jpegs(2)),
                           service_pb2.ModelInferResponse, metadata=[("x-request-id", request_id)])
    assert trailing["x-request-id"] == request_id
    line = support.poll(lambda: [entry for entry in log_entries(server)
                                 if entry.get("request_id") == request_id], 10, server.log)[0]
    assert line["protocol"] == "grpc" and line["status"] == "OK"
    assert line["path"] == f"/{SERVICE}/ModelInfer"
    assert (line["model"], line["model_version"], line["images"]) == (MODEL, 1, 2)
    assert line["client"] == "127.0.0.1"


def log_entries(server):
    """The JSON lines the service logged."""
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def test_grpc_calls_are_counted_in_the_same_series_as_http(server, client):
    def counted():
        text = requests.get(server.url("/metrics"), timeout=10).text
        images = float(next(line.split()[1] for line in text.splitlines()
                            if line.startswith("images_classified_total ")))
        calls = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("http_requests_total{") and 'protocol="grpc"' in line
                    and f'route="/{SERVICE}/ModelInfer"' in line and 'status="OK"' in line)
        return images, calls

    before = counted()
    client.infer(MODEL, [bytes_input(jpegs(3))])
    assert counted() == (before[0] + 3, before[1] + 1)
    text = requests.get(server.url("/metrics"), timeout=10).text
    assert 'protocol="http"' in text  # the /metrics requests themselves


# Errors: a status code for every mistake, never UNKNOWN.

def test_an_unknown_model_or_version_is_not_found(client):
    assert grpc_error(client.infer, "cats", [bytes_input(jpegs(1))])[0] == "StatusCode.NOT_FOUND"
    status, message = grpc_error(client.infer, MODEL, [bytes_input(jpegs(1))], model_version="2")
    assert status == "StatusCode.NOT_FOUND" and "loaded versions: 1" in message
    assert grpc_error(client.get_model_metadata, MODEL, "7")[0] == "StatusCode.NOT_FOUND"
    assert grpc_error(client.get_model_metadata, "cats")[0] == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("tensor, expected", [
    (("image", [1, 16, 16, 3], "UINT8", np.zeros((1, 16, 16, 3), np.uint8)), "BYTES"),
    (("pixels", [1, 16, 16, 3], "FP32", np.zeros((1, 16, 16, 3), np.float32)), "UINT8"),
    (("pixels", [1, 8, 8, 3], "UINT8", np.zeros((1, 8, 8, 3), np.uint8)), "[N, 16, 16, 3]"),
    (("photo", [1], "BYTES", np.array([b"x"], dtype=np.object_)), "exactly one input"),
], ids=["wrong-datatype-image", "wrong-datatype-pixels", "wrong-shape", "unknown-input"])
def test_a_bad_tensor_is_invalid_argument(client, tensor, expected):
    name, shape, datatype, data = tensor
    infer_input = triton.InferInput(name, shape, datatype)
    infer_input.set_data_from_numpy(data)
    status, message = grpc_error(client.infer, MODEL, [infer_input])
    assert status == "StatusCode.INVALID_ARGUMENT" and expected in message


def test_raw_contents_that_do_not_match_the_shape_are_invalid_argument(server):
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="pixels", datatype="UINT8", shape=[1, *IMAGE_SIZE])
    request.raw_input_contents.append(b"\0" * 100)
    code, details = raw_error(server, "ModelInfer", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "needs 768" in details
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="image", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(b"\x05\0\0\0abc")
    code, details = raw_error(server, "ModelInfer", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "announces 5 bytes" in details


def test_bytes_that_are_no_request_are_invalid_argument(server):
    code, details = raw_error(server, "ModelInfer", b"\xff\xff\xff\xff not protobuf")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ModelInferRequest" in details


def test_an_undecodable_image_is_invalid_argument(client):
    status, _ = grpc_error(client.infer, MODEL, [bytes_input([b"hello, I am text"])])
    assert status == "StatusCode.INVALID_ARGUMENT"
    image = jpegs(1, size=64)[0]
    status, _ = grpc_error(client.infer, MODEL, [bytes_input([image[: len(image) // 2]])])
    assert status == "StatusCode.INVALID_ARGUMENT"


def test_over_a_limit_is_resource_exhausted(client):
    status, message = grpc_error(client.infer, MODEL, [bytes_input(jpegs(MAX_IMAGES + 1))])
    assert status == "StatusCode.RESOURCE_EXHAUSTED" and f"limit is {MAX_IMAGES}" in message
    # A message over MAX_REQUEST_BYTES is refused before it is read.
    status, _ = grpc_error(client.infer, MODEL, [bytes_input([b"\0" * (MAX_BYTES + 1)])])
    assert status == "StatusCode.RESOURCE_EXHAUSTED"
    # A picture over the pixel limit too (MAX_IMAGE_PIXELS is the default 40 million here).
    huge = support.encode(support.draw_picture(COLOURS[0], 8), "PNG")
    huge = huge[:16] + (7000).to_bytes(4, "big") + (7000).to_bytes(4, "big") + huge[24:]
    assert grpc_error(client.infer, MODEL, [bytes_input([huge])])[0] in (
        "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.INVALID_ARGUMENT")


def test_an_empty_model_name_is_invalid_argument(server):
    request = typed_request(images=jpegs(1))
    request.model_name = ""
    code, details = raw_error(server, "ModelInfer", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "model name" in details


def test_the_api_key_applies_to_inference(start_service, models_dir):
    server = start_service(models_dir, api_key="sesame", grpc_enabled=1).wait_grpc_ready()
    client = triton.InferenceServerClient(server.grpc_target)
    try:
        status, message = grpc_error(client.infer, MODEL, [bytes_input(jpegs(1))])
        assert status == "StatusCode.UNAUTHENTICATED" and "API key" in message
        wrong = grpc_error(client.infer, MODEL, [bytes_input(jpegs(1))],
                           headers={"authorization": "Bearer open"})
        assert wrong[0] == "StatusCode.UNAUTHENTICATED"
        for headers in ({"authorization": "Bearer sesame"}, {"x-api-key": "sesame"}):
            result = client.infer(MODEL, [bytes_input(jpegs(1))], headers=headers)
            assert result.as_numpy("probabilities").shape == (1, 3)
        # Health and metadata stay open, as over HTTP.
        assert client.is_server_ready() and client.get_model_metadata(MODEL).name == MODEL
    finally:
        client.close()


def test_without_a_model_it_is_unavailable_and_not_serving(start_service, tmp_path):
    server = start_service(tmp_path / "empty", wait_ready=False, grpc_enabled=1)
    support.poll(lambda: server.log().count('"event": "grpc_listening"') == 1, 60, server.log)
    client = triton.InferenceServerClient(server.grpc_target)
    try:
        assert client.is_server_live() and not client.is_server_ready()
        assert not client.is_model_ready(MODEL)
        status, _ = grpc_error(client.infer, MODEL, [bytes_input(jpegs(1))])
        assert status == "StatusCode.UNAVAILABLE"
    finally:
        client.close()
    assert health_status(server) == health_pb2.HealthCheckResponse.NOT_SERVING


# The standard health service and reflection.

def health_status(server, service=""):
    """What grpc.health.v1 says of `service`."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10).status


def test_the_health_service_says_serving_once_the_model_is_ready(server):
    assert health_status(server) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(server, SERVICE) == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as raised:
        health_status(server, "no.such.Service")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_every_service_so_it_can_be_called(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) == {
            SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName(SERVICE)
        assert [method.name for method in service.methods] == [
            "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
            "ModelInfer", "RepositoryIndex"]
        # As grpcurl does: messages built from what reflection said, then a call.
        method = service.methods_by_name["RepositoryIndex"]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(f"/{SERVICE}/RepositoryIndex",
                                   request_serializer=request_class.SerializeToString,
                                   response_deserializer=response_class.FromString)
        answer = call(request_class(ready=True), timeout=10)
    assert [(model.name, model.version, model.state) for model in answer.models] == [
        (MODEL, "1", "READY")]


# Stopping: calls in flight finish, new ones are refused.

def large_png(side=2500):
    """A PNG that takes a while to decode (about 0.1 s): it keeps a call in flight."""
    ramp = np.add.outer(np.arange(side), np.arange(side)) % 256
    pixels = np.stack([ramp, ramp[::-1], ramp.T], -1).astype(np.uint8)
    return support.encode(Image.fromarray(pixels), "PNG", compress_level=1)


def test_sigterm_lets_calls_in_flight_finish(start_service, models_dir):
    server = start_service(models_dir, grpc_enabled=1, threads=16).wait_grpc_ready()
    images = [large_png()] * 4
    outcomes, started = [], threading.Event()

    def call(index):
        request_id = f"drain-{index}"
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = channel.unary_unary(
                f"/{SERVICE}/ModelInfer",
                request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                response_deserializer=service_pb2.ModelInferResponse.FromString)
            started.set()
            try:
                stub(typed_request(images=images), metadata=[("x-request-id", request_id)],
                     timeout=60)
                outcomes.append((request_id, "OK"))
            except grpc.RpcError as error:
                outcomes.append((request_id, error.code().name))

    with ThreadPoolExecutor(12) as pool:
        for index in range(12):
            pool.submit(call, index)
        started.wait(10)
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0
    entries = log_entries(server)
    stopping = next(index for index, entry in enumerate(entries)
                    if entry.get("event") == "grpc_stopping")
    answered = {entry["request_id"]: entry["status"] for entry in entries[stopping:]
                if str(entry.get("request_id", "")).startswith("drain-")}
    # Some calls were still in flight when the server began to stop, and they finished.
    assert answered and set(answered.values()) == {"OK"}, entries[stopping:]
    assert all(dict(outcomes)[request_id] == "OK" for request_id in answered)
    # Every call either finished or was refused at once; none was cut off.
    assert {status for _, status in outcomes} <= {"OK", "UNAVAILABLE"}
    with grpc.insecure_channel(server.grpc_target) as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)


def test_base64_is_not_expected_over_grpc(server):
    # Over gRPC a BYTES element is the file itself: base64 text is no image.
    encoded = base64.b64encode(jpegs(1)[0])
    code, _ = raw_error(server, "ModelInfer", typed_request(images=[encoded]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_grpc_port_that_cannot_be_listened_on_stops_the_service(start_service, models_dir):
    # Held without SO_REUSEPORT, so gRPC cannot share it: as when gunicorn cannot bind PORT.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        server = start_service(models_dir, wait_ready=False, grpc_enabled=1,
                               grpc_port=holder.getsockname()[1])
        assert server.process.wait(90) == 3
    assert "gRPC cannot listen at" in server.log() and "Worker failed to boot" in server.log()


def test_the_interface_compiles_in_a_process_that_has_loaded_tensorflow():
    # protoc's own C++ protobuf aborts a process holding TensorFlow's: codegen runs it apart.
    program = ("import tensorflow, tritonclient.grpc\n"
               "from service.grpc import codegen\n"
               "codegen.generate()\nprint(codegen.is_current())\n")
    finished = subprocess.run([sys.executable, "-c", program], cwd=support.ROOT,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.strip().splitlines()[-1] == "True"


def test_tritonclients_timeout_in_microseconds_is_the_calls_deadline(client):
    # Triton's schedule-policy "timeout" as its client sends it: 1 µs has passed before
    # the call can run, so it is refused and not run; a generous one is answered.
    status, message = grpc_error(client.infer, MODEL, [bytes_input(jpegs(1))], timeout=1)
    assert status == "StatusCode.DEADLINE_EXCEEDED" and "deadline" in message
    assert client.infer(MODEL, [bytes_input(jpegs(1))], timeout=5_000_000).as_numpy(
        "probabilities").shape == (1, 3)
    status, _ = grpc_error(client.infer, MODEL, [bytes_input(jpegs(1))],
                           headers={"x-request-timeout": "soon"})
    assert status == "StatusCode.INVALID_ARGUMENT"

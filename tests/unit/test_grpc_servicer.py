"""The gRPC RPCs and worker roles, on the real app with stand-in models and no server."""

import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.grpc.messages import inference, repository
from service.grpc.servicer import Call, InferenceServicer, UnauthenticatedError, peer_address
from service.models.routing import RoutingError
from service.observability.request_log import forwarded_client
from service.open_inference.tensors import TensorError
from service.process.gunicorn_worker import assign_index
from service.serving import serving_of


@pytest.fixture
def servicer_of(make_client):
    """A servicer of the real app's Serving, whose models are ColourModels."""

    def make(**settings):
        client = make_client(max_images_per_request=4, **settings)
        return InferenceServicer(serving_of(client.application), ThreadPoolExecutor(2))

    return make


def call(**metadata):
    """A call's metadata, as the servicer sees it."""
    return Call(metadata, "test")


def pixels_request(colour, count=1, model="colours"):
    """A ModelInferRequest of `count` pictures of one colour, raw as Triton's client sends."""
    pixels = np.zeros((count, 16, 16, 3), np.uint8)
    pixels[..., :] = colour
    message = inference.ModelInferRequest(model_name=model, raw_input_contents=[pixels.tobytes()])
    message.inputs.add(name="pixels", datatype="UINT8", shape=list(pixels.shape))
    return message


def test_inference_answers_with_the_models_probabilities_raw(servicer_of):
    servicer = servicer_of()
    metadata = call()
    answer = servicer.model_infer(pixels_request((250, 10, 10), count=2), metadata)
    assert (answer.model_name, answer.model_version) == ("colours", "7")
    probabilities = np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(2, 3)
    assert probabilities.argmax(axis=1).tolist() == [2, 2]  # red
    assert metadata.images == 2 and metadata.route.model.version == 7


@pytest.mark.parametrize("metadata", [{}, {"authorization": "Bearer wrong"},
                                      {"x-api-key": "wrong"}])
def test_without_the_api_key_inference_is_unauthenticated(servicer_of, metadata):
    with pytest.raises(UnauthenticatedError):
        servicer_of(api_key="sesame").model_infer(pixels_request((0, 0, 250)), call(**metadata))


@pytest.mark.parametrize("metadata", [{"authorization": "Bearer sesame"},
                                      {"authorization": "bearer  sesame "},
                                      {"x-api-key": "sesame"}])
def test_either_metadata_key_carries_the_api_key(servicer_of, metadata):
    answer = servicer_of(api_key="sesame").model_infer(pixels_request((0, 0, 250)),
                                                       call(**metadata))
    assert answer.raw_output_contents


def test_unknown_models_and_versions_are_routing_errors(servicer_of):
    servicer = servicer_of()
    with pytest.raises(RoutingError) as raised:
        servicer.model_infer(pixels_request((1, 1, 1), model="cats"), call())
    assert raised.value.kind == "model_not_found"
    message = pixels_request((1, 1, 1))
    message.model_version = "8"
    with pytest.raises(RoutingError) as raised:
        servicer.model_infer(message, call())
    assert raised.value.kind == "version_not_found"
    message.model_name = ""
    with pytest.raises(TensorError, match="model name"):
        servicer.model_infer(message, call())
    with pytest.raises(TensorError, match="limit is 4"):
        servicer.model_infer(pixels_request((1, 1, 1), count=5), call())


def test_health_metadata_and_the_index(servicer_of):
    servicer = servicer_of()
    assert servicer.server_live(None, call()).live
    assert servicer.server_ready(None, call()).ready
    ready = servicer.model_ready
    assert ready(inference.ModelReadyRequest(name="colours", version="7"), call()).ready
    assert not ready(inference.ModelReadyRequest(name="colours", version="8"), call()).ready
    assert not ready(inference.ModelReadyRequest(name="cats"), call()).ready
    metadata = servicer.model_metadata(inference.ModelMetadataRequest(name="colours"), call())
    assert [tensor.name for tensor in metadata.inputs] == ["image", "pixels"]
    assert list(metadata.outputs[0].shape) == [-1, 3]
    assert metadata.properties["classes"] == '["blue", "green", "red"]'
    index = servicer.repository_index(repository.RepositoryIndexRequest(), call())
    assert [(model.name, model.version, model.state) for model in index.models] == [
        ("colours", "7", "READY")]


def test_the_servicer_answers_every_rpc_of_the_service(servicer_of):
    handler = servicer_of().generic_handler()
    for name in ("ServerLive", "ModelInfer", "RepositoryIndex"):
        details = types.SimpleNamespace(method=f"/inference.GRPCInferenceService/{name}",
                                        invocation_metadata=())
        assert handler.service(details) is not None
    details = types.SimpleNamespace(method="/inference.GRPCInferenceService/ModelConfig",
                                    invocation_metadata=())
    assert handler.service(details) is None  # UNIMPLEMENTED, as gRPC answers by itself


def test_peer_and_forwarded_addresses():
    assert peer_address("ipv4:10.0.0.7:51234") == "10.0.0.7"
    assert peer_address("ipv6:[::1]:51234") == "::1"
    assert peer_address("unix:/tmp/socket") == "unix:/tmp/socket"
    assert forwarded_client("203.0.113.9, 10.0.0.2", 1, "10.0.0.3") == "10.0.0.2"
    assert forwarded_client("203.0.113.9, 10.0.0.2", 2, "10.0.0.3") == "203.0.113.9"
    assert forwarded_client("", 1, "10.0.0.3") == "10.0.0.3"
    assert forwarded_client("203.0.113.9", 0, "10.0.0.3") == "10.0.0.3"


class Arbiter:
    """What assign_index reads of gunicorn's master: its workers and their count."""

    def __init__(self, num_workers):
        self.num_workers, self.WORKERS, self.age = num_workers, {}, 0

    def fork(self, workers):
        worker = types.SimpleNamespace(age=self.age)
        self.age += 1
        assign_index(self, worker, workers)
        self.WORKERS[worker.age] = worker
        return worker.index

    def stop_oldest(self):
        del self.WORKERS[min(self.WORKERS)]


def test_workers_take_every_index_once_and_a_replacement_takes_the_missing_one():
    master = Arbiter(3)
    assert [master.fork(3) for _ in range(3)] == [0, 1, 2]
    del master.WORKERS[1]  # the second worker died
    assert master.fork(3) == 1


def test_a_reload_forks_a_whole_new_set_of_indexes():
    master = Arbiter(2)
    [master.fork(2) for _ in range(2)]
    # HUP: gunicorn forks num_workers new ones, then stops the oldest.
    assert [master.fork(2) for _ in range(2)] == [0, 1]
    master.num_workers = 3  # TTIN: one more, beyond the count
    assert master.fork(2) == 2

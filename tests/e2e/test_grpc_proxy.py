"""gRPC through the compose proxy: answers, request ids, slow streams, replicas, SIGTERM.

The tests run in file order against one compose project (tests/e2e/compose.py): first with
one api replica, then with two, then with none. Every connection goes to 127.0.0.1 on the
proxy's published gRPC port, with Triton's gRPC client unless a test needs raw HTTP/2.
"""

import socket
import threading
import time
import uuid

import grpc
import h2.config
import h2.connection
import h2.events
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tritonclient.utils import InferenceServerException

from benchmarks.grpc_replica_stops import RETRY_CHANNEL_ARGS
from tests import support
from tests.e2e.compose import MODEL_NAME, running_project, skip_without_compose
from tests.e2e.test_proxy import Load, healthy_replicas, log_entries, wait_for_entry

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

skip_without_compose()

SERVICE = "inference.GRPCInferenceService"
JPEG = support.encode(support.draw_picture(support.SHAPE_COLOURS["red"], size=32))
SLOW_STREAMS = 60
HOLD_SECONDS = 25
TRICKLE_SECONDS = 2
NORMAL_EVERY = 0.5
ANSWER_WITHIN = 1.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The compose stack with its defaults (one api replica), ready to answer gRPC."""
    with running_project(tmp_path_factory.mktemp("grpc-proxy")) as project:
        project.wait_ready()
        support.poll(lambda: health(project) == health_pb2.HealthCheckResponse.SERVING, 120,
                     lambda: f"gRPC never served through the proxy{grpc_lines(project)}"
                             f"{project.logs('proxy')}")
        yield project


def health(project):
    """What grpc.health.v1 says through the proxy, or None when the call fails."""
    with grpc.insecure_channel(project.grpc_target) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                             timeout=5).status
        except grpc.RpcError:
            return None


def grpc_lines(project):
    """The api's log lines about its gRPC workers, to explain a failure."""
    lines = [str(entry) for entry in log_entries(project)
             if "grpc" in str(entry.get("message", "")).lower() or entry.get("level") == "ERROR"]
    return "\ngRPC lines of the api log:\n" + "\n".join(lines[-30:])


def image_input():
    """One JPEG as a BYTES input."""
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([JPEG], dtype=np.object_))
    return tensor


def infer(client, request_id=None):
    """One classification through the proxy; the probabilities."""
    headers = {"x-request-id": request_id} if request_id else None
    return client.infer(MODEL_NAME, [image_input()], headers=headers,
                        client_timeout=30).as_numpy("probabilities")


def test_grpc_through_the_proxy_answers_as_rest_does(stack):
    client = triton.InferenceServerClient(stack.grpc_target)
    rest = triton_http.InferenceServerClient(stack.base_url.removeprefix("http://"))
    try:
        assert client.is_server_ready() and client.is_model_ready(MODEL_NAME)
        over_grpc = infer(client)
        tensor = triton_http.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([JPEG], dtype=np.object_))
        over_rest = rest.infer(MODEL_NAME, [tensor]).as_numpy("probabilities")
        assert over_grpc.tobytes() == over_rest.tobytes()
    finally:
        client.close()
        rest.close()
    with grpc.insecure_channel(stack.grpc_target) as channel:
        assert SERVICE in ProtoReflectionDescriptorDatabase(channel).get_services()


def test_a_request_id_and_the_client_reach_the_api_log(stack):
    request_id = f"grpc-proxy-{uuid.uuid4().hex[:12]}"
    client = triton.InferenceServerClient(stack.grpc_target)
    try:
        infer(client, request_id)
    finally:
        client.close()
    [api_line] = wait_for_entry(stack, "api", request_id)
    [proxy_line] = wait_for_entry(stack, "proxy", request_id)
    assert api_line["protocol"] == "grpc" and api_line["status"] == "OK"
    assert api_line["path"] == f"/{SERVICE}/ModelInfer" and proxy_line["status"] == 200
    # The address nginx saw, passed on in X-Forwarded-For and trusted for one hop.
    assert api_line["client"] == proxy_line["client"]


def test_the_proxys_own_refusals_are_grpc_status_codes(stack):
    client = triton.InferenceServerClient(stack.grpc_target)
    try:
        tensor = triton.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"\0" * (21 * 1024 * 1024)], dtype=np.object_))
        with pytest.raises(InferenceServerException) as raised:
            client.infer(MODEL_NAME, [tensor], client_timeout=60)
    finally:
        client.close()
    assert raised.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


class SlowStreams:
    """`count` HTTP/2 streams of ModelInfer calls through the proxy that never finish: half
    send their headers and nothing more, half trickle a message's bytes, one every
    TRICKLE_SECONDS. A stream the proxy ends is opened again at once, as an attacker would."""

    def __init__(self, port, count):
        self.port, self.count = port, count
        self.connections = []
        self.ended = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, trickle):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, [
            (":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"),
            (":path", f"/{SERVICE}/ModelInfer"), ("content-type", "application/grpc"),
            ("te", "trailers")])
        if trickle:
            # A gRPC message header announcing a million bytes that will never all come.
            connection.send_data(stream, b"\0" + (1_000_000).to_bytes(4, "big"))
        sock.sendall(connection.data_to_send())
        sock.setblocking(False)
        return [sock, connection, stream, trickle]

    def start(self):
        self.connections = [self._open(index % 2 == 1) for index in range(self.count)]
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(TRICKLE_SECONDS):
            for entry in self.connections:
                sock, connection, stream, trickle = entry
                if self._ended(sock, connection):
                    sock.close()
                    entry[:] = self._open(trickle)
                    self.ended += 1
                    continue
                if trickle:
                    try:
                        connection.send_data(stream, b"\x01")
                        sock.sendall(connection.data_to_send())
                    except (OSError, h2.exceptions.ProtocolError):
                        pass  # ended by the proxy: the next turn opens it again

    @staticmethod
    def _ended(sock, connection):
        """Whether the proxy answered, reset or closed the stream or the connection."""
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if not data:
            return True
        events = connection.receive_data(data)
        return any(isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset,
                                      h2.events.ConnectionTerminated, h2.events.ResponseReceived))
                   for event in events)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=30)
        for sock, *_ in self.connections:
            sock.close()


def test_streams_that_send_nothing_or_slowly_do_not_hold_the_server(stack):
    attack = SlowStreams(int(stack.environment["API_GRPC_PORT"]), SLOW_STREAMS).start()
    answers = []
    client = triton.InferenceServerClient(stack.grpc_target)
    try:
        deadline = time.monotonic() + HOLD_SECONDS
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                infer(client)
                outcome = "OK"
            except InferenceServerException as error:
                outcome = error.status()
            answers.append((outcome, round(time.monotonic() - started, 3)))
            time.sleep(max(0.0, NORMAL_EVERY - (time.monotonic() - started)))
    finally:
        client.close()
        attack.stop()
    late = [answer for answer in answers if answer[0] != "OK" or answer[1] > ANSWER_WITHIN]
    assert len(answers) >= HOLD_SECONDS / NORMAL_EVERY / 2, answers
    assert not late, f"{len(late)} of {len(answers)} late or failed: {late[:10]}{stack.logs()}"
    # The streams that sent nothing were ended by the proxy once their body was 10 s late.
    assert attack.ended >= SLOW_STREAMS // 2, attack.ended
    assert health(stack) == health_pb2.HealthCheckResponse.SERVING


class GrpcLoad(Load):
    """test_proxy's load of kept-alive clients, each calling ModelInfer over gRPC instead,
    with the retry policy docs/grpc.md gives users (UNAVAILABLE is sent again)."""

    def _client(self, index):
        client = triton.InferenceServerClient(self.project.grpc_target,
                                              channel_args=RETRY_CHANNEL_ARGS)
        try:
            sent = 0
            while not self._stop.is_set() and sent < 5000:
                sent += 1
                try:
                    infer(client, f"{self.prefix}-{index}-{sent}")
                    outcome = 200  # as test_proxy's Load counts an answer
                except InferenceServerException as error:
                    outcome = f"{error.status()} {error.message()}"
                self.answers.append((time.monotonic(), outcome))
        finally:
            client.close()


def test_two_replicas_each_answer_a_share_of_the_calls(stack):
    stack.compose("up", "--detach", "--no-build", "--scale", "api=2", timeout=240)
    replicas = healthy_replicas(stack, 2)
    support.poll(lambda: health(stack) == health_pb2.HealthCheckResponse.SERVING, 60, stack.logs)
    prefix = f"grpc-share-{uuid.uuid4().hex[:8]}"
    with GrpcLoad(stack, prefix) as load:
        time.sleep(6)
    assert load.failures() == []

    def served():
        return {replica: sum(1 for entry in log_entries(stack, container=replica)
                             if str(entry.get("request_id", "")).startswith(prefix))
                for replica in replicas}

    def every_call_logged():
        found = served()
        return found if sum(found.values()) == len(load.answers) else None

    # A call's line is written just after its answer: the last ones may still be on the way.
    counts = support.poll(every_call_logged, 15, lambda: f"{served()} of {len(load.answers)}")
    assert min(counts.values()) >= len(load.answers) / 2 / 3, counts


def test_sigterm_to_one_replica_under_load_loses_no_call(stack):
    replicas = healthy_replicas(stack, 2)
    with GrpcLoad(stack, f"grpc-stop-{uuid.uuid4().hex[:8]}") as load:
        time.sleep(3)
        # SIGTERM: gunicorn's master signals every worker; a gRPC worker closes its port,
        # takes up the calls already received, then finishes those in flight; `docker stop`
        # waits for it. A call gRPC's own stop cancelled would come back CANCELLED, which no
        # retry policy sends again; one nginx had just written to the replica as it closed
        # its port comes back UNAVAILABLE, and the client's retry policy sends it again.
        stack.docker("stop", replicas[0])
        stopped_at = time.monotonic()
        time.sleep(4)
    assert load.failures() == [], load.failures()[:10]
    assert sum(1 for answered, _ in load.answers if answered > stopped_at) > 50
    assert stack.compose("ps", "--quiet", "api").stdout.split() == [replicas[1]]


def test_with_no_replica_left_calls_are_unavailable(stack):
    stack.compose("stop", "api", timeout=120)
    client = triton.InferenceServerClient(stack.grpc_target)
    try:
        deadline = time.monotonic() + 15
        while True:
            with pytest.raises(InferenceServerException) as raised:
                infer(client)
            if raised.value.status() == "StatusCode.UNAVAILABLE" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        client.close()
    assert raised.value.status() == "StatusCode.UNAVAILABLE", raised.value.message()

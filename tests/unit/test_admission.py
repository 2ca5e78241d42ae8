"""Admission and deadlines: refusals before the work, on both faces, with stand-in models."""

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from prometheus_client import REGISTRY

from service.grpc.servicer import PUSHBACK_KEY, Call, InferenceServicer
from service.open_inference.tensors import TensorError
from service.runtime import admission
from service.runtime.admission import (
    Admission,
    AdmissionError,
    Deadline,
    deadline_of,
    refuse_on_this_thread,
    socket_closed,
)
from service.runtime.batcher import Batcher
from service.serving import serving_of
from tests import support
from tests.unit.test_batcher import FakeModel, images_of
from tests.unit.test_grpc_servicer import pixels_request


def refusals(reason):
    """Refusals counted so far for `reason` (this process's registry)."""
    return REGISTRY.get_sample_value("requests_refused_total", {"reason": reason}) or 0


IMAGE = support.encode(support.draw_picture(support.SHAPE_COLOURS["green"]))
PIXELS = {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 16, 16, 3],
                      "data": [0] * 768}]}


def refused_kind(action):
    """The kind of the AdmissionError `action` raises."""
    with pytest.raises(AdmissionError) as refused:
        action()
    return refused.value.kind


# Deadlines.

def test_the_deadline_header_is_milliseconds_from_arrival_and_the_default_applies_without():
    assert deadline_of("250", None, 10_000).seconds == 0.25
    assert deadline_of(None, None, 10_000).seconds == 10.0
    assert deadline_of(" ", None, 2_000).seconds == 2.0
    assert deadline_of("0", None, 10_000).remaining() <= 0
    # The proxy stamped the arrival 0.4 s ago: that time counts against the deadline.
    stamped = deadline_of("1000", f"t={time.time() - 0.4:.3f}", 10_000)
    assert 0.5 < stamped.remaining() < 0.65
    # A gRPC call's own deadline, when it is sooner.
    assert deadline_of(None, None, 10_000, call_remaining=0.3).seconds == pytest.approx(0.3,
                                                                                       abs=0.01)


@pytest.mark.parametrize("stamp", ["", "soon", "t=abc", f"t={time.time() + 60:.3f}",
                                   f"t={time.time() - 86_400:.3f}"])
def test_an_arrival_stamp_that_cannot_be_believed_is_ignored(stamp):
    assert deadline_of("1000", stamp, 10_000).remaining() > 0.95


@pytest.mark.parametrize("raw", ["-1", "abc", "1e3", "600001", "99999999999", "0x10", "1,5"])
def test_a_deadline_header_that_is_negative_huge_or_no_number_is_invalid(raw):
    assert refused_kind(lambda: deadline_of(raw, None, 10_000)) == "invalid_deadline"


# Admission.

def test_each_version_has_its_own_bound_and_a_place_is_freed_when_answered():
    gate = Admission(per_version=2, retry_after=3)
    later = Deadline(time.monotonic(), 10)
    with gate.admit("colours", 7, later), gate.admit("colours", 7, later):
        with pytest.raises(AdmissionError) as refused:
            gate.admit("colours", 7, later)
        assert (refused.value.kind, refused.value.retry_after) == ("overloaded", 3)
        assert gate.overloaded()
        with gate.admit("colours", 8, later):  # the canary's own bound
            pass
    with gate.admit("colours", 7, later):
        assert not gate.overloaded()


def test_with_admission_off_nothing_is_refused_for_load_but_deadlines_still_hold():
    gate = Admission(per_version=1, retry_after=1, enabled=False)
    later = Deadline(time.monotonic(), 10)
    with gate.admit("colours", 7, later), gate.admit("colours", 7, later):
        pass
    assert refused_kind(lambda: gate.admit("colours", 7, Deadline(time.monotonic(), 0))) == \
        "deadline_exceeded"


def test_a_refusal_lane_thread_refuses_every_admission():
    with ThreadPoolExecutor(1, initializer=refuse_on_this_thread) as lane:
        refusal = lane.submit(refused_kind, lambda: Admission(8, 1).admit(
            "colours", 7, Deadline(time.monotonic(), 10))).result()
    assert refusal == "overloaded"


def test_a_closed_connection_is_told_from_a_pending_next_request():
    import socket

    server, client = socket.socketpair()
    with server:
        client.sendall(b"GET /next")
        assert not socket_closed(server)
        server.recv(100)
        assert not socket_closed(server)
        client.close()
        assert socket_closed(server)
    assert not socket_closed(None)


# The batcher drops what is no longer wanted before any model time.

def test_a_queued_request_whose_deadline_passes_leaves_the_queue_before_model_time():
    model = FakeModel(seconds=0.4)
    batcher = Batcher(max_batch_size=32, max_wait_seconds=0.0)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(batcher.submit, model, images_of(1))
        time.sleep(0.05)  # the first is in its model call
        ticket = admission.Ticket(Deadline(time.monotonic(), 0.1), lambda: False)
        started = time.monotonic()
        assert refused_kind(lambda: batcher.submit(model, images_of(2), None, ticket)) == \
            "deadline_exceeded"
        assert time.monotonic() - started < 0.3  # left at its deadline, not after the call
        first.result(timeout=5)
    assert model.batch_sizes == [1]


def test_a_queued_request_whose_caller_has_gone_is_not_run():
    model = FakeModel(seconds=0.2)
    batcher = Batcher(max_batch_size=32, max_wait_seconds=0.0)
    gone = threading.Event()
    ticket = admission.Ticket(Deadline(time.monotonic(), 10), gone.is_set)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(batcher.submit, model, images_of(1))
        time.sleep(0.05)
        waiting = pool.submit(batcher.submit, model, images_of(2), None, ticket)
        time.sleep(0.05)
        gone.set()
        first.result(timeout=5)
        assert refused_kind(lambda: waiting.result(timeout=5)) == "caller_gone"
    assert model.batch_sizes == [1]


# HTTP: /predict and /v2.

@pytest.mark.parametrize("raw", ["-5", "soon", "9999999999"])
def test_a_bad_deadline_header_is_a_400(client, raw):
    response = client.post("/predict", data=IMAGE, content_type="image/jpeg",
                           headers={"X-Request-Timeout": raw})
    support.assert_error(response, 400, "invalid_deadline")
    assert "X-Request-Timeout" in response.get_json()["error"]["message"]


def test_a_deadline_of_zero_is_refused_at_once_and_not_run(client):
    model = client.application.extensions["model_repository"].model("colours").stable()
    before = refusals("deadline_exceeded")
    response = client.post("/predict", data=IMAGE, content_type="image/jpeg",
                           headers={"X-Request-Timeout": "0"})
    support.assert_error(response, 504, "deadline_exceeded")
    v2 = client.post("/v2/models/colours/infer", json={**PIXELS, "parameters": {"timeout": 0}})
    assert v2.status_code == 504 and "deadline" in v2.get_json()["error"]
    assert model.batch_sizes == []
    assert refusals("deadline_exceeded") == before + 2


@pytest.mark.parametrize("timeout", ["1000", 1.5, -1, True, None])
def test_a_v2_timeout_of_the_wrong_type_is_a_400(client, timeout):
    response = client.post("/v2/models/colours/infer",
                           json={**PIXELS, "parameters": {"timeout": timeout}})
    assert response.status_code == 400
    assert "timeout" in response.get_json()["error"]


def test_a_v2_timeout_in_microseconds_is_applied_and_listed_as_schedule_policy(client):
    answer = client.post("/v2/models/colours/infer",
                         json={**PIXELS, "parameters": {"timeout": 5_000_000}})
    assert answer.status_code == 200
    assert "schedule_policy" in client.get("/v2").get_json()["extensions"]
    assert "request_deadline_seconds_bucket" in client.get("/metrics").text


def test_on_a_refusal_lane_predictions_are_503_with_retry_after_and_health_answers(client):
    def on_the_lane():
        return (client.post("/predict", data=IMAGE, content_type="image/jpeg"),
                client.post("/v2/models/colours/infer", json=PIXELS),
                client.get("/health/live"), client.get("/health/ready"), client.get("/metrics"))

    before = refusals("overloaded")
    with ThreadPoolExecutor(1, initializer=refuse_on_this_thread) as lane:
        predict, v2, live, ready, metrics = lane.submit(on_the_lane).result()
    support.assert_error(predict, 503, "overloaded")
    assert predict.headers["Retry-After"] == "1"
    assert v2.status_code == 503 and v2.headers["Retry-After"] == "1"
    assert (live.status_code, ready.status_code, metrics.status_code) == (200, 200, 200)
    assert refusals("overloaded") == before + 2
    assert "requests_refused_total" in metrics.text


# gRPC.

@pytest.fixture
def servicer(make_client):
    client = make_client(max_images_per_request=4)
    return InferenceServicer(serving_of(client.application), ThreadPoolExecutor(2))


def test_a_grpc_timeout_parameter_of_zero_is_refused_and_one_of_the_wrong_type_is_invalid(
        servicer):
    message = pixels_request((250, 10, 10))
    message.parameters["timeout"].int64_param = 0
    assert refused_kind(lambda: servicer.model_infer(message, Call({}, "t"))) == \
        "deadline_exceeded"
    message.parameters["timeout"].string_param = "1000"
    with pytest.raises(TensorError, match="timeout"):
        servicer.model_infer(message, Call({}, "t"))
    with pytest.raises(AdmissionError):
        servicer.model_infer(pixels_request((250, 10, 10)), Call({"x-request-timeout": "-1"}, "t"))


class FakeContext:
    """What the servicer's handle() asks of a grpc.aio call."""

    def __init__(self, time_remaining=None):
        self._remaining = time_remaining
        self.aborted = None

    def invocation_metadata(self):
        return ()

    def time_remaining(self):
        return self._remaining

    def peer(self):
        return "ipv4:127.0.0.1:5000"

    def set_trailing_metadata(self, metadata):
        pass

    async def abort(self, code, details, trailing_metadata=()):
        self.aborted = (code, details, dict(trailing_metadata))


def test_a_grpc_call_over_the_waiting_bound_is_unavailable_with_retry_pushback(servicer):
    servicer._waiting = servicer.serving.settings.max_waiting_requests
    context = FakeContext()
    data = pixels_request((250, 10, 10)).SerializeToString()
    asyncio.run(servicer.handle("ModelInfer", data, context))
    code, details, trailers = context.aborted
    assert code == grpc.StatusCode.UNAVAILABLE and "capacity" in details
    assert trailers[PUSHBACK_KEY] == "1000"
    live = FakeContext()  # other RPCs are never refused
    asyncio.run(servicer.handle("ServerLive", b"", live))
    assert live.aborted is None


def test_a_grpc_call_whose_own_deadline_has_passed_is_deadline_exceeded(servicer):
    context = FakeContext(time_remaining=0.0)
    asyncio.run(servicer.handle("ModelInfer", pixels_request((1, 2, 250)).SerializeToString(),
                                context))
    assert context.aborted[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servicer._waiting == 0


def test_behind_a_trusted_proxy_the_time_since_its_arrival_stamp_counts(make_client):
    stamp = {"X-Request-Start": f"t={time.time() - 2:.3f}", "X-Request-Timeout": "1000"}
    behind_proxy = make_client(trusted_proxy_hops=1)
    response = behind_proxy.post("/predict", data=IMAGE, content_type="image/jpeg",
                                 headers=stamp)
    support.assert_error(response, 504, "deadline_exceeded")
    # Without a trusted proxy, anyone could send the stamp: it is ignored.
    direct = make_client().post("/predict", data=IMAGE, content_type="image/jpeg", headers=stamp)
    assert direct.status_code == 200


def test_the_wait_for_a_thread_counts_from_when_the_worker_saw_the_request_arrive():
    admission.note_arrival(time.monotonic() - 0.4)
    try:
        waited = deadline_of("1000", None, 10_000)
    finally:
        admission.note_arrival(None)
    assert 0.5 < waited.remaining() < 0.65
    assert deadline_of("1000", None, 10_000).remaining() > 0.95


def test_the_refusal_lanes_short_answer_covers_the_classifying_routes_only():
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"from the app"]

    middleware = admission.lane_refusals(app, retry_after=2)

    def call(method, path):
        answer = {}

        def start_response(status, headers):
            answer.update(status=status, headers=dict(headers))

        body = b"".join(middleware({"REQUEST_METHOD": method, "PATH_INFO": path,
                                    "HTTP_X_REQUEST_ID": "abc-1"}, start_response))
        return answer["status"], answer["headers"], body

    assert call("POST", "/predict")[2] == b"from the app"  # not on a lane: the app
    with ThreadPoolExecutor(1, initializer=refuse_on_this_thread) as lane:
        refused = {path: lane.submit(call, "POST", path).result()
                   for path in ("/predict", "/models/colours/versions/7/predict",
                                "/v2/models/colours/infer")}
        passed = [lane.submit(call, method, path).result()[2]
                  for method, path in (("GET", "/health/live"), ("GET", "/metrics"),
                                       ("POST", "/v2/repository/index"), ("GET", "/predict"))]
    for status, headers, body in refused.values():
        assert status.startswith("503") and headers["Retry-After"] == "2"
        assert headers["X-Request-ID"] == "abc-1" and headers["X-Content-Type-Options"]
        assert int(headers["Content-Length"]) == len(body)
    assert json.loads(refused["/predict"][2])["error"]["code"] == "overloaded"
    assert "capacity" in json.loads(refused["/v2/models/colours/infer"][2])["error"]
    assert passed == [b"from the app"] * 4

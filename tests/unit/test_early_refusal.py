"""The worker's refusal from a request's bytes: only whole, simple classifying requests, and
the connection left ready for the next one."""

import json
import socket

import pytest

from service.process.early_refusal import refuse_from_bytes, simple_request
from service.runtime.admission import OverloadAnswer

BODY = b"\xff\xd8 a small image \xff\xd9"


def request(path="/predict", headers=(), body=BODY, version=b"HTTP/1.1", method=b"POST"):
    """A request's bytes, with Content-Length unless `headers` give their own framing."""
    lines = [method + b" " + path.encode() + b" " + version, b"Host: api"]
    lines += list(headers)
    if not any(line.lower().startswith((b"content-length", b"transfer-encoding"))
               for line in headers):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.mark.parametrize("path", ["/predict", "/predict?min_confidence=0.5",
                                  "/models/cifar10/versions/4/predict",
                                  "/v2/models/cifar10/infer"])
def test_a_whole_simple_post_to_a_classifying_route_is_refusable(path):
    data = request(path, headers=[b"X-Request-ID: abc-1", b"Connection: keep-alive"])
    assert simple_request(data) == (len(data), path.split("?")[0], "abc-1")
    # A next request behind it is not part of it.
    assert simple_request(data + request())[0] == len(data)


@pytest.mark.parametrize("data", [
    request()[:-1],  # the body is not all here yet
    request()[:30],  # nor the headers
    request(path="/health/live"),
    request(path="/v2/repository/index"),
    request(method=b"GET"),
    request(version=b"HTTP/1.0"),
    request(headers=[b"Transfer-Encoding: chunked"], body=b"5\r\nhello\r\n0\r\n\r\n"),
    request(headers=[b"Expect: 100-continue"]),
    request(headers=[b"Upgrade: h2c"]),
    request(headers=[b"Connection: close"]),
    request(headers=[b"Content-Length: 3", b"Content-Length: 3"], body=b"abc"),
    request(headers=[b"Content-Length: +3"], body=b"abc"),
    request(headers=[b"X-Thing: one", b" folded onto the next line"]),
    request(headers=[b"Bad Name: x"]),
    request(headers=[b"X-Thing: a\nb"]),
    request(headers=[b"X-Thing: a\x00b"]),
    request(headers=[b"Content-Type: image/jpeg"], body=b"")[:-2] + b"\n\n",
    b"POST  /predict HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello
])
def test_anything_else_is_left_to_the_refusal_lane(data):
    assert simple_request(data) is None


@pytest.fixture
def pair():
    """Two connected sockets: the worker's end and the client's."""
    worker, client = socket.socketpair()
    worker.setblocking(False)
    yield worker, client
    worker.close()
    client.close()


def answer_on(client):
    """The status line, headers and body of the one answer waiting on `client`."""
    head, _, body = client.recv(65536).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert len(body) == int(headers["Content-Length"])
    return status, headers, body


def test_a_refusal_answers_503_with_retry_after_and_leaves_the_rest_to_the_parser(pair):
    worker, client = pair
    refused = request(headers=[b"X-Request-ID: abc-1"])
    following = request(path="/health/live", method=b"GET", body=b"")
    client.sendall(refused + following)
    answered, data = refuse_from_bytes(worker, OverloadAnswer(retry_after=2))
    assert answered == len(refused) and data[answered:] == following
    status, headers, body = answer_on(client)
    assert status == "HTTP/1.1 503 SERVICE UNAVAILABLE"
    assert headers["Retry-After"] == "2" and headers["X-Request-ID"] == "abc-1"
    assert headers["Connection"] == "keep-alive" and headers["X-Content-Type-Options"]
    assert json.loads(body)["error"]["code"] == "overloaded"


def test_a_v2_refusal_has_the_v2_error_shape_and_a_new_request_id(pair):
    worker, client = pair
    client.sendall(request(path="/v2/models/cifar10/infer",
                           headers=[b"X-Request-ID: not a valid id!"]))
    assert refuse_from_bytes(worker, OverloadAnswer(retry_after=1))[0]
    _, headers, body = answer_on(client)
    assert "capacity" in json.loads(body)["error"]
    assert headers["X-Request-ID"] != "not a valid id!" and len(headers["X-Request-ID"]) == 32


def test_a_request_it_declines_is_answered_with_nothing_and_its_bytes_given_back(pair):
    worker, client = pair
    partial = request()[:-3]
    client.sendall(partial)
    assert refuse_from_bytes(worker, OverloadAnswer(retry_after=1)) == (0, partial)
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(1)


def test_a_connection_with_nothing_to_read_is_a_blocking_io_error(pair):
    worker, _ = pair
    with pytest.raises(BlockingIOError):
        refuse_from_bytes(worker, OverloadAnswer(retry_after=1))

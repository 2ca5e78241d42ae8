"""Overload through the real gunicorn worker: beyond MAX_WAITING_REQUESTS, predictions are
refused at once with 503 and Retry-After, while liveness and metrics answer."""

import http.client
import json
import socket
import threading
import urllib.parse

import pytest
import requests

from tests import support

CLIENTS = 48
IMAGE = support.encode(support.draw_picture(support.SHAPE_COLOURS["red"]))


def connections(server, count):
    """`count` kept-alive connections to `server`, each already connected."""
    address = urllib.parse.urlsplit(server.url("/"))
    opened = []
    for _ in range(count):
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        connection.connect()
        opened.append(connection)
    return opened


@pytest.fixture
def small_server(start_service, models_dir):
    """A service that two threads and one waiting request overload."""
    return start_service(models_dir, threads=2, max_waiting_requests=1, batch_max_wait_ms=20)


def test_beyond_the_waiting_bound_predictions_are_refused_and_liveness_answers(small_server):
    server = small_server
    clients = connections(server, CLIENTS)
    answers, live = [], []

    def liveness():
        live.append(requests.get(server.url("/health/live"), timeout=10).status_code)

    checker = threading.Thread(target=liveness)
    for number, connection in enumerate(clients):  # all sent before any answer is read
        # Every third body comes in chunks: the worker cannot refuse it from its bytes, and
        # its refusal lane parses it.
        chunked = number % 3 == 0
        connection.request("POST", "/predict", body=iter([IMAGE]) if chunked else IMAGE,
                           headers={"Content-Type": "image/jpeg",
                                    "X-Request-ID": f"client-{number}"},
                           encode_chunked=chunked)
    checker.start()
    for connection in clients:
        response = connection.getresponse()
        answers.append((response.status, dict(response.getheaders()),
                        json.loads(response.read()), connection))
    checker.join()
    statuses = [status for status, _, _, _ in answers]
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 1, statuses
    refused = [answer for answer in answers if answer[0] == 503]
    assert refused, "no request was refused: the bound did not apply"
    assert {number % 3 == 0 for number, answer in enumerate(answers) if answer[0] == 503} == {
        True, False}, "refusals of both kinds of body"
    for number, (_, headers, body, connection) in enumerate(answers):
        assert headers["X-Request-ID"] == f"client-{number}"
        if headers.get("Retry-After"):
            assert body["error"]["code"] == "overloaded" and headers["Retry-After"] == "1"
            assert headers["X-Content-Type-Options"] == "nosniff"
            # A simple request was refused by the worker from its bytes, without gunicorn's
            # answer writer (which names itself in Server); a chunked one by the lane.
            assert ("Server" in headers) == (number % 3 == 0), headers
        # The connection stays open for the client's next request.
        connection.request("GET", "/health/live")
        assert connection.getresponse().status == 200
        connection.close()
    assert live == [200]
    metrics = requests.get(server.url("/metrics"), timeout=10).text
    assert 'requests_refused_total{reason="overloaded"}' in metrics
    assert "inference_queue_depth" in metrics


def test_predictions_sent_back_to_back_on_one_connection_are_each_answered_in_order(
        small_server):
    server = small_server
    others = connections(server, CLIENTS)
    for connection in others:  # the worker is overloaded while the pairs arrive
        connection.request("POST", "/predict", body=IMAGE,
                           headers={"Content-Type": "image/jpeg"})
    address = urllib.parse.urlsplit(server.url("/"))
    pipelined = []
    for pair in range(4):
        sock = socket.create_connection((address.hostname, address.port), timeout=30)
        # Two requests in one write: the first may be refused from its bytes, and the
        # second must then reach the parser whole.
        sock.sendall(b"".join(
            b"POST /predict HTTP/1.1\r\nHost: api\r\nContent-Type: image/jpeg\r\n"
            b"X-Request-ID: pair-%d-%d\r\nContent-Length: %d\r\n\r\n%s"
            % (pair, number, len(IMAGE), IMAGE) for number in (1, 2)))
        pipelined.append(sock)
    for connection in others:
        assert connection.getresponse().status in (200, 503)
        connection.close()
    refused_from_bytes = 0
    for pair, sock in enumerate(pipelined):
        stream = sock.makefile("rb")
        for number in (1, 2):
            status, headers, body = read_answer(stream)
            assert status in (200, 503) and headers["x-request-id"] == f"pair-{pair}-{number}"
            assert ("predictions" if status == 200 else "error") in json.loads(body)
            # The worker's own refusals do not name the server (gunicorn's answers do).
            refused_from_bytes += number == 1 and "server" not in headers
        sock.close()
    assert refused_from_bytes, "no first request of a pair was refused from its bytes"


def read_answer(stream):
    """The status, headers (lower-cased names) and body of the next answer on `stream`."""
    status = int(stream.readline().split()[1])
    headers = {}
    for line in iter(stream.readline, b"\r\n"):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, stream.read(int(headers["content-length"]))

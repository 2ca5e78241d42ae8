"""The lingering gthread worker: kept-alive connections are answered however their requests come."""

import http.client
import json
import socket
import time
import urllib.parse

from service.gunicorn_worker import LINGER_SECONDS
from tests import support


def connect(server):
    """A kept-alive HTTP/1.1 connection to `server`."""
    address = urllib.parse.urlsplit(server.url("/"))
    return http.client.HTTPConnection(address.hostname, address.port, timeout=10)


def predict(connection, image):
    """POST one image on `connection`; return (status, body)."""
    connection.request("POST", "/predict", body=image,
                       headers={"Content-Type": "image/jpeg"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def raw_request(path):
    """GET `path` as bytes, for writing several requests in one send."""
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


def test_back_to_back_requests_on_one_connection_are_all_answered(server):
    image = support.encode(support.draw_picture(support.SHAPE_COLOURS["red"]))
    connection = connect(server)
    answers = [predict(connection, image) for _ in range(50)]
    first_socket = connection.sock
    assert all(status == 200 for status, _ in answers)
    # The same image every time: one and the same answer, however the requests were served.
    assert len({json.dumps(body["predictions"]) for _, body in answers}) == 1
    assert connection.sock is first_socket  # one connection all along, never reopened


def test_a_request_after_a_pause_longer_than_the_linger_is_answered(server):
    image = support.encode(support.draw_picture(support.SHAPE_COLOURS["blue"]))
    connection = connect(server)
    first_socket, answers = None, []
    for pause in (0, LINGER_SECONDS * 5, 0.3, 0):
        time.sleep(pause)
        status, body = predict(connection, image)
        first_socket = first_socket or connection.sock
        assert status == 200
        answers.append(json.dumps(body["predictions"]))
    # Handed back to the main thread during each pause, and picked up again from there.
    assert len(set(answers)) == 1 and connection.sock is first_socket


def read_responses(sock, count):
    """Read `count` HTTP/1.1 responses from `sock`; return [(status line, body)]."""
    received, responses = b"", []
    while len(responses) < count:
        end = received.find(b"\r\n\r\n")
        if end >= 0:
            head = received[:end].decode("latin-1").split("\r\n")
            length = int(next(line.split(":", 1)[1] for line in head
                              if line.lower().startswith("content-length:")))
            if len(received) >= end + 4 + length:
                responses.append((head[0], received[end + 4:end + 4 + length]))
                received = received[end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {len(responses)} answers"
        received += chunk
    return responses


def test_requests_sent_together_in_one_write_are_answered_in_order(server):
    address = urllib.parse.urlsplit(server.url("/"))
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(raw_request("/health/live") + raw_request("/model")
                     + raw_request("/health/ready"))
        responses = read_responses(sock, 3)
    assert [status for status, _ in responses] == ["HTTP/1.1 200 OK"] * 3
    live, model, ready = (json.loads(body) for _, body in responses)
    assert live == {"status": "ok"}
    assert model["name"] == "shapes" and ready["status"] == "ready"


def test_a_client_that_goes_away_between_requests_leaves_the_worker_serving(server):
    image = support.encode(support.draw_picture(support.SHAPE_COLOURS["green"]))
    for _ in range(20):
        connection = connect(server)
        assert predict(connection, image)[0] == 200
        connection.close()
    assert predict(connect(server), image)[0] == 200

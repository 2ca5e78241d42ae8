"""The lingering gthread worker: kept-alive connections are answered however their requests
come, and spread evenly over the workers."""

import contextlib
import http.client
import json
import os
import signal
import socket
import time
import urllib.parse

from service.process.gunicorn_worker import BALANCE_TRUST_SECONDS, LINGER_SECONDS
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


def connections_per_worker(server):
    """How many established connections to the server's port each worker holds."""
    port = f":{server.port:04X}"
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[1].endswith(port) and fields[3] == "01":  # 01: established
                    sockets.add(f"socket:[{fields[9]}]")
    counts = {}
    for pid in support.worker_pids(server):
        descriptors = os.listdir(f"/proc/{pid}/fd")
        counts[pid] = sum(1 for fd in descriptors
                          if _readlink(f"/proc/{pid}/fd/{fd}") in sockets)
    return counts


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:  # closed meanwhile
        return None


def both_workers_take_connections(server):
    """Whether two fresh connections go one to each worker: a worker still starting (one
    that is not yet accepting, or busy loading its model) leaves the other to take both."""
    connections = [connect(server) for _ in range(2)]
    for connection in connections:
        ask_live(connection)
    split = sorted(connections_per_worker(server).values()) == [1, 1]
    close_all(server, connections)
    return split


def close_all(server, connections):
    """Close `connections`, and wait until no worker holds any of them."""
    for connection in connections:
        connection.close()
    support.poll(lambda: sum(connections_per_worker(server).values()) == 0, 10,
                 lambda: "the workers kept closed connections")


def test_kept_alive_connections_are_shared_evenly_between_the_workers(start_service, models_dir):
    server = start_service(models_dir, workers=2)
    support.forked_workers(server, 2)
    support.poll(lambda: both_workers_take_connections(server), 30,
                 lambda: f"one worker took every connection:\n{server.log()}")
    for _ in range(3):  # a fresh set of connections each round: no lucky hash passes thrice
        connections = [connect(server) for _ in range(12)]
        for connection in connections:
            ask_live(connection)
        counts = sorted(connections_per_worker(server).values())
        assert counts == [6, 6], counts
        close_all(server, connections)


def ask_live(connection):
    """GET /health/live on `connection`; return the response, its body read."""
    connection.request("GET", "/health/live")
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}
    return response


@contextlib.contextmanager
def emptier_worker_stopped(server):
    """Give one of two workers a connection, and stop the other (SIGSTOP) for the block;
    yield (that connection, the busier worker's pid, the stopped one's)."""
    support.forked_workers(server, 2)
    first = connect(server)
    ask_live(first)
    busier = next(pid for pid, count in connections_per_worker(server).items() if count)
    emptier = next(pid for pid in support.worker_pids(server) if pid != busier)
    os.kill(emptier, signal.SIGSTOP)  # it holds fewer connections, but takes none now
    try:
        yield first, busier, emptier
    finally:
        os.kill(emptier, signal.SIGCONT)


def test_a_stopped_worker_with_fewer_connections_keeps_no_connection_out(start_service,
                                                                          models_dir):
    server = start_service(models_dir, workers=2)
    with emptier_worker_stopped(server) as (_, busier, emptier):
        connections = [connect(server) for _ in range(4)]  # kept open: each stays counted
        for connection in connections:
            ask_live(connection)
        assert connections_per_worker(server) == {busier: 5, emptier: 0}


def test_a_worker_holding_more_than_its_share_sends_clients_to_the_other(start_service,
                                                                         models_dir):
    server = start_service(models_dir, workers=2)
    with emptier_worker_stopped(server) as (first, busier, emptier):
        connections = [first] + [connect(server) for _ in range(5)]
        for connection in connections[1:]:
            ask_live(connection)
        assert connections_per_worker(server) == {busier: 6, emptier: 0}
    # Once the other worker has taken connections again, each answer of the fuller one
    # says Connection: close until the two are within one; the client reconnects.
    time.sleep(BALANCE_TRUST_SECONDS)
    closed = 0
    for index, connection in enumerate(connections):
        if ask_live(connection).getheader("Connection") == "close":
            closed += 1
            connections[index] = connect(server)
            ask_live(connections[index])
    assert closed >= 2
    support.poll(lambda: sorted(connections_per_worker(server).values()) == [3, 3], 5,
                 lambda: f"not shared evenly: {connections_per_worker(server)}")

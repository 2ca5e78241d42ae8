"""The lingering worker's policy, with gunicorn's own request handling replaced by a fake."""

import io
import socket
from types import SimpleNamespace

import pytest
from gunicorn.workers.gthread import ThreadWorker

from service.process.gunicorn_worker import LingeringThreadWorker


@pytest.fixture
def answered(monkeypatch):
    """Replace gunicorn's handle(): each call answers one request (reads one byte) and
    keeps the connection alive; return the list of answered requests."""
    answers = []

    def handle_one_request(self, conn):
        answers.append(conn.sock.recv(1))
        return True

    monkeypatch.setattr(ThreadWorker, "handle", handle_one_request)
    return answers


def worker_with(connections, threads=4):
    """A worker with only what handle() looks at."""
    worker = LingeringThreadWorker.__new__(LingeringThreadWorker)
    worker.alive, worker.nr_conns = True, connections
    worker.cfg = SimpleNamespace(threads=threads)
    return worker


def connection_with_requests(count):
    """A server-side connection whose client has already sent `count` one-byte requests."""
    server, client = socket.socketpair()
    client.sendall(b"r" * count)
    conn = SimpleNamespace(sock=server, is_http2=False,
                           parser=SimpleNamespace(unreader=SimpleNamespace(buf=io.BytesIO())))
    return conn, client


def test_a_thread_answers_requests_that_follow_at_once_itself(answered):
    conn, client = connection_with_requests(3)
    with client, conn.sock:
        assert worker_with(connections=2).handle(conn) is True
    assert answered == [b"r"] * 3  # then the connection went quiet and back to the main thread


def test_with_more_connections_than_threads_a_thread_answers_one_request(answered):
    conn, client = connection_with_requests(3)
    with client, conn.sock:
        assert worker_with(connections=5, threads=4).handle(conn) is True
    assert answered == [b"r"]


@pytest.mark.parametrize("wanted", [True, False])
def test_a_worker_refused_real_time_priority_says_so_and_serves_as_before(monkeypatch, wanted):
    from service.process import gunicorn_worker

    def refuse():
        raise PermissionError(1, "Operation not permitted")

    loops, lines = [], []
    monkeypatch.setattr(gunicorn_worker, "run_this_thread_first", refuse)
    monkeypatch.setattr(ThreadWorker, "run", lambda self: loops.append("gunicorn's loop"))
    worker = LingeringThreadWorker.__new__(LingeringThreadWorker)
    worker._main_thread_first = wanted
    worker.log = SimpleNamespace(info=lambda message, *args: lines.append(message % args))
    worker.run()
    assert loops == ["gunicorn's loop"]
    if wanted:
        assert len(lines) == 1 and "ordinary priority" in lines[0]
        assert "Operation not permitted" in lines[0]
    else:
        assert not lines  # REALTIME_MAIN_THREAD=0: not even asked

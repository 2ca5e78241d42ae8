"""Closing a port to new connections: new ones are refused, those made stay open."""

import socket

import pytest

from service.grpc.listeners import close_to_new_connections

CONNECT_SECONDS = 1


@pytest.fixture
def listener():
    """A listening socket on a free loopback port, as gRPC's own."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        yield server


def port_of(server):
    return server.getsockname()[1]


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=CONNECT_SECONDS)


def test_a_new_connection_is_refused_and_one_made_before_still_answers(listener):
    made = connect(port_of(listener))
    accepted, _ = listener.accept()

    assert close_to_new_connections(port_of(listener)) == 1

    with pytest.raises(ConnectionRefusedError):  # at once: a proxy tries another replica
        connect(port_of(listener))
    with made, accepted:
        made.sendall(b"call")
        assert accepted.recv(16) == b"call"
        accepted.sendall(b"answer")
        assert made.recv(16) == b"answer"


def test_only_a_connection_still_waiting_to_be_accepted_is_reset(listener):
    waiting = connect(port_of(listener))
    close_to_new_connections(port_of(listener))
    with waiting, pytest.raises(ConnectionResetError):
        waiting.sendall(b"call")
        waiting.recv(16)


def test_other_ports_are_left_alone(listener):
    with socket.create_server(("127.0.0.1", 0)) as other:
        assert close_to_new_connections(port_of(listener)) == 1
        with connect(port_of(other)):
            pass


def test_no_listener_on_the_port_closes_nothing(listener):
    port = port_of(listener)
    listener.close()
    assert close_to_new_connections(port) == 0

"""The client's address in the request log: from the connection, or from a trusted proxy."""

import json

import pytest

from service.app import create_app
from service.config import Settings


def logged_client(capsys, hops, headers, peer="10.0.0.9"):
    """Send one request from `peer` with `headers`; return the `client` its log line names."""
    app = create_app(Settings(trusted_proxy_hops=hops), start_models=False)
    capsys.readouterr()
    response = app.test_client().get("/health/live", headers=headers,
                                     environ_base={"REMOTE_ADDR": peer})
    assert response.status_code == 200
    # A WSGI server closes the response once it is sent; the log line is written then.
    response.close()
    [line] = [json.loads(line) for line in capsys.readouterr().out.splitlines()
              if '"path": "/health/live"' in line]
    return line["client"]


def test_without_a_proxy_the_connection_is_the_client_whatever_the_headers_say(capsys):
    assert logged_client(capsys, 0, {"X-Forwarded-For": "203.0.113.7"}) == "10.0.0.9"


@pytest.mark.parametrize("forwarded, client", [
    ("198.51.100.4", "198.51.100.4"),
    # A client's own X-Forwarded-For comes first; the proxy appends the address it saw.
    ("203.0.113.7, 198.51.100.4", "198.51.100.4"),
])
def test_behind_one_proxy_the_address_it_appended_is_the_client(capsys, forwarded, client):
    assert logged_client(capsys, 1, {"X-Forwarded-For": forwarded}) == client



def test_the_request_line_is_logged_once_the_answer_is_out_not_before(capsys):
    app = create_app(Settings(), start_models=False)
    capsys.readouterr()
    response = app.test_client().get("/health/live", headers={"X-Request-ID": "after-close"})
    assert "after-close" not in capsys.readouterr().out
    response.close()
    [line] = [json.loads(line) for line in capsys.readouterr().out.splitlines()
              if "after-close" in line]
    assert line["status"] == 200 and line["duration_ms"] > 0

"""Every answer carries the security headers; the page's policy allows only its own files."""

import pytest

from service.http.security_headers import OTHER_POLICY, PAGE_POLICY
from tests import support


def directives(policy):
    """{directive: [sources]} of a Content-Security-Policy."""
    parsed = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        parsed[name] = sources
    return parsed


@pytest.mark.parametrize("method, path", [
    ("GET", "/"), ("GET", "/health/live"), ("GET", "/model"), ("GET", "/metrics"),
    ("GET", "/openapi.json"), ("GET", "/static/page.js"), ("GET", "/no/such/route"),
    ("POST", "/predict"), ("GET", "/v2/health/ready"), ("GET", "/operations"),
    ("GET", "/operations/models"), ("GET", "/static/operations.js"),
])
def test_every_answer_has_nosniff_no_referrer_and_no_framing(client, method, path):
    response = client.open(path, method=method)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    expected = PAGE_POLICY if path in ("/", "/operations") else OTHER_POLICY
    assert response.headers.getlist("Content-Security-Policy") == [expected]


@pytest.mark.parametrize("path", ["/", "/operations"])
def test_the_page_may_load_only_its_own_scripts_and_styles(client, path):
    page = client.get(path)
    policy = directives(page.headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    # Nothing inline could run: the page uses no inline script, style or handler.
    html = page.get_data(as_text=True)
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    assert " onclick=" not in html and "javascript:" not in html


def test_errors_carry_the_headers_too(client):
    response = client.post("/predict", data=b"not an image", content_type="image/jpeg")
    support.assert_error(response, 415, "unsupported_image")
    assert response.headers["X-Content-Type-Options"] == "nosniff"

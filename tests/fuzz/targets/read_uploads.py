"""Fuzz target: a /predict body (multipart, raw, JSON with base64 or data: URLs) and its type.

An input is the Content-Type header, a newline, then the body, so the fuzzer mutates both.
"""

import functools

import requests
from flask import request

from service.app import create_app
from service.http.uploads import read_uploads

DICTIONARY = "json.dict"


@functools.cache
def service_app():
    """The app as the service configures it, for its body, form-part and image-count limits."""
    return create_app(start_models=False)


def split(data):
    """The input's Content-Type and body; None when no HTTP server would pass such a header."""
    header, _, body = data.partition(b"\n")
    content_type = header.decode("latin-1")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in content_type):
        return None
    return content_type, body


def test_one_input(data):
    """Read the images out of the body, as the /predict route does before it decodes them."""
    parts = split(data)
    if parts is None:
        return
    content_type, body = parts
    app = service_app()
    with app.test_request_context("/predict", method="POST", data=body,
                                  content_type=content_type):
        read_uploads(request, app.config["SETTINGS"].max_images_per_request)


def replay(base_url, data):
    """Send the input to a running service, with its Content-Type."""
    content_type, body = split(data)
    return requests.post(f"{base_url}/predict", data=body, timeout=30,
                         headers={"Content-Type": content_type})

"""Fuzz target: an Open Inference Protocol (/v2) inference request and its header length.

An input is the Inference-Header-Content-Length value (empty for none), a newline, then the
body, so the fuzzer mutates both.
"""

import requests

from service.open_inference.tensors import parse_infer_request

DICTIONARY = "json.dict"


def test_one_input(data):
    """Parse the request as the /v2 infer route does before it decodes any image."""
    header, _, body = data.partition(b"\n")
    parse_infer_request(body, header.decode("latin-1") if header else None)


def replay(base_url, data):
    """Send the input to a running service's /v2 infer route for the model it serves."""
    header, _, body = data.partition(b"\n")
    name = requests.get(f"{base_url}/health/ready", timeout=30).json()["model"]["name"]
    headers = {"Inference-Header-Content-Length": header.decode("latin-1")} if header else {}
    return requests.post(f"{base_url}/v2/models/{name}/infer", data=body, headers=headers,
                         timeout=30)

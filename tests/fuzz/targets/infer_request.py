"""Fuzz target: an Open Inference Protocol (/v2) inference request and its header length.

An input is the Inference-Header-Content-Length value (empty for none), a newline, then the
body, so the fuzzer mutates both. No `replay`: /v2 errors are {"error": "message"}, without
the code the regression replay checks for.
"""

from service.tensors import parse_infer_request

DICTIONARY = "json.dict"


def test_one_input(data):
    """Parse the request as the /v2 infer route does before it decodes any image."""
    header, _, body = data.partition(b"\n")
    parse_infer_request(body, header.decode("latin-1") if header else None)

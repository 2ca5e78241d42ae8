"""Domain errors raised below the HTTP layer, and the status and code errors.py gives each."""

import re

import pytest

from service.http.errors import DOMAIN_ERRORS, as_api_error
from tests.support import ROOT


def raised_kinds():
    """(error class name, kind) for every domain error the service's code raises."""
    source = "\n".join(path.read_text() for path in (ROOT / "service").rglob("*.py"))
    return sorted(set(re.findall(r"raise (ImageError|UploadError)\(\s*\"(\w+)\"", source)))


def test_the_service_raises_domain_errors_of_both_kinds():
    assert {name for name, _ in raised_kinds()} == {"ImageError", "UploadError"}


@pytest.mark.parametrize("name, kind", raised_kinds())
def test_every_kind_raised_has_a_client_error_answer(name, kind):
    error_class = next(cls for cls in DOMAIN_ERRORS if cls.__name__ == name)
    answer = as_api_error(error_class(kind, "what went wrong"))
    assert 400 <= answer.status < 500 and re.fullmatch(r"[a-z0-9_]+", answer.code)
    assert answer.message == "what went wrong"

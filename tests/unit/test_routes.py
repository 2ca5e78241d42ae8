"""The routes in-process: health, no model yet, API keys, request ids, and errors of any route."""

import re
import shutil
import time

import pytest

from service import serving
from tests import support
from tests.unit.fakes import ColourLoader

IMAGE = support.encode(support.draw_picture(support.SHAPE_COLOURS["green"]))
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
OPEN_ROUTES = ("/health", "/health/live", "/health/ready", "/model", "/metrics", "/",
               "/openapi.json")


def post_image(client, headers=None):
    return client.post("/predict", data=IMAGE, content_type="image/jpeg", headers=headers or {})


def test_ready_names_the_serving_model(client):
    assert client.get("/health/live").get_json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "model": {"name": "colours", "version": 7}}
    assert client.get("/health").get_json() == ready.get_json()
    assert client.get("/model").get_json()["version"] == 7


@pytest.mark.parametrize("state, reason", [
    ("no_model", "no model version of 'colours' has been published yet"),
    ("load_failed", "no version of 'colours' could be loaded; version 7 was skipped: "
                    "unreadable model.tflite: not a model"),
])
def test_without_a_model_the_app_is_live_but_not_ready(make_client, models_folder, state,
                                                       reason):
    if state == "no_model":
        shutil.rmtree(models_folder / "colours")
    client = make_client(ColourLoader(broken={7}))
    assert client.get("/health/live").status_code == 200
    for path in ("/health/ready", "/health"):
        response = client.get(path)
        assert response.status_code == 503
        assert response.get_json() == {"status": state, "reason": reason}
    for response in (post_image(client), client.get("/model")):
        support.assert_error(response, 503, "model_not_ready")
        assert reason in response.get_json()["error"]["message"]


def test_a_request_waits_for_a_first_model_before_refusing(make_client, monkeypatch):
    monkeypatch.setattr(serving, "FIRST_LOAD_WAIT_SECONDS", 0.3)
    client = make_client(refresh=False)
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.get_json()["status"] == "loading"
    started = time.monotonic()
    support.assert_error(post_image(client), 503, "model_not_ready")
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("source", ["API_KEY", "API_KEY_FILE"])
def test_an_api_key_guards_predict_only(make_client, tmp_path, source):
    key = "open-sesame-0123456789"
    if source == "API_KEY":
        client = make_client(api_key=key)
    else:
        (tmp_path / "keys").write_text(f"# the page's key\n{key}\n")
        client = make_client(api_key_file=str(tmp_path / "keys"))
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                    {"Authorization": key}, {"X-API-Key": key[:-1]}):
        response = post_image(client, headers)
        support.assert_error(response, 401, "unauthorized")
        assert key[:-1] not in response.get_data(as_text=True)
    assert post_image(client, {"X-API-Key": key}).status_code == 200
    assert post_image(client, {"Authorization": f"Bearer {key}"}).status_code == 200
    # Either header may carry the key: a stale one in the other header does not hide it.
    assert post_image(client, {"Authorization": f"Bearer {key}",
                               "X-API-Key": "stale"}).status_code == 200
    for path in OPEN_ROUTES:
        assert client.get(path).status_code == 200, path
    # The page asks for a key, and the OpenAPI document requires one.
    assert 'id="api-key"' in client.get("/").get_data(as_text=True)
    assert {} not in client.get("/openapi.json").get_json()["paths"]["/predict"]["post"][
        "security"]


def test_unknown_routes_and_methods_are_json_404_and_405(client):
    support.assert_error(client.get("/no/such/route"), 404, "not_found")
    response = client.get("/predict")
    support.assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_a_model_that_breaks_is_a_json_500_that_leaks_nothing(make_client):
    client = make_client(ColourLoader(fail=True))
    support.assert_error(post_image(client), 500, "internal_error")


def test_a_given_request_id_comes_back(client):
    response = client.get("/health/live", headers={"X-Request-ID": "trace-42.a:b_c"})
    assert response.headers["X-Request-ID"] == "trace-42.a:b_c"


def test_a_request_id_is_generated_when_none_or_a_bad_one_is_given(client):
    first = client.get("/health/live").headers["X-Request-ID"]
    second = client.get("/model").headers["X-Request-ID"]
    bad = client.get("/health/live", headers={"X-Request-ID": "no spaces <b>"})
    error = client.get("/no-such-page").headers["X-Request-ID"]
    ids = (first, second, bad.headers["X-Request-ID"], error)
    assert all(GENERATED_ID.match(request_id) for request_id in ids)
    assert len(set(ids)) == 4

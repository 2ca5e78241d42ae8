"""GET /operations/models, the operator view's data, and the /operations page that shows it.

The figures are the ones /models/{name}, the store and /metrics already keep; these tests
check that the view gathers them, with the store off, on and down, and that it is open only
where /metrics is (METRICS_ALLOW) or with a valid API key."""

import pytest

from service.http.security_headers import PAGE_POLICY
from service.models import release
from service.observability import metrics
from service.store.accuracy import LiveAccuracy
from tests.unit.fakes import ColourModel, publish_fake
from tests.unit.test_feedback_route import GREEN, RED, predict, send

KEY = "a-key-long-enough-to-be-valid"
OUTSIDE = {"REMOTE_ADDR": "192.0.2.7"}
INSIDE = {"REMOTE_ADDR": "10.1.2.3"}


def view(client, environ=None, headers=None):
    return client.get("/operations/models", environ_base=environ or {}, headers=headers or {})


def only_model(answer, name="colours"):
    (model,) = [model for model in answer.get_json()["models"] if model["name"] == name]
    return model


def test_with_the_store_off_the_view_shows_versions_and_says_the_store_is_off(make_client):
    answer = view(make_client())
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    assert answer.get_json()["prediction_store"] == "off"
    model = only_model(answer)
    assert (model["state"], model["labels"], model["canary"]) == ("ready", {"stable": 7}, None)
    assert model["versions"] == [{"version": 7, "state": "ready", "labels": ["stable"],
                                  "reason": None, "live_accuracy": None,
                                  "shadow_agreement": [], "drift": None}]


def test_with_the_store_on_each_version_shows_its_counts_and_interval(make_client, tmp_path):
    client = make_client(prediction_store=str(tmp_path / "store"))
    assert only_model(view(client))["versions"][0]["live_accuracy"] == []
    ids = [item["prediction_id"] for item in
           predict(client, images=(RED, GREEN, RED)).get_json()["predictions"]]
    assert send(client, [{"prediction_id": ids[0], "class": "red"},
                         {"prediction_id": ids[1], "class": "red"}]).status_code == 200
    answer = view(client)
    assert answer.get_json()["prediction_store"] == "on"
    # The same counts and Wilson interval as /models/{name} and `release status`.
    assert only_model(answer)["versions"][0]["live_accuracy"] == [
        {"version_label": "stable", **LiveAccuracy(2, 1).describe()}]
    (shown,) = client.get("/models/colours").get_json()["live_accuracy"]
    assert (shown["labelled"], shown["correct"]) == (2, 1)


def test_a_store_that_is_down_leaves_the_counts_out_and_says_so(make_client):
    client = make_client(prediction_store="postgresql://nobody@127.0.0.1:9/none")
    answer = view(client)
    assert answer.status_code == 200
    assert answer.get_json()["prediction_store"] == "unavailable"
    assert only_model(answer)["versions"][0]["live_accuracy"] is None
    assert "127.0.0.1" not in answer.get_data(as_text=True)


def test_the_canary_share_shadow_agreement_and_drift_come_from_the_metrics(
        make_client, models_folder):
    # A model of its own, so that counts other tests make in this process do not mix in.
    for version in (2, 3):
        publish_fake(models_folder, "opsview", version)
    release.set_canary(str(models_folder / "opsview"), 3, 25, "shadow")
    client = make_client()
    metrics.count_shadow("opsview", ColourModel("opsview", 3), 2, agreed=3, images=4,
                         seconds=0.01)
    metrics.record_drift("opsview", 3, 120, 0.51234, 0.25)
    model = only_model(view(client), "opsview")
    assert model["canary"] == {"version": 3, "percent": 25, "mode": "shadow"}
    assert model["labels"] == {"canary": 3, "stable": 2}
    shadow = {version["version"]: version for version in model["versions"]}[3]
    assert shadow["labels"] == ["canary"]
    assert shadow["shadow_agreement"] == [{"stable_version": 2, "agreed": 3, "compared": 4}]
    assert shadow["drift"] == {"window": 120, "class_mix_psi": 0.5123, "confidence_psi": 0.25}


def test_drift_is_read_from_the_worker_with_the_largest_window(monkeypatch):
    def read(*names):
        return {"model_drift_window_images": [
                    ({"model": "m", "version": "1", "pid": "11"}, 40.0),
                    ({"model": "m", "version": "1", "pid": "12"}, 900.0)],
                "model_drift_psi": [
                    ({"model": "m", "version": "1", "aspect": "class_mix", "pid": "11"}, 2.0),
                    ({"model": "m", "version": "1", "aspect": "confidence", "pid": "11"}, 2.0),
                    ({"model": "m", "version": "1", "aspect": "class_mix", "pid": "12"}, 0.1),
                    ({"model": "m", "version": "1", "aspect": "confidence", "pid": "12"}, 0.2)]}

    monkeypatch.setattr(metrics, "read", read)
    assert metrics.drift() == {("m", 1): {"window": 900, "class_mix_psi": 0.1,
                                          "confidence_psi": 0.2}}


@pytest.mark.parametrize("environ", [INSIDE, {"REMOTE_ADDR": "::ffff:10.9.9.9"}])
def test_an_address_metrics_allow_names_may_read_it(make_client, environ):
    assert view(make_client(metrics_allow="10.0.0.0/8"), environ).status_code == 200


def test_any_other_address_is_refused_with_a_json_403(make_client):
    answer = view(make_client(metrics_allow="10.0.0.0/8"), OUTSIDE)
    assert answer.status_code == 403
    error = answer.get_json()["error"]
    assert error["code"] == "forbidden" and "METRICS_ALLOW" in error["message"]
    # Keys are off: there is no key to offer, so none is mentioned.
    assert "key" not in error["message"]
    assert "opsview" not in answer.get_data(as_text=True)


def test_behind_the_proxy_the_client_address_is_the_one_it_forwarded(make_client):
    client = make_client(metrics_allow="10.0.0.0/8", trusted_proxy_hops=1)
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    assert view(client, proxy, {"X-Forwarded-For": "192.0.2.7"}).status_code == 403
    assert view(client, proxy, {"X-Forwarded-For": "10.3.3.3"}).status_code == 200


def test_with_keys_on_a_valid_key_opens_it_from_anywhere(make_client):
    client = make_client(metrics_allow="10.0.0.0/8", api_key=KEY)
    assert view(client, OUTSIDE, {"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert view(client, OUTSIDE, {"X-API-Key": KEY}).status_code == 200
    # Where /metrics is open, no key is needed, as for /metrics.
    assert view(client, INSIDE).status_code == 200
    wrong = view(client, OUTSIDE, {"X-API-Key": "not-the-key-at-all"})
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "unauthorized"
    missing = view(client, OUTSIDE)
    assert missing.status_code == 403 and "valid API key" in missing.get_json()["error"]["message"]


def test_with_keys_off_a_key_opens_nothing(make_client):
    client = make_client(metrics_allow="10.0.0.0/8")
    assert view(client, OUTSIDE, {"X-API-Key": KEY}).status_code == 403


def test_the_page_is_a_shell_under_the_page_policy_with_no_inline_script(make_client):
    answer = make_client(metrics_allow="10.0.0.0/8").get("/operations", environ_base=OUTSIDE)
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    assert answer.headers["Content-Security-Policy"] == PAGE_POLICY
    html = answer.get_data(as_text=True)
    assert '<script src="/static/operations.js" defer></script>' in html
    assert html.count("<script") == 1 and 'id="api-key"' not in html
    keyed = make_client(api_key=KEY).get("/operations").get_data(as_text=True)
    assert 'id="api-key"' in keyed
    script = make_client().get("/static/operations.js").get_data(as_text=True)
    assert "innerHTML" not in script and "/operations/models" in script
    # The upload page links to it.
    assert '<a href="/operations">' in make_client().get("/").get_data(as_text=True)

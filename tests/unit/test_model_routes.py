"""The routes that choose a model, version or label, and the ones that describe them."""

import json

import pytest

from service.models.artifact import POLICY_FILE
from tests import support
from tests.unit.fakes import publish_fake

IMAGE = support.encode(support.draw_picture(support.SHAPE_COLOURS["green"]))


@pytest.fixture
def released(models_folder, make_client):
    """colours 7 (stable), 8 (a 50% canary) and 9 (not loaded: only 7 and the labelled are);
    shapes 1."""
    for version in (8, 9):
        publish_fake(models_folder, "colours", version)
    publish_fake(models_folder, "shapes", 1)
    (models_folder / "colours" / POLICY_FILE).write_text(json.dumps(
        {"model_version_policy": {"specific": {"versions": [7]}},
         "version_labels": {"stable": 7, "canary": 8}, "canary": {"percent": 50}}))
    return make_client()


def predict(client, path, headers=None):
    return client.post(path, data=IMAGE, content_type="image/jpeg", headers=headers or {})


def test_each_route_form_answers_with_the_version_and_label_it_chose(released):
    for path, expected in (("/models/shapes/predict", {"name": "shapes", "version": 1,
                                                       "label": "stable"}),
                           ("/models/colours/versions/8/predict",
                            {"name": "colours", "version": 8, "label": None}),
                           ("/models/colours/labels/canary/predict",
                            {"name": "colours", "version": 8, "label": "canary"}),
                           ("/models/colours/labels/stable/predict",
                            {"name": "colours", "version": 7, "label": "stable"})):
        response = predict(released, path)
        assert response.status_code == 200, response.text
        assert response.get_json()["model"] == expected, path
        assert response.get_json()["predictions"][0]["label"] == "green"


def test_predict_splits_between_stable_and_canary(released):
    answers = [predict(released, "/predict").get_json()["model"] for _ in range(40)]
    assert {(answer["version"], answer["label"]) for answer in answers} == {(7, "stable"),
                                                                          (8, "canary")}
    assert abs(sum(answer["version"] == 8 for answer in answers) - 20) <= 1


def test_a_routing_key_keeps_a_client_on_one_side(released):
    for key in ("alice", "bob", "carol", "dave"):
        versions = {predict(released, "/predict", {"X-Routing-Key": key}).get_json()[
            "model"]["version"] for _ in range(10)}
        assert len(versions) == 1


@pytest.mark.parametrize("path, code, words", [
    ("/models/nope/predict", "model_not_found", "this server serves 'colours', 'shapes'"),
    ("/models/colours/versions/9/predict", "version_not_found", "loaded versions: 7, 8"),
    ("/models/colours/versions/abc/predict", "version_not_found", "loaded versions: 7, 8"),
    ("/models/colours/labels/beta/predict", "label_not_found",
     "its labels: canary (version 8), stable (version 7)"),
])
def test_unknown_models_versions_and_labels_are_404s_that_list_what_there_is(released, path,
                                                                             code, words):
    response = predict(released, path)
    support.assert_error(response, 404, code)
    assert words in response.get_json()["error"]["message"]


def test_models_lists_versions_labels_canary_policy_and_reasons(released):
    body = released.get("/models").get_json()
    assert body["default"] == "colours"
    colours, shapes = body["models"]
    assert colours["name"] == "colours" and colours["state"] == "ready"
    assert colours["labels"] == {"canary": 8, "stable": 7}
    assert colours["canary"] == {"version": 8, "percent": 50, "mode": "split"}
    assert colours["policy"]["source"] == "file" and colours["policy"]["problem"] == ""
    states = {entry["version"]: entry for entry in colours["versions"]}
    assert states[7]["state"] == "ready" and states[7]["labels"] == ["stable"]
    assert states[9]["state"] == "unavailable" and states[9]["reason"]
    assert colours["classes"] == ["blue", "green", "red"]
    assert colours["input"] == {"height": 16, "width": 16, "channels": 3}
    assert shapes["policy"] == {"source": "default", "problem": "",
                                "model_version_policy": {"latest": {"num_versions": 1}},
                                "version_labels": {}}
    assert released.get("/models/shapes").get_json() == shapes
    support.assert_error(released.get("/models/nope"), 404, "model_not_found")


def test_the_v2_face_serves_every_model_and_version(released):
    metadata = released.get("/v2/models/colours").get_json()
    assert metadata["versions"] == ["7", "8"]
    assert released.get("/v2/models/shapes/versions/1/ready").status_code == 200
    assert released.get("/v2/models/colours/versions/8").get_json()["name"] == "colours"
    missing = released.get("/v2/models/colours/versions/9/ready")
    assert missing.status_code == 404 and "loaded versions: 7, 8" in missing.get_json()["error"]
    pixels = {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 16, 16, 3],
                          "data": [0] * 768}]}
    answer = released.post("/v2/models/colours/versions/8/infer", json=pixels).get_json()
    assert answer["model_name"] == "colours" and answer["model_version"] == "8"
    split = {released.post("/v2/models/colours/infer", json=pixels).get_json()["model_version"]
             for _ in range(6)}
    assert split == {"7", "8"}


def test_the_repository_index_lists_every_version_with_its_state(released):
    index = released.post("/v2/repository/index").get_json()
    assert {"name": "colours", "version": "9", "state": "UNAVAILABLE",
            "reason": index[2]["reason"]} == index[2]
    assert [(entry["name"], entry["version"], entry["state"]) for entry in index] == [
        ("colours", "7", "READY"), ("colours", "8", "READY"), ("colours", "9", "UNAVAILABLE"),
        ("shapes", "1", "READY")]
    ready = released.post("/v2/repository/index", json={"ready": True}).get_json()
    assert [entry["version"] for entry in ready] == ["7", "8", "1"]
    bad = released.post("/v2/repository/index", data=b"[1]", content_type="application/json")
    assert bad.status_code == 400 and set(bad.get_json()) == {"error"}


def test_a_model_with_nothing_published_is_in_the_index_with_the_reason(make_client,
                                                                       models_folder):
    (models_folder / "empty").mkdir()
    index = make_client().post("/v2/repository/index").get_json()
    assert {"name": "empty", "state": "UNAVAILABLE",
            "reason": "no model version has been published yet"} in index

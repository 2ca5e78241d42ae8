"""Every face answers with prediction ids when the store is on; POST /feedback takes true classes.

The store here is SQLite in the test's folder (tests/integration/test_prediction_store.py
runs the store itself against SQLite and a PostgreSQL server)."""

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.grpc.servicer import Call, InferenceServicer
from service.serving import serving_of
from service.store.feedback import key_id
from tests import support

RED = support.encode(support.draw_picture(support.SHAPE_COLOURS["red"], 16))
GREEN = support.encode(support.draw_picture(support.SHAPE_COLOURS["green"], 16, seed=1))
KEY = "a-key-long-enough-to-be-valid"


@pytest.fixture
def with_store(make_client, tmp_path):
    """A client of the app with the prediction store on, in a SQLite folder."""

    def make(**settings):
        return make_client(prediction_store=str(tmp_path / "store"), **settings)

    return make


def rows(client, sql):
    recorder = serving_of(client.application).recorder
    assert recorder.flush()
    with recorder.database.transaction() as session:
        return session.run(sql)


def predict(client, path="/predict", images=(RED,), headers=None):
    body = json.dumps({"images": [base64.b64encode(image).decode() for image in images]})
    return client.post(path, data=body, content_type="application/json", headers=headers or {})


def send(client, body, headers=None):
    return client.post("/feedback", data=json.dumps(body), content_type="application/json",
                       headers=headers or {})


def test_with_the_store_off_there_are_no_ids_and_feedback_says_why(make_client):
    client = make_client()
    answer = predict(client).get_json()
    assert "prediction_id" not in answer["predictions"][0]
    refused = send(client, {"prediction_id": "x", "class": "red"})
    assert refused.status_code == 501
    assert refused.get_json()["error"]["code"] == "prediction_store_off"


@pytest.mark.parametrize("path", ["/predict", "/models/colours/predict",
                                  "/models/colours/versions/7/predict",
                                  "/models/colours/labels/stable/predict"])
def test_each_prediction_route_answers_with_recorded_ids(with_store, path):
    client = with_store()
    answer = predict(client, path, (RED, GREEN), {"X-Request-ID": "client-7"}).get_json()
    ids = [prediction["prediction_id"] for prediction in answer["predictions"]]
    assert len(set(ids)) == 2
    recorded = rows(client, "SELECT prediction_id, request_id, route, model, version, top1 "
                            "FROM predictions")
    assert sorted(recorded) == sorted(
        [(ids[0], "client-7", path.replace("colours", "<name>").replace("/7/", "/<version>/")
          .replace("/stable/", "/<label>/"), "colours", 7, "red"),
         (ids[1], "client-7", path.replace("colours", "<name>").replace("/7/", "/<version>/")
          .replace("/stable/", "/<label>/"), "colours", 7, "green")])


def test_v2_rest_answers_carry_the_ids_in_their_parameters(with_store):
    client = with_store()
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                        "data": [base64.b64encode(RED).decode(),
                                 base64.b64encode(GREEN).decode()],
                        "parameters": {"content_type": "base64"}}]}
    answer = client.post("/v2/models/colours/infer", data=json.dumps(body),
                         content_type="application/json")
    assert answer.status_code == 200, answer.get_json()
    ids = answer.get_json()["parameters"]["prediction_ids"].split(",")
    recorded = dict(rows(client, "SELECT prediction_id, top1 FROM predictions"))
    assert [recorded[found] for found in ids] == ["red", "green"]


def test_grpc_answers_carry_the_ids_in_their_parameters(with_store):
    client = with_store()
    servicer = InferenceServicer(serving_of(client.application), ThreadPoolExecutor(1))
    pixels = np.zeros((1, 16, 16, 3), np.uint8)
    pixels[..., 2] = 250
    from service.grpc.messages import inference

    message = inference.ModelInferRequest(model_name="colours",
                                          raw_input_contents=[pixels.tobytes()])
    message.inputs.add(name="pixels", datatype="UINT8", shape=list(pixels.shape))
    answer = servicer.model_infer(message, Call({}, "grpc-1"))
    found = answer.parameters["prediction_ids"].string_param
    assert rows(client, "SELECT prediction_id, request_id, top1 FROM predictions") == [
        (found, "grpc-1", "blue")]


def test_refused_requests_are_not_recorded(with_store):
    client = with_store(api_key=KEY)
    assert predict(client).status_code == 401
    assert predict(client, images=(b"not an image",),
                   headers={"X-API-Key": KEY}).status_code == 415
    assert predict(client, headers={"X-API-Key": KEY}).status_code == 200
    assert rows(client, "SELECT COUNT(*) FROM predictions") == [(1,)]


def test_feedback_answers_200_then_200_again_then_409(with_store):
    client = with_store()
    found = predict(client).get_json()["predictions"][0]["prediction_id"]
    first = send(client, {"prediction_id": found, "class": "red"})
    assert first.status_code == 200
    assert first.get_json() == {"prediction_id": found, "class": "red", "correct": True,
                                "model": "colours", "version": 7, "version_label": "stable"}
    assert send(client, {"prediction_id": found, "class": "red"}).status_code == 200
    conflict = send(client, {"prediction_id": found, "class": "blue"})
    assert conflict.status_code == 409
    assert conflict.get_json()["error"]["code"] == "feedback_conflict"
    metrics = client.get("/metrics").get_data(as_text=True)
    assert ('feedback_total{model="colours",outcome="correct",version="7",'
            'version_label="stable"}') in metrics


def test_feedback_refuses_unknown_ids_other_classes_and_bad_bodies(with_store):
    client = with_store(feedback_max_items=2)
    found = predict(client).get_json()["predictions"][0]["prediction_id"]
    cases = [({"prediction_id": "nobody-made-this", "class": "red"}, 404, "prediction_not_found"),
             ({"prediction_id": found, "class": "cat"}, 400, "unknown_class"),
             ({"prediction_id": found}, 400, "invalid_feedback"),
             ({"prediction_id": found, "class": 3}, 400, "invalid_feedback"),
             ([], 400, "invalid_feedback"),
             ([{"prediction_id": found, "class": "red"}] * 3, 400, "invalid_feedback"),
             ("just a string", 400, "invalid_feedback")]
    for body, status, code in cases:
        answer = send(client, body)
        assert (answer.status_code, answer.get_json()["error"]["code"]) == (status, code), body
    assert client.post("/feedback", data=b"{", content_type="application/json"
                       ).get_json()["error"]["code"] == "invalid_feedback"
    assert client.post("/feedback", data=b"x", content_type="text/plain").status_code == 415
    assert rows(client, "SELECT COUNT(*) FROM feedback") == [(0,)]


def test_a_list_of_feedback_is_answered_as_a_list(with_store):
    client = with_store()
    ids = [item["prediction_id"] for item in
           predict(client, images=(RED, GREEN)).get_json()["predictions"]]
    answer = send(client, [{"prediction_id": ids[0], "class": "red"},
                           {"prediction_id": ids[1], "class": "red"}])
    assert [item["correct"] for item in answer.get_json()["feedback"]] == [True, False]


def test_feedback_needs_the_key_and_keeps_only_its_hash(with_store):
    client = with_store(api_key=KEY)
    found = predict(client, headers={"Authorization": f"Bearer {KEY}"}).get_json()[
        "predictions"][0]["prediction_id"]
    assert send(client, {"prediction_id": found, "class": "red"}).status_code == 401
    assert send(client, {"prediction_id": found, "class": "red"},
                {"X-API-Key": KEY}).status_code == 200
    assert rows(client, "SELECT key_id FROM feedback") == [(key_id(KEY),)]
    assert KEY not in json.dumps(rows(client, "SELECT * FROM feedback"))


def test_the_model_shows_live_accuracy_as_counts(with_store, make_client):
    client = with_store()
    ids = [item["prediction_id"] for item in
           predict(client, images=(RED, GREEN, RED)).get_json()["predictions"]]
    send(client, [{"prediction_id": ids[0], "class": "red"},
                  {"prediction_id": ids[1], "class": "red"}])
    described = client.get("/models/colours").get_json()
    assert described["live_accuracy"] == [{"version": 7, "version_label": "stable",
                                           "labelled": 2, "correct": 1,
                                           "interval_95": [0.0945, 0.9055]}]
    assert "live_accuracy" not in make_client().get("/models/colours").get_json()


def test_a_store_that_is_down_never_fails_a_prediction(make_client):
    client = make_client(prediction_store="postgresql://nobody@127.0.0.1:9/none")
    answer = predict(client)
    assert answer.status_code == 200 and answer.get_json()["predictions"][0]["prediction_id"]
    refused = send(client, {"prediction_id": "x", "class": "red"})
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert refused.get_json()["error"]["code"] == "prediction_store_unavailable"
    assert "127.0.0.1" not in refused.get_data(as_text=True)
    assert client.get("/models/colours").get_json()["live_accuracy"] is None

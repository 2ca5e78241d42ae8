"""The prediction store in the real service: gunicorn's HTTP and gRPC workers record after the
fork, every face answers with prediction ids (Triton's clients read them), feedback takes them."""

import sqlite3

import numpy as np
import requests
import tritonclient.grpc as triton
import tritonclient.http as triton_http

from tests import support

MODEL = "shapes"


def encoded_input(module, colours):
    """A BYTES input of one JPEG per colour, as Triton's client module `module` builds it."""
    images = [support.encode(support.draw_picture(support.SHAPE_COLOURS[colour], 16, seed))
              for seed, colour in enumerate(colours)]
    tensor = module.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


def test_every_face_records_and_feedback_closes_the_loop(start_service, models_dir, tmp_path):
    store = tmp_path / "store"
    service = start_service(models_dir, workers=2, grpc_workers=1, prediction_store=str(store),
                            prediction_store_sample=1.0)
    service.wait_grpc_ready()
    image = support.encode(support.draw_picture(support.SHAPE_COLOURS["red"], 16))
    answer = requests.post(service.url("/predict"), files=[("file", ("a.jpg", image))],
                           headers={"X-Request-ID": "loop-1"}, timeout=30).json()
    ids = [answer["predictions"][0]["prediction_id"]]
    over_rest = triton_http.InferenceServerClient(service.url("").split("//")[1]).infer(
        MODEL, [encoded_input(triton_http, ["green", "blue"])])
    ids += over_rest.get_response()["parameters"]["prediction_ids"].split(",")
    over_grpc = triton.InferenceServerClient(service.grpc_target).infer(
        MODEL, [encoded_input(triton, ["blue"])], request_id="grpc-1")
    ids += over_grpc.get_response().parameters["prediction_ids"].string_param.split(",")
    assert len(set(ids)) == 4

    classes = ["red", "green", "blue", "blue"]
    for prediction_id, true_class in zip(ids, classes, strict=True):
        taken = requests.post(service.url("/feedback"), timeout=30,
                              json={"prediction_id": prediction_id, "class": true_class})
        assert taken.status_code == 200, taken.text
    again = requests.post(service.url("/feedback"), timeout=30,
                          json=[{"prediction_id": ids[0], "class": "red"}])
    assert again.status_code == 200 and again.json()["feedback"][0]["class"] == "red"
    conflict = requests.post(service.url("/feedback"), timeout=30,
                             json={"prediction_id": ids[0], "class": "blue"})
    assert conflict.status_code == 409

    with sqlite3.connect(store / "predictions.sqlite3") as database:
        routes = dict(database.execute("SELECT prediction_id, route FROM predictions"))
        assert database.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        kept = database.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        labelled = database.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
    assert [routes[found] for found in ids] == [
        "/predict", "/v2/models/<name>/infer", "/v2/models/<name>/infer",
        "/inference.GRPCInferenceService/ModelInfer"]
    assert kept == 4 and labelled == 4
    metrics = requests.get(service.url("/metrics"), timeout=30).text
    assert "prediction_store_records_written_total" in metrics
    assert 'feedback_total{model="shapes"' in metrics
    assert '"status": 500' not in service.log()

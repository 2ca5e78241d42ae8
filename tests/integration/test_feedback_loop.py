"""The prediction store in the real service: gunicorn's HTTP and gRPC workers record after the
fork, every face answers with prediction ids (Triton's clients read them), feedback takes them."""

import json
import re
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
    service = start_service(models_dir, workers=2, grpc_enabled=1, prediction_store=str(store),
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


def send_pictures(service, path, pictures):
    """POST each picture to `path`; [(prediction id, answered label)]."""
    answers = []
    for picture in pictures:
        answer = requests.post(service.url(path), timeout=30, files=[
            ("file", ("p.png", support.encode(picture, "PNG")))]).json()
        answers.append((answer["predictions"][0]["prediction_id"],
                        answer["predictions"][0]["label"]))
    return answers


def correct(service, answers, truths):
    """Send the true classes, in lists of up to 100."""
    items = [{"prediction_id": prediction_id, "class": truth}
             for (prediction_id, _), truth in zip(answers, truths, strict=True)]
    for start in range(0, len(items), 100):
        taken = requests.post(service.url("/feedback"), json=items[start:start + 100], timeout=60)
        assert taken.status_code == 200, taken.text


def cifar_sized(count, seed):
    """`count` 32x32 pictures of random colours and their classes."""
    colours = sorted(support.SHAPE_COLOURS)
    classes = [colours[(seed + index) % 3] for index in range(count)]
    return [support.draw_picture(support.SHAPE_COLOURS[name], 32, seed + index)
            for index, name in enumerate(classes)], classes


def test_the_loop_from_recorded_predictions_to_a_canary_judged_by_feedback(
        start_service, models_dir, shapes_dataset, tmp_path, capsys):
    from model_training import dataset
    from service.models import release

    store = str(tmp_path / "store")
    # The default share of images kept (10%), not everything.
    service = start_service(models_dir, prediction_store=store, model_poll_seconds=1)
    # 1-2. Version 1 serves; its predictions are recorded; feedback corrects them.
    pictures, classes = cifar_sized(240, 0)
    first = send_pictures(service, "/predict", pictures)
    correct(service, first, classes)
    # 3. Export, then train version 2 on the base set plus the feedback.
    exported = tmp_path / "feedback"
    assert dataset.main(["export", "--store", store, "--output", str(exported)]) == 0
    manifest = json.loads((exported / dataset.MANIFEST).read_text())
    assert 5 <= len(manifest["images"]) <= 60  # about a tenth of 240 distinct pictures
    assert {entry["class"] for entry in manifest["images"]} <= set(classes)
    # 4-5. The gate runs against a trusted test folder; version 2 becomes the canary.
    trusted = support.make_image_folder(tmp_path / "trusted", per_class=8, size=32)
    support.train_tiny_model(shapes_dataset, models_dir, "--data-dir", str(exported),
                             "--name", "shapes", "--test-dir", str(trusted),
                             "--release", "canary", "--canary-percent", "50",
                             "--gate-margin", "0.5")
    assert "release gate: version 2" in capsys.readouterr().out
    support.poll(lambda: (requests.get(service.url("/models/shapes"), timeout=10).json()
                          .get("canary") or {}).get("version") == 2, 60, service.log)
    # 6. Feedback on both versions; release status shows both live accuracies.
    for label, seed in (("stable", 1000), ("canary", 2000)):
        pictures, classes = cifar_sized(30, seed)
        answers = send_pictures(service, f"/models/shapes/labels/{label}/predict", pictures)
        correct(service, answers, classes)
    assert release.main(["--models-dir", str(models_dir), "--store", store, "status",
                         "shapes"]) == 0
    status = capsys.readouterr().out
    assert "live accuracy (feedback in the prediction store; stable 1, canary 2):" in status
    assert re.search(r"stable: \d+/270 right, 95% interval", status), status
    assert re.search(r"canary: \d+/30 right, 95% interval", status), status
    described = requests.get(service.url("/models/shapes"), timeout=10).json()
    counted = {(entry["version"], entry["version_label"]): entry["labelled"]
               for entry in described["live_accuracy"]}
    assert counted == {(1, "stable"): 270, (2, "canary"): 30}

"""AVIF and HEIC photos on every face of the real service: 12 megapixels, turned by both a
rotation box and an EXIF orientation, answered as the same pixels sent as PNG are.

The model is the shipped digits model (98.9% accurate), so the answer means something: the
tests' tiny model, trained in seconds, is nearly a coin toss on any picture.
"""

import base64
import shutil

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from PIL import Image
from sklearn.datasets import load_digits

from tests import photo_files, support

MODEL = "digits"
# Lossy coding moves pixels by a few levels; the probabilities move by less than this for
# the same picture, where another digit moves them by most of 1.
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One service with gRPC and the default 20 MiB body limit: a 12 MP PNG needs it."""
    models = tmp_path_factory.mktemp("photos") / "models"
    shutil.copytree(support.ROOT / "models" / MODEL, models / MODEL)
    running = support.RunningService(models, models.parent / "service.log", model_name=MODEL,
                                     grpc_enabled=1)
    try:
        yield running.wait_ready().wait_grpc_ready()
    finally:
        running.stop()


@pytest.fixture(scope="module")
def photos():
    """{format: bytes} of one 12 MP photo of a handwritten 3, upright as PNG and turned as
    AVIF and HEIC."""
    digits = load_digits()
    three = digits.images[list(digits.target).index(3)]
    grey = Image.fromarray(np.round(three * (255 / 16)).astype(np.uint8), "L")
    upright = grey.resize((4000, 3000), Image.Resampling.NEAREST).convert("RGB")
    return {"PNG": support.encode(upright, "PNG", compress_level=1),
            "AVIF": photo_files.turned_both_ways(photo_files.avif, upright),
            "HEIF": photo_files.turned_both_ways(photo_files.heif, upright)}


def confidences(response):
    """{label: confidence} of a /predict answer's one prediction, after checking it is a 200."""
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    return {entry["label"]: entry["confidence"] for entry in prediction["top_k"]}


def assert_same_answer(answer, reference):
    """The same top-1 label, and every probability within what lossy coding explains."""
    assert max(answer, key=answer.get) == max(reference, key=reference.get) == "3"
    # A clear answer, at least twice the next: lossy coding alone cannot swap the two.
    assert reference["3"] > 2 * sorted(reference.values())[-2]
    assert answer.keys() == reference.keys()
    assert all(abs(answer[label] - reference[label]) < TOLERANCE for label in reference), \
        (answer, reference)


@pytest.mark.parametrize("image_format", ["AVIF", "HEIF"])
def test_every_predict_form_and_route_answers_as_for_the_png(server, photos, image_format):
    png, photo = photos["PNG"], photos[image_format]
    reference = confidences(requests.post(server.url("/predict"), data=png, timeout=60,
                                          headers={"Content-Type": "image/png"}))
    kind = "image/avif" if image_format == "AVIF" else "image/heic"
    answers = [
        requests.post(server.url("/predict"), data=photo, timeout=60,
                      headers={"Content-Type": kind}),
        requests.post(server.url("/predict"), files={"file": ("photo", photo, kind)}, timeout=60),
        requests.post(server.url("/predict"), timeout=60,
                      json={"images": [base64.b64encode(photo).decode()]}),
        requests.post(server.url(f"/models/{MODEL}/predict"), data=photo, timeout=60,
                      headers={"Content-Type": "application/octet-stream"}),
    ]
    for answer in answers:
        assert_same_answer(confidences(answer), reference)


def probabilities_by_label(server, probabilities):
    """{label: probability} for the model's classes."""
    labels = requests.get(server.url("/model"), timeout=10).json()["classes"]
    return dict(zip(labels, map(float, probabilities), strict=True))


@pytest.mark.parametrize("image_format", ["AVIF", "HEIF"])
def test_v2_bytes_over_rest_and_grpc_answer_as_for_the_png(server, photos, image_format):
    images = np.array([photos["PNG"], photos[image_format]], dtype=np.object_)
    rest = triton_http.InferenceServerClient(server.base_url.removeprefix("http://"))
    grpc = triton_grpc.InferenceServerClient(server.grpc_target)
    try:
        for client, module in ((rest, triton_http), (grpc, triton_grpc)):
            tensor = module.InferInput("image", [2], "BYTES")
            tensor.set_data_from_numpy(images)
            png, photo = client.infer(MODEL, [tensor]).as_numpy("probabilities")
            assert_same_answer(probabilities_by_label(server, photo),
                               probabilities_by_label(server, png))
    finally:
        rest.close()
        grpc.close()
    assert '"status": 500' not in server.log()

"""The HTTP API of DESIGN.md, asked of the real gunicorn service and the real model.

Request validation and error shapes are tested in-process, in tests/unit/test_predict_requests.py
and tests/unit/test_routes.py; here are the answers of a real model and what needs a real socket.
"""

import base64
import io

import pytest
import requests
from PIL import Image

from tests import support

RED = support.SHAPE_COLOURS["red"]


def jpeg(colour=RED, size=24, seed=0):
    return support.encode(support.draw_picture(colour, size, seed))


def predict(server, **kwargs):
    params = kwargs.pop("params", None)
    return requests.post(server.url("/predict"), params=params, timeout=30, **kwargs)


# Every route.

def test_liveness_and_readiness(server):
    assert requests.get(server.url("/health/live")).json() == {"status": "ok"}
    ready = requests.get(server.url("/health/ready"))
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": {"name": "shapes", "version": 1}}
    assert requests.get(server.url("/health")).json() == ready.json()


def test_model_describes_the_serving_version(server):
    body = requests.get(server.url("/model")).json()
    assert body["name"] == "shapes" and body["version"] == 1
    assert body["classes"] == ["blue", "green", "red"] and body["loaded_at"]
    assert "test_accuracy" in body["metrics"]


def test_metrics_openapi_and_page_answer(server):
    metrics = requests.get(server.url("/metrics"))
    assert metrics.status_code == 200 and "http_requests_total" in metrics.text
    assert requests.get(server.url("/openapi.json")).json()["openapi"].startswith("3.")
    page = requests.get(server.url("/"))
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")


# The three input forms.

def test_multipart_files_are_answered_in_order_with_their_names(server):
    png = support.encode(support.draw_picture(RED), "PNG")
    files = [("file", ("first.jpg", jpeg(), "image/jpeg")),
             ("file", ("second.png", png, "image/png"))]
    response = predict(server, files=files)
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == {"name": "shapes", "version": 1, "label": "stable"}
    assert [p["filename"] for p in body["predictions"]] == ["first.jpg", "second.png"]
    for prediction in body["predictions"]:
        assert prediction["label"] in ("blue", "green", "red")
        assert prediction["top_k"][0] == {"label": prediction["label"],
                                          "confidence": prediction["confidence"]}
        confidences = [entry["confidence"] for entry in prediction["top_k"]]
        assert confidences == sorted(confidences, reverse=True) and len(confidences) == 3


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/octet-stream"])
def test_a_raw_body_is_one_image(server, content_type):
    response = predict(server, data=jpeg(), headers={"Content-Type": content_type})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1


def test_json_takes_base64_and_data_urls(server):
    encoded = base64.b64encode(jpeg()).decode()
    response = predict(server, json={"images": [encoded, "data:image/jpeg;base64," + encoded]})
    assert response.status_code == 200
    first, second = response.json()["predictions"]
    assert first["top_k"] == second["top_k"]


def test_the_same_image_gets_the_same_answer_in_every_form(server):
    image = jpeg(seed=7)
    answers = [
        predict(server, files={"file": ("a.jpg", image, "image/jpeg")}),
        predict(server, data=image, headers={"Content-Type": "image/jpeg"}),
        predict(server, json={"images": [base64.b64encode(image).decode()]}),
    ]
    assert len({str(answer.json()["predictions"][0]["top_k"]) for answer in answers}) == 1


# top_k.

@pytest.mark.parametrize("top_k, expected", [("1", 1), ("3", 3)])
def test_top_k_sets_how_many_labels_come_back(server, top_k, expected):
    response = predict(server, params={"top_k": top_k}, data=jpeg(),
                       headers={"Content-Type": "image/jpeg"})
    assert len(response.json()["predictions"][0]["top_k"]) == expected


# Errors.

def test_a_body_over_the_limit_is_413(server):
    # Through a real socket: the answer must reach a client that is still sending the body.
    response = predict(server, data=b"\xff" * 2_500_000, headers={"Content-Type": "image/jpeg"})
    support.assert_error(response, 413, "request_too_large")


def test_the_service_survives_a_burst_of_bad_input(server):
    for payload in (b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff" + b"\0" * 100, b"BM"):
        status = predict(server, data=payload, headers={"Content-Type": "image/png"}).status_code
        assert 400 <= status < 500
    assert predict(server, data=jpeg(), headers={"Content-Type": "image/jpeg"}).status_code == 200


def test_a_large_upload_of_a_real_photo_size_is_resized(server):
    photo = Image.new("RGB", (3000, 2000), RED)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=85)
    response = predict(server, data=buffer.getvalue(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200

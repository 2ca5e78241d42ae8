"""A first check that the real server starts and classifies."""

import requests

from tests import support


def test_service_classifies_an_upload(service):
    image = support.encode(support.draw_picture(support.SHAPE_COLOURS["red"]))
    response = requests.post(service.url("/predict"),
                             files={"file": ("red.jpg", image, "image/jpeg")})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == {"name": "shapes", "version": 1, "label": "stable"}
    assert body["predictions"][0]["filename"] == "red.jpg"

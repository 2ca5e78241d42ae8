"""POST /predict in-process: its three input forms, top_k, and every way a request is refused."""

import base64
import io

import pytest
from PIL import Image

from tests import support
from tests.unit.test_images import png_header_only

RED = support.SHAPE_COLOURS["red"]


def jpeg(colour=RED, seed=0):
    return support.encode(support.draw_picture(colour, seed=seed))


def files(*parts):
    """A multipart body of (filename, bytes) file parts, all under the field "file"."""
    return {"file": [(io.BytesIO(data), name, "image/jpeg") for name, data in parts]}


def post(client, query=None, **kwargs):
    return client.post("/predict", query_string=query, **kwargs)


def test_multipart_files_reach_the_model_in_order_with_their_names(client):
    green, blue = support.SHAPE_COLOURS["green"], support.SHAPE_COLOURS["blue"]
    response = post(client, data=files(("g.jpg", jpeg(green)), ("b.jpg", jpeg(blue))),
                    content_type="multipart/form-data")
    body = response.get_json()
    assert body["model"] == {"name": "colours", "version": 7, "label": "stable"}
    assert [(p["filename"], p["label"]) for p in body["predictions"]] == [("g.jpg", "green"),
                                                                          ("b.jpg", "blue")]


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/octet-stream"])
def test_a_raw_body_is_one_image(client, content_type):
    [prediction] = post(client, data=jpeg(), content_type=content_type).get_json()["predictions"]
    assert prediction["filename"] is None and prediction["label"] == "red"
    assert prediction["top_k"][0] == {"label": "red", "confidence": prediction["confidence"]}


def test_json_takes_base64_and_data_urls(client):
    encoded = base64.b64encode(jpeg(support.SHAPE_COLOURS["blue"])).decode()
    response = post(client, json={"images": [encoded, "data:image/jpeg;base64," + encoded]})
    assert [p["label"] for p in response.get_json()["predictions"]] == ["blue", "blue"]


@pytest.mark.parametrize("top_k", ["0", "4", "two", "-1", ""])
def test_top_k_out_of_range_is_a_bad_request(client, top_k):
    response = post(client, {"top_k": top_k}, data=jpeg(), content_type="image/jpeg")
    support.assert_error(response, 400, "invalid_top_k")


def test_a_truncated_jpeg_is_400(client):
    data = support.encode(Image.effect_noise((64, 64), 50).convert("RGB"))
    response = post(client, data=files(("cut.jpg", data[: len(data) // 2])),
                    content_type="multipart/form-data")
    support.assert_error(response, 400, "corrupt_image")


def test_a_text_file_named_jpg_is_415(client):
    response = post(client, data=files(("notes.jpg", b"hello, I am text\n")),
                    content_type="multipart/form-data")
    support.assert_error(response, 415, "unsupported_image")


def test_a_20000_by_20000_png_is_413_before_it_is_decoded(client):
    # Only the header is real: had the service decoded first, it would have found no data (400).
    response = post(client, data=png_header_only(20000, 20000), content_type="image/png")
    support.assert_error(response, 413, "image_too_large")
    assert client.get("/health/live").status_code == 200


def test_an_empty_body_is_400(client):
    support.assert_error(post(client, data=b"", content_type="image/jpeg"), 400, "empty_image")


def test_a_form_without_file_parts_is_refused(client):
    support.assert_error(post(client, data={"image": "cat.jpg"}), 415, "unsupported_media_type")
    response = post(client, data={"note": "not a file"}, content_type="multipart/form-data")
    support.assert_error(response, 400, "no_images")
    assert "note" in response.get_json()["error"]["message"]


def form(*parts, boundary="b0undary", end=True):
    """A multipart body, written by hand, of (Content-Disposition, bytes) parts."""
    body = b"".join(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
                    + data + b"\r\n" for disposition, data in parts)
    return body + (f"--{boundary}--\r\n".encode() if end else b"")


def post_form(client, body, content_type="multipart/form-data; boundary=b0undary"):
    return post(client, data=body, content_type=content_type)


def test_text_fields_beside_the_files_are_ignored(client):
    body = form(('form-data; name="note"', b"hello"), ('form-data; name="file"; filename="a.jpg"',
                                                       jpeg()), ('form-data; name="x"', b"1"))
    [prediction] = post_form(client, body).get_json()["predictions"]
    assert (prediction["filename"], prediction["label"]) == ("a.jpg", "red")


def test_a_file_part_with_an_empty_filename_is_still_an_image(client):
    body = form(('form-data; name="file"; filename=""', jpeg()))
    [prediction] = post_form(client, body).get_json()["predictions"]
    assert prediction["filename"] is None and prediction["label"] == "red"


@pytest.mark.parametrize("body, reason", [
    (form(('form-data; name="file"; filename="a.jpg"', jpeg()), end=False), "Unexpected end"),
    (form(('form-data; name="file"; filename="a.jpg"', jpeg()))[:100], "Unexpected end"),
    (b"no boundary anywhere in here", "Unexpected end"),
    (form(('attachment; filename="a.jpg"', jpeg())), "Content-Disposition"),
    (b"--b0undary\r\nContent-Type: image/jpeg\r\n\r\n" + jpeg() + b"\r\n--b0undary--\r\n",
     "Missing Content-Disposition"),
    (form(('form-data; name="file"; filename="a.jpg"\r\nX-Long: ' + "a" * 5000, jpeg())),
     "header length"),
    (form(('form-data; name="file"; filename="a.jpg"', jpeg())).replace(b"\r\n", b"\n"),
     "line break"),
])
def test_a_malformed_form_is_400_with_the_reason(client, body, reason):
    response = post_form(client, body)
    support.assert_error(response, 400, "invalid_multipart")
    assert reason in response.get_json()["error"]["message"]


def test_a_form_without_a_boundary_is_400(client):
    body = form(('form-data; name="file"; filename="a.jpg"', jpeg()))
    response = post_form(client, body, content_type="multipart/form-data")
    support.assert_error(response, 400, "invalid_multipart")
    assert "boundary" in response.get_json()["error"]["message"]


def test_parsing_stops_at_more_parts_than_images_and_text_fields_allow(client):
    # The client allows 4 images and 16 text fields: 20 parts. The 21st is refused, and the
    # part after it is not parsed (it is malformed: that would be a 400).
    fields = [(f'form-data; name="n{n}"', b"x") for n in range(21)]
    body = form(*fields, end=False) + b"--b0undary\r\nnot a header\r\n\r\n"
    response = post_form(client, body)
    support.assert_error(response, 413, "too_many_parts")
    assert "at most 4 images" in response.get_json()["error"]["message"]
    support.assert_error(post_form(client, form(*fields[:20])), 400, "no_images")


def test_json_with_the_wrong_field_is_400(client):
    response = post(client, json={"image": base64.b64encode(jpeg()).decode()})
    support.assert_error(response, 400, "invalid_json")
    support.assert_error(post(client, data=b"{not json", content_type="application/json"),
                 400, "invalid_json")


def test_bad_base64_is_400(client):
    response = post(client, json={"images": [base64.b64encode(jpeg()).decode(), "%%%not base64"]})
    support.assert_error(response, 400, "invalid_base64")
    assert "images[1]" in response.get_json()["error"]["message"]


def test_too_many_files_is_413(client):
    parts = [(f"{n}.jpg", jpeg(seed=n)) for n in range(5)]
    support.assert_error(post(client, data=files(*parts), content_type="multipart/form-data"),
                 413, "too_many_images")


def test_a_body_over_the_limit_is_413(client):
    response = post(client, data=b"\xff" * 2_500_000, content_type="image/jpeg")
    support.assert_error(response, 413, "request_too_large")


def test_an_unsupported_content_type_is_415(client):
    support.assert_error(post(client, data="hello", content_type="text/plain"),
                 415, "unsupported_media_type")


def test_bad_input_never_reaches_the_model(make_client):
    client = make_client()
    model = client.application.extensions["model_repository"].default.table.stable
    for payload in (b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff" + b"\0" * 100, b"BM"):
        status = post(client, data=payload, content_type="image/png").status_code
        assert 400 <= status < 500
    assert model.batch_sizes == []
    assert post(client, data=jpeg(), content_type="image/jpeg").status_code == 200
    assert model.batch_sizes == [1]

"""The upload page in headless Chromium against the real gunicorn service."""

import base64
import os
from urllib.parse import urlsplit

import pytest
import requests

from tests import support

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(support.CHROMIUM),
                       reason=f"{support.CHROMIUM} is missing (apt-get install chromium)"),
]

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="playwright is not installed (pip install -r requirements-test.txt)")

# Chromium as Debian ships it, kept off every network but the service's loopback.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = support.ROOT / "test-artifacts"


@pytest.fixture
def page():
    """A fresh page in headless Chromium, closed after the test."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=support.CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 900, "height": 760})
        finally:
            browser.close()


def test_an_uploaded_image_gets_labels_and_a_text_file_gets_an_error(service, page, tmp_path):
    picture = tmp_path / "red-circle.jpg"
    support.draw_picture(support.SHAPE_COLOURS["red"], size=96, seed=3).save(picture, quality=92)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("These are notes, not a picture.\n")
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    expect = sync_api.expect

    page.goto(service.url("/"))
    expect(page.locator("#model")).to_contain_text("shapes")
    expect(page.locator("#model")).to_contain_text("version 1")

    page.set_input_files("#file", str(picture))
    expect(page.locator("#preview")).to_be_visible()
    labels = page.locator("#labels .label")
    expect(labels).to_have_count(3, timeout=30_000)
    assert set(labels.all_inner_texts()) == set(support.SHAPE_COLOURS)
    confidences = page.locator("#labels .confidence").all_inner_texts()
    assert all(text.endswith("%") for text in confidences)
    bar_widths = [box["width"] for box in
                  (bar.bounding_box() for bar in page.locator("#labels .bar span").all())]
    assert bar_widths == sorted(bar_widths, reverse=True) and bar_widths[0] > 0
    expect(page.locator("#error")).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)

    page.set_input_files("#file", str(text_file))
    error = page.locator("#error")
    expect(error).to_be_visible(timeout=30_000)
    expect(error).to_contain_text("notes.txt")
    expect(error).to_contain_text("not an image in a supported format")
    expect(page.locator("#labels")).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / "page-error.png"), full_page=True)

    # Nothing is fetched from anywhere but the service itself.
    origins = {f"{parts.scheme}://{parts.netloc}" for parts in map(urlsplit, requested)
               if parts.scheme in ("http", "https")}
    assert origins == {service.base_url}


def test_a_heic_picked_and_an_avif_dropped_get_labels(service, page, tmp_path):
    from tests import photo_files

    picture = support.draw_picture(support.SHAPE_COLOURS["blue"], size=96, seed=5)
    heic = tmp_path / "IMG_0001.HEIC"
    heic.write_bytes(photo_files.heif(picture))
    expect = sync_api.expect
    page.goto(service.url("/"))
    # The picker names the extensions too: some systems give these files no image/ type.
    accepted = page.locator("#file").get_attribute("accept").split(",")
    assert {"image/*", ".heic", ".heif", ".avif"} <= set(accepted)

    page.set_input_files("#file", str(heic))
    expect(page.locator("#labels .label")).to_have_count(3, timeout=30_000)
    expect(page.locator("#file-name")).to_have_text("IMG_0001.HEIC")

    # A drop carries the file as the browser read it from disk, with whatever type it has.
    dropped = page.evaluate_handle(
        """([name, bytes]) => {
             const transfer = new DataTransfer();
             transfer.items.add(new File([new Uint8Array(bytes)], name, {type: ""}));
             return transfer;
           }""", ["photo.avif", list(photo_files.avif(picture))])
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    expect(page.locator("#file-name")).to_have_text("photo.avif")
    expect(page.locator("#labels .label")).to_have_count(3, timeout=30_000)
    expect(page.locator("#error")).to_be_hidden()


def test_below_the_threshold_the_page_says_not_sure_and_shows_the_top_guesses(
        start_service, models_dir, page, tmp_path):
    # A copy whose min_confidence is 1: no answer reaches it, so every answer is unknown.
    support.publish_copy(models_dir, 2, metadata_changes={"min_confidence": 1.0})
    service = start_service(models_dir)
    picture = tmp_path / "red-circle.jpg"
    support.draw_picture(support.SHAPE_COLOURS["red"], size=96, seed=3).save(picture, quality=92)
    expect = sync_api.expect

    page.goto(service.url("/"))
    expect(page.locator("#model")).to_contain_text("version 2")
    page.set_input_files("#file", str(picture))
    verdict = page.locator("#verdict")
    expect(verdict).to_be_visible(timeout=30_000)
    expect(verdict).to_contain_text("Not sure")
    expect(page.locator("#labels .label")).to_have_count(3)
    expect(page.locator("#labels")).to_have_class("labels guesses")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-not-sure.png"), full_page=True)


def predict_and_correct(service, wrong):
    """Three predictions through /predict; feedback on each: its own answer is the true class,
    except for the first `wrong` of them. The true classes and the answers."""
    images = [support.encode(support.draw_picture(colour, size=32, seed=seed))
              for seed, colour in enumerate(support.SHAPE_COLOURS.values())]
    answer = requests.post(service.url("/predict"), timeout=30, json={
        "images": [base64.b64encode(image).decode() for image in images]})
    assert answer.status_code == 200, answer.text
    feedback = []
    for index, prediction in enumerate(answer.json()["predictions"]):
        truth = prediction["top_k"][0]["label"]
        if index < wrong:
            truth = next(label for label in support.SHAPE_COLOURS if label != truth)
        feedback.append({"prediction_id": prediction["prediction_id"], "class": truth})
    sent = requests.post(service.url("/feedback"), json=feedback, timeout=30)
    assert sent.status_code == 200, sent.text


def test_the_operator_view_shows_versions_and_live_accuracy_and_refreshes(
        start_service, models_dir, page, tmp_path):
    from service.models import release

    # shapes 1 stable, and 2 (a copy) as a shadow that sees every request.
    support.publish_copy(models_dir, 2)
    folder = str(models_dir / "shapes")
    release.promote(folder, 1)
    release.set_canary(folder, 2, 100, "shadow")
    # A drift window of three answers: the three predictions below fill it.
    service = start_service(models_dir, prediction_store=tmp_path / "store",
                            metrics_allow="127.0.0.1", drift_window=3)
    fetched = []
    page.on("request", lambda request: fetched.append(request.url)
            if request.url.endswith("/operations/models") else None)
    loads = []
    page.on("load", lambda _: loads.append(1))
    expect = sync_api.expect

    page.goto(service.url("/operations"))
    model = page.locator('section[data-model="shapes"]')
    expect(model.locator("h2")).to_have_text("shapes · ready", timeout=30_000)
    expect(model.locator(".canary")).to_have_text(
        "stable: version 1 · canary: version 2 sees a copy of 100% of requests (shadow)")
    stable, shadow = model.locator('tr[data-version="1"]'), model.locator('tr[data-version="2"]')
    expect(stable.locator(".labels-cell")).to_have_text("stable")
    expect(shadow.locator(".labels-cell")).to_have_text("canary")
    expect(stable.locator(".accuracy")).to_have_text("no feedback yet")
    expect(page.locator("#summary")).to_contain_text("1 model · prediction store on")

    predict_and_correct(service, wrong=1)
    # Drawn again without a reload: the counts beside the rate, and the interval.
    expect(stable.locator(".accuracy")).to_have_text(
        "stable: 2 of 3 right (66.7%; 95% interval 20.8–93.8%)", timeout=20_000)
    expect(shadow.locator(".accuracy")).to_have_text("no feedback yet")
    # Version 2 is a copy of 1: its copies agree on every image.
    expect(shadow.locator(".shadow")).to_have_text(
        "3 of 3 agreed with version 1 (100.0%)", timeout=20_000)
    expect(stable.locator(".drift")).to_contain_text("over 3 answers")
    assert len(loads) == 1 and len(fetched) >= 2
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-operations.png"), full_page=True)


def test_outside_metrics_allow_the_operator_view_asks_for_a_key_and_opens_with_one(
        start_service, models_dir, page):
    key = "operator-key-long-enough-1234"
    service = start_service(models_dir, metrics_allow="192.0.2.1", api_key=key)
    expect = sync_api.expect

    page.goto(service.url("/operations"))
    error = page.locator("#error")
    expect(error).to_be_visible(timeout=30_000)
    expect(error).to_contain_text("This view is not open to you")
    expect(error).to_contain_text("METRICS_ALLOW")
    expect(page.locator("section[data-model]")).to_have_count(0)

    page.fill("#api-key", "not-the-right-key-at-all")
    page.press("#api-key", "Enter")
    expect(error).to_contain_text("A valid API key is required")
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")
    expect(page.locator('section[data-model="shapes"] tr[data-version="1"]')).to_be_visible()
    expect(error).to_be_hidden()
    # The store is off here: the view says so instead of showing a rate.
    expect(page.locator('tr[data-version="1"] .accuracy')).to_have_text("prediction store off")

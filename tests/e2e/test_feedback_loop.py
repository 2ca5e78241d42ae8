"""The README's loop through compose: the store on, predictions and feedback, `release status`
with live accuracy, the labelled images exported by the trainer container, retraining on them."""

import json
import re

import pytest

from tests import support
from tests.e2e.compose import MODEL_NAME, running_project, skip_without_compose

skip_without_compose()

FEEDBACK_IMAGES = 12
WRONG = 4  # of those, the ones told a class other than the answer


@pytest.fixture(scope="module")
def store_project(tmp_path_factory, shapes_dataset):
    """The compose stack with the README's `PREDICTION_STORE=/app/store`, every image kept
    (PREDICTION_STORE_SAMPLE=1: at the default 10%, which of a dozen drawings is kept is
    up to their hashes)."""
    with running_project(tmp_path_factory.mktemp("loop"), shapes_dataset,
                         PREDICTION_STORE="/app/store", PREDICTION_STORE_SAMPLE="1") as project:
        project.wait_ready()
        yield project


def test_feedback_gives_live_accuracy_and_the_labelled_images_train_a_new_version(store_project):
    answers = []
    for seed in range(FEEDBACK_IMAGES):
        colour = list(support.SHAPE_COLOURS.values())[seed % len(support.SHAPE_COLOURS)]
        jpeg = support.encode(support.draw_picture(colour, size=40, seed=seed))
        response = store_project.predict(jpeg, f"drawing-{seed}.jpg")
        assert response.status_code == 200, response.text
        answers.append(response.json())
    classes = store_project.http.get(store_project.url("/model"), timeout=10).json()["classes"]
    stable = answers[0]["model"]["version"]
    for index, answer in enumerate(answers):
        [prediction] = answer["predictions"]
        guess = prediction["label"] or prediction["top_k"][0]["label"]
        told = guess if index >= WRONG else next(name for name in classes if name != guess)
        sent = {"prediction_id": prediction["prediction_id"], "class": told}
        feedback = store_project.http.post(store_project.url("/feedback"), json=sent, timeout=10)
        assert feedback.status_code == 200, feedback.text

    # `release status` reads the feedback through the predictions volume.
    status = store_project.compose("run", "--rm", "-T", "release", "status", MODEL_NAME).stdout
    assert "live accuracy" in status, status
    right = sum(1 for index, answer in enumerate(answers)
                if index >= WRONG and answer["predictions"][0]["label"] is not None)
    unknown = FEEDBACK_IMAGES - WRONG - right  # an "unknown" answer never matches
    assert re.search(rf"stable: {right}/{FEEDBACK_IMAGES} right", status), (status, unknown)

    # The trainer container exports the labelled images into class folders...
    exported = "/app/store/exports/1"
    result = store_project.compose(
        "--profile", "train", "run", "--rm", "-T", "--entrypoint", "python", "trainer",
        "-m", "model_training.dataset", "export", "--store", "/app/store", "--output", exported,
        timeout=120)
    assert f"exported {FEEDBACK_IMAGES} labelled images" in result.stdout, result.stdout
    manifest = store_project.compose(
        "--profile", "train", "run", "--rm", "-T", "--entrypoint", "cat", "trainer",
        f"{exported}/manifest.json").stdout
    assert len(json.loads(manifest)["images"]) == FEEDBACK_IMAGES

    # ... and a retrain takes them beside a base folder, published for the gate to judge.
    result = store_project.compose(
        "--profile", "train", "run", "--rm", "-T", "trainer",
        "--data-dir", store_project.training_folder, "--data-dir", exported,
        "--epochs", "1", "--batch-size", "16", "--width", "8", "--image-size", "32",
        "--validation-split", "0.2", "--test-split", "0.2", "--precision", "float32",
        "--allow-class-change", "--release", "publish", timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"published: /app/models/{MODEL_NAME}/{stable + 1}" in output, output

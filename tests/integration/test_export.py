"""The serving forms: model.tflite checked against Keras before publishing, and the SavedModel."""

import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from model_training import export
from service.models.artifact import PUBLISHED_FILES, SAVED_MODEL_VARIABLES, published_versions
from service.models.inference import LiteRunner, ServingModel
from tests import support


class DisagreeingRunner(LiteRunner):
    """A converted model whose answers come out in the wrong class order, like a bad conversion."""

    def __call__(self, images):
        return np.roll(super().__call__(images), 1, axis=1)


def strip_serving_forms(folder):
    """Make `folder` look like a version published before model.tflite and the SavedModel."""
    for name in ("model.tflite", "saved_model.pb", "fingerprint.pb"):
        (folder / name).unlink()
    shutil.rmtree(folder / SAVED_MODEL_VARIABLES)
    metadata = json.loads((folder / "metadata.json").read_text())
    del metadata["serving"]
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return metadata


def test_training_records_the_check_of_the_converted_model(trained_models):
    metadata = json.loads((trained_models / "shapes" / "1" / "metadata.json").read_text())
    check = metadata["serving"]["tflite"]
    assert check["images"] == metadata["dataset"]["test_images"] == 18
    assert check["top1_agreement"] == 1.0 and 0 <= check["max_probability_difference"] < 1e-4
    assert metadata["serving"]["saved_model"]["signature"] == "serving_default"


def test_the_saved_model_serves_uint8_pixels_like_the_keras_model(trained_models):
    folder = trained_models / "shapes" / "1"
    images = np.random.default_rng(3).integers(0, 256, (5, 16, 16, 3), np.uint8)
    model = keras.saving.load_model(folder / "model.keras")
    expected = model(images.astype(np.float32), training=False)
    signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    answer = signature(pixels=tf.constant(images))["probabilities"]
    assert np.allclose(answer, expected, atol=1e-5)


def test_a_converted_model_that_disagrees_fails_the_run_and_publishes_nothing(
        tmp_path, shapes_dataset, monkeypatch, capsys):
    from model_training.train import main

    monkeypatch.setattr(export, "LiteRunner", DisagreeingRunner)
    status = main(["--data-dir", str(shapes_dataset), "--output", str(tmp_path / "models"),
                   "--epochs", "1", "--batch-size", "16", "--width", "8", "--image-size", "16",
                   "--validation-split", "0.2", "--test-split", "0.2", "--precision", "float32"])
    assert status == 2
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("error: the converted model.tflite gives the Keras model's top label")
    assert "nothing was published" in line
    versions = tmp_path / "models" / "shapes"
    assert published_versions(versions) == [] and list(versions.iterdir()) == []


def test_a_failed_check_writes_nothing_into_the_folder(trained_models, tmp_path):
    model = keras.saving.load_model(trained_models / "shapes" / "1" / "model.keras")
    images = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), np.uint8)
    with pytest.raises(export.ExportError, match="at least 101.0% needed"):
        export.export_serving_forms(model, images, str(tmp_path), min_agreement=1.01)
    assert list(tmp_path.iterdir()) == []


def test_the_export_command_adds_the_serving_forms_in_place(models_dir, capsys):
    folder = models_dir / "shapes" / "1"
    before = strip_serving_forms(folder)
    with pytest.raises(Exception, match="no model.tflite"):
        ServingModel(folder)

    # The images come from the dataset metadata.json names, which is still here.
    assert export.main([str(folder), "--max-images", "40"]) == 0

    assert "top-1 agreement 1.0000" in capsys.readouterr().out
    assert all((folder / name).exists() for name in PUBLISHED_FILES)
    assert not [path for path in folder.iterdir() if path.name.startswith(".tmp-")]
    metadata = json.loads((folder / "metadata.json").read_text())
    assert {key: value for key, value in metadata.items() if key != "serving"} == before
    assert metadata["serving"]["tflite"]["images"] == 40
    assert metadata["serving"]["tflite"]["checked_on"].startswith("40 images from ")
    assert ServingModel(folder).infer(np.zeros((2, 16, 16, 3), np.uint8)).shape == (2, 3)
    # Run again (say, on a retrained version) it replaces the forms it wrote.
    assert export.main([str(folder), "--max-images", "10"]) == 0
    assert json.loads((folder / "metadata.json").read_text())["serving"]["tflite"]["images"] == 10


def test_the_export_command_refuses_what_it_cannot_check(models_dir, tmp_path, capsys):
    folder = models_dir / "shapes" / "1"
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["dataset"]["source"] = str(tmp_path / "gone")
    (folder / "metadata.json").write_text(json.dumps(metadata))
    assert export.main([str(folder)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: the images the model was trained on")
    assert export.main([str(tmp_path)]) == 2
    assert "is not a version folder" in capsys.readouterr().err
    assert export.main([str(folder), "--data-dir", str(support.ROOT / "service")]) == 2

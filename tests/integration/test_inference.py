"""The fast inference path gives the Keras model's own answers, for any batch size."""

import numpy as np
import pytest

from service import inference
from service.model_store import ServingModel


@pytest.fixture(scope="module")
def serving_model(trained_models):
    """The tiny trained model, compiled for batches of up to 8 images."""
    return ServingModel(trained_models / "shapes" / "1", warm_batch_size=8)


@pytest.mark.parametrize("count", [1, 3, 8, 13, 20])
def test_every_batch_size_matches_the_keras_model(serving_model, count):
    images = np.random.default_rng(count).integers(0, 256, (count, 16, 16, 3), np.uint8)
    expected = serving_model.model(images.astype(np.float32), training=False).numpy()
    scores = serving_model.infer(images)
    assert scores.shape == (count, 3)
    assert np.allclose(scores, expected, atol=1e-5)


def test_the_model_is_served_through_tensorflow_lite(serving_model):
    assert isinstance(serving_model._run, inference.LiteRunner)
    assert serving_model._run.sizes == [1, 2, 4, 8]


def test_a_model_that_does_not_convert_is_served_through_tensorflow(trained_models, monkeypatch):
    def refuse(*args):
        raise ValueError("no conversion today")

    monkeypatch.setattr(inference, "LiteRunner", refuse)
    model = ServingModel(trained_models / "shapes" / "1", warm_batch_size=4)
    assert isinstance(model._run, inference.GraphRunner)
    images = np.zeros((5, 16, 16, 3), np.uint8)
    assert np.allclose(model.infer(images),
                       model.model(images.astype(np.float32), training=False), atol=1e-5)

"""The LiteRT path gives the Keras model's own answers for any batch size, and refuses bad files."""

import numpy as np
import pytest

from service.models.inference import LiteRunner, ModelLoadError, ServingModel
from tests.support import publish_copy


@pytest.fixture(scope="module")
def serving_model(trained_models):
    """The tiny trained model's model.tflite, allocated for invokes of up to 4 images."""
    return ServingModel(trained_models / "shapes" / "1", warm_batch_size=8)


@pytest.fixture(scope="module")
def keras_model(trained_models):
    """The same version's model.keras, as training left it."""
    import keras

    return keras.saving.load_model(trained_models / "shapes" / "1" / "model.keras", compile=False)


@pytest.mark.parametrize("count", [1, 3, 8, 13, 20])
def test_every_batch_size_matches_the_keras_model(serving_model, keras_model, count):
    images = np.random.default_rng(count).integers(0, 256, (count, 16, 16, 3), np.uint8)
    expected = keras_model(images.astype(np.float32), training=False).numpy()
    scores = serving_model.infer(images)
    assert scores.shape == (count, 3)
    assert np.allclose(scores, expected, atol=1e-5)


def test_one_interpreter_per_runner_resized_to_each_batch(trained_models):
    content = (trained_models / "shapes" / "1" / "model.tflite").read_bytes()
    runner = LiteRunner(content, max_batch_size=4, threads=1)
    assert runner.input_shape == (16, 16, 3) and runner.max_batch_size == 4
    images = np.random.default_rng(7).integers(0, 256, (11, 16, 16, 3), np.uint8)
    alone = np.concatenate([runner(images[i:i + 1]) for i in range(len(images))])
    # 11 images run as 4 + 4 + 3; then sizes that shrink and grow again.
    assert np.allclose(runner(images), alone, atol=1e-6)
    for count in (2, 4, 1, 3):
        assert np.allclose(runner(images[:count]), alone[:count], atol=1e-6)


def test_the_version_runs_invokes_of_at_most_four_images(trained_models):
    model = ServingModel(trained_models / "shapes" / "1", warm_batch_size=32)
    assert model._run.max_batch_size == 4
    assert model._run_all_cores.max_batch_size in (1, 4)  # 4: one core, one runner


def test_a_file_that_is_not_a_tflite_model_is_refused(models_dir):
    publish_copy(models_dir, 2, break_model=True)
    with pytest.raises(ModelLoadError, match="unreadable model.tflite"):
        ServingModel(models_dir / "shapes" / "2")


def test_a_model_that_takes_floats_is_refused(models_dir, tmp_path):
    import tensorflow as tf

    spec = tf.TensorSpec((None, 16, 16, 3), tf.float32)
    scale = tf.function(lambda images: tf.nn.softmax(tf.reduce_mean(images, [1, 2])),
                        input_signature=[spec])
    converted = tf.lite.TFLiteConverter.from_concrete_functions(
        [scale.get_concrete_function()]).convert()
    assert LiteRunner(converted).input_dtype == np.float32
    publish_copy(models_dir, 2)
    (models_dir / "shapes" / "2" / "model.tflite").write_bytes(converted)
    with pytest.raises(ModelLoadError, match="takes float32 input"):
        ServingModel(models_dir / "shapes" / "2")

"""The network's parts that training relies on: the whitening stem, Dirac start, optimizer."""

import keras
import numpy as np
import pytest

from model_training.model import (
    BiasScaledSGD,
    Lookahead,
    WarmupLinearDecay,
    identity_init,
    make_model,
    whiten,
)


def correlated_images(count=400, size=16, seed=0):
    """Smooth random pictures: neighbouring pixels and channels are strongly correlated."""
    generator = np.random.default_rng(seed)
    coarse = generator.integers(0, 256, (count, size // 4, size // 4, 3)).astype(np.float32)
    fine = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
    noisy = fine + generator.normal(0, 12, fine.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def test_the_stem_whitens_patches_of_the_images_it_was_fitted_to():
    images = correlated_images()
    model = make_model(images.shape[1:], 3, width=8)
    whiten(model, images)
    stem = keras.Model(model.input, model.get_layer("whiten").output)
    outputs = np.asarray(stem(images.astype(np.float32), training=False)).reshape(-1, 12)
    assert np.abs(outputs.mean(axis=0)).max() < 0.05
    # Unit variance in every direction, up to the small epsilon that damps the weakest ones.
    covariance = np.cov(outputs, rowvar=False)
    assert np.allclose(np.diag(covariance)[-6:], 1, atol=0.05)
    assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 0.05


@pytest.mark.parametrize("shape", [(16, 16, 3), (64, 64, 3), (28, 28, 1)])
def test_the_network_adapts_to_the_input_size_and_channels(shape):
    model = make_model(shape, 5, width=8)
    assert model.output_shape == (None, 5)
    # Larger pictures are strided in the stem, so the groups see about 32x32 at most.
    assert model.get_layer("whiten").strides[0] == max(1, shape[0] // 32)
    probabilities = model(np.zeros((2, *shape), np.float32), training=False)
    assert np.allclose(np.sum(probabilities, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("size", [32, 64])
def test_cutout_greys_one_square_of_each_training_image_and_nothing_at_inference(size):
    model = make_model((size, size, 3), 3, width=8, cutout=0.375)
    augment = keras.Model(model.input, model.get_layer("augment_cutout").output)
    images = np.full((8, size, size, 3), 255, np.float32)
    erased = np.asarray(augment(images, training=True))
    side = round(0.375 * size)
    for image in erased:
        rows, columns = np.nonzero(np.all(image == 0.5, axis=-1))
        # One square, of the asked side (to a pixel), wholly inside the picture.
        assert abs(len(rows) - side * side) <= 2 * side
        assert rows.max() - rows.min() + 1 in (side - 1, side, side + 1)
        assert columns.max() - columns.min() + 1 in (side - 1, side, side + 1)
    assert np.all(np.asarray(augment(images, training=False)) == 1.0)


def test_without_cutout_there_is_no_erasing_layer():
    names = {layer.name for layer in make_model((16, 16, 3), 3, width=8, cutout=0).layers}
    assert "augment_cutout" not in names and "augment_shift" in names


def test_identity_init_makes_each_second_convolution_pass_its_input_through():
    model = make_model((16, 16, 3), 3, width=8)
    identity_init(model)
    layer = model.get_layer("group2_conv2")
    inputs = np.random.default_rng(1).normal(size=(1, 4, 4, 32)).astype(np.float32)
    assert np.allclose(layer(inputs), inputs, atol=1e-6)


def test_only_batch_norm_shifts_take_the_scaled_learning_rate():
    inputs = keras.Input((4,))
    outputs = keras.layers.BatchNormalization(scale=False)(keras.layers.Dense(2)(inputs))
    model = keras.Model(inputs, outputs)
    optimizer = BiasScaledSGD(bias_scale=64.0, learning_rate=0.01)
    grads = [np.ones(variable.shape, np.float32) for variable in model.trainable_variables]
    before = [variable.numpy().copy() for variable in model.trainable_variables]
    optimizer.apply(grads, model.trainable_variables)
    for variable, old in zip(model.trainable_variables, before, strict=True):
        expected = 0.64 if variable.path.endswith("beta") else 0.01
        assert np.allclose(old - variable.numpy(), expected), variable.path


def test_the_schedule_warms_up_then_decays_linearly():
    schedule = WarmupLinearDecay(peak=2.0, total_steps=100)
    values = [float(schedule(step)) for step in (0, 23, 100, 200)]
    assert values == pytest.approx([0.4, 2.0, 0.14, 0.14])


def small_model():
    """A dense layer and batch normalization: weights and statistics for the lookahead."""
    inputs = keras.Input((4,))
    outputs = keras.layers.BatchNormalization()(keras.layers.Dense(3)(inputs))
    return keras.Model(inputs, outputs)


def test_a_lookahead_pull_moves_weights_and_statistics_towards_the_slow_copy():
    model = small_model()
    lookahead = Lookahead(total_steps=10)
    lookahead.set_model(model)
    lookahead.on_train_begin()
    assert len(lookahead.tracked) == 6  # kernel, bias, gamma, beta, moving mean and variance
    slow = [np.array(variable) for variable in lookahead.tracked]
    for variable in lookahead.tracked:
        variable.assign(np.array(variable) + 4.0)
    lookahead.pull(0.75)
    for variable, kept, start in zip(lookahead.tracked, lookahead.slow, slow, strict=True):
        assert np.allclose(np.array(variable), start + 1.0)  # a quarter of the way
        assert np.allclose(kept, start + 1.0)


def test_training_with_the_lookahead_ends_each_epoch_on_the_slow_copy():
    model = small_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    lookahead = Lookahead(total_steps=14)
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(56, 4)), rng.normal(size=(56, 3)), batch_size=8, epochs=2,
              callbacks=[lookahead], verbose=0)  # 7 steps an epoch: pulls at 5, 7, 10, 14
    assert lookahead.step == 14
    for variable, slow in zip(lookahead.tracked, lookahead.slow, strict=True):
        assert np.allclose(np.array(variable), slow)

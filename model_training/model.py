"""The CNN, after airbench (Keller Jordan, 2024): a whitened stem and three conv groups."""

import math
from collections.abc import Callable

import keras
import numpy as np
from keras import KerasTensor, layers, ops
from keras.optimizers.schedules import LearningRateSchedule

# PyTorch's default convolution initialisation, which airbench's settings were tuned with:
# uniform in +-1/sqrt(fan_in). With batch normalization after every convolution the scale
# of the weights sets the effective learning rate, so the initialisation matters here.
TORCH_INIT = keras.initializers.VarianceScaling(scale=1 / 3, mode="fan_in",
                                                distribution="uniform")
# The logits are scaled down before the softmax: a gentler start for the classifier head.
LOGIT_SCALE = 1 / 9
WHITENING_EPSILON = 5e-4
# As model_training/calibration.py clips before its logarithm.
PROBABILITY_EPSILON = 1e-12
# The network's shapes (--architecture): airbench94's three groups of two convolutions, or
# "deep": a third, residual convolution in the last group, paid for by 7/8 of the width in
# the first (the same multiply-adds at 32x32 inputs, within 1%; docs/training-runs/).
ARCHITECTURES = ("airbench", "deep")


@keras.saving.register_keras_serializable(package="model_training")
class HorizontalFlip(layers.Layer):
    """Mirror images left to right, always (test-time augmentation inside the model)."""

    def call(self, images: KerasTensor) -> KerasTensor:
        return ops.flip(images, axis=-2)


def make_model(input_shape: tuple[int, int, int], num_classes: int, width: int = 64,
               cutout: float = 0.0, batch_norm_momentum: float = 0.6,
               architecture: str = "airbench") -> keras.Model:
    """Build the classifier; it takes raw 0-255 pixels and returns class probabilities.

    `cutout` is the side of the grey square erased from every training image, as a
    fraction of the image's side (0 for none); `architecture` is one of ARCHITECTURES.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    # The scaling lives inside the model so that training and serving cannot disagree.
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    # Random flips and 2-pixel shifts act only while training; inference passes pixels through.
    x = layers.RandomFlip("horizontal", name="augment_flip")(x)
    shift = 2 / input_shape[0]
    x = layers.RandomTranslation(shift, shift, fill_mode="reflect", interpolation="nearest",
                                 name="augment_shift")(x)
    if cutout:
        # Cutout (DeVries and Taylor, 2017; airbench96 erases 12 of 32 pixels, 0.375): the
        # network must recognise an object from any of its parts. Off by default: with
        # twice the epochs it gave no better model on this data (docs/models.md).
        area = cutout ** 2
        x = layers.RandomErasing(factor=(1.0, 1.0), scale=(area, area), fill_value=0.5,
                                 value_range=(0, 1), name="augment_cutout")(x)

    # A frozen 2x2 convolution that whitens pixel patches (its weights come from `whiten`),
    # joined with its own negation so that the GELU after it keeps both signs. Larger
    # pictures are strided here, so the cost per image grows slowly with --image-size.
    stride = max(1, input_shape[0] // 32)
    patches = input_shape[-1] * 4
    whitened = layers.Conv2D(patches, 2, strides=stride, padding="valid", trainable=False,
                             name="whiten")(x)
    negated = layers.Rescaling(-1.0, name="whiten_negated")(whitened)
    x = layers.Concatenate(name="whiten_both_signs")([whitened, negated])
    x = layers.Activation("gelu", name="whiten_gelu")(x)

    deep = architecture == "deep"
    first = width * 7 // 8 if deep else width
    for index, filters in enumerate((first, width * 4, width * 4), start=1):
        x = conv_group(x, filters, batch_norm_momentum, name=f"group{index}")
    if deep:
        # A third convolution where the picture is smallest (4x4 at 32x32 inputs), so depth
        # costs least; residual, as airbench96's third convolutions are.
        extra = batch_norm_gelu(conv(x, width * 4, name="group3_conv3"), batch_norm_momentum,
                                name="group3_3")
        x = layers.Add(name="group3_residual")([x, extra])

    # The largest response anywhere in the picture, for any input size.
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    x = layers.Dense(num_classes, use_bias=False, kernel_initializer=TORCH_INIT,
                     name="logits")(x)
    x = layers.Rescaling(LOGIT_SCALE, name="logit_scale")(x)
    # Softmax in float32 keeps probabilities exact even when the rest runs in bfloat16.
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn")


def conv_group(x: KerasTensor, filters: int, momentum: float, name: str) -> KerasTensor:
    """A 3x3 convolution, 2x2 max-pooling, then a second 3x3 convolution; each normalized.

    A group that gets a single pixel does not pool: an 8x8 input is down to one pixel by
    the third group.
    """
    x = conv(x, filters, name=f"{name}_conv1")
    if x.shape[1] >= 2 and x.shape[2] >= 2:
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = batch_norm_gelu(x, momentum, name=f"{name}_1")
    x = conv(x, filters, name=f"{name}_conv2")
    return batch_norm_gelu(x, momentum, name=f"{name}_2")


def conv(x: KerasTensor, filters: int, name: str) -> KerasTensor:
    """A 3x3 'same' convolution without bias: the batch norm after it supplies one."""
    return layers.Conv2D(filters, 3, padding="same", use_bias=False,
                         kernel_initializer=TORCH_INIT, name=name)(x)


def batch_norm_gelu(x: KerasTensor, momentum: float, name: str) -> KerasTensor:
    """Batch norm with a learned shift but a fixed scale (as airbench), then GELU."""
    x = layers.BatchNormalization(momentum=momentum, epsilon=1e-12, scale=False,
                                  name=f"{name}_bn")(x)
    return layers.Activation("gelu", name=f"{name}_gelu")(x)


def whiten(model: keras.Model, images: np.ndarray, sample: int = 5000) -> None:
    """Set the frozen stem to whiten 2x2 patches of `images`, centred, with unit variance."""
    stem = model.get_layer("whiten")
    stride = stem.strides[0]
    pixels = images[:sample].astype(np.float32) / 255
    # Every 2x2 patch as a row of (row, column, channel) values: the kernel's own layout.
    windows = np.lib.stride_tricks.sliding_window_view(pixels, (2, 2), axis=(1, 2))
    windows = windows[:, ::stride, ::stride].transpose(0, 1, 2, 4, 5, 3)
    patches = windows.reshape(-1, windows.shape[-3] * windows.shape[-2] * windows.shape[-1])
    mean = patches.mean(axis=0)
    # airbench whitens images normalized per channel; the same epsilon then means the same
    # amount of smoothing of the smallest directions.
    channel_scale = np.tile(pixels.reshape(-1, pixels.shape[-1]).std(axis=0), 4)
    centred = (patches - mean) / channel_scale
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(centred))
    filters = (eigenvectors / np.sqrt(eigenvalues + WHITENING_EPSILON)).T / channel_scale
    kernel = filters.T.reshape(stem.kernel.shape)
    stem.set_weights([kernel, -(filters @ mean)])


def identity_init(model: keras.Model) -> None:
    """Start every 3x3 convolution as the identity on its first channels (Dirac), as airbench.

    A group's input then reaches its output unchanged at the start, the way it would
    through a residual branch, and the rest of the filters start random.
    """
    for layer in model.layers:
        if layer.name.endswith(("_conv1", "_conv2")):
            kernel = layer.kernel.numpy()
            channels = min(kernel.shape[2], kernel.shape[3])
            kernel[:, :, :, :channels] = 0
            kernel[1, 1, np.arange(channels), np.arange(channels)] = 1
            layer.kernel.assign(kernel)


def with_flip_averaging(model: keras.Model) -> keras.Model:
    """The model that answers with the mean of `model` on the image and on its mirror."""
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    mirrored = HorizontalFlip(name="mirror")(inputs)
    outputs = layers.Average(name="flip_average", dtype="float32")([model(inputs),
                                                                     model(mirrored)])
    return keras.Model(inputs, outputs, name=f"{model.name}_flip_averaged")


@keras.saving.register_keras_serializable(package="model_training")
class TemperatureScaling(layers.Layer):
    """Class probabilities rescaled by a fitted temperature: softmax(log(p) / T)
    (model_training/calibration.py fits T)."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, probabilities: KerasTensor) -> KerasTensor:
        log_probabilities = ops.log(ops.clip(probabilities, PROBABILITY_EPSILON, 1.0))
        return ops.softmax(log_probabilities / self.temperature, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature}


def with_temperature(model: keras.Model, temperature: float) -> keras.Model:
    """`model` followed by temperature scaling, as one served graph."""
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    outputs = TemperatureScaling(temperature, name="temperature", dtype="float32")(model(inputs))
    return keras.Model(inputs, outputs, name=f"{model.name}_calibrated")


def smoothed_sparse_crossentropy(label_smoothing: float) -> Callable:
    """sparse_categorical_crossentropy against labels smoothed towards the uniform."""

    def loss(labels, probabilities):
        hard = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
        log_probabilities = ops.log(ops.clip(probabilities, 1e-7, 1.0))
        uniform = -ops.mean(log_probabilities, axis=-1)
        return (1 - label_smoothing) * hard + label_smoothing * uniform

    return loss


class BiasScaledSGD(keras.optimizers.SGD):
    """Nesterov SGD whose batch-norm shifts learn `bias_scale` times faster (as airbench).

    The shifts are few and start at zero; the weight decay still applies to them unscaled.
    """

    def __init__(self, bias_scale: float = 64.0, **kwargs):
        super().__init__(**kwargs)
        self.bias_scale = bias_scale

    def apply(self, grads: list, trainable_variables: list | None = None) -> None:
        variables = (self._trainable_variables if trainable_variables is None
                     else trainable_variables)
        grads = [grad * self.bias_scale if variable.path.endswith("beta") else grad
                 for grad, variable in zip(grads, variables, strict=True)]
        return super().apply(grads, trainable_variables)


class WarmupLinearDecay(LearningRateSchedule):
    """Linear from 0.2 to 1 times `peak` over the first 23% of steps, then down to 0.07."""

    def __init__(self, peak: float, total_steps: int, warmup_fraction: float = 0.23,
                 start: float = 0.2, end: float = 0.07):
        self.peak, self.total_steps = peak, max(1, total_steps)
        self.warmup_steps = max(1, math.floor(self.total_steps * warmup_fraction))
        self.start, self.end = start, end

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rising = step / self.warmup_steps
        falling = ops.minimum(1.0, (step - self.warmup_steps)
                              / max(1, self.total_steps - self.warmup_steps))
        factor = ops.where(step < self.warmup_steps,
                           self.start + (1 - self.start) * rising,
                           1 - (1 - self.end) * falling)
        return self.peak * factor

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps,
                "start": self.start, "end": self.end}


class Lookahead(keras.callbacks.Callback):
    """airbench's lookahead: every few steps, pull the weights towards a slow copy, restart from it.

    The slow copy follows the weights ever more slowly as training goes on (its decay grows
    with the cube of the progress, to `final_decay`), so the last, noisy steps count less.
    Each epoch's last step pulls too, so validation, early stopping's saved weights and the
    trained model are all the slow copy. Batch-normalization statistics are averaged too.
    """

    def __init__(self, total_steps: int, every: int = 5, final_decay: float = 0.95 ** 5):
        super().__init__()
        self.total_steps, self.every, self.final_decay = max(1, total_steps), every, final_decay
        self.step = 0
        self.tracked, self.slow = [], []

    def on_train_begin(self, logs=None):
        self.tracked = [variable for variable in self.model.weights
                        if "float" in str(variable.dtype)]
        self.slow = [ops.convert_to_numpy(variable) for variable in self.tracked]

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0 or batch + 1 == self.params.get("steps"):
            self.pull(self.final_decay * min(1.0, self.step / self.total_steps) ** 3)

    def pull(self, decay: float) -> None:
        """slow <- decay * slow + (1 - decay) * weights; then weights <- slow."""
        for index, variable in enumerate(self.tracked):
            self.slow[index] = (decay * self.slow[index]
                                + (1 - decay) * ops.convert_to_numpy(variable))
            variable.assign(self.slow[index])


def distillation_loss(label_smoothing: float, weight: float, temperature: float) -> Callable:
    """Hinton et al.'s (2015) loss for targets [label, teacher's probabilities...]: the
    smoothed cross-entropy with the label, mixed with `weight` of the cross-entropy with the
    teacher, both softened by `temperature` (times its square, so gradients keep their size)."""
    hard_loss = smoothed_sparse_crossentropy(label_smoothing)

    def soften(probabilities):
        log_probabilities = ops.log(ops.clip(probabilities, PROBABILITY_EPSILON, 1.0))
        return ops.log_softmax(log_probabilities / temperature, axis=-1)

    def loss(targets, probabilities):
        labels, teacher = targets[:, 0], targets[:, 1:]
        soft = -ops.sum(ops.exp(soften(teacher)) * soften(probabilities), axis=-1)
        return ((1 - weight) * hard_loss(labels, probabilities)
                + weight * temperature ** 2 * soft)

    return loss


def label_accuracy(targets, probabilities):
    """Top-1 accuracy against the label in the targets' first column."""
    labels = ops.cast(targets[:, 0], "int32")
    return ops.mean(ops.cast(ops.argmax(probabilities, axis=-1) == labels, "float32"))


def compile_model(model: keras.Model, schedule: float | LearningRateSchedule,
                  momentum: float = 0.85, weight_decay: float = 0.0089,
                  label_smoothing: float = 0.2,
                  distillation: tuple[float, float] | None = None) -> keras.Model:
    """Compile with Nesterov SGD, decoupled weight decay and label smoothing; with
    `distillation` (weight, temperature), against targets that carry a teacher's answer."""
    if distillation:
        loss = distillation_loss(label_smoothing, *distillation)
        accuracy = keras.metrics.MeanMetricWrapper(label_accuracy, name="accuracy")
    else:
        loss, accuracy = smoothed_sparse_crossentropy(label_smoothing), "accuracy"
    model.compile(
        optimizer=BiasScaledSGD(learning_rate=schedule, momentum=momentum, nesterov=True,
                                weight_decay=weight_decay),
        loss=loss,
        metrics=[accuracy],
    )
    return model

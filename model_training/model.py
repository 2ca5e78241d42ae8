"""The CNN: a small residual network in the Keras Functional API."""

import keras
from keras import layers


def make_model(input_shape, num_classes, width=32, dropout=0.3, batch_norm_momentum=0.99):
    """Build the classifier; it takes raw 0-255 pixels and returns class probabilities."""
    inputs = keras.Input(shape=input_shape, name="image")
    # The scaling lives inside the model so that training and serving cannot disagree.
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    # Random flips and shifts act only while training; at inference they pass pixels through.
    x = layers.RandomFlip("horizontal", name="augment_flip")(x)
    x = layers.RandomTranslation(0.125, 0.125, fill_mode="reflect", name="augment_shift")(x)

    momentum = batch_norm_momentum
    x = conv_bn(x, width, 3, momentum, name="stem")
    x = reduction_block(x, width * 2, momentum, name="reduce2")
    x = residual_block(x, width * 2, momentum, name="block2")
    x = reduction_block(x, width * 4, momentum, name="reduce3")
    x = residual_block(x, width * 4, momentum, name="block3")
    x = reduction_block(x, width * 8, momentum, name="reduce4")

    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(width * 8, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    # Softmax in float32 keeps probabilities exact even when the rest runs in bfloat16.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32",
                           name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn")


def conv_bn(x, filters, kernel_size, momentum, name, strides=1):
    """Convolution, batch normalization and ReLU: the unit every block is made of."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def residual_block(x, filters, momentum, name):
    """Two 3x3 convolutions whose output is added back onto their input."""
    shortcut = x
    x = conv_bn(x, filters, 3, momentum, name=f"{name}_a")
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_b_conv")(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_b_bn")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_relu")(x)


def reduction_block(x, filters, momentum, name):
    """Halve the resolution along two branches, join them, then set the depth with a 1x1 conv."""
    channels = x.shape[-1]
    strided = conv_bn(x, channels, 3, momentum, strides=2, name=f"{name}_strided")
    pooled = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = layers.Concatenate(name=f"{name}_concat")([strided, pooled])
    return conv_bn(x, filters, 1, momentum, name=f"{name}_project")


def compile_model(model, learning_rate_schedule):
    """Compile with Adam and integer labels: no one-hot step is needed."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate_schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model

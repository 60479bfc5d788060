"""A small convolutional network for image inputs of shape [height, width, channels]."""

import keras

from tfpipe.models import features


def build(input_shape, num_classes: int, filters=(32, 64), dense_units: int = 64, dropout: float = 0.25):
    """Conv-BN-ReLU blocks, each halving the resolution, then global pooling and a softmax."""
    features.expect_tensor(
        "cnn", input_shape, ranks=(3,), expected="image features of shape [height, width, channels]",
        fix="add a {op: reshape, shape: [8, 8, 1]} step to data.map.steps for flat inputs, "
        "or {op: decode_image} and {op: resize, size: N} for image files",
    )
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    for f in filters:
        x = keras.layers.Conv2D(f, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(dense_units, activation="relu")(x)
    x = keras.layers.Dropout(dropout)(x)
    units, activation = features.output_units(num_classes)
    outputs = keras.layers.Dense(units, activation=activation)(x)
    return keras.Model(inputs, outputs, name="cnn")

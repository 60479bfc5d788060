"""A small convolutional network for image inputs of shape [height, width, channels]."""

import keras


def build(input_shape, num_classes: int, filters=(32, 64), dense_units: int = 64, dropout: float = 0.25):
    """Conv-BN-ReLU blocks, each halving the resolution, then global pooling and a softmax."""
    if len(input_shape) != 3:
        raise ValueError(
            f"model cnn: expected image features of shape [height, width, channels], got {list(input_shape)}; "
            "add a {op: reshape, shape: [8, 8, 1]} step to data.map.steps for flat inputs"
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
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="cnn")

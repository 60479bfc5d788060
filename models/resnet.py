"""A small ResNet-style CNN for image inputs of shape [height, width, channels]."""

import keras

from tfpipe.models import features


def _bn():
    # Momentum 0.9 rather than Keras' 0.99: runs here are a few hundred steps,
    # and with 0.99 the moving statistics lag the weights (eval accuracy 0.76
    # vs 0.98 with batch statistics in one 600-step run).
    return keras.layers.BatchNormalization(momentum=0.9)


def _block(x, filters: int, stride: int):
    shortcut = x
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    y = _bn()(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = _bn()(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        # A 1x1 projection when the residual changes resolution or width.
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = _bn()(shortcut)
    return keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))


def build(input_shape, num_classes: int, filters=(16, 32, 64), blocks_per_stage: int = 1, dropout: float = 0.0):
    """Stem conv, then per stage `blocks_per_stage` residual blocks (the first halves
    the resolution, except in stage one), global average pooling and a softmax."""
    features.expect_tensor(
        "resnet", input_shape, ranks=(3,), expected="image features of shape [height, width, channels]",
        fix="add {op: decode_image} and {op: resize, size: N} to data.map.steps for image files, "
        "or {op: reshape, shape: [h, w, c]} for flat inputs",
    )
    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv2D(filters[0], 3, padding="same", use_bias=False)(inputs)
    x = _bn()(x)
    x = keras.layers.ReLU()(x)
    for stage, f in enumerate(filters):
        for b in range(blocks_per_stage):
            x = _block(x, f, 2 if (b == 0 and stage > 0) else 1)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    units, activation = features.output_units(num_classes)
    outputs = keras.layers.Dense(units, activation=activation)(x)
    return keras.Model(inputs, outputs, name="resnet")

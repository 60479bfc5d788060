"""The multilayer perceptron from the seed article's Keras example."""

import keras

from tfpipe.models import features


def build(input_shape, num_classes: int, hidden_units=(64, 32), dropout: float = 0.5, activation: str = "relu"):
    """Dense layers with dropout after each, then a softmax over the classes.

    The defaults are the seed's network: Dense 64 relu, Dropout 0.5,
    Dense 32 relu, Dropout 0.5, Dense softmax. With `num_classes` 0
    (regression targets) the output is one linear unit.
    """
    features.expect_tensor(
        "mlp", input_shape, ranks=tuple(range(1, 9)), expected="one float tensor per example (e.g. [30] columns or an image)",
        fix="join dict features such as CSV columns into one with {op: concat_columns, columns: [...]} in data.map.steps",
    )
    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    for units in hidden_units:
        x = keras.layers.Dense(units, activation=activation)(x)
        x = keras.layers.Dropout(dropout)(x)
    units, activation = features.output_units(num_classes)
    outputs = keras.layers.Dense(units, activation=activation)(x)
    return keras.Model(inputs, outputs, name="mlp")

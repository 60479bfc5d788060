"""The multilayer perceptron from the seed article's Keras example."""

import keras


def build(input_shape, num_classes: int, hidden_units=(64, 32), dropout: float = 0.5, activation: str = "relu"):
    """Dense layers with dropout after each, then a softmax over the classes.

    The defaults are the seed's network: Dense 64 relu, Dropout 0.5,
    Dense 32 relu, Dropout 0.5, Dense softmax.
    """
    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    for units in hidden_units:
        x = keras.layers.Dense(units, activation=activation)(x)
        x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mlp")

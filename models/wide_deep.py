"""Wide & deep model for click logs: dict features {numeric: float [N], categorical: int [M]}."""

import keras
from keras import ops

from tfpipe.models import features
from tfpipe.models.layers import ShardableEmbedding


def build(input_shape, num_classes: int, num_bins: int = 1000, embedding_dim: int = 8, hidden_units=(128, 64),
          dropout: float = 0.0):
    """A linear ("wide") model over the hashed ids and numeric columns plus an MLP
    ("deep") over per-column embeddings and the numeric columns; their logits add.

    `input_shape` is a dict: `numeric` [N] floats, `categorical` [M] ids in
    [0, num_bins) per column (the `hash_columns` and `pack` steps make them).
    The two tables have `num_bins` rows per column: with the clicks data's
    26 columns, `num_bins: 40000` and `embedding_dim: 16` make a deep table
    of 1,040,000 x 16 (give `hash_columns` the same `num_bins`).
    Two classes give one sigmoid output (binary cross-entropy); more a softmax;
    none (num_classes 0, model.loss mse/mae) one linear output.
    """
    if not isinstance(input_shape, dict) or set(input_shape) != {"numeric", "categorical"}:
        raise ValueError(
            "model wide_deep expects dict features {numeric: float [N], categorical: int ids [M]}, got "
            f"{features.describe(input_shape)}; add {{op: hash_columns, columns: [...], num_bins: B}} for the "
            "string columns and then {op: pack, groups: {numeric: [...], categorical: [...]}} to data.map.steps"
        )
    n_num, n_cat = input_shape["numeric"][-1], input_shape["categorical"][-1]
    numeric = keras.Input(shape=(n_num,), name="numeric", dtype="float32")
    categorical = keras.Input(shape=(n_cat,), name="categorical", dtype="int64")
    # One table for all columns: column c's ids live at [c * num_bins, (c + 1) * num_bins).
    offsets = ops.arange(n_cat, dtype="int64") * num_bins
    ids = categorical + offsets
    # Two classes: one sigmoid unit; none (regression targets): one linear unit.
    units = 1 if num_classes in (0, 2) else num_classes
    # ShardableEmbedding: keras Embedding's table and outputs, but a lookup that
    # reads only the asked-for rows when runtime.variable_partitioner splits
    # the table across parameter servers (num_bins * columns rows each).
    wide = ops.sum(ShardableEmbedding(n_cat * num_bins, units, name="wide")(ids), axis=1)
    wide = wide + keras.layers.Dense(units, name="wide_numeric")(numeric)
    emb = ShardableEmbedding(n_cat * num_bins, embedding_dim, name="deep_embedding")(ids)
    x = keras.layers.Concatenate()([keras.layers.Flatten()(emb), numeric])
    for u in hidden_units:
        x = keras.layers.Dense(u, activation="relu")(x)
        if dropout:
            x = keras.layers.Dropout(dropout)(x)
    logits = wide + keras.layers.Dense(units, name="deep_out")(x)
    outputs = keras.layers.Activation("linear" if num_classes == 0 else "sigmoid" if units == 1 else "softmax")(logits)
    return keras.Model({"numeric": numeric, "categorical": categorical}, outputs, name="wide_deep")

"""Layers for model builders: an embedding table that can be split across parameter servers.

`ShardableEmbedding` is `keras.layers.Embedding`'s table and math (same
initializer, same shape, same output), looked up with `tf.nn.embedding_lookup`.
Unsharded the two give identical outputs. Under `parameter_server` with
`runtime.variable_partitioner`, the table becomes shards on the ps tasks and
the lookup reads only the rows a batch asks for, on the ps that holds them;
Keras's `Embedding` reads whole shards each step (`ops.take` on the table
concatenates them: verified on Keras 3.15).

Example, in any model builder (`model.name: my_pkg.nets:build`):

```python
from tfpipe.models.layers import ShardableEmbedding

ids = keras.Input(shape=(26,), dtype="int64")
vectors = ShardableEmbedding(1_000_000, 16, name="table")(ids)  # [batch, 26, 16]
```
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from tfpipe.distribute import sharding


@keras.saving.register_keras_serializable(package="tfpipe")
class ShardableEmbedding(keras.layers.Layer):
    """Maps integer ids in [0, input_dim) to rows of a trainable [input_dim, output_dim] table.

    Args:
        input_dim: rows of the table (ids must be below it).
        output_dim: width of each row.
        embeddings_initializer: as `keras.layers.Embedding` (default "uniform").

    Input: int ids of any shape. Output: that shape + [output_dim], in the
    layer's compute dtype.
    """

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        if int(input_dim) < 1 or int(output_dim) < 1:
            raise ValueError(
                f"ShardableEmbedding: expected input_dim and output_dim >= 1. Received: {input_dim}, {output_dim}"
            )
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            shape=(self.input_dim, self.output_dim), initializer=self.embeddings_initializer,
            name="embeddings", trainable=True,
        )  # fmt: skip
        # Created in a parameter_server scope with a partitioner, the table is
        # sharded; this lets tf.train.Checkpoint save it (sharding.py says why).
        sharding.make_checkpointable([self.embeddings])

    def call(self, inputs):
        if inputs.dtype not in ("int32", "int64"):
            inputs = ops.cast(inputs, "int32")
        sharded = sharding.sharded_value(self.embeddings)
        # The shards as a list: embedding_lookup's "div" split of ids is the
        # one ShardedVariable uses (first shards one row longer when uneven),
        # and each shard's gather runs on its ps. A plain table: one gather.
        table = sharded.variables if sharded is not None else self.embeddings.value
        return ops.cast(tf.nn.embedding_lookup(table, inputs), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }

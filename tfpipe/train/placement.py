"""Model parallelism inside one replica: a Keras model cut into stages, each on its own device.

`runtime.placement: {devices: ["/gpu:0", "/gpu:1"], split_after: [dense_1]}`
cuts the model after the layer named `dense_1` (or a layer index, as in
`model.layers`): stage 1 is everything up to it, stage 2 the rest. Each
stage is rebuilt with its variables created on its device, and the step
runs each stage's forward ops there. The backward pass is taken with
`tf.gradients` inside the compiled step, which puts every gradient op on the
device of the forward op it differentiates; `GradientTape` left them
unplaced and TensorFlow's placer put the second stage's backward on the
first device (verified, TF 2.21).

What it is: a sequential split. Stage 2 waits for stage 1's activations, so
with `micro_batches: 1` one device is idle while the other works: it pays
only when the model does not fit on one device (its weights, their optimizer
slots and the activations kept for the backward pass). `micro_batches: M`
cuts each batch into M parts and runs the stages on each part in turn; the
compiled step is a dataflow graph, so stage 2 on part i can run while stage
1 runs on part i+1 (GPipe's forward schedule; the backward pass follows the
same dependencies). The gradients are those of the whole batch, so the
result is the unsplit model's, up to float rounding (layers that compute
batch statistics, BatchNormalization, see parts of the batch instead).

Limits: the cut must separate the model: the layers after a cut may read
only the cut layer's output (a functional model with skip connections
across the cut, or several inputs feeding both sides, is refused in one
line). One replica (`runtime.strategy: default`). A checkpoint of a split
model has the stages' variables, so it restores into the same split.

Example:

```python
model, stages = placement.split(model, cfg.runtime.placement)
predictions = stages(features, training=True)   # each stage on its device
```
"""

from __future__ import annotations

import keras
import tensorflow as tf


class Stages:
    """A split model's forward pass, stage by stage on their devices, and its gradients."""

    def __init__(self, devices, models, micro_batches: int = 1):
        self.devices, self.models, self.micro_batches = list(devices), list(models), micro_batches

    def __call__(self, features, training: bool = False):
        if self.micro_batches == 1:
            return self._run(features, training)
        parts = [tf.split(t, self.micro_batches) for t in tf.nest.flatten(features)]
        outputs = [
            self._run(tf.nest.pack_sequence_as(features, [p[i] for p in parts]), training)
            for i in range(self.micro_batches)
        ]
        return tf.nest.map_structure(lambda *o: tf.concat(o, axis=0), *outputs)

    def _run(self, x, training):
        for device, stage in zip(self.devices, self.models):
            with tf.device(device):
                x = stage(x, training=training)
        return x

    @staticmethod
    def gradients(loss, variables):
        """d loss / d variables, each gradient op on its forward op's device (graph mode only)."""
        return tf.gradients(loss, list(variables))


def _layer(model, key):
    if isinstance(key, int):
        if not 0 <= key < len(model.layers) - 1:
            raise ValueError(f"runtime.placement.split_after: layer index {key} is not inside the model "
                             f"(0..{len(model.layers) - 2} of {len(model.layers)} layers)")
        return model.layers[key]
    try:
        return model.get_layer(key)
    except ValueError:
        names = ", ".join(layer.name for layer in model.layers[:-1])
        raise ValueError(f"runtime.placement.split_after: no layer {key!r} in model {model.name!r}; "
                         f"its layers: {names}") from None


def split(model: keras.Model, placement) -> tuple[keras.Model, Stages]:
    """The model rebuilt as stages on `placement.devices`, and the stages to run.

    Args:
        model: a built functional (or Sequential) Keras model.
        placement: `runtime.placement` (`devices`, `split_after`, `micro_batches`).

    Returns:
        `(model, stages)`: a functional model chaining the placed stages (same
        inputs and outputs, the original's weights; what checkpoints, evaluation
        and export use) and the `Stages` the training step runs.

    Raises:
        ValueError: a device that does not exist, a layer that is not in the
            model, or a cut the model's graph crosses; one line each.
    """
    def where(name):
        spec = tf.DeviceSpec.from_string(name)
        return (spec.device_type or "").upper(), spec.device_index or 0

    known = {where(d.name): d.name for d in tf.config.list_logical_devices()}
    for device in placement.devices:
        if where(device) not in known:
            raise ValueError(f"runtime.placement.devices: no device {device!r} here (have: {', '.join(known.values())}; "
                             "runtime.logical_cpus: N splits the CPU into N)")
    if len(model.outputs) != 1:
        raise ValueError(f"runtime.placement: splits models with one output; model {model.name!r} has "
                         f"{len(model.outputs)}")
    cuts = [_layer(model, key).output for key in placement.split_after]
    bounds = [model.inputs if len(model.inputs) > 1 else model.inputs[0], *cuts, model.outputs[0]]
    if isinstance(model.input, dict):
        bounds[0] = model.input
    placed, x = [], model.input
    for k, device in enumerate(placement.devices):
        try:
            stage = keras.Model(bounds[k], bounds[k + 1], name=f"{model.name}_stage{k}")
        except ValueError as e:
            raise ValueError(
                f"runtime.placement.split_after: {placement.split_after[k - 1] if k else placement.split_after[0]!r} "
                f"does not cut model {model.name!r} in two (the layers after it read more than its output): "
                f"{str(e).splitlines()[0]}"
            ) from None
        with tf.device(device):  # the clone's variables are created here
            clone = keras.models.clone_model(stage)
        clone.set_weights(stage.get_weights())
        placed.append(clone)
        x = clone(x)
    chained = keras.Model(model.input, x, name=model.name)
    return chained, Stages(placement.devices, placed, placement.micro_batches)

"""Optimizers by name, using TensorFlow's fused update kernel where there is one.

Keras 3 writes each optimizer's update in backend-neutral ops. Adam's
`update_step` is about 29 graph ops per variable per step (casts, two
powers, the moment updates, the square root, the division). On a model
like the digits MLP a step is a few hundred tiny ops, so Adam alone is a
third of the graph. TensorFlow's `ResourceApplyAdam` kernel does the same
arithmetic in one op per variable: it updates m and v, then
`var -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + epsilon)`,
the formula of Keras's `update_step` (test_optimizers.py checks that the
two give the same weights).

`optimizer.fused: true` (the default) builds `FusedAdam` or `FusedAdamW` for
`adam` and `adamw`. Only `update_step` is replaced. Gradient all-reduce
under a strategy, loss scaling, weight decay and learning-rate handling
(schedules too) stay Keras's; clipping is tfpipe's (tfpipe/train/steps.py). The slot variables are Keras's own, so
checkpoints are the same either way. Cases the kernel does not cover use
Keras's update: amsgrad, and sparse (IndexedSlices) gradients, for which
TensorFlow has no fused Adam kernel.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfpipe import config as config_lib


def _handle(variable):
    # A Keras Variable wraps a tf.Variable (a MirroredVariable under a
    # strategy, whose handle inside `extended.update` is this device's copy).
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


class _FusedAdamStep:
    """`update_step` of Adam (and AdamW, which adds weight decay outside it) as one kernel per variable."""

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        local_step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), local_step),
            beta2_power=tf.pow(tf.cast(self.beta_2, dtype), local_step),
            lr=tf.cast(learning_rate, dtype),
            beta1=tf.cast(self.beta_1, dtype),
            beta2=tf.cast(self.beta_2, dtype),
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
            use_locking=False,
        )
        return None


@keras.saving.register_keras_serializable(package="tfpipe")
class FusedAdam(_FusedAdamStep, keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose per-variable update is TensorFlow's `ResourceApplyAdam`."""


@keras.saving.register_keras_serializable(package="tfpipe")
class FusedAdamW(_FusedAdamStep, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` (decoupled weight decay) with the fused Adam update."""


_FUSED = {"adam": FusedAdam, "adamw": FusedAdamW}


def build(optimizer_cfg, learning_rate):
    """The optimizer `optimizer.name` names, with `learning_rate`; fused where `optimizer.fused` allows.

    Args:
        optimizer_cfg: a `tfpipe.config.OptimizerConfig`.
        learning_rate: a float, or a schedule (`tfpipe.train.schedules.Schedule`).

    `optimizer.weight_decay` > 0 is Keras's decoupled decay, which every Keras 3
    optimizer has (`w -= lr * weight_decay * w` each step, apart from the
    gradient; `adamw` is Adam with it); 0 leaves the optimizer's own default
    (0.004 for `adamw`, none for the others). Clipping is not Keras's: under a
    strategy Keras clips each replica's part of the gradient before summing
    them (tfpipe/train/steps.py clips the sum).

    Raises:
        ConfigError: `optimizer.name` is not an optimizer Keras knows.
    """
    name = optimizer_cfg.name
    options = {"learning_rate": learning_rate}
    if optimizer_cfg.weight_decay:
        options["weight_decay"] = optimizer_cfg.weight_decay
    if optimizer_cfg.fused and name.lower() in _FUSED:
        return _FUSED[name.lower()](**options)
    try:
        if not isinstance(learning_rate, (int, float)):  # get() would deserialize a schedule object
            return type(keras.optimizers.get(name))(**options)
        return keras.optimizers.get({"class_name": name, "config": options})
    except (TypeError, ValueError) as e:
        detail = " ".join(str(e).split())[:300]
        raise config_lib.ConfigError(
            f"optimizer.name: expected a Keras optimizer (adam, sgd, rmsprop, adamw, ...), got {name!r} ({detail})"
        ) from None

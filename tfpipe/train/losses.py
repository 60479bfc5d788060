"""The training loss: `model.loss` with label smoothing, class weights and kernel L2.

Only training uses these: validation and test report the plain `model.loss`,
so runs with and without a recipe compare on the same number (Keras's
`class_weight` likewise weights only training).

- `train.label_smoothing` s: cross-entropy against `(1 - s) * onehot + s / classes`
  (binary: `(1 - s) * y + s / 2`). Class-id labels are one-hot encoded for it
  (Keras 3's sparse cross-entropy has no smoothing).
- `train.class_weights`: each example's loss times its class's weight, the
  mean still over the batch (as Keras's `class_weight`). `balanced` is
  `n / (classes * count[c])` over the training labels, read in one pass
  of the training split before training.
- `model.l2` λ: `λ * sum(kernel ** 2)` over the model's kernels, once per
  step (each replica adds its share, so the sum over replicas is λ·Σ).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfpipe import config as config_lib
from tfpipe.train import metrics as metrics_lib


def _smoothed(loss_name: str, s: float):
    if loss_name == "binary_crossentropy":
        return lambda labels, predictions: keras.losses.binary_crossentropy(labels, predictions, label_smoothing=s)
    if loss_name == "categorical_crossentropy":
        return lambda labels, predictions: keras.losses.categorical_crossentropy(labels, predictions, label_smoothing=s)

    def sparse(labels, predictions):
        ids = tf.reshape(tf.cast(labels, tf.int32), [-1])
        onehot = tf.one_hot(ids, tf.shape(predictions)[-1], dtype=predictions.dtype)
        return keras.losses.categorical_crossentropy(onehot, predictions, label_smoothing=s)

    return sparse


def training_loss(loss_name: str, label_smoothing: float = 0.0, class_weights=None):
    """The per-example training loss: `model.loss`, smoothed and weighted as configured.

    Args:
        loss_name: the resolved `model.loss`.
        label_smoothing: `train.label_smoothing`.
        class_weights: one weight per class (a sequence), or None.

    Returns:
        `fn(labels, predictions)` returning one loss per example.
    """
    base = _smoothed(loss_name, label_smoothing) if label_smoothing else keras.losses.get(loss_name)
    if class_weights is None:
        return base
    weights = tf.constant(np.asarray(class_weights, np.float32))

    def weighted(labels, predictions):
        per_example = base(labels, predictions)
        w = tf.gather(weights, metrics_lib.class_ids(labels, predictions))
        return per_example * tf.reshape(tf.cast(w, per_example.dtype), tf.shape(per_example))

    return weighted


def class_weights(value, num_classes: int, train_labels=None) -> list[float] | None:
    """`train.class_weights` as one weight per class.

    Args:
        value: None, "balanced", a list or a dict (checked at load).
        num_classes: the task's classes (2 for a sigmoid output).
        train_labels: a callable returning the training labels' class ids
            (NumPy), asked only for "balanced".

    Raises:
        ConfigError: a list of the wrong length, a class id out of range, a
            class that never occurs with "balanced".
    """
    if value is None:
        return None
    n = max(num_classes, 2)
    if value == "balanced":
        ids = np.asarray(train_labels())
        counts = np.bincount(ids, minlength=n)[:n]
        if (counts == 0).any():
            missing = [int(c) for c in np.flatnonzero(counts == 0)]
            raise config_lib.ConfigError(
                f"train.class_weights: balanced: class(es) {missing} never occur in the training labels; "
                "give the weights as a list or mapping"
            )
        return [float(len(ids) / (n * c)) for c in counts]
    if isinstance(value, dict):
        bad = [k for k in value if k >= n]
        if bad:
            raise config_lib.ConfigError(f"train.class_weights: class id {bad[0]} out of range for {n} classes")
        return [float(value.get(c, 1.0)) for c in range(n)]
    if len(value) != n:
        raise config_lib.ConfigError(f"train.class_weights: expected {n} weights (one per class), got {len(value)}")
    return [float(w) for w in value]


def label_ids(dataset) -> np.ndarray:
    """All class ids of a batched `(features, labels)` dataset (one pass)."""
    chunks = []
    for batch in dataset:
        labels = batch[1]
        fake = tf.zeros([1, 2 if labels.shape.rank == 1 else labels.shape[-1]])
        chunks.append(metrics_lib.class_ids(labels, fake).numpy())
    return np.concatenate(chunks) if chunks else np.zeros([0], np.int64)


def kernels(model) -> list:
    """The variables `model.l2` applies to: every trainable variable named *kernel."""
    return [v for v in model.trainable_variables if v.name.endswith("kernel")]


def l2_penalty(l2: float, variables):
    """`l2 * sum(v ** 2)` over `variables`, in float32."""
    return l2 * tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])


def from_config(cfg, num_classes: int, train_dataset, log=print):
    """The training loss `cfg` asks for; "balanced" class weights read `train_dataset` once.

    Args:
        cfg: the run's `Config` (`model.loss` resolved).
        num_classes: the task's classes.
        train_dataset: a batched, finite `(features, labels)` training pass.
        log: where the computed weights are said.
    """
    weights = class_weights(cfg.train.class_weights, num_classes, lambda: label_ids(train_dataset))
    if weights is not None:
        log(f"train.class_weights: {', '.join(f'{w:.3g}' for w in weights)} (classes 0..{len(weights) - 1})")
    if cfg.train.label_smoothing or weights is not None:
        return training_loss(cfg.model.loss, cfg.train.label_smoothing, weights)
    return None

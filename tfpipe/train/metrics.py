"""The metrics reported beside the loss (`train.metrics`), for training and evaluation.

| name | reported as | what |
|---|---|---|
| `accuracy` | `accuracy` | Keras's accuracy for the loss (sparse, categorical, binary) |
| `top_k`, `top_3`, ... | `top_5_accuracy`, `top_3_accuracy` | label among the k most probable classes |
| `auc` | `auc` | ROC AUC: of the positive class for two classes, else the mean of one-vs-rest AUCs |
| `precision`, `recall` | same | of the positive class for two classes, else macro-averaged over the classes seen |
| `mae`, `mse` | same | regression errors |

Two classes means a sigmoid output (`binary_crossentropy`, one column) or a
softmax over two columns; the positive class is 1. All are streaming Keras
metrics whose variables sum over replicas, so they are exact under every
strategy (one pass, any batch split).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfpipe.train import recipes

_ACCURACY = {
    "categorical_crossentropy": keras.metrics.CategoricalAccuracy,
    "sparse_categorical_crossentropy": keras.metrics.SparseCategoricalAccuracy,
    "binary_crossentropy": keras.metrics.BinaryAccuracy,
}


def compile_metric(loss: str):
    """The one Keras metric `model.keras` is compiled with: accuracy for the loss, or mae for regression."""
    if recipes.is_classification(loss):
        return _ACCURACY[loss](name="accuracy")
    return keras.metrics.MeanAbsoluteError(name="mae")


def class_ids(labels, predictions):
    """Integer class ids of `labels` (ids, one-hot rows, or 0/1 for a sigmoid), shape [batch]."""
    if labels.shape.rank is not None and labels.shape.rank >= 2 and labels.shape[-1] not in (None, 1):
        return tf.argmax(labels, axis=-1, output_type=tf.int32)
    del predictions
    return tf.reshape(tf.cast(tf.round(tf.cast(labels, tf.float32)), tf.int32), [-1])


def predicted_ids(predictions):
    """The predicted class per example: argmax, or probability > 0.5 for one sigmoid column."""
    if predictions.shape[-1] == 1:
        return tf.reshape(tf.cast(predictions > 0.5, tf.int32), [-1])
    return tf.argmax(predictions, axis=-1, output_type=tf.int32)


def _columns(predictions) -> int:
    return 2 if predictions.shape[-1] == 1 else int(predictions.shape[-1])


class _Wrapped:
    """A Keras metric fed (labels, predictions) in the form it needs."""

    def __init__(self, metric, adapt):
        self.metric, self.adapt = metric, adapt

    def update_state(self, labels, predictions):
        self.metric.update_state(*self.adapt(labels, predictions))

    def reset_state(self):
        self.metric.reset_state()

    def result(self):
        return self.metric.result()


class ClassRate(keras.metrics.Metric):
    """Precision or recall from a streaming confusion matrix (summed over replicas).

    Two classes: of class 1. More: the macro average over classes that
    occur among the labels or the predictions (scikit-learn's macro average
    with `zero_division=0`, over the classes seen).
    """

    def __init__(self, kind: str, num_classes: int, name=None, **kwargs):
        super().__init__(name=name or kind, **kwargs)
        self.kind, self.num_classes = kind, int(num_classes)
        self.confusion = self.add_variable(
            shape=(self.num_classes, self.num_classes), initializer="zeros", name="confusion", aggregation="sum"
        )

    def update_state(self, labels, predictions, sample_weight=None):  # pylint: disable=arguments-differ
        del sample_weight
        matrix = tf.math.confusion_matrix(
            class_ids(labels, predictions), predicted_ids(predictions), self.num_classes, dtype=tf.float32
        )
        self.confusion.assign_add(matrix)

    def result(self):
        m = tf.convert_to_tensor(self.confusion)
        true_count, predicted_count = tf.reduce_sum(m, axis=1), tf.reduce_sum(m, axis=0)
        denominator = predicted_count if self.kind == "precision" else true_count
        rate = tf.math.divide_no_nan(tf.linalg.diag_part(m), denominator)
        if self.num_classes == 2:
            return rate[1]
        seen = tf.cast(true_count + predicted_count > 0, tf.float32)
        return tf.math.divide_no_nan(tf.reduce_sum(rate * seen), tf.reduce_sum(seen))

    def reset_state(self):
        self.confusion.assign(tf.zeros_like(self.confusion))


def _positive(labels, predictions):
    """(0/1 labels, probability of class 1), both [batch]."""
    ids = tf.cast(class_ids(labels, predictions), tf.float32)
    p = tf.reshape(predictions, [-1]) if predictions.shape[-1] == 1 else predictions[:, 1]
    return ids, p


def _one_hot(labels, predictions):
    return tf.one_hot(class_ids(labels, predictions), _columns(predictions)), predictions


def _as_values(labels, predictions):
    return tf.reshape(tf.cast(labels, predictions.dtype), tf.shape(predictions)), predictions


def build(name: str, loss: str, num_classes: int, prefix: str):
    """One metric of `train.metrics` for a run with `loss` and `num_classes` classes (in strategy scope).

    Raises:
        ValueError: a metric that does not fit the task (top_k of two classes).
    """
    label = f"{prefix}_{recipes.metric_key(name)}"
    if name == "accuracy":
        # auto never reaches here: the loop resolves it from the labels first.
        return _ACCURACY[loss](name=label)
    k = recipes.top_k(name)
    if k is not None:
        if loss == "binary_crossentropy" or num_classes <= k:
            raise ValueError(f"train.metrics: {name} needs more than {k} classes, got {num_classes}")
        if loss == "categorical_crossentropy":
            return keras.metrics.TopKCategoricalAccuracy(k=k, name=label)
        return keras.metrics.SparseTopKCategoricalAccuracy(k=k, name=label)
    two = num_classes <= 2
    if name == "auc":
        if two:
            return _Wrapped(keras.metrics.AUC(name=label), _positive)
        return _Wrapped(keras.metrics.AUC(multi_label=True, num_labels=num_classes, name=label), _one_hot)
    if name in ("precision", "recall"):
        return ClassRate(name, max(num_classes, 2), name=label)
    if name == "mae":
        return _Wrapped(keras.metrics.MeanAbsoluteError(name=label), _as_values)
    if name == "mse":
        return _Wrapped(keras.metrics.MeanSquaredError(name=label), _as_values)
    raise ValueError(f"train.metrics: unknown metric {name!r}")


class Metrics:
    """Loss mean and the configured metrics for one phase (train or eval); build in strategy scope.

    Args:
        loss_name: the resolved `model.loss`.
        prefix: "train" or "eval" (names of the Keras metrics).
        names: `train.metrics`; None or empty is the default for the loss
            (accuracy, or mae for regression).
        num_classes: classes of the task (AUC, precision and recall need it).

    `results()` gives the tensors (loss first, then the metrics in order),
    `result()` a dict `{'loss': ..., 'accuracy': ..., ...}`, `keys` the names.
    """

    def __init__(self, loss_name: str, prefix: str, names=None, num_classes: int = 0):
        names = list(names) if names else (["accuracy"] if recipes.is_classification(loss_name) else ["mae"])
        self.keys = ["loss"] + [recipes.metric_key(n) for n in names]
        self.loss = keras.metrics.Mean(name=f"{prefix}_loss")
        self.metrics = [build(n, loss_name, num_classes, prefix) for n in names]

    def update(self, per_example_loss, labels, predictions):
        self.loss.update_state(per_example_loss)
        for metric in self.metrics:
            metric.update_state(labels, predictions)

    def reset(self):
        self.loss.reset_state()
        for metric in self.metrics:
            metric.reset_state()

    def results(self):
        """The metric tensors, unread (no host sync): loss first."""
        return (self.loss.result(), *(m.result() for m in self.metrics))

    def result(self) -> dict:
        return {key: float(value) for key, value in zip(self.keys, self.results())}

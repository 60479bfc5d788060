"""In-graph value checks: labels where they enter, features where the model takes them.

Preflight (`tfpipe/data/check.py`) reads what it can before training; what
it did not read is checked inside the pipeline, where every record passes:

- `labels(num_classes, split)`: right after parse (or on the batch when no
  step changes the labels), class labels must be integers in `[0, num_classes)` (0/1 for two classes, which is what binary
  cross-entropy takes). File sources only: in-memory arrays are checked
  whole at preflight.
- `finite(split)`: on the finished batch of a file source (CSV, TFRecord),
  every float feature must be finite (`is_finite`, `reduce_all` and an
  `Assert` per float feature). NaN that a `drop_missing` step removes never
  gets here; in-memory arrays are checked whole at preflight instead.

Each check fails the step with an `InvalidArgumentError` whose message
starts with `TAG`; `check.names_bad_input` turns it into a one-line
`DataError` and finds the file and line that hold the value. With
`data.ignore_errors: true` the same tests become filters, so the bad rows
are dropped (and were counted by the full preflight) instead of failing.
With `data.check: off` there are no checks at all.

Cost: a few scalar ops per record for labels, three ops per float feature
per batch (BENCHMARKS.md "In-graph data checks").
"""

from __future__ import annotations

import tensorflow as tf

TAG = "tfpipe-data-check"


def _float_features(x) -> list:
    """(name, tensor) for every float feature: name "" for a single tensor."""
    if isinstance(x, dict):
        return [(k, v) for k, v in sorted(x.items()) if v.dtype.is_floating]
    return [("", x)] if x.dtype.is_floating else []


def label_ok(y, num_classes: int):
    """Elementwise: y is an integer value in [0, num_classes)."""
    if y.dtype.is_floating:
        return (y >= 0) & (y < num_classes) & (tf.math.floor(y) == y)
    return (y >= 0) & (y < num_classes)


def _rows(ok, batched: bool):
    """One bool per example: all of its elements ok."""
    if batched:
        return tf.reduce_all(tf.reshape(ok, [tf.shape(ok)[0], -1]), axis=1)
    return tf.reduce_all(ok)


def labels(num_classes: int, split: str, ignore_errors: bool = False, batched: bool = False):
    """A step `(x, y) -> (x, y)` that fails on labels outside [0, num_classes).

    With `ignore_errors` it is a filter (`is_filter`) that keeps in-range
    rows (`batched`: one keep flag per row of a batch).
    The failure message carries the smallest and largest label of the
    record or batch: cheap to compute, and enough to see what went wrong.
    """

    if ignore_errors:

        def keep(x, y):
            if not (y.dtype.is_integer or y.dtype.is_floating):
                return _rows(tf.ones_like(y, tf.bool), batched)
            return _rows(label_ok(y, num_classes), batched)

        keep.is_filter = True
        return keep

    def fn(x, y):
        if not (y.dtype.is_integer or y.dtype.is_floating):
            return x, y  # string labels: mapped to ids by a step, checked there
        ok = tf.reduce_all(label_ok(y, num_classes))
        check = tf.debugging.Assert(
            ok,
            [f"{TAG}: data.files.{split}: label outside [0, {num_classes}) (expected an integer class id "
             f"below data num_classes={num_classes}); labels here span", tf.reduce_min(y), "to", tf.reduce_max(y)],
        )
        with tf.control_dependencies([check]):
            return x, tf.identity(y)

    return fn


def finite(split: str, ignore_errors: bool = False):
    """A step on batches that fails when a float feature holds NaN or inf.

    Under `ignore_errors` it is a filter keeping the rows whose float
    features are all finite.
    """

    if ignore_errors:

        def keep(x, y):
            ok = tf.ones([tf.shape(tf.nest.flatten(y)[0])[0]], tf.bool)
            for _, v in _float_features(x):
                ok &= _rows(tf.math.is_finite(v), batched=True)
            return ok

        keep.is_filter = True
        return keep

    def fn(x, y):
        # Assert, not check_numerics: tf.data can checkpoint an iterator whose
        # pipeline asserts, but CheckNumerics "is stateful" (verified, TF 2.21).
        checks = []
        for name, v in _float_features(x):
            what = f"feature {name!r}" if name else "the features"
            checks.append(tf.debugging.Assert(
                tf.reduce_all(tf.math.is_finite(v)),
                [f"{TAG}: data.files.{split}: {what} hold NaN or inf after data.map.steps (expected finite "
                 "values: drop the rows with {op: drop_missing} or fill them)"]))
        if not checks:
            return x, y
        with tf.control_dependencies(checks):
            return tf.nest.map_structure(tf.identity, x), y

    return fn

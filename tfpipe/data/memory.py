"""Data handed over from Python: `tfpipe.train(cfg, data=...)`.

The source `python` (`data.source: python`, set by `tfpipe.train` when
`data=` is given) reads examples that live in the calling process, not in
files. Per split it accepts:

- a `tf.data.Dataset` of `(features, label)` examples (not batches: the
  pipeline batches, shuffles and caches as the config says);
- NumPy arrays `(x, y)`, `x` an array or a dict of arrays;
- a pandas `DataFrame`; the label is the column `data.csv.label_column`
  (default `label`), the features a dict of the other columns, as the CSV
  source gives them ({op: concat_columns, columns: [...]} joins them into the one tensor a built-in model takes).

`data` is either a dict `{"train": ..., "validation": ..., "test": ...}`
(absent splits are absent) or one value, cut into the three splits by
`data.split` like the digits source (NumPy and DataFrame rows by a seeded
permutation; a Dataset in its own order with take/skip).

The data cannot be written into `config.yaml`; the saved config says
`source: python`, and running it from the command line says so.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf

from tfpipe.data import check, sources

SPLITS = sources.SPLITS
_current: dict | None = None  # split -> Source, for the run inside provide()


class DataArgumentError(ValueError):
    """`data=` that tfpipe cannot read (message names the split and what was expected)."""


@contextlib.contextmanager
def provide(splits: dict):
    """Makes `splits` (from `convert`) the data of source `python` for the block."""
    global _current  # pylint: disable=global-statement
    previous, _current = _current, splits
    try:
        yield
    finally:
        _current = previous


def source(data_cfg, split: str) -> sources.Source:
    """`SOURCES["python"]`: the split handed over by `provide`."""
    if _current is None:  # e.g. the saved config.yaml of such a run, on the command line
        raise check.DataError(
            "data.source: 'python' reads data given from Python (tfpipe.train(cfg, data=...)); "
            "this run was given none. Point data.source at files to run it from the command line"
        )
    if split in _current:
        return _current[split]
    return sources.Source(num_examples=0, num_classes=_num_classes(_current), examples=None)


def _num_classes(splits: dict) -> int:
    return max((s.num_classes for s in splits.values()), default=0)


# ---------------------------------------------------------------- conversion


def convert(data, data_cfg, steps_per_epoch: int = 0) -> dict:
    """`data=` as one `Source` per split present.

    Raises:
        DataArgumentError: naming the split and what was expected.
    """
    if isinstance(data, dict) and data and set(data) <= set(SPLITS):
        out = {split: _one(value, data_cfg, f"data[{split!r}]") for split, value in data.items() if value is not None}
    elif isinstance(data, dict):
        raise DataArgumentError(
            f"data: a dict must have the keys train, validation and/or test, got {', '.join(map(repr, data)) or 'none'}"
        )
    else:
        out = _cut(data, data_cfg)
    if "train" not in out:
        raise DataArgumentError("data: expected a 'train' split")
    if out["train"].num_examples < 0 and not steps_per_epoch:
        raise DataArgumentError(
            "data['train']: a Dataset of unknown or infinite length needs train.steps_per_epoch > 0 "
            "(or ds.apply(tf.data.experimental.assert_cardinality(n)))"
        )
    classes = _num_classes(out)
    return {k: sources.Source(v.num_examples, classes, examples=v.examples) for k, v in out.items()}


def _is_dataframe(value) -> bool:
    return hasattr(value, "columns") and hasattr(value, "to_numpy") and hasattr(value, "iloc")


def _arrays(value, data_cfg, where: str):
    """(x, y) NumPy arrays from a tuple or a DataFrame."""
    if _is_dataframe(value):
        label = data_cfg.csv.label_column
        if label not in value.columns:
            raise DataArgumentError(
                f"{where}: the DataFrame has no column {label!r} (columns: {', '.join(map(str, value.columns[:8]))}); "
                "set data.csv.label_column"
            )
        y = value[label].to_numpy()
        x = {str(c): _column(value[c].to_numpy()) for c in value.columns if c != label}
        return x, y
    if isinstance(value, (tuple, list)) and len(value) == 2:
        x, y = value
        x = {k: np.asarray(v) for k, v in x.items()} if isinstance(x, dict) else np.asarray(x)
        return x, np.asarray(y)
    raise DataArgumentError(
        f"{where}: expected a tf.data.Dataset of (features, label), a tuple (x, y) of arrays or a pandas DataFrame, "
        f"got {type(value).__name__}"
    )


def _column(values: np.ndarray) -> np.ndarray:
    # pandas keeps strings as Python objects; tf.constant wants str or bytes.
    return values.astype(str) if values.dtype == object else values


def _rows(x) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def _classes_from_labels(y: np.ndarray) -> int:
    if y.ndim > 1:
        return int(y.shape[-1])
    return int(y.max()) + 1 if len(y) and np.issubdtype(y.dtype, np.integer) else 0


def _from_arrays(x, y, where: str) -> sources.Source:
    if _rows(x) != len(y):
        raise DataArgumentError(f"{where}: {_rows(x)} feature rows but {len(y)} labels; expected the same number")
    if isinstance(x, dict):
        for name, column in x.items():
            if len(column) != len(y):
                raise DataArgumentError(f"{where}: column {name!r} has {len(column)} rows, the labels {len(y)}")
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    return sources.Source(num_examples=len(y), num_classes=_classes_from_labels(y), examples=ds)


def _from_dataset(ds: tf.data.Dataset, where: str) -> sources.Source:
    if "Batch" in type(ds).__name__:
        raise DataArgumentError(
            f"{where}: expected a Dataset of single examples, got a batched one ({type(ds).__name__}); "
            "tfpipe batches by train.batch_size: pass ds.unbatch() or the dataset before .batch()"
        )
    spec = ds.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise DataArgumentError(f"{where}: expected a Dataset of (features, label) pairs, got elements {spec}")
    n = int(ds.cardinality())
    if n == tf.data.UNKNOWN_CARDINALITY:
        n = int(ds.reduce(np.int64(0), lambda count, _: count + 1))  # one pass, to size the epoch
    elif n == tf.data.INFINITE_CARDINALITY:
        n = -1
    label = spec[1]
    if label.shape.rank and label.shape[-1] is not None:
        classes = int(label.shape[-1])
    elif label.dtype.is_integer and n > 0:
        classes = int(ds.map(lambda _, y: tf.cast(y, tf.int64)).reduce(np.int64(-1), tf.maximum)) + 1
    else:
        classes = 0
    return sources.Source(num_examples=n, num_classes=classes, examples=ds)


def _one(value, data_cfg, where: str) -> sources.Source:
    if isinstance(value, tf.data.Dataset):
        return _from_dataset(value, where)
    return _from_arrays(*_arrays(value, data_cfg, where), where)


def _cut(value, data_cfg) -> dict:
    """One value cut into the three splits by `data.split`."""
    s = data_cfg.split
    if isinstance(value, tf.data.Dataset):
        whole = _from_dataset(value, "data")
        if whole.num_examples < 0:
            raise DataArgumentError("data: an infinite Dataset cannot be cut into splits; pass {'train': ds, ...}")
        n = whole.num_examples
        n_test, n_val = int(round(n * s.test)), int(round(n * s.validation))
        parts = {"test": value.take(n_test), "validation": value.skip(n_test).take(n_val), "train": value.skip(n_test + n_val)}
        sizes = {"test": n_test, "validation": n_val, "train": n - n_test - n_val}
        return {k: sources.Source(sizes[k], whole.num_classes, examples=ds) for k, ds in parts.items() if sizes[k]}
    x, y = _arrays(value, data_cfg, "data")
    if _rows(x) != len(y):
        raise DataArgumentError(f"data: {_rows(x)} feature rows but {len(y)} labels; expected the same number")
    out = {}
    for split, idx in sources.split_indices(len(y), s.validation, s.test, s.seed).items():
        if len(idx):
            part = {k: v[idx] for k, v in x.items()} if isinstance(x, dict) else x[idx]
            out[split] = _from_arrays(part, y[idx], f"data ({split} split)")
    return out

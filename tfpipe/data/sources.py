"""Data sources: each turns a `DataConfig` and a split name into examples.

A source returns a `Source`, which says where the examples come from and
how to turn one raw record into `(features, label)`:

- in-memory sources (digits, npz, synthetic) give `examples`, a dataset of
  `(features, label)` pairs;
- file sources (csv, tfrecord, image_folder) give the listed `files` and a
  `reader` that opens one file as a dataset of raw records, plus `parse`,
  which turns a raw record (or a batch of them, when `parse_batchable`) into
  `(features, label)`. The pipeline decides how files are sharded and
  interleaved, and whether parsing happens before or after batching.

Files are listed from globs (comma-separated allowed), sorted, and permuted
with `data.read.seed`, so every run and every worker sees the same order.
`data.holdout` cuts validation and test splits from the training files of
csv and image_folder sources when their own globs are empty.

`data.source` may also name the user's own source by import path,
`my_pkg.data:load` (see `imported`), as `model.name` names a builder.
"""

from __future__ import annotations

import csv as csv_lib
import dataclasses
import fnmatch
import functools
import glob
import os
import re
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfpipe import importpath
from tfpipe.data import feature_spec

SPLITS = ("train", "validation", "test")
# What decode_image reads (decode_crop_jpeg: JPEG only; preflight names others).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


@dataclasses.dataclass(frozen=True)
class Source:
    num_examples: int
    num_classes: int
    # In-memory sources: a dataset of (features, label).
    examples: Optional[tf.data.Dataset] = None
    # File sources: listed files, a reader per file, and a parse function.
    files: tuple = ()
    reader: Optional[Callable] = None
    parse: Optional[Callable] = None
    # True when `parse` also accepts a batch of raw records (vectorized map).
    parse_batchable: bool = True

    @property
    def dataset(self) -> tf.data.Dataset:
        """All examples as `(features, label)` in file order, parsed one at a time."""
        if self.examples is not None:
            return self.examples
        ds = tf.data.Dataset.from_tensor_slices(list(self.files)).flat_map(self.reader)
        return ds.map(self.parse)


def split_indices(n: int, validation: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """A fixed, seeded permutation of range(n) cut into the three splits."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test))
    n_val = int(round(n * validation))
    return {
        "test": order[:n_test],
        "validation": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }


def list_files(pattern: str, read_cfg, key: str) -> tuple:
    """Files matching the comma-separated globs, sorted then permuted with the read seed.

    Raises:
        FileNotFoundError: naming the config key and the glob that matched nothing.
    """
    files = []
    for part in (p.strip() for p in pattern.split(",")):
        if not part:
            continue
        matched = sorted(glob.glob(part))
        if not matched:
            raise FileNotFoundError(f"{key}: {part!r} matches no file")
        files.extend(matched)
    files = sorted(set(files))
    if read_cfg.shuffle_files:
        files = [files[i] for i in np.random.default_rng(read_cfg.seed).permutation(len(files))]
    return tuple(files)


def _split_pattern(data_cfg, split: str) -> str:
    return getattr(data_cfg.files, split)


def _in_memory(x, y, data_cfg, split: str, num_classes: int) -> Source:
    s = data_cfg.split
    idx = split_indices(len(y), s.validation, s.test, s.seed)[split]
    if isinstance(x, dict):
        sliced = {k: v[idx] for k, v in x.items()}
    else:
        sliced = x[idx]
    ds = tf.data.Dataset.from_tensor_slices((sliced, y[idx]))
    return Source(num_examples=len(idx), num_classes=num_classes, examples=ds)


# ---------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    # scikit-learn ships these 1,797 8x8 images inside its wheel: no download.
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def digits(data_cfg, split: str) -> Source:
    """The embedded default: handwritten digits, 64 pixel values in 0..16."""
    x, y = _digits_arrays()
    return _in_memory(x, y, data_cfg, split, num_classes=10)


# ---------------------------------------------------------------- npz


def npz(data_cfg, split: str) -> Source:
    """Arrays from one `.npz` file (`data.files.train`), cut by `data.split`."""
    files = list_files(data_cfg.files.train, data_cfg.read, "data.files.train")
    if len(files) != 1:
        raise ValueError(f"data.files.train: expected one .npz file, {data_cfg.files.train!r} matches {len(files)}")
    path = files[0]
    with np.load(path) as f:
        for key in (data_cfg.npz.features_key, data_cfg.npz.label_key):
            if key not in f:
                raise ValueError(f"{path}: expected an array named {key!r}, found {', '.join(f.files)}")
        x, y = f[data_cfg.npz.features_key], f[data_cfg.npz.label_key]
    if len(x) != len(y):
        raise ValueError(f"{path}: {len(x)} feature rows but {len(y)} labels; expected the same number")
    num_classes = int(y.max()) + 1 if len(y) and np.issubdtype(y.dtype, np.integer) else 0
    return _in_memory(x, y, data_cfg, split, num_classes)


# ---------------------------------------------------------------- synthetic

_NP_DTYPES = {"float32": np.float32, "int64": np.int64, "uint8": np.uint8, "string": object}


def synthetic(data_cfg, split: str) -> Source:
    """Random examples with the shapes and dtypes of `data.synthetic.features`."""
    cfg = data_cfg.synthetic
    rng = np.random.default_rng(cfg.seed)
    n = cfg.num_examples
    arrays = {}
    for name, spec in cfg.features.items():
        dtype = spec.get("dtype", "float32")
        if dtype not in _NP_DTYPES:
            raise ValueError(
                f"data.synthetic.features.{name}.dtype: expected one of {', '.join(_NP_DTYPES)}, got {dtype!r}"
            )
        shape = (n, *spec.get("shape", []))
        if dtype == "float32":
            arrays[name] = rng.standard_normal(shape, dtype=np.float32)
        elif dtype == "string":
            arrays[name] = np.char.mod("v%d", rng.integers(0, 1000, shape)).astype(object)
        else:
            arrays[name] = rng.integers(0, 256, shape).astype(_NP_DTYPES[dtype])
    y = rng.integers(0, cfg.num_classes, n).astype(np.int64)
    x = arrays["x"] if list(arrays) == ["x"] else arrays
    return _in_memory(x, y, data_cfg, split, cfg.num_classes)


# ---------------------------------------------------------------- holdout (splits cut from the training files)


def holdout_range(data_cfg, split: str) -> tuple[float, float] | None:
    """The share [lo, hi) of the training files' examples that `split` takes, or None: no cut.

    `data.holdout.test` takes [0, t), `.validation` [t, t + v), and training
    the rest; a split whose own glob is set is not cut (load refuses both).
    """
    h = data_cfg.holdout
    t = h.test if not data_cfg.files.test else 0.0
    v = h.validation if not data_cfg.files.validation else 0.0
    if not (t or v):
        return None
    ranges = {"test": (0.0, t), "validation": (t, t + v), "train": (t + v, 1.0)}
    lo, hi = ranges[split]
    if split != "train" and (getattr(data_cfg.files, split) or hi <= lo):
        return None  # its own files, or not held out: no cut
    return lo, hi


_HASH = 2654435761  # Knuth's multiplicative hash: consecutive lines spread evenly over [0, 1)


def _line_share(index, seed: int):
    """Where line `index` of a file falls in [0, 1): the same in NumPy and in the graph."""
    # The seed shifts the whole sequence by a large, seed-dependent offset.
    hashed = (index * _HASH + (seed * 2246822519 + 12345) % 4294967296) % 4294967296
    if isinstance(hashed, tf.Tensor):
        return tf.cast(hashed, tf.float64) / 4294967296.0
    return hashed / 4294967296.0


# ---------------------------------------------------------------- csv

_CSV_TYPES = {"float": tf.float32, "int": tf.int64, "string": tf.string}


def read_header(path: str, delimiter: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        line = f.readline().rstrip("\r\n")
    if not line:
        raise ValueError(f"{path}: line 1: expected a header row of column names, got an empty line")
    return line.split(delimiter)


def csv_columns(data_cfg, first_file: str) -> list[tuple[str, str]]:
    """(name, type) per column, from the header of `first_file` and `data.csv.columns`."""
    cfg = data_cfg.csv
    if cfg.header:
        names = read_header(first_file, cfg.delimiter)
    else:
        names = [k for k in cfg.columns if not any(ch in k for ch in "*?[")]
    types = []
    for name in names:
        kind = "string"
        for pattern, t in cfg.columns.items():
            if fnmatch.fnmatchcase(name, pattern):
                kind = t
        if kind not in _CSV_TYPES:
            raise ValueError(f"data.csv.columns: {name}: expected one of float, int, string, got {kind!r}")
        if name == cfg.label_column and cfg.num_classes == 0:
            kind = "float"  # no classes: the label is a regression target
        types.append((name, kind))
    if cfg.label_column and cfg.label_column not in names:
        raise ValueError(
            f"{first_file}: data.csv.label_column {cfg.label_column!r} is not in the header "
            f"({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
        )
    return types


_FIELD_REGEX = {
    "float": r"\s*(?:[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|NaN|inf|Inf))?\s*",
    "int": r"\s*[-+]?\d+\s*",
    "string": r'(?:"(?:[^"]|"")*"|[^"\n]*?)',
}


def csv_line_regex(columns, delimiter: str) -> str:
    """An RE2 pattern a CSV line matches iff decode_csv can parse it with these column types."""
    sep = re.escape(delimiter)
    parts = []
    for _, kind in columns:
        field = _FIELD_REGEX[kind]
        if kind == "string":
            field = f'(?:"(?:[^"]|"")*"|[^"{sep}]*)'
        parts.append(field)
    return sep.join(parts)


def _count_lines(path: str, header: bool) -> int:
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":  # a last line without a newline still counts
        n += 1
    return n - (1 if header else 0)


def _file_key(files) -> tuple:
    """Files with their size and mtime: a cache key that changes when a file does."""
    return tuple((f, os.path.getsize(f), os.path.getmtime(f)) for f in files)


@functools.lru_cache(maxsize=32)
def _label_values(file_key: tuple, column: int, header: bool, delimiter: str) -> tuple:
    """Per file: {label value: first line holding it}, read with Python's csv module."""
    out = []
    for path, _, _ in file_key:
        seen: dict = {}
        with open(path, encoding="utf-8", newline="") as f:
            for lineno, row in enumerate(csv_lib.reader(f, delimiter=delimiter), start=1):
                if header and lineno == 1:
                    continue
                if column < len(row):  # short rows are preflight's to name
                    seen.setdefault(row[column], lineno)
        out.append((path, seen))
    return tuple(out)


def _split_labels(data_cfg, files, columns):
    names = [n for n, _ in columns]
    return _label_values(_file_key(files), names.index(data_cfg.csv.label_column), data_cfg.csv.header,
                         data_cfg.csv.delimiter)


def string_labels(data_cfg, columns=None) -> tuple | None:
    """The class names of a CSV's string label column, sorted: id i is the i-th (None: not string labels).

    Taken from the training split, so every split maps a name to the same id.
    Names that are all integers ("0", "3", "7") are ids already: "0".."7".

    Raises:
        ValueError: an empty label, or fewer than two classes, naming file and line.
    """
    cfg = data_cfg.csv
    if data_cfg.source != "csv" or not cfg.label_column or cfg.num_classes == 0 or not data_cfg.files.train:
        return None
    files = list_files(data_cfg.files.train, data_cfg.read, "data.files.train")
    columns = columns or csv_columns(data_cfg, sorted(files)[0])
    if dict(columns)[cfg.label_column] != "string":
        return None
    values: dict = {}
    for path, seen in _split_labels(data_cfg, sorted(files), columns):
        for value, line in seen.items():
            values.setdefault(value, (path, line))
    if "" in values:
        path, line = values[""]
        raise ValueError(f"{path}: line {line}: empty label in column {cfg.label_column!r}; expected a class name")
    if len(values) < 2:
        raise ValueError(
            f"data.files.train: column {cfg.label_column!r} holds {len(values)} label value(s) "
            f"({', '.join(map(repr, values))}); expected at least two classes (or model.loss: mse for numbers)"
        )
    if all(v.isdigit() and v == str(int(v)) for v in values):
        # Class ids written as text ("0", "1", ...): id i is "i", so a class
        # missing from the training split does not shift the others.
        return tuple(str(i) for i in range(max(int(v) for v in values) + 1))
    return tuple(sorted(values, key=_natural_key))


def _natural_key(name: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def _check_known_labels(data_cfg, split, files, columns, labels) -> None:
    """Every label of a validation or test file must be a training-split class: one line naming the first that is not."""
    known = set(labels)
    for path, seen in _split_labels(data_cfg, sorted(files), columns):
        unseen = sorted(((line, v) for v, line in seen.items() if v not in known))
        if unseen:
            line, value = unseen[0]
            shown = ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")
            raise ValueError(
                f"{path}: line {line}: label {value!r} is not a class of the training split ({shown}); "
                f"expected one of those (data.files.{split})"
            )


def csv(data_cfg, split: str) -> Source:
    """Rows of CSV files: features are a dict of columns, the label one column.

    Missing values: empty float fields read as NaN and empty strings as "",
    so `drop_missing` can find them; an empty int field is an error. With
    `data.holdout`, the validation/test rows are cut from the training files.
    """
    cut = holdout_range(data_cfg, split)
    pattern = data_cfg.files.train if cut and split != "train" else _split_pattern(data_cfg, split)
    if not pattern:
        return Source(num_examples=0, num_classes=data_cfg.csv.num_classes, files=())
    files = list_files(pattern, data_cfg.read, f"data.files.{split}")
    cfg = data_cfg.csv
    columns = csv_columns(data_cfg, sorted(files)[0])
    labels = string_labels(data_cfg, columns)
    if labels is not None and split != "train" and not data_cfg.ignore_errors:
        # With ignore_errors such rows get id -1 and are skipped (and counted) as bad labels.
        _check_known_labels(data_cfg, split, files, columns, labels)
    num_classes = len(labels) if labels is not None else cfg.num_classes
    defaults = []
    for _, kind in columns:
        if kind == "float":
            defaults.append(tf.constant(float("nan"), tf.float32))
        elif kind == "string":
            defaults.append(tf.constant("", tf.string))
        else:
            defaults.append(tf.constant([], tf.int64))  # required: an empty field is an error
    names = [n for n, _ in columns]

    line_ok = csv_line_regex(columns, cfg.delimiter)
    table = None
    if labels is not None:
        # Names -> ids; a name not in the training split gets -1, which the
        # label check stops on (preflight has named such lines already).
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(labels), tf.range(len(labels), dtype=tf.int64)), -1
        )

    seed = data_cfg.split.seed

    def reader(path):
        ds = tf.data.TextLineDataset(path)
        ds = ds.skip(1) if cfg.header else ds
        if cut:
            # This split's share of the lines, by line number: every worker and
            # every epoch cuts the same rows, and the count below matches.
            lo, hi = cut
            ds = ds.enumerate().filter(
                lambda i, _: (lo <= _line_share(i, seed)) & (_line_share(i, seed) < hi)
            ).map(lambda _, line: line)
        if data_cfg.ignore_errors:
            # decode_csv fails a whole batch for one bad row; dropping rows that
            # do not match the column types keeps the good rows of that batch.
            # check.py has counted the dropped rows before training.
            ds = ds.filter(lambda line: tf.strings.regex_full_match(line, line_ok))
        return ds

    def parse(lines):
        # decode_csv works on a scalar line or a vector of lines alike, so the
        # same function serves per-example and batch-first (vectorized) maps.
        values = tf.io.decode_csv(lines, defaults, field_delim=cfg.delimiter)
        row = dict(zip(names, values))
        label = row.pop(cfg.label_column) if cfg.label_column else tf.zeros_like(values[0], tf.int64)
        if table is not None:
            label = table.lookup(label)
        return row, label

    count = sum(_count_lines(f, cfg.header) for f in files)
    if cut:
        count = 0
        for f in files:
            share = _line_share(np.arange(_count_lines(f, cfg.header), dtype=np.int64), seed)
            count += int(((share >= cut[0]) & (share < cut[1])).sum())
    return Source(num_examples=count, num_classes=num_classes, files=files, reader=reader, parse=parse)


# ---------------------------------------------------------------- tfrecord


def _count_records(files, counts: dict) -> int:
    if all(os.path.basename(f) in counts for f in files):
        return sum(int(counts[os.path.basename(f)]) for f in files)
    ds = tf.data.TFRecordDataset(list(files))
    return int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def tfrecord(data_cfg, split: str) -> Source:
    """`tf.train.Example` records parsed with the feature spec.

    Features other than the label come back as a tensor when there is one,
    as a dict when there are several. Var-len features become dense tensors
    (padded by `padded_batch` or by batch-first parsing).
    """
    spec = feature_spec.load(data_cfg.tfrecord)
    pattern = _split_pattern(data_cfg, split)
    if not pattern:
        return Source(num_examples=0, num_classes=spec.num_classes, files=())
    files = list_files(pattern, data_cfg.read, f"data.files.{split}")
    parsers = spec.parsers()
    label_key = data_cfg.tfrecord.label_key

    def parse(serialized):
        if serialized.shape.rank == 0:
            parsed = tf.io.parse_single_example(serialized, parsers)
        else:
            parsed = tf.io.parse_example(serialized, parsers)
        parsed = {k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v for k, v in parsed.items()}
        label = parsed.pop(label_key) if label_key else tf.zeros([], tf.int64)
        features = next(iter(parsed.values())) if len(parsed) == 1 else parsed
        return features, label

    return Source(
        num_examples=_count_records(files, spec.counts),
        num_classes=spec.num_classes,
        files=files,
        reader=tf.data.TFRecordDataset,
        parse=parse,
        # parse_example fails a whole batch for one bad record; with
        # ignore_errors the records are parsed one at a time, so a bad one
        # drops alone (check.py counted it) and vectorized loses its speed-up.
        parse_batchable=not data_cfg.ignore_errors,
    )


# ---------------------------------------------------------------- image folder


def image_folder_classes(root: str) -> list[str]:
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
        raise FileNotFoundError(f"{root}: expected one sub-folder per class, found none")
    return classes


def images_under(folder: str) -> list[str]:
    """Image files anywhere below `folder`, sorted; hidden files and folders (.DS_Store, ._x.jpg) left out."""
    found = []
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(parent, f) for f in sorted(files)
                     if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
    return found


def _image_folder_files(data_cfg, pattern: str, key: str):
    """(paths, labels, classes) of the class folders under the roots `pattern` names, in sorted order."""
    roots = [r for r in list_files(pattern, data_cfg.read, key) if os.path.isdir(r)]
    if not roots:
        raise FileNotFoundError(f"{key}: {pattern!r} matches no directory")
    classes = image_folder_classes(sorted(roots)[0])
    paths, labels = [], []
    for root in sorted(roots):
        for label, name in enumerate(classes):
            folder = os.path.join(root, name)
            if os.path.isdir(folder):
                found = images_under(folder)
                paths.extend(found)
                labels.extend([label] * len(found))
    if not paths:
        raise FileNotFoundError(f"{key}: no {'/'.join(IMAGE_EXTENSIONS)} files under {pattern!r}")
    return paths, labels, classes


def holdout_images(labels, cut: tuple, seed: int) -> list:
    """Indices of the images in the share `cut` = [lo, hi) of each class, in a seeded order per class."""
    rng = np.random.default_rng(seed)
    taken = []
    labels = np.asarray(labels)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        lo, hi = (int(round(f * len(idx))) for f in cut)
        taken.extend(int(i) for i in idx[lo:hi])
    return sorted(taken)


def image_folder(data_cfg, split: str) -> Source:
    """Images in `<root>/<class>/.../<file>.{jpg,jpeg,png,gif,bmp}`; features are the encoded bytes.

    Classes are the sorted sub-folder names of the first root; a class's
    images may sit in nested folders below it. A `decode_image` (any of
    these formats; grayscale and RGBA become `channels`) or `decode_crop_jpeg`
    step turns the bytes into pixels. `data.holdout` cuts validation and
    test splits from the training folder: that share of each class's images.
    """
    cut = holdout_range(data_cfg, split)
    pattern, key = _split_pattern(data_cfg, split), f"data.files.{split}"
    if cut:
        pattern, key = data_cfg.files.train, "data.files.train"
    if not pattern:
        return Source(num_examples=0, num_classes=0, files=())
    paths, labels, classes = _image_folder_files(data_cfg, pattern, key)
    if cut:
        keep = holdout_images(labels, cut, data_cfg.split.seed)
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    order = np.random.default_rng(data_cfg.read.seed).permutation(len(paths))
    if not data_cfg.read.shuffle_files:
        order = np.arange(len(paths))
    paths = [paths[i] for i in order]
    labels = np.asarray(labels, np.int64)[order]
    examples = tf.data.Dataset.from_tensor_slices((paths, labels))

    def parse(path, label):
        return tf.io.read_file(path), label

    return Source(
        num_examples=len(paths),
        num_classes=len(classes),
        examples=examples.map(parse),
        files=tuple(paths),
    )


def python(data_cfg, split: str) -> Source:
    """Data given from Python, `tfpipe.train(cfg, data=...)`; see tfpipe/data/memory.py."""
    from tfpipe.data import memory  # pylint: disable=import-outside-toplevel  # memory imports this module

    return memory.source(data_cfg, split)


def imported(data_cfg, split: str) -> Source:
    """The split of a source named by import path: `data.source: my_pkg.data:load`.

    The function is called as `fn(data_cfg, split)`, `split` one of
    "train", "validation", "test", every time the run needs that split (so
    it should be cheap to call again, or cache what it reads). It returns
    the split's examples, not batches: the pipeline still caches, shuffles,
    maps, batches and prefetches as the config says. It may return

    - a `tf.data.Dataset` of `(features, label)` examples (its length is
      counted with one pass when unknown; an infinite one needs
      `train.steps_per_epoch`);
    - NumPy arrays `(x, y)`, `x` an array or a dict of arrays;
    - a `Source`, for files read through `data.read` (give `files`, a
      `reader` opening one file, and a `parse` turning a raw record into
      `(features, label)`) or a known example count;
    - None: the split is absent.

    Args:
        data_cfg: the run's `DataConfig` (`data_cfg.split` says how to cut
            one data set into splits, `data_cfg.read` how to read files).
        split: the split wanted.

    Returns:
        A `Source`.

    Raises:
        ValueError: one line naming `data.source` and what was expected.

    Example:

    ```python
    # my_pkg/data.py; the config says data.source: my_pkg.data:load
    def load(data_cfg, split):
        x, y = read_my_arrays()
        idx = tfpipe.data.sources.split_indices(len(y), data_cfg.split.validation,
                                                data_cfg.split.test, data_cfg.split.seed)[split]
        return x[idx], y[idx]
    ```
    """
    from tfpipe.data import memory  # pylint: disable=import-outside-toplevel  # memory imports this module

    spec = data_cfg.source
    out = importpath.load(spec, "data.source")(data_cfg, split)
    if isinstance(out, Source):
        return out
    if out is None:
        return Source(num_examples=0, num_classes=0)
    if isinstance(out, tf.data.Dataset) or (isinstance(out, (tuple, list)) and len(out) == 2):
        # The same conversion as data handed over from Python (tfpipe.train(cfg, data=...)).
        return memory._one(out, data_cfg, f"data.source {spec!r} ({split} split)")  # pylint: disable=protected-access
    raise ValueError(
        f"data.source: {spec!r} returned a {type(out).__name__} for the {split} split; expected a "
        "tf.data.Dataset of (features, label) examples, NumPy arrays (x, y), a tfpipe.data.sources.Source or None"
    )


# Dispatch by plain dict: the names `data.source` may take (or module:function, `imported`).
SOURCES = {
    "python": python,
    "digits": digits,
    "npz": npz,
    "synthetic": synthetic,
    "csv": csv,
    "tfrecord": tfrecord,
    "image_folder": image_folder,
}


def load(data_cfg, split: str) -> Source:
    """The `split` of the source named by `data_cfg.source`."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    if importpath.is_import_path(data_cfg.source):
        return imported(data_cfg, split)
    if data_cfg.source not in SOURCES:
        raise ValueError(
            f"data.source: expected one of {', '.join(sorted(SOURCES))} or module:function, got {data_cfg.source!r}"
        )
    return SOURCES[data_cfg.source](data_cfg, split)

"""Converts an image folder, CSV files or an `.npz` file into sharded TFRecords.

Each converter writes `<split>-NNNNN-of-MMMMM.tfrecord` shards of
`tf.train.Example` records (examples dealt round-robin, so shards are within
one record of each other in size) and a `spec.json` that a config's
`data.tfrecord.spec_file` points at.

Example:

```python
tfrecords.from_image_folder("data/images/folder/train", "data/images/tfrecord", num_shards=8, split="train")
```
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import tensorflow as tf

from tfpipe.data import feature_spec, sources


def _bytes(v: bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=np.atleast_1d(v).astype(np.int64).tolist()))


def _float(v):
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.atleast_1d(v).astype(np.float32).tolist()))


def write_shards(examples, out_dir: str, split: str, num_shards: int) -> dict:
    """Writes serialized examples round-robin into shards; returns {file name: count}."""
    os.makedirs(out_dir, exist_ok=True)
    names = [f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(os.path.join(out_dir, n)) for n in names]
    counts = dict.fromkeys(names, 0)
    try:
        for i, example in enumerate(examples):
            writers[i % num_shards].write(example.SerializeToString())
            counts[names[i % num_shards]] += 1
    finally:
        for w in writers:
            w.close()
    return counts


def _update_spec(out_dir: str, features: dict, num_classes: int, counts: dict) -> str:
    """Writes spec.json, merging the counts of splits converted earlier into the same folder."""
    path = os.path.join(out_dir, "spec.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            counts = {**json.load(f).get("counts", {}), **counts}
    feature_spec.write(path, features, num_classes, counts)
    return path


def from_image_folder(root: str, out_dir: str, num_shards: int = 8, split: str = "train", seed: int = 0) -> str:
    """Image folder (`root/<class>/.../*.jpg|png|gif|bmp`, as the image_folder source reads it)
    -> shards of {image: encoded bytes, label: int64}."""
    classes = sources.image_folder_classes(root)
    items = []
    for label, name in enumerate(classes):
        items.extend((path, label) for path in sources.images_under(os.path.join(root, name)))
    # Shuffled once here so each shard mixes classes.
    order = np.random.default_rng(seed).permutation(len(items))

    def examples():
        for i in order:
            path, label = items[i]
            with open(path, "rb") as f:
                data = f.read()
            yield tf.train.Example(features=tf.train.Features(feature={"image": _bytes(data), "label": _int(label)}))

    counts = write_shards(examples(), out_dir, split, num_shards)
    features = {
        "image": feature_spec.Feature("string", ()),
        "label": feature_spec.Feature("int64", ()),
    }
    return _update_spec(out_dir, features, len(classes), counts)


def _column_type(values) -> str:
    """int64 if every non-empty value is an int, float32 if a number, else string."""
    present = [v for v in values if v]
    for kind, cast in (("int64", int), ("float32", float)):
        try:
            for v in present:
                cast(v)
            if present:
                return kind
        except ValueError:
            pass
    return "string"


def from_csv(pattern: str, out_dir: str, num_shards: int = 8, split: str = "train", label_column: str = "label",
             num_classes: int = 2) -> str:
    """CSV files with a header -> shards with one scalar feature per column.

    Column types come from the first 1,000 data rows: int64, float32 or string.
    Empty fields become 0, NaN or "" so every record has every feature.
    """
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"{pattern!r} matches no file")
    header = sources.read_header(files[0], ",")
    with open(files[0], encoding="utf-8") as f:
        f.readline()
        sample = [line.rstrip("\n").split(",") for _, line in zip(range(1000), f)]
    kinds = [_column_type([row[j] for row in sample if j < len(row)]) for j in range(len(header))]

    def examples():
        for path in files:
            with open(path, encoding="utf-8") as f:
                f.readline()
                for lineno, line in enumerate(f, start=2):
                    values = line.rstrip("\n").split(",")
                    if len(values) != len(header):
                        raise ValueError(f"{path}: line {lineno}: {len(values)} fields; expected {len(header)}")
                    feats = {}
                    for name, kind, v in zip(header, kinds, values):
                        if kind == "int64":
                            feats[name] = _int(int(v) if v else 0)
                        elif kind == "float32":
                            feats[name] = _float(float(v) if v else float("nan"))
                        else:
                            feats[name] = _bytes(v.encode())
                    yield tf.train.Example(features=tf.train.Features(feature=feats))

    counts = write_shards(examples(), out_dir, split, num_shards)
    features = {n: feature_spec.Feature(k, ()) for n, k in zip(header, kinds)}
    if label_column not in features:
        raise ValueError(f"{files[0]}: label column {label_column!r} not in the header")
    return _update_spec(out_dir, features, num_classes, counts)


def from_npz(path: str, out_dir: str, num_shards: int = 8, split: str = "train", features_key: str = "x",
             label_key: str = "y") -> str:
    """An `.npz` of features x[N, ...] and integer labels y[N] -> shards of {x: float32, label: int64}."""
    with np.load(path) as f:
        x, y = f[features_key], f[label_key]

    def examples():
        for xi, yi in zip(x, y):
            feats = {"x": _float(xi.reshape(-1)), "label": _int(int(yi))}
            yield tf.train.Example(features=tf.train.Features(feature=feats))

    counts = write_shards(examples(), out_dir, split, num_shards)
    features = {"x": feature_spec.Feature("float32", tuple(x.shape[1:])), "label": feature_spec.Feature("int64", ())}
    return _update_spec(out_dir, features, int(y.max()) + 1, counts)

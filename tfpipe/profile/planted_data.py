"""Sources and steps for the planted bottlenecks as tfpipe configs (`benchmarks/planted/*.yaml`).

`tfpipe/profile/planted.py` plants each bottleneck in a plain TensorFlow
program; the configs plant the same ones in a tfpipe run, named from YAML
by import path (`data.source: tfpipe.profile.planted_data:python_generator`,
`{op: tfpipe.profile.planted_data:lookup_latency}`). The misconfiguration
itself is always a config key (`data.cache: ""`, `data.prefetch: 0`, ...),
so the report's first recommendation can be applied as an override.

As in planted.py, the slowness is real work or real latency: Python work in
a generator, CPU work in TensorFlow ops, or `time.sleep` inside
`tf.py_function` standing for storage or lookup latency (it holds no core,
so a parallel fix speeds it up however busy the machine is).

Every example is 64 float32 features and an int64 label of 10 classes, the
shape of planted.py's programs; sources cut their data into splits with
`data.split` like the digits source.

Example:

```python
import tfpipe
cfg = tfpipe.load_config("benchmarks/planted/python_generator.yaml")
result = tfpipe.train(cfg, "/tmp/planted/python_generator")
print(result.report["cause"], result.report["recommendations"][0])
```
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfpipe.data import sources

DIM = 64
CLASSES = 10


def _examples(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, DIM), dtype=np.float32), rng.integers(0, CLASSES, n).astype(np.int64)


def _split(data_cfg, split: str, n: int):
    """This split's rows of `n` generated examples, cut by `data.split` (a fixed, seeded permutation)."""
    x, y = _examples(n)
    s = data_cfg.split
    idx = sources.split_indices(n, s.validation, s.test, s.seed)[split]
    return x[idx], y[idx]


def _map_calls(data_cfg):
    # The source's own map follows data.map.num_parallel_calls, as the
    # pipeline's maps do: 1 is a plain map, -1 AUTOTUNE.
    calls = data_cfg.map.num_parallel_calls
    return None if calls == 1 else calls


# ---------------------------------------------------------------- sources


def python_generator(data_cfg, split: str) -> sources.Source | None:
    """1,024 examples from a Python generator that computes each one in Python.

    Every example costs Python work under the GIL (20 rounds of NumPy on its
    64 values, tens of microseconds) plus `from_generator`'s own cost per
    element; uncached, that runs again every epoch.
    """
    x, y = _split(data_cfg, split, 1024)
    if not len(y):
        return None

    def gen():
        for i in range(len(y)):
            v = x[i].copy()
            for _ in range(20):  # a feature computed in Python
                v = np.sqrt(v * v + 1e-3)
            yield v, y[i]

    ds = tf.data.Dataset.from_generator(
        gen, output_signature=(tf.TensorSpec([DIM], tf.float32), tf.TensorSpec([], tf.int64))
    )
    return sources.Source(num_examples=len(y), num_classes=CLASSES, examples=ds)


def heavy(x, y):
    """About a millisecond of CPU per example in TensorFlow ops (12 small matmuls); deterministic."""
    m = tf.reshape(tf.tile(x, [16]), [32, 32])
    for _ in range(12):
        m = tf.tanh(tf.matmul(m, m) * 0.05)
    return x + tf.reduce_mean(m) * 1e-3, y


def costly_features(data_cfg, split: str) -> sources.Source | None:
    """512 examples whose features the source computes with `heavy`, ~1 ms of CPU each.

    The feature map is part of the source, so `data.cache: memory` keeps
    its output (tfpipe runs imported `data.map.steps` after the cache, every
    epoch); it runs with `data.map.num_parallel_calls`.
    """
    x, y = _split(data_cfg, split, 512)
    if not len(y):
        return None
    ds = tf.data.Dataset.from_tensor_slices((x, y)).map(heavy, num_parallel_calls=_map_calls(data_cfg))
    return sources.Source(num_examples=len(y), num_classes=CLASSES, examples=ds)


BLOCK = 256
# About one step of the MLP 512x512 on a batch of 256 on a quiet 2-core host
# (2.2-2.4 ms, measured from the perfect-input runs): so prefetching can
# overlap nearly all of it (6 ms against 2.3 ms capped the gain at 1.4x).
BLOCK_SECONDS = 0.0025


def block_reads(data_cfg, split: str) -> sources.Source | None:
    """4,096 examples read from storage in blocks of 256 with 2.5 ms of latency per block.

    The latency (a `time.sleep` in `tf.py_function` per block) is about
    the compute of one step of an MLP 512x512 on a batch of 256, so with
    nothing working ahead (`data.prefetch: 0`) input and compute take turns.
    """
    x, y = _split(data_cfg, split, 4096)
    if not len(y):
        return None

    def wait(block):
        time.sleep(BLOCK_SECONDS)
        return block

    def fetch(xb, yb):
        return tf.ensure_shape(tf.py_function(wait, [xb], tf.float32), xb.shape), yb

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BLOCK).map(fetch).unbatch()
    return sources.Source(num_examples=len(y), num_classes=CLASSES, examples=ds)


RECORD_SECONDS = 0.00025
_FILES, _PER_FILE = 8, 256


def _record_files() -> list[str]:
    """8 TFRecord files of 256 `tf.train.Example`s (x: 64 floats, y: int64), written once per machine."""
    return write_records(Path(os.environ.get("TFPIPE_PLANTED_DIR", Path(tempfile.gettempdir()) / "tfpipe-planted")))


def write_records(folder) -> list[str]:
    """`folder/records/part-{0..7}.tfrecord` (the planted slow_reads data), unless already there."""
    root = Path(folder) / "records"
    paths = [root / f"part-{f}.tfrecord" for f in range(_FILES)]
    if all(p.is_file() for p in paths):
        return [str(p) for p in paths]
    root.mkdir(parents=True, exist_ok=True)
    x, y = _examples(_FILES * _PER_FILE)
    for f, path in enumerate(paths):
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with tf.io.TFRecordWriter(str(partial)) as w:
            for i in range(f * _PER_FILE, (f + 1) * _PER_FILE):
                ex = tf.train.Example(features=tf.train.Features(feature={
                    "x": tf.train.Feature(float_list=tf.train.FloatList(value=x[i])),
                    "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[y[i]])),
                }))  # fmt: skip
                w.write(ex.SerializeToString())
        os.replace(partial, path)  # whole files only: runs in parallel may share the folder
    return [str(p) for p in paths]


def slow_records(data_cfg, split: str) -> sources.Source | None:
    """TFRecord files on storage with 0.25 ms of latency per record, read through `data.read`.

    Training reads 7 files of 256 records, test the 8th (no validation
    split). The pipeline interleaves the files with `data.read.cycle_length`
    and `data.read.num_parallel_calls`, so parallel reads hide the latency.
    The files are written once under `$TFPIPE_PLANTED_DIR/records` (default
    the system's temporary folder).
    """
    files = _record_files()
    chosen = {"train": files[:-1], "test": files[-1:]}.get(split)
    if not chosen:
        return None
    read = data_cfg.read
    if read.shuffle_files:
        chosen = [chosen[i] for i in np.random.default_rng(read.seed).permutation(len(chosen))]

    def wait(record):
        time.sleep(RECORD_SECONDS)
        return record

    def reader(path):
        ds = tf.data.TFRecordDataset(path)
        return ds.map(lambda r: tf.ensure_shape(tf.py_function(wait, [r], tf.string), []))

    spec = {"x": tf.io.FixedLenFeature([DIM], tf.float32), "y": tf.io.FixedLenFeature([], tf.int64)}

    def parse(serialized):
        # One record or a batch of them (data.map.vectorized).
        parse_fn = tf.io.parse_single_example if serialized.shape.rank == 0 else tf.io.parse_example
        e = parse_fn(serialized, spec)
        return e["x"], e["y"]

    return sources.Source(
        num_examples=len(chosen) * _PER_FILE, num_classes=CLASSES, files=tuple(chosen), reader=reader, parse=parse
    )


# ---------------------------------------------------------------- steps


LOOKUP_SECONDS = 0.0003


def lookup_latency(x, y):
    """A per-example step waiting 0.3 ms (a lookup in a remote store), in `tf.py_function`."""

    def wait(features):
        time.sleep(LOOKUP_SECONDS)
        return features

    return tf.ensure_shape(tf.py_function(wait, [x], tf.float32), x.shape), y

"""Preprocessing steps named in a config's `data.map.steps`, applied in order.

Each step is a factory: called with the step's config arguments it returns
a pure function `(features, label) -> (features, label)`, or for `drop_missing`
a predicate `(features, label) -> keep`. Steps in `BATCHABLE` also accept a
batch (leading batch dimension), so `data.map.vectorized: true` can run them
once per batch. Steps in `RANDOM_OPS` augment only when the pipeline is
built with `training=True`; for evaluation they are deterministic (centre
crop, no flip).

Features are a tensor or a dict of tensors; `key` picks one entry of a dict
(leave it out for tensor features). Column arguments accept globs ("C*").

`op` may also be an import path, `my_pkg.prep:fn`: without further arguments
`fn(features, label)` is the step itself; with arguments, `fn(**arguments)`
returns the step. Such steps run per example, after the cache, every epoch
(tfpipe cannot tell whether they are random).

Example:

```yaml
data:
  map:
    steps:
      - {op: decode_crop_jpeg, size: 56, ratio: 4}
      - {op: random_flip}
      - {op: normalize, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}
```
"""

from __future__ import annotations

import fnmatch
import inspect
import re

import tensorflow as tf

from tfpipe import importpath


def _get(x, key):
    if key is None:
        if isinstance(x, dict):
            raise ValueError(f"features are a dict ({', '.join(sorted(x))}); name one with `key:`")
        return x
    if not isinstance(x, dict) or key not in x:
        have = ", ".join(sorted(x)) if isinstance(x, dict) else "a single tensor"
        raise ValueError(f"key {key!r}: not among the features ({have})")
    return x[key]


def _set(x, key, value):
    if key is None:
        return value
    out = dict(x)
    out[key] = value
    return out


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _match(x: dict, patterns, op: str) -> list[str]:
    if not isinstance(x, dict):
        raise ValueError(f"{op}: expects dict features (e.g. CSV columns), got a single tensor")
    if isinstance(patterns, str):
        patterns = [patterns]
    names = []
    for p in patterns:
        hits = sorted((k for k in x if fnmatch.fnmatchcase(k, p)), key=_natural)
        if not hits:
            raise ValueError(f"{op}: {p!r} matches no feature ({', '.join(sorted(x, key=_natural))})")
        names.extend(h for h in hits if h not in names)
    return names


# ---------------------------------------------------------------- numeric


def rescale(scale: float, offset: float = 0.0, key=None):
    """Casts to float32 and maps x to x * scale + offset."""

    def fn(x, y):
        return _set(x, key, tf.cast(_get(x, key), tf.float32) * scale + offset), y

    return fn


def normalize(mean=None, std=None, key=None, stats_examples: int = 50_000):
    """(x - mean) / std per channel (last axis).

    Without `mean` and `std`, the pipeline computes them on up to
    `stats_examples` examples of the training split (never on eval data).
    """
    if mean is None or std is None:
        raise ValueError("normalize: mean and std are filled from the training split by the pipeline")
    mean_t = tf.constant(mean, tf.float32)
    inv_std = 1.0 / tf.maximum(tf.constant(std, tf.float32), 1e-6)

    def fn(x, y):
        return _set(x, key, (tf.cast(_get(x, key), tf.float32) - mean_t) * inv_std), y

    return fn


def log1p(key=None):
    """log(1 + max(x, 0)): tames heavy-tailed counts such as click-log numeric columns."""

    def fn(x, y):
        return _set(x, key, tf.math.log1p(tf.maximum(tf.cast(_get(x, key), tf.float32), 0.0))), y

    return fn


def reshape(shape: list, key=None):
    """Reshapes one example's features, e.g. 64 flat pixels to [8, 8, 1]."""

    def fn(x, y):
        return _set(x, key, tf.reshape(_get(x, key), shape)), y

    return fn


# ---------------------------------------------------------------- labels


def one_hot(num_classes: int):
    """Turns an integer class label into a one-hot float vector."""

    def fn(x, y):
        return x, tf.one_hot(tf.cast(y, tf.int32), num_classes)

    return fn


def binary_label():
    """A 0/1 label as float32 of shape [1], the shape binary cross-entropy expects."""

    def fn(x, y):
        return x, tf.expand_dims(tf.cast(y, tf.float32), -1)

    return fn


# ---------------------------------------------------------------- images


def decode_image(key=None, channels: int = 3):
    """Decodes JPEG, PNG, GIF or BMP bytes to uint8 [height, width, channels]."""

    def fn(x, y):
        img = tf.io.decode_image(_get(x, key), channels=channels, expand_animations=False)
        return _set(x, key, img), y

    return fn


def decode_crop_jpeg(size: int, ratio: int = 1, channels: int = 3, key=None, training: bool = False):
    """Decodes only a size x size window of a JPEG, at 1/ratio resolution.

    `tf.io.decode_and_crop_jpeg` skips the pixels outside the window, and
    `ratio` (1, 2, 4, 8) downscales in the DCT domain, so both cut decode
    cost. Training takes a random window; evaluation the centre one. The
    window is in downscaled pixels.
    """
    if ratio not in (1, 2, 4, 8):
        raise ValueError(f"decode_crop_jpeg: ratio: expected 1, 2, 4 or 8, got {ratio!r}")

    def fn(x, y):
        data = _get(x, key)
        shape = tf.io.extract_jpeg_shape(data)
        # libjpeg's scaled size rounds up.
        h = (shape[0] + ratio - 1) // ratio
        w = (shape[1] + ratio - 1) // ratio
        if training:
            top = tf.random.uniform([], 0, h - size + 1, tf.int32)
            left = tf.random.uniform([], 0, w - size + 1, tf.int32)
        else:
            top, left = (h - size) // 2, (w - size) // 2
        img = tf.io.decode_and_crop_jpeg(data, tf.stack([top, left, size, size]), channels=channels, ratio=ratio)
        img.set_shape([size, size, channels])
        return _set(x, key, img), y

    return fn


def resize(size: list, key=None, method: str = "bilinear"):
    """Resizes images (or a batch of them) to size = [height, width]; output float32."""

    def fn(x, y):
        return _set(x, key, tf.image.resize(_get(x, key), size, method=method)), y

    return fn


def random_crop(size: list, key=None, training: bool = False):
    """A random [height, width] crop when training, the centre crop otherwise."""

    def fn(x, y):
        img = _get(x, key)
        if training:
            out = tf.image.random_crop(img, [size[0], size[1], tf.shape(img)[-1]])
        else:
            out = tf.image.resize_with_crop_or_pad(img, size[0], size[1])
        return _set(x, key, out), y

    return fn


def random_flip(key=None, training: bool = False):
    """Flips left-right with probability 1/2 when training; identity otherwise."""

    def fn(x, y):
        if not training:
            return x, y
        return _set(x, key, tf.image.random_flip_left_right(_get(x, key))), y

    return fn


# ---------------------------------------------------------------- tabular


def hash_columns(columns, num_bins: int):
    """Replaces string columns by int64 ids in [0, num_bins) (feature hashing)."""

    def fn(x, y):
        out = dict(x)
        for name in _match(x, columns, "hash_columns"):
            v = x[name] if x[name].dtype == tf.string else tf.strings.as_string(x[name])
            out[name] = tf.strings.to_hash_bucket_fast(v, num_bins)
        return out, y

    return fn


def vocab_lookup(column: str, vocabulary: list, num_oov_buckets: int = 1):
    """Maps a string column to int64 ids: the vocabulary's index, unknown values to OOV buckets."""
    table = tf.lookup.StaticVocabularyTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant([str(v) for v in vocabulary]), tf.range(len(vocabulary), dtype=tf.int64)
        ),
        num_oov_buckets,
    )

    def fn(x, y):
        return _set(x, column, table.lookup(_get(x, column))), y

    return fn


def drop_missing(columns):
    """Keeps only examples whose columns are present (float not NaN, string not empty)."""

    def keep(x, y):
        ok = []
        for name in _match(x, columns, "drop_missing"):
            v = x[name]
            if v.dtype == tf.string:
                ok.append(tf.strings.length(v) > 0)
            elif v.dtype.is_floating:
                ok.append(tf.logical_not(tf.math.is_nan(v)))
        if not ok:
            return tf.ones_like(y, tf.bool)
        return tf.reduce_all(tf.stack(ok, axis=-1), axis=-1)

    keep.is_filter = True
    return keep


def pack(groups: dict, keep_rest: bool = False):
    """Stacks columns into named groups: {numeric: ["I*"], categorical: ["C*"]}.

    Each group becomes one float32 (or int64, if all its columns are ints)
    tensor with the columns on the last axis, in natural name order.
    """

    def fn(x, y):
        out = {}
        used = set()
        for group, patterns in groups.items():
            names = _match(x, patterns, f"pack.{group}")
            cols = [x[n] for n in names]
            dtype = tf.int64 if all(c.dtype.is_integer for c in cols) else tf.float32
            out[group] = tf.stack([tf.cast(c, dtype) for c in cols], axis=-1)
            used.update(names)
        if keep_rest:
            out.update({k: v for k, v in x.items() if k not in used})
        return out, y

    return fn


# Dispatch by plain dict: the op names a config may use.
STEPS = {
    "rescale": rescale,
    "normalize": normalize,
    "log1p": log1p,
    "reshape": reshape,
    "one_hot": one_hot,
    "binary_label": binary_label,
    "decode_image": decode_image,
    "decode_crop_jpeg": decode_crop_jpeg,
    "resize": resize,
    "random_crop": random_crop,
    "random_flip": random_flip,
    "hash_columns": hash_columns,
    "vocab_lookup": vocab_lookup,
    "drop_missing": drop_missing,
    "pack": pack,
}

# Ops that also accept a batch: allowed with data.map.vectorized.
BATCHABLE = frozenset(
    {
        "rescale",
        "normalize",
        "log1p",
        "one_hot",
        "binary_label",
        "resize",
        "random_flip",
        "hash_columns",
        "vocab_lookup",
        "drop_missing",
        "pack",
    }
)

# Ops whose output differs between epochs (augmentation). Everything before the
# first of them is deterministic and can run once, before the cache.
RANDOM_OPS = frozenset({"decode_crop_jpeg", "random_crop", "random_flip"})


def split_at_first_random(steps) -> tuple[tuple, tuple]:
    """Splits steps into a deterministic prefix and the rest (from the first random op)."""
    steps = tuple(steps)
    for i, step in enumerate(steps):
        if step["op"] in RANDOM_OPS or importpath.is_import_path(step["op"]):
            return steps[:i], steps[i:]
    return steps, ()


def split_batchable_tail(steps) -> tuple[tuple, tuple]:
    """Splits steps into a head and the longest tail of batch-capable maps (no filters)."""
    steps = tuple(steps)
    k = len(steps)
    while k > 0 and steps[k - 1]["op"] in BATCHABLE and steps[k - 1]["op"] != "drop_missing":
        k -= 1
    return steps[:k], steps[k:]


def _args(step) -> dict:
    return {k: v for k, v in step.items() if k != "op"}


def check_steps(steps, where: str = "config", vectorized: bool = False) -> None:
    """Raises ValueError naming the step when an op or its arguments are wrong."""
    for i, step in enumerate(steps):
        key = f"data.map.steps[{i}]"
        if not isinstance(step, dict) or "op" not in step:
            raise ValueError(f"{where}: {key}: expected a mapping with an 'op' key, got {step!r}")
        op = step["op"]
        args = _args(step)
        if importpath.is_import_path(op):
            _check_imported(op, args, f"{where}: {key}", vectorized)
            continue
        if op not in STEPS:
            raise ValueError(
                f"{where}: {key}.op: expected one of {', '.join(sorted(STEPS))} or module:function, got {op!r}"
            )
        sig = inspect.signature(STEPS[op])
        if "training" in args:
            raise ValueError(f"{where}: {key} ({op}): 'training' is set by the pipeline, not the config")
        try:
            sig.bind(**args)
        except TypeError as e:
            params = ", ".join(p for p in sig.parameters if p != "training")
            raise ValueError(f"{where}: {key} ({op}): {e}; its arguments are: {params}") from None
        if vectorized and op not in BATCHABLE:
            raise ValueError(
                f"{where}: {key} ({op}): runs on one example at a time, but data.map.vectorized is true; "
                f"batch-capable ops are: {', '.join(sorted(BATCHABLE))}"
            )


def _imported(op: str, args: dict):
    """The factory of an import-path step: `fn` itself when it takes no arguments."""
    fn = importpath.load(op, "op")
    return fn if args else (lambda: fn)


def _check_imported(op: str, args: dict, where: str, vectorized: bool) -> None:
    try:
        fn = importpath.load(op, f"{where}.op")
    except ValueError as e:
        raise ValueError(str(e)) from None
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        sig.bind(**args) if args else sig.bind(None, None)
    except TypeError as e:
        expected = "accept these arguments" if args else "take (features, label)"
        raise ValueError(f"{where} ({op}): expected a function that can {expected}: {e}") from None
    if vectorized:
        raise ValueError(f"{where} ({op}): imported steps run per example, but data.map.vectorized is true")


def build(steps, training: bool) -> list:
    """The step functions in order; random ops get the `training` flag."""
    fns = []
    for step in steps:
        args = _args(step)
        if importpath.is_import_path(step["op"]):
            fns.append(_imported(step["op"], args)(**args))
            continue
        factory = STEPS[step["op"]]
        if "training" in inspect.signature(factory).parameters:
            args["training"] = training
        fns.append(factory(**args))
    return fns


def compose(steps, training: bool = False):
    """One map function applying every configured (non-filter) step in order."""
    fns = build(steps, training)
    if any(getattr(f, "is_filter", False) for f in fns):
        raise ValueError("compose: drop_missing filters examples; build the pipeline with tfpipe.data.pipeline")

    def fn(x, y):
        for f in fns:
            x, y = f(x, y)
        return x, y

    return fn


def compute_stats(batches: tf.data.Dataset, key=None) -> tuple[list, list]:
    """Per-channel (last axis) mean and std over a dataset of (features, label) batches."""
    total = count = total_sq = None
    for x, _ in batches:
        v = tf.cast(_get(x, key), tf.float64)
        v = tf.reshape(v, [-1, v.shape[-1]]) if v.shape.rank > 1 else tf.reshape(v, [-1, 1])
        s, sq, n = tf.reduce_sum(v, 0), tf.reduce_sum(v * v, 0), tf.cast(tf.shape(v)[0], tf.float64)
        total, total_sq, count = (s, sq, n) if total is None else (total + s, total_sq + sq, count + n)
    if total is None:
        raise ValueError("normalize: the training split is empty; give mean and std in the config")
    mean = total / count
    std = tf.sqrt(tf.maximum(total_sq / count - mean * mean, 0.0))
    return [float(m) for m in mean.numpy()], [float(s) for s in std.numpy()]

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

import contextlib
import fnmatch
import inspect
import re

import tensorflow as tf

from tfpipe import importpath
from tfpipe.config import ConfigError


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


def size_hw(size) -> tuple[int, int]:
    """A size as (height, width): an int is a square (checked at load, see ARGS)."""
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


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


def decode_crop_jpeg(size, ratio: int = 1, channels: int = 3, key=None, training: bool = False):
    """Decodes only a size x size (or [height, width]) window of a JPEG, at 1/ratio resolution.

    `tf.io.decode_and_crop_jpeg` skips the pixels outside the window, and
    `ratio` (1, 2, 4, 8) downscales in the DCT domain, so both cut decode
    cost. Training takes a random window; evaluation the centre one. The
    window is in downscaled pixels; an image smaller than it is an error
    (preflight names the file): use decode_image and random_crop for those.
    """
    if ratio not in (1, 2, 4, 8):
        raise ValueError(f"decode_crop_jpeg: ratio: expected 1, 2, 4 or 8, got {ratio!r}")
    ch, cw = size_hw(size)

    def fn(x, y):
        data = _get(x, key)
        shape = tf.io.extract_jpeg_shape(data)
        # libjpeg's scaled size rounds up.
        h = (shape[0] + ratio - 1) // ratio
        w = (shape[1] + ratio - 1) // ratio
        if training:
            top = tf.random.uniform([], 0, h - ch + 1, tf.int32)
            left = tf.random.uniform([], 0, w - cw + 1, tf.int32)
        else:
            top, left = (h - ch) // 2, (w - cw) // 2
        img = tf.io.decode_and_crop_jpeg(data, tf.stack([top, left, ch, cw]), channels=channels, ratio=ratio)
        img.set_shape([ch, cw, channels or None])
        return _set(x, key, img), y

    return fn


RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")
RESIZE_POLICIES = ("stretch", "pad", "crop")


def resize(size, key=None, method: str = "bilinear", policy: str = "stretch"):
    """Resizes images (or a batch of them) to size (an int or [height, width]); output float32.

    `policy` says what happens to an image of another aspect ratio:
    `stretch` scales each side to the size (the aspect changes), `pad`
    scales the image to fit inside and pads with zeros (nothing is lost),
    `crop` scales it to cover the size and keeps the centre (nothing is
    distorted). Images smaller than the size are scaled up.
    """
    h, w = size_hw(size)

    def fn(x, y):
        img = _get(x, key)
        if policy == "pad":
            out = tf.image.resize_with_pad(tf.cast(img, tf.float32), h, w, method=method)
        elif policy == "crop":
            shape = tf.cast(tf.shape(img)[-3:-1], tf.float32)
            scale = tf.maximum(h / shape[0], w / shape[1])
            cover = tf.cast(tf.math.ceil(shape * scale), tf.int32)
            out = tf.image.resize(img, tf.maximum(cover, [h, w]), method=method)
            out = tf.image.resize_with_crop_or_pad(out, h, w)
        else:
            out = tf.image.resize(img, [h, w], method=method)
        return _set(x, key, tf.cast(out, tf.float32)), y

    return fn


SMALL_POLICIES = ("resize", "pad", "error")


def random_crop(size, key=None, small: str = "resize", training: bool = False):
    """A random crop of size (an int or [height, width]) when training, the centre crop otherwise.

    An image smaller than the crop on either side is first scaled up,
    keeping its aspect ratio, until the crop fits (`small: resize`), or
    padded with zeros around its centre (`small: pad`); `small: error`
    fails on it, as `tf.image.random_crop` does. Scaling up returns the
    image's own dtype (rounded for integer pixels).
    """
    h, w = size_hw(size)

    def fit(img):
        shape = tf.shape(img)
        ih, iw = shape[-3], shape[-2]
        if small == "pad":
            return tf.image.resize_with_crop_or_pad(img, tf.maximum(ih, h), tf.maximum(iw, w))
        if small == "error":
            return img

        def grow():
            scale = tf.maximum(h / tf.cast(ih, tf.float32), w / tf.cast(iw, tf.float32))
            new = tf.cast(tf.math.ceil(tf.cast(tf.stack([ih, iw]), tf.float32) * scale), tf.int32)
            out = tf.image.resize(img, tf.maximum(new, [h, w]))
            if img.dtype.is_integer:
                out = tf.round(out)
            return tf.cast(out, img.dtype)

        return tf.cond((ih < h) | (iw < w), grow, lambda: img)

    def fn(x, y):
        img = fit(_get(x, key))
        if training:
            out = tf.image.random_crop(img, [h, w, tf.shape(img)[-1]])
        else:
            out = tf.image.resize_with_crop_or_pad(img, h, w)
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

    fn.resources = (table,)  # for a SavedModel to track (tfpipe/serve/export.py)
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


FILL_POLICIES = ("mean", "zero", "constant")


def fill_missing(columns="*", policy: str = "mean", value=None, means=None):
    """Fills missing values in place: NaN in float columns, "" in string columns.

    `policy: mean` fills each float column with its mean over the training
    split (the pipeline computes `means` once, through the steps before this
    one, and never from evaluation data); `zero` with 0; `constant` with
    `value` (a number for float columns, a string for string columns).
    String columns are filled only by `constant` with a string value; named
    one by one (not by a glob) under another policy they are an error.
    Int columns cannot be missing (an empty int field fails to parse).
    """
    if policy == "mean" and means is None:
        raise ValueError("fill_missing: means are filled from the training split by the pipeline")
    patterns = [columns] if isinstance(columns, str) else list(columns)
    exact = {p for p in patterns if not any(ch in p for ch in "*?[")}

    def fn(x, y):
        out = dict(x)
        for name in _match(x, columns, "fill_missing"):
            v = x[name]
            if v.dtype == tf.string:
                if policy == "constant" and isinstance(value, str):
                    out[name] = tf.where(tf.strings.length(v) > 0, v, value)
                elif name in exact:
                    raise ValueError(
                        f"fill_missing: column {name!r} holds strings, which policy {policy!r} cannot fill; "
                        "use policy: constant with a string value, or drop such rows with drop_missing"
                    )
                continue
            if not v.dtype.is_floating:
                continue
            if policy == "mean":
                fill = means.get(name, 0.0)
            elif policy == "zero":
                fill = 0.0
            elif isinstance(value, str):  # a string constant fills string columns only
                if name in exact:
                    raise ValueError(f"fill_missing: column {name!r} holds numbers; value {value!r} is a string")
                continue
            else:
                fill = value
            out[name] = tf.where(tf.math.is_nan(v), tf.constant(fill, v.dtype), v)
        return out, y

    return fn


def concat_columns(columns="*"):
    """Joins dict features (CSV columns) into the one float32 tensor an MLP takes.

    The matched columns, in natural name order (c2 before c10) and the order
    the patterns are listed, become the last axis: a [N] tensor per example
    ([batch, N] on a batch). Columns not matched are left out. Numeric and
    int columns are cast to float32; string columns must be mapped to
    numbers first (vocab_lookup, hash_columns) or left out. Missing values
    stay NaN: fill or drop them before (fill_missing, drop_missing).
    """

    def fn(x, y):
        names = _match(x, columns, "concat_columns")
        strings = [n for n in names if x[n].dtype == tf.string]
        if strings:
            raise ValueError(
                f"concat_columns: column {strings[0]!r} holds strings; map it to numbers first "
                "({op: vocab_lookup, column: ..., vocabulary: [...]}) or leave it out of columns"
            )
        return tf.stack([tf.cast(x[n], tf.float32) for n in names], axis=-1), y

    return fn


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
    "fill_missing": fill_missing,
    "pack": pack,
    "concat_columns": concat_columns,
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
        "fill_missing",
        "pack",
        "concat_columns",
    }
)

# Ops whose output differs between epochs (augmentation). Everything before the
# first of them is deterministic and can run once, before the cache.
RANDOM_OPS = frozenset({"decode_crop_jpeg", "random_crop", "random_flip"})


# ---------------------------------------------------------------- argument checks
#
# Every argument of every op has a check, run at config load (before
# TensorFlow starts): each returns None for a good value, else what was
# expected. An op added to STEPS without checks for all its arguments fails
# at import (see _check_schema below).


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_in(lo, hi=None):
    def check(v):
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            return f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
        return None

    return check


def _one_of(*choices):
    def check(v):
        return None if v in choices else f"one of {', '.join(map(str, choices))}"

    return check


def _size(v):
    if _is_int(v) and v > 0:
        return None
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(n) and n > 0 for n in v):
        return None
    return "a positive integer or [height, width] of positive integers"


def _number(v):
    return None if _is_num(v) else "a number"


def _numbers(v):
    if _is_num(v) or (isinstance(v, (list, tuple)) and v and all(_is_num(n) for n in v)):
        return None
    return "a number or a non-empty list of numbers"


def _name(v):
    return None if isinstance(v, str) and v else "a non-empty string"


def _columns(v):
    if isinstance(v, str) and v:
        return None
    if isinstance(v, (list, tuple)) and v and all(isinstance(c, str) and c for c in v):
        return None
    return 'a column name or glob ("C*"), or a non-empty list of them'


def _bool(v):
    return None if isinstance(v, bool) else "true or false"


def _shape(v):
    if (isinstance(v, (list, tuple)) and v and all(_is_int(n) and (n > 0 or n == -1) for n in v)
            and list(v).count(-1) <= 1):
        return None
    return "a non-empty list of positive integers (at most one -1)"


def _groups(v):
    if isinstance(v, dict) and v and all(isinstance(k, str) and k and _columns(c) is None for k, c in v.items()):
        return None
    return "a mapping group name -> column names or globs, e.g. {numeric: [\"I*\"]}"


def _vocabulary(v):
    if (isinstance(v, (list, tuple)) and v and all(isinstance(t, (str, int)) and not isinstance(t, bool) for t in v)
            and len({str(t) for t in v}) == len(v)):
        return None
    return "a non-empty list of distinct strings or integers"


def _fill_value(v):
    return None if _is_num(v) or isinstance(v, str) else "a number (float columns) or a string (string columns)"


def _means(v):
    if isinstance(v, dict) and all(isinstance(k, str) and _is_num(m) for k, m in v.items()):
        return None
    return "a mapping column -> number"


ARGS = {
    "rescale": {"scale": _number, "offset": _number, "key": _name},
    "normalize": {"mean": _numbers, "std": _numbers, "key": _name, "stats_examples": _int_in(1)},
    "log1p": {"key": _name},
    "reshape": {"shape": _shape, "key": _name},
    "one_hot": {"num_classes": _int_in(1)},
    "binary_label": {},
    "decode_image": {"key": _name, "channels": _one_of(0, 1, 3, 4)},
    "decode_crop_jpeg": {"size": _size, "ratio": _one_of(1, 2, 4, 8), "channels": _one_of(0, 1, 3), "key": _name},
    "resize": {"size": _size, "key": _name, "method": _one_of(*RESIZE_METHODS), "policy": _one_of(*RESIZE_POLICIES)},
    "random_crop": {"size": _size, "key": _name, "small": _one_of(*SMALL_POLICIES)},
    "random_flip": {"key": _name},
    "hash_columns": {"columns": _columns, "num_bins": _int_in(1)},
    "vocab_lookup": {"column": _name, "vocabulary": _vocabulary, "num_oov_buckets": _int_in(1)},
    "drop_missing": {"columns": _columns},
    "fill_missing": {"columns": _columns, "policy": _one_of(*FILL_POLICIES), "value": _fill_value, "means": _means},
    "pack": {"groups": _groups, "keep_rest": _bool},
    "concat_columns": {"columns": _columns},
}


def _check_schema():
    for op, factory in STEPS.items():
        params = [p for p in inspect.signature(factory).parameters if p != "training"]
        missing = [p for p in params if p not in ARGS.get(op, {})]
        if missing:
            raise AssertionError(f"preprocess.ARGS[{op!r}] has no check for {', '.join(missing)}")


_check_schema()


def _check_args(op: str, args: dict, where: str) -> None:
    """Types, ranges and shapes of one step's arguments; ValueError naming the argument."""
    params = inspect.signature(STEPS[op]).parameters
    for name, value in args.items():
        if value is None and params[name].default is None:
            continue  # the default, written out
        expected = ARGS[op][name](value)
        if expected:
            raise ValueError(f"{where}: {name}: expected {expected}, got {type(value).__name__} {value!r}")
    if op == "normalize" and isinstance(args.get("mean"), list) and isinstance(args.get("std"), list):
        if len(args["mean"]) != len(args["std"]):
            raise ValueError(
                f"{where}: std: expected as many values as mean ({len(args['mean'])}), got {len(args['std'])}"
            )
    if op == "fill_missing":
        policy = args.get("policy", "mean")
        if policy == "constant" and args.get("value") is None:
            raise ValueError(f"{where}: value: expected a number or string with policy: constant, got none")
        if policy != "constant" and args.get("value") is not None:
            raise ValueError(f"{where}: value: only policy: constant takes a value, got policy: {policy}")


def split_at_first_random(steps) -> tuple[tuple, tuple]:
    """Splits steps into a deterministic prefix and the rest (from the first random op)."""
    steps = tuple(steps)
    for i, step in enumerate(steps):
        if step["op"] in RANDOM_OPS or importpath.is_import_path(step["op"]):
            return steps[:i], steps[i:]
    return steps, ()


# Strategies whose replicas all live in one process: one host can hold the split for them.
SINGLE_HOST_STRATEGIES = ("default", "one_device", "mirrored")


def in_graph_blocker(steps, service_address=None, padded_batch=None, strategy: str = "default") -> str | None:
    """Why `data.in_graph` cannot hold this input, in words; None when it can.

    The split is preprocessed once and held as tensors in this process, so
    every step must be deterministic, the batches unpadded and made here, and
    the strategy single-host. One rule for the config check, the report's
    advice and the pipeline tuner.
    """
    if strategy not in SINGLE_HOST_STRATEGIES:
        return (f"needs a single-host strategy ({', '.join(SINGLE_HOST_STRATEGIES)}), got runtime.strategy: "
                f"{strategy!r}; under several workers each would hold the whole split")
    _, every_epoch = split_at_first_random(steps)
    if every_epoch:
        return (f"the steps run once, when the split is loaded, so they must be deterministic; data.map.steps has "
                f"{every_epoch[0]['op']!r} (random, or an imported function tfpipe cannot check)")
    for key, on in (("data.service.address", service_address), ("data.padded_batch", padded_batch)):
        if on:
            return f"cannot be combined with {key}: {on!r}"
    return None


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
        _check_args(op, args, f"{where}: {key} ({op})")
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


class StepError(ConfigError):
    """A step that cannot run on the features it gets (found when the pipeline is built)."""


# The StepError a step raised while tf.data traced it. Autograph re-raises
# errors from converted code as a multi-line StagingError, so the one-line
# error is kept here and `step_errors` raises it instead.
_PENDING: list = []


@contextlib.contextmanager
def step_errors():
    """Context (or decorator) turning a step's error while tf.data traces it back into its one-line `StepError`."""
    _PENDING.clear()
    try:
        yield
    except StepError:
        raise
    except Exception:  # pylint: disable=broad-except
        if _PENDING:
            raise _PENDING.pop() from None
        raise
    finally:
        _PENDING.clear()


def _named(fn, index: int, op: str):
    """`fn` whose build-time errors name the step: `data.map.steps[i] (op): ...`.

    Steps run when tf.data traces the map, before any data flows, so a
    column that is not there or a dtype the step cannot take fails with
    the step named instead of a traceback from inside tf.data.
    """

    def named(x, y):
        try:
            return fn(x, y)
        except StepError:
            raise
        except (ValueError, TypeError) as e:
            msg = " ".join(str(e).split())
            msg = msg[len(op) + 2:] if msg.startswith(f"{op}: ") else msg
            error = StepError(f"data.map.steps[{index}] ({op}): {msg[:400]}")
            _PENDING.append(error)
            raise error from None

    named.is_filter = getattr(fn, "is_filter", False)
    named.resources = getattr(fn, "resources", ())
    return named


def build(steps, training: bool, first: int = 0) -> list:
    """The step functions in order; random ops get the `training` flag.

    `first` is the index of `steps[0]` in `data.map.steps`, for error messages.
    """
    fns = []
    for i, step in enumerate(steps):
        args = _args(step)
        if importpath.is_import_path(step["op"]):
            fns.append(_imported(step["op"], args)(**args))
            continue
        factory = STEPS[step["op"]]
        if "training" in inspect.signature(factory).parameters:
            args["training"] = training
        fns.append(_named(factory(**args), first + i, step["op"]))
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

    # Lookup tables the steps hold: a SavedModel must track them to export a graph that uses them.
    fn.resources = tuple(r for f in fns for r in getattr(f, "resources", ()))
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


def compute_means(batches: tf.data.Dataset, columns) -> dict:
    """Mean of each matched float column over a dataset of (dict features, label) batches, NaN left out.

    A column with no value at all gets 0.0.
    """
    total: dict = {}
    count: dict = {}
    for x, _ in batches:
        for name in _match(x, columns, "fill_missing"):
            v = x[name]
            if not v.dtype.is_floating:
                continue
            v = tf.reshape(tf.cast(v, tf.float64), [-1])
            ok = tf.logical_not(tf.math.is_nan(v))
            # Kept as tensors: one host read per column at the end, not per batch.
            total[name] = total.get(name, 0.0) + tf.reduce_sum(tf.where(ok, v, 0.0))
            count[name] = count.get(name, 0) + tf.reduce_sum(tf.cast(ok, tf.float64))
    return {name: (float(total[name] / count[name]) if float(count[name]) else 0.0) for name in total}

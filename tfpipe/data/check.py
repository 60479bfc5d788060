"""Preflight: find bad input before training starts, naming the file and record.

`preflight(data_cfg)` runs in the trainer's Input phase and says how much
it looked at. With `data.check: quick` (bounded time) it checks that globs
match files and splits are not empty; CSV headers and the first
`QUICK_LINES` lines of every file (fields, label range, NaN/inf left after
the steps); the framing of every TFRecord file and its first records
(parse, decode, labels); the header, format and end marker of every image
file (PIL), fully decoding a sample and every suspect with the configured
decoder. With `check: full` it reads every record: truncated or corrupted
TFRecords, records that do not match the spec, images that do not decode,
CSV rows with the wrong number of fields or an unparsable number, labels
outside `[0, num_classes)`, features that are NaN or inf after the steps.

Bad input raises a one-line `DataError` naming the first problem as
`file: record N (or line N): what was wrong; expected ...` and the count of
the others (all listed in the log). With `data.ignore_errors: true` the
problems are logged instead and counted in the `Report`, which the trainer
writes to metrics.json and TensorBoard.

What preflight did not read is checked in the pipeline (`guards.py`); a
TensorFlow error from the input pipeline during training goes through
`explain` (or the `names_bad_input` decorator), which runs the full check to
name the file and record, so the run stops with one line instead of a
TensorFlow traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import time

import numpy as np
import tensorflow as tf

from tfpipe.data import guards, preprocess, sources

_DECODE_OPS = ("decode_image", "decode_crop_jpeg")
_SHOW = 5  # problems listed in the log
# Bounds of data.check: quick, per file or split.
QUICK_LINES = 1000  # CSV lines per file
QUICK_RECORDS = 16  # TFRecord records per file (parsed, decoded, labels checked)
QUICK_DECODES = 32  # images fully decoded per split, spread over the files
QUICK_SECONDS = 60.0  # image headers read per split, at most this long
# How long a mid-run error may search for its file before saying so.
LOCATE_SECONDS = 300.0
WAYS_OUT = ("set data.check: full to find every bad record before training, "
            "or data.check: full with data.ignore_errors: true to skip them")


class DataError(ValueError):
    """Input data that does not match what the config says it is."""


@dataclasses.dataclass
class Report:
    problems: list = dataclasses.field(default_factory=list)
    # Records that the pipeline will skip with ignore_errors. TensorFlow's
    # TFRecord reader stops at a truncated or corrupted record, so every
    # record from there to the end of that file counts.
    bad_records: int = 0
    checked_records: int = 0
    # What was looked at, per split, for the start-up line.
    looked_at: list = dataclasses.field(default_factory=list)
    built_in: list = dataclasses.field(default_factory=list)  # in-memory splits: nothing on disk to check
    # The first few bad records by name ("file: line N"), for metrics.json.
    names: list = dataclasses.field(default_factory=list)

    def add(self, where: str, why: str, count: int = 1) -> None:
        """One problem at `where` (file, or file: record N) covering `count` records."""
        self.problems.append(f"{where}: {why}")
        self.bad_records += count
        if len(self.names) < _SHOW:
            self.names.append(where)


# The check's map functions have no tensor-dependent Python control flow:
# skipping autograph's source conversion saves about a second per file traced.
_plain = tf.autograph.experimental.do_not_convert


def _decode_steps(data_cfg) -> list:
    """The parse-side steps worth running in the check: decoders only (no stats, no randomness)."""
    return [s for s in data_cfg.map.steps if s["op"] in _DECODE_OPS]


def _short(e: Exception) -> str:
    msg = getattr(e, "message", None) or str(e)
    msg = msg.split(" [Op:")[0].split("\n\t [[")[0]
    # tf.data prefixes map errors with the function node and the iterator path.
    msg = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", msg.strip())
    if msg.startswith("Graph execution error"):  # "Detected at node X defined at ..." frames, then the reason
        msg = [line for line in msg.splitlines() if line.strip()][-1]
    msg = re.sub(r"^Error in user-defined function passed to .*? transformation with iterator: \S+: ", "", msg)
    return " ".join(msg.split())


# ---------------------------------------------------------------- values (labels, NaN/inf)


def _value_steps(data_cfg) -> list:
    # normalize keeps finite values finite and needs the training split's
    # statistics, so the value scan leaves it out; fill_missing by the mean
    # fills the same cells as a fill with zero, which needs no statistics.
    steps = []
    for s in data_cfg.map.steps:
        if s["op"] == "normalize":
            continue
        if s["op"] == "fill_missing" and s.get("policy", "mean") == "mean" and s.get("means") is None:
            s = {**s, "policy": "zero"}
        steps.append(s)
    return steps


def _value_scan(path, indexed, source, data_cfg, unit, first, report) -> int:
    """Labels in range and features finite after the steps, for `(index, record)` pairs that parse.

    Runs the configured steps (evaluation mode, no normalize) over the
    records, in batches when every step takes a batch. A row that a
    `drop_missing` step removes is not a problem. Returns records scanned.
    """
    steps = _value_steps(data_cfg)
    batched = source.parse_batchable and all(s["op"] in preprocess.BATCHABLE for s in steps)
    fns = preprocess.build(steps, training=False)
    n = source.num_classes
    names: list = []

    @_plain
    def flags(i, record):
        x, y = source.parse(record)
        numeric = y.dtype.is_integer or y.dtype.is_floating
        label_bad = tf.logical_not(guards._rows(guards.label_ok(y, n), batched)) if n > 0 and numeric else None
        if not numeric:
            value = tf.zeros(tf.shape(i), tf.float64)
        elif batched:
            value = tf.reshape(tf.cast(y, tf.float64), [tf.shape(i)[0], -1])[:, 0]
        else:
            value = tf.reshape(tf.cast(y, tf.float64), [-1])[0]
        keep = None
        for f in fns:
            if getattr(f, "is_filter", False):
                k = f(x, y)
                keep = k if keep is None else keep & k
            else:
                x, y = f(x, y)
        which = tf.fill(tf.shape(i), -1) if batched else tf.constant(-1)
        names.clear()
        for k, (name, v) in enumerate(guards._float_features(x)):
            names.append(name)
            bad = tf.logical_not(guards._rows(tf.math.is_finite(v), batched))
            which = tf.where(bad & (which < 0), k, which)
        if keep is not None:
            which = tf.where(keep, which, -1)
        if label_bad is None:
            label_bad = tf.zeros_like(which, tf.bool)
        return i, label_bad, value, which

    if batched:
        # A batch with a record that does not parse is dropped whole: that
        # record is reported by the parse check already.
        ds = indexed.batch(1024).map(flags, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    else:
        ds = indexed.map(flags, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors().batch(1024)
    scanned, shown = 0, 0
    for index, label_bad, value, which in ds.as_numpy_iterator():  # results a batch at a time: few Python calls
        scanned += len(index)
        for k in np.flatnonzero(label_bad | (which >= 0)):
            where = f"{path}: {unit} {int(index[k]) + first}"
            if label_bad[k]:
                why = (f"label {value[k]:g}; expected an integer class id in [0, {n})"
                       + (" (0 or 1 for a binary label)" if n == 2 else ""))
            else:
                name = names[which[k]]
                why = (f"{f'feature {name!r}' if name else 'the features'} NaN or inf after data.map.steps; "
                       "expected finite values (drop such rows with {op: drop_missing} or fill the field)")
            if shown < _SHOW:
                report.add(where, why)
            else:
                report.bad_records += 1
            shown += 1
    if shown > _SHOW:
        report.problems.append(f"{path}: ... and {shown - _SHOW} more {unit}s with bad values")
    return scanned


def _check_arrays(data_cfg, split, report) -> None:
    """npz: the arrays are in memory, so labels and values are checked whole, in NumPy."""
    files = sources.list_files(data_cfg.files.train, data_cfg.read, "data.files.train")
    with np.load(files[0]) as f:
        x, y = f[data_cfg.npz.features_key], f[data_cfg.npz.label_key]
    idx = sources.split_indices(len(y), data_cfg.split.validation, data_cfg.split.test, data_cfg.split.seed)[split]
    for key, v in ((data_cfg.npz.features_key, x[idx]),):
        if np.issubdtype(v.dtype, np.floating):
            bad = np.flatnonzero(~np.isfinite(v.reshape(len(v), -1)).all(axis=1))
            if len(bad):
                report.add(f"{files[0]}: {split} row {int(idx[bad[0]])}", f"array {key!r} holds NaN or inf "
                           f"({len(bad)} rows of the {split} split); expected finite values", count=len(bad))
    if np.issubdtype(y.dtype, np.floating):
        bad = np.flatnonzero(np.floor(y[idx]) != y[idx])
        if len(bad):
            report.add(f"{files[0]}: {split} row {int(idx[bad[0]])}",
                       f"label {y[idx][bad[0]]:g} is not a class id; expected integers >= 0", count=len(bad))
    elif np.issubdtype(y.dtype, np.integer) and len(idx) and y[idx].min() < 0:
        bad = np.flatnonzero(y[idx] < 0)
        report.add(f"{files[0]}: {split} row {int(idx[bad[0]])}", f"label {y[idx][bad[0]]}; expected a class id >= 0",
                   count=len(bad))
    report.looked_at.append(f"{split}: {len(idx)} rows of {os.path.basename(files[0])} (labels, NaN/inf)")


# ---------------------------------------------------------------- TFRecord


def _check_records(path, source, decode_fns, full: bool, report: Report, data_cfg=None) -> int:
    """TFRecord: framing intact, readable to the end, records parse with the spec, decode, hold good values."""
    ok = 0
    frames, cut = _frames(path)
    raw = tf.data.TFRecordDataset(path)
    if not full:
        raw = raw.take(QUICK_RECORDS)
    try:
        for _ in raw:
            ok += 1
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as e:
        lost = max(frames - ok, 1)
        report.add(
            f"{path}: record {ok}",
            f"truncated or corrupted ({_short(e)}); expected a complete TFRecord file"
            + (f" (TensorFlow reads no further: records {ok}-{ok + lost - 1} of this file are lost)" if lost > 1 else ""),
            count=lost,
        )
    else:
        if not full and cut is not None:
            # quick reads only the first records, but the framing shows a cut-off end.
            report.add(f"{path}: record {cut}", "truncated: the file ends inside this record; expected a complete "
                       "TFRecord file (TensorFlow stops reading here)", count=frames - cut)
    if ok == 0:
        if not report.problems or not report.problems[-1].startswith(f"{path}:"):
            report.problems.append(f"{path}: no records; expected at least one tf.train.Example")
        return 0

    def convert(serialized):
        x, y = source.parse(serialized)
        for f in decode_fns:
            x, y = f(x, y)
        return x, y

    _find_bad(
        path, tf.data.TFRecordDataset(path).take(ok), convert, "record", report,
        "parse with the feature spec" + (" and decode" if decode_fns else ""),
    )
    if data_cfg is not None:
        records = tf.data.TFRecordDataset(path).take(ok)
        _value_scan(path, records.enumerate(), source, data_cfg, "record", 0, report)
    return ok


def _frames(path) -> tuple[int, int | None]:
    """Records in a TFRecord file by its framing alone (checksums not checked), and the one cut off, if any.

    Each record is an 8-byte little-endian length, a 4-byte length checksum,
    the payload and a 4-byte payload checksum. A frame cut short by the end
    of the file counts as one record. A corrupt length makes the rest of the
    file one record: nothing better is known about it. Cost: one seek and an
    8-byte read per record.
    """
    size = tf.io.gfile.stat(path).length
    frames, offset = 0, 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while offset < size:
            frames += 1
            header = f.read(8)
            length = int.from_bytes(header, "little") if len(header) == 8 else size
            offset += 8 + 4 + length + 4
            if offset > size:
                return frames, frames - 1
            if offset == size:
                break
            f.seek(offset)
    return frames, None


def _count_frames(path) -> int:
    return _frames(path)[0]


def _find_bad(path, records, convert, unit, report, expected, names=None, why_of=None):
    """Runs `convert` over records in parallel; the indices that fail are the bad ones."""
    n = int(records.reduce(tf.constant(0, tf.int64), lambda c, _: c + 1))
    report.checked_records += n
    good = records.enumerate().map(
        _plain(lambda i, r: (i, tf.nest.flatten(convert(*r) if isinstance(r, tuple) else convert(r))[0])),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    good = good.map(_plain(lambda i, _: i)).ignore_errors()
    seen = set(int(i) for i in good.as_numpy_iterator())
    bad = [i for i in range(n) if i not in seen]
    items = list(records.as_numpy_iterator()) if bad else []
    for i in bad[:_SHOW]:
        item = tf.nest.map_structure(tf.constant, items[i])
        try:
            convert(*item) if isinstance(item, tuple) else convert(item)
            why = "failed inside tf.data"
        except Exception as e:  # pylint: disable=broad-except
            why = _short(e)
        where = names[i] if names else f"{path}: {unit} {i}"
        hint = why_of(i) if why_of else ""
        report.add(where, f"{why}{hint}; expected the {unit} to {expected}")
    report.bad_records += max(len(bad) - _SHOW, 0)
    if len(bad) > _SHOW:
        report.problems.append(f"{path}: ... and {len(bad) - _SHOW} more bad {unit}s")


# ---------------------------------------------------------------- CSV


def _check_csv(path, data_cfg, columns, full: bool, report: Report, source=None) -> int:
    cfg = data_cfg.csv
    if cfg.header:
        try:
            header = sources.read_header(path, cfg.delimiter)
        except ValueError as e:  # an empty file
            report.problems.append(str(e))
            return 0
        names = [n for n, _ in columns]
        if header != names:
            missing = [n for n in names if n not in header]
            report.problems.append(
                f"{path}: line 1: header differs from the first file's"
                + (f" (missing {', '.join(missing[:5])})" if missing else "")
                + f"; expected {len(names)} columns {', '.join(names[:5])}, ..."
            )
            return 0
    pattern = sources.csv_line_regex(columns, cfg.delimiter)
    first = 2 if cfg.header else 1
    lines = tf.data.TextLineDataset(path).skip(first - 1)
    if not full:
        lines = lines.take(QUICK_LINES)
    ok = lines.batch(8192).map(_plain(lambda b: tf.strings.regex_full_match(b, pattern)))
    bad, n = [], 0
    for batch in ok.as_numpy_iterator():
        bad.extend(n + i for i, good in enumerate(batch) if not good)
        n += len(batch)
    report.checked_records += n
    if source is not None:
        parsable = lines.enumerate().filter(_plain(lambda i, line: tf.strings.regex_full_match(line, pattern)))
        _value_scan(path, parsable, source, data_cfg, "line", first, report)
    if not bad:
        return n
    wanted = set(bad[:_SHOW])
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            i = lineno - first
            if i in wanted:
                report.add(f"{path}: line {lineno}", _csv_why(line.rstrip(chr(10)), columns, cfg))
            if i > max(wanted):
                break
    report.bad_records += max(len(bad) - _SHOW, 0)
    if len(bad) > _SHOW:
        report.problems.append(f"{path}: ... and {len(bad) - _SHOW} more bad lines")
    return n


def _csv_why(line: str, columns, cfg) -> str:
    fields = line.rstrip("\r").split(cfg.delimiter)
    if len(fields) != len(columns):
        return f"{len(fields)} fields; expected {len(columns)} ({cfg.delimiter!r}-separated)"
    for (name, kind), value in zip(columns, fields):
        value = value.strip()
        if kind == "float" and value:
            try:
                float(value)
            except ValueError:
                return f"column {name}: {value!r} is not a number; expected a float or an empty field"
        if kind == "int":
            try:
                int(value)
            except ValueError:
                return f"column {name}: {value!r} is not an integer; expected an int (empty is not allowed)"
    return "does not parse; expected " + ", ".join(f"{n}:{k}" for n, k in columns[:6]) + ", ..."


# ---------------------------------------------------------------- images

# What PIL calls the formats each decode step reads.
_STEP_FORMATS = {"decode_crop_jpeg": {"JPEG", "MPO"}, "decode_image": {"JPEG", "MPO", "PNG", "GIF", "BMP"}}
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}


def _header(path: str, decode_step: dict, sizes: dict | None = None) -> str | None:
    """Why the image at `path` is suspect from its header and last bytes (None: looks fine).

    PIL reads only the header; the last bytes show a cut-off file (a JPEG
    ends with FFD9, a PNG with its IEND chunk). A suspect is decoded with
    TensorFlow before it counts as a problem: TF's decoders read some files
    that look odd here (trailing bytes after the end marker, PNG bytes to
    decode_image), and it is TF that will read them in training.
    """
    from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel

    try:
        with Image.open(path) as im:
            fmt, (w, h) = im.format, im.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        return f"not an image to PIL ({' '.join(str(e).split())[:80]})"
    if sizes is not None:
        sizes.setdefault((h, w), path)
    op = decode_step["op"]
    if fmt not in _STEP_FORMATS.get(op, {fmt}):
        return f"a {fmt} file, which {op} does not read"
    marker = _END_MARKERS.get("JPEG" if fmt == "MPO" else fmt)
    if marker:
        with open(path, "rb") as f:
            f.seek(max(os.path.getsize(path) - 64, 0))
            if marker not in f.read():
                return f"{fmt} without its end marker: truncated?"
    if op == "decode_crop_jpeg":
        ratio, size = decode_step.get("ratio", 1), decode_step["size"]
        ch, cw = preprocess.size_hw(size)  # an int or [height, width]
        if (h + ratio - 1) // ratio < ch or (w + ratio - 1) // ratio < cw:
            return f"{w}x{h} pixels, smaller than the {cw}x{ch} px window decode_crop_jpeg takes at ratio {ratio}"
    return None


# Steps that give every image one size, so images of different sizes batch.
_SIZING_OPS = ("resize", "random_crop", "decode_crop_jpeg", "reshape")


def _sizes_differ(data_cfg, sizes: dict, where: str) -> None:
    """Raises DataError when images of different sizes would reach the batch unresized."""
    if len(sizes) < 2 or data_cfg.padded_batch or any(s["op"] in _SIZING_OPS for s in data_cfg.map.steps):
        return
    (h1, w1), p1 = next(iter(sizes.items()))
    (h2, w2), p2 = list(sizes.items())[1]
    raise DataError(
        f"{where}: images differ in size ({w1}x{h1} {p1}, {w2}x{h2} {p2}, {len(sizes)} sizes in all) and no step "
        "makes them one size, so they cannot be batched; add {op: resize, size: [height, width]} "
        "(or {op: random_crop, size: N}) after decode_image in data.map.steps"
    )


def _check_images(paths, decode_fns, decode_step, full: bool, report: Report, where: str, deadline=None,
                  sizes: dict | None = None) -> str:
    """Image files: every header (quick) or every decode (full); returns what was looked at.

    `sizes` collects (height, width) -> first file of that size.
    """

    def convert(path):
        x, y = tf.io.read_file(path), tf.constant(0, tf.int64)
        for f in decode_fns:
            x, y = f(x, y)
        return x

    if full:
        if sizes is not None:  # headers only (PIL): cheap beside the full decode
            for path in paths:
                _header(path, decode_step, sizes)
        _find_bad(where, tf.data.Dataset.from_tensor_slices(list(paths)), convert, "image", report,
                  "decode as an image", names=list(paths))
        return f"decoded {len(paths)} images"
    deadline = deadline or time.monotonic() + QUICK_SECONDS
    suspects, looked = {}, 0
    for path in paths:
        if time.monotonic() > deadline:
            break
        why = _header(path, decode_step, sizes)
        if why:
            suspects[path] = why
        looked += 1
    step = max(len(paths) // QUICK_DECODES, 1)
    sample = list(dict.fromkeys(list(suspects) + list(paths[::step][:QUICK_DECODES])))
    _find_bad(where, tf.data.Dataset.from_tensor_slices(sample), convert, "image", report,
              f"decode with {decode_step['op']}", names=sample,
              why_of=lambda i: f" ({suspects[sample[i]]})" if sample[i] in suspects else "")
    report.checked_records += looked - len(sample)
    return (f"headers of {looked}/{len(paths)} images"
            + (f" (stopped after {QUICK_SECONDS:.0f} s)" if looked < len(paths) else "")
            + f", decoded {len(sample)} ({len(suspects)} suspect)")


# ---------------------------------------------------------------- splits


def _empty(data_cfg, split, source) -> str | None:
    """Why a configured split holds no examples (None if it holds some or is not configured)."""
    if source.num_examples > 0:
        return None
    if data_cfg.source in ("csv", "tfrecord", "image_folder"):
        pattern = getattr(data_cfg.files, split)
        if not pattern:
            return None  # no such split
        csv = data_cfg.source == "csv"
        return (f"data.files.{split}: {pattern!r} holds no {'rows (header only?)' if csv else 'examples'}; "
                f"expected at least one {'row after the header' if csv else 'example'}")
    if split != "train":
        return None  # an in-memory split cut to nothing (data.split.test: 0)
    return f"data.source {data_cfg.source}: the training split is empty; expected at least one example"


def _each_file(files, deadline, check) -> tuple[int, int]:
    """Runs `check(path)` on each file until `deadline`: (files checked, sum of what the checks counted)."""
    counted = 0
    for k, path in enumerate(files):
        if deadline and time.monotonic() > deadline:
            return k, counted
        counted += check(path)
    return len(files), counted


def check_split(data_cfg, split: str, report: Report, values: bool = True, deadline=None) -> None:
    """Adds the problems of one split's files to `report`.

    Raises:
        DataError: the split's files are missing or hold no examples at all.
    """
    full = data_cfg.check == "full"
    try:
        source = sources.load(data_cfg, split)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(" ".join(str(e).split())) from None
    empty = _empty(data_cfg, split, source)
    if empty:
        raise DataError(empty)
    if not source.files and data_cfg.source != "npz":
        if source.num_examples:  # an in-memory source (built in, or the caller's arrays)
            report.built_in.append(f"{split} {source.num_examples}")
        return
    if data_cfg.source not in ("npz", "tfrecord", "csv", "image_folder"):
        # The user's own source (data.source: module:function) reading files:
        # their format is what its reader and parse say, which only the run reads.
        report.looked_at.append(f"{split}: {len(source.files)} files of data.source {data_cfg.source}, "
                                "not checked (its own format)")
        return
    start = time.monotonic()
    decode_steps = _decode_steps(data_cfg)
    decode_fns = preprocess.build(decode_steps, training=False)
    if data_cfg.source == "npz":
        if values and source.num_examples:
            _check_arrays(data_cfg, split, report)
        return
    if data_cfg.source == "tfrecord":
        n_files, read = _each_file(source.files, deadline, lambda path: _check_records(
            path, source, decode_fns, full, report, data_cfg if values else None))
        what = f"all {read} records" if full else f"framing of every file, first {QUICK_RECORDS} records of each"
        report.looked_at.append(f"{split}: {n_files} TFRecord files, {what}")
    elif data_cfg.source == "csv":
        columns = sources.csv_columns(data_cfg, sorted(source.files)[0])
        n_files, lines = _each_file(source.files, deadline, lambda path: _check_csv(
            path, data_cfg, columns, full, report, source if values else None))
        what = f"all {lines} lines" if full else f"{lines} lines (first {QUICK_LINES} of each)"
        report.looked_at.append(f"{split}: {n_files} CSV files, {what}")
    elif data_cfg.source == "image_folder":
        step = decode_steps[0] if decode_steps else {"op": "decode_image"}
        fns = decode_fns or preprocess.build([step], training=False)
        sizes: dict = {}
        what = _check_images(list(source.files), fns, step, full, report, f"data.files.{split}", deadline, sizes)
        _sizes_differ(data_cfg, sizes, f"data.files.{split}")
        report.looked_at.append(f"{split}: {what}")
    report.looked_at[-1] += f" in {time.monotonic() - start:.1f} s"


def _one_line(report: Report, data_cfg) -> str:
    first = report.problems[0]
    more = len(report.problems) - 1
    return (f"bad input data ({report.bad_records} bad records found by data.check: {data_cfg.check}): {first}"
            + (f" (and {more} more problems, listed above)" if more else "")
            + f". Fix the files, or {WAYS_OUT}")


@preprocess.step_errors()  # a step that cannot take its features: one line naming it
def preflight(data_cfg, splits=sources.SPLITS, log=print) -> Report:
    """Checks every split's files as `data.check` says; raises or reports bad records.

    Empty splits fail even with `check: off` (the count is known anyway).

    Returns:
        A `Report`; `bad_records` is what `ignore_errors` will skip,
        `looked_at` what was read, `names` the first bad records.

    Raises:
        DataError: one line naming the first bad file and record / line,
            unless `data.ignore_errors` is true (the others are logged).
    """
    report = Report()
    if data_cfg.check == "off":
        for split in splits:
            try:
                source = sources.load(data_cfg, split)
            except (FileNotFoundError, ValueError) as e:
                raise DataError(" ".join(str(e).split())) from None
            empty = _empty(data_cfg, split, source)
            if empty:
                raise DataError(empty)
        return report
    for split in splits:
        check_split(data_cfg, split, report)
    if report.looked_at:
        log(f"data.check: {data_cfg.check}: " + "; ".join(report.looked_at)
            + ("" if data_cfg.check == "full" else " (data.check: full reads everything)"))
    elif report.built_in:
        log(f"data.check: {data_cfg.source} data is in memory ({', '.join(report.built_in)} examples), no files to read")
    if report.problems:
        listing = "\n  ".join(report.problems[: 2 * _SHOW])
        if not data_cfg.ignore_errors:
            if len(report.problems) > 1:
                log(f"bad input data:\n  {listing}")
            raise DataError(_one_line(report, data_cfg))
        log(f"data.ignore_errors: skipping {report.bad_records} bad records:\n  {listing}")
    return report


def require_eval_split(data_cfg) -> None:
    """Raises DataError when neither validation nor test holds an example: training ends by evaluating on one."""
    if any(sources.load(data_cfg, split).num_examples > 0 for split in ("validation", "test")):
        return
    if data_cfg.source in ("csv", "image_folder", "tfrecord"):
        ways = "give data.files.validation or data.files.test" + (
            ", or cut one from the training files with data.holdout.validation: 0.1 (or .test)"
            if data_cfg.source != "tfrecord" else "")
    else:
        ways = "set data.split.validation or data.split.test above 0 (or pass those splits in data=)"
    raise DataError(f"data: nothing to evaluate on: the validation and test splits are empty; {ways}")


def summarize_skipped(report: Report, writer, step: int = 0) -> None:
    """TensorBoard: `data/skipped_records` (scalar) and the first skipped records' names (text)."""
    with writer.as_default(step=step):
        tf.summary.scalar("data/skipped_records", report.bad_records)
        tf.summary.text("data/skipped_examples", "\n".join(f"- {n}" for n in report.names) or "none")
    writer.flush()


# ---------------------------------------------------------------- errors during training


def _size_hint(message: str) -> int | None:
    """TF's JPEG/PNG decoders name the size of the bad buffer ("Invalid JPEG data, size 300")."""
    m = re.search(r"(?:JPEG|PNG|image) data(?:\s*or crop window)?, size (\d+)", message)
    return int(m.group(1)) if m else None


# An evaluation loop over a dataset compiles to ReduceDataset, where a model
# error would nest too: there only a failing data op counts as the input's.
_DATA_OP = re.compile(r"\{\{node [^}]*(Decode|Parse|ExtractJpegShape|ReadFile|StringToNumber)")


def _from_input(message: str) -> bool:
    """Whether a TF error message comes from the input pipeline (not the model)."""
    return (guards.TAG in message or "IteratorGetNext" in message
            or ("ReduceDataset" in message and bool(_DATA_OP.search(message))))


def explain(error: Exception, data_cfg, log=print, seconds: float = LOCATE_SECONDS) -> DataError | None:
    """A one-line `DataError` naming the bad file for a TF error from the input pipeline, else None.

    The error must come from the input (an `IteratorGetNext` failed, a data
    op inside an evaluation loop's `ReduceDataset`, or a `guards` check). The full check then runs over the splits, at
    most `seconds`, to find the record; for an image folder the files of the
    size TF's decoder names are checked first, which finds it at once.
    """
    message = getattr(error, "message", None) or str(error)
    if not _from_input(message):
        return None
    reason = _short(error).replace(f"{guards.TAG}: ", "")
    reason = re.sub(r"^assertion failed: \[(.*)\]$", r"\1", reason).replace("] [", " ")
    log(f"the input pipeline failed ({reason[:200]}); looking for the bad record with data.check: full ...")
    full_cfg = dataclasses.replace(data_cfg, check="full", ignore_errors=False)
    report, deadline = Report(), time.monotonic() + seconds
    size = _size_hint(message)
    try:
        if size is not None and data_cfg.source == "image_folder":
            for split in sources.SPLITS:
                source = sources.load(full_cfg, split)
                same = [p for p in source.files if os.path.getsize(p) == size]
                if same:
                    fns = preprocess.build(_decode_steps(data_cfg) or [{"op": "decode_image"}], training=False)
                    _check_images(same, fns, {"op": "decode_image"}, True, report, f"data.files.{split}")
                if report.problems:
                    break
        for split in sources.SPLITS if not report.problems else ():
            check_split(full_cfg, split, report, deadline=deadline)
            if report.problems or time.monotonic() > deadline:
                break
    except (DataError, FileNotFoundError, ValueError) as e:
        return DataError(f"{' '.join(str(e).split())} (TensorFlow: {reason})")
    if report.problems:
        more = len(report.problems) - 1
        said = "" if reason in report.problems[0] else f"; TensorFlow said: {reason}"
        return DataError(f"bad input data during training: {report.problems[0]}"
                         + (f" (and {more} more)" if more else "") + f"{said}. To go on, {WAYS_OUT}")
    searched = "within" if time.monotonic() > deadline else "in"
    return DataError(f"the input pipeline failed during training: {reason}; a full check of the files {searched} "
                     f"{seconds:.0f} s found no bad record to name. To go on, {WAYS_OUT}")


def names_bad_input(run):
    """Decorator for `run(cfg, ...)`: an input-pipeline TF error becomes a one-line `DataError` naming the file.

    Nothing runs on the happy path; the search costs only when a run fails.
    The TensorFlow error stays chained as `__cause__`.
    """

    @functools.wraps(run)
    def wrapper(cfg, *args, **kwargs):
        try:
            return run(cfg, *args, **kwargs)
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
            data_cfg = getattr(cfg, "data", None)
            # The leading newline ends a progress bar's line.
            explained = explain(e, data_cfg, log=lambda m: print(f"\n[tfpipe] {m}", flush=True)) if data_cfg else None
            if explained is None:
                raise
            raise explained from e

    return wrapper

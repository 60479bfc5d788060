"""Preflight: find bad input before training starts, naming the file and record.

`preflight(data_cfg)` runs in the trainer's Input phase. With `data.check:
quick` it checks that globs match files, CSV headers hold the configured
columns, and that the first record of every file parses with the feature
spec (and decodes, when the steps decode images). With `check: full` it
reads every record: truncated or corrupted TFRecords, records that do not
match the spec, images that do not decode, CSV rows with the wrong number of
fields or an unparsable number.

Bad input raises `DataError` listing the first problems, each as
`file: record N (or line N): what was wrong; expected ...`. With
`data.ignore_errors: true` the problems are printed instead and their count
returned, so the trainer can report how many records it skipped.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfpipe.data import preprocess, sources

_DECODE_OPS = ("decode_image", "decode_crop_jpeg")
_SHOW = 5  # problems listed in an error message


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


def _decode_steps(data_cfg) -> list:
    """The parse-side steps worth running in the check: decoders only (no stats, no randomness)."""
    return [s for s in data_cfg.map.steps if s["op"] in _DECODE_OPS]


def _short(e: Exception) -> str:
    msg = getattr(e, "message", None) or str(e)
    return msg.split("\n")[0].split(" [Op:")[0].strip()


def _check_records(path, source, decode_fns, full: bool, report: Report) -> None:
    """TFRecord: readable to the end, every record parses with the spec and decodes."""
    ok = 0
    raw = tf.data.TFRecordDataset(path)
    if not full:
        raw = raw.take(1)
    try:
        for _ in raw:
            ok += 1
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as e:
        frames = _count_frames(path)
        lost = max(frames - ok, 1)
        report.problems.append(
            f"{path}: record {ok}: truncated or corrupted ({_short(e)}); expected a complete TFRecord file"
            + (f" (TensorFlow reads no further: records {ok}-{ok + lost - 1} of this file are lost)" if lost > 1 else "")
        )
        report.bad_records += lost
    if ok == 0:
        if not report.problems or not report.problems[-1].startswith(f"{path}:"):
            report.problems.append(f"{path}: no records; expected at least one tf.train.Example")
        return

    def convert(serialized):
        x, y = source.parse(serialized)
        for f in decode_fns:
            x, y = f(x, y)
        return x, y

    _find_bad(
        path, tf.data.TFRecordDataset(path).take(ok), convert, "record", report,
        "parse with the feature spec" + (" and decode" if decode_fns else ""),
    )


def _count_frames(path) -> int:
    """Records in a TFRecord file by its framing alone (checksums not checked).

    Each record is an 8-byte little-endian length, a 4-byte length checksum,
    the payload and a 4-byte payload checksum. A frame cut short by the end
    of the file counts as one record. A corrupt length makes the rest of the
    file one record: nothing better is known about it.
    """
    size = tf.io.gfile.stat(path).length
    frames, offset = 0, 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while offset < size:
            frames += 1
            header = f.read(8)
            length = int.from_bytes(header, "little") if len(header) == 8 else size
            offset += 8 + 4 + length + 4
            if offset >= size:
                break
            f.seek(offset)
    return frames


def _find_bad(path, records, convert, unit, report, expected, names=None):
    """Runs `convert` over records in parallel; the indices that fail are the bad ones."""
    n = int(records.reduce(tf.constant(0, tf.int64), lambda c, _: c + 1))
    report.checked_records += n
    good = records.enumerate().map(
        lambda i, r: (i, tf.nest.flatten(convert(*r) if isinstance(r, tuple) else convert(r))[0]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    good = good.map(lambda i, _: i).ignore_errors()
    seen = set(int(i) for i in good.as_numpy_iterator())
    bad = [i for i in range(n) if i not in seen]
    report.bad_records += len(bad)
    items = list(records.as_numpy_iterator()) if bad else []
    for i in bad[:_SHOW]:
        item = tf.nest.map_structure(tf.constant, items[i])
        try:
            convert(*item) if isinstance(item, tuple) else convert(item)
            why = "failed inside tf.data"
        except Exception as e:  # pylint: disable=broad-except
            why = _short(e)
        where = names[i] if names else f"{path}: {unit} {i}"
        report.problems.append(f"{where}: {why}; expected the {unit} to {expected}")
    if len(bad) > _SHOW:
        report.problems.append(f"{path}: ... and {len(bad) - _SHOW} more bad {unit}s")


def _check_csv(path, data_cfg, columns, full: bool, report: Report) -> None:
    cfg = data_cfg.csv
    if cfg.header:
        header = sources.read_header(path, cfg.delimiter)
        names = [n for n, _ in columns]
        if header != names:
            missing = [n for n in names if n not in header]
            report.problems.append(
                f"{path}: line 1: header differs from the first file's"
                + (f" (missing {', '.join(missing[:5])})" if missing else "")
                + f"; expected {len(names)} columns {', '.join(names[:5])}, ..."
            )
            return
    pattern = sources.csv_line_regex(columns, cfg.delimiter)
    first = 2 if cfg.header else 1
    lines = tf.data.TextLineDataset(path).skip(first - 1)
    if not full:
        lines = lines.take(100)
    ok = lines.batch(8192).map(lambda b: tf.strings.regex_full_match(b, pattern))
    bad, n = [], 0
    for batch in ok.as_numpy_iterator():
        bad.extend(n + i for i, good in enumerate(batch) if not good)
        n += len(batch)
    report.checked_records += n
    report.bad_records += len(bad)
    if not bad:
        return
    wanted = set(bad[:_SHOW])
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            i = lineno - first
            if i in wanted:
                report.problems.append(f"{path}: line {lineno}: {_csv_why(line.rstrip(chr(10)), columns, cfg)}")
            if i > max(wanted):
                break
    if len(bad) > _SHOW:
        report.problems.append(f"{path}: ... and {len(bad) - _SHOW} more bad lines")


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


def check_split(data_cfg, split: str, report: Report) -> None:
    """Adds the problems of one split's files to `report`."""
    full = data_cfg.check == "full"
    try:
        source = sources.load(data_cfg, split)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(str(e)) from None
    if not source.files:
        return
    decode_fns = preprocess.build(_decode_steps(data_cfg), training=False)
    if data_cfg.source == "tfrecord":
        for path in source.files:
            _check_records(path, source, decode_fns, full, report)
    elif data_cfg.source == "csv":
        columns = sources.csv_columns(data_cfg, sorted(source.files)[0])
        for path in source.files:
            _check_csv(path, data_cfg, columns, full, report)
    elif data_cfg.source == "image_folder":
        paths = list(source.files) if full else list(source.files[:1])

        def convert(path):
            x, y = tf.io.read_file(path), tf.constant(0, tf.int64)
            for f in decode_fns or preprocess.build([{"op": "decode_image"}], training=False):
                x, y = f(x, y)
            return x

        records = tf.data.Dataset.from_tensor_slices(paths)
        _find_bad(f"data.files.{split}", records, convert, "image", report, "decode as an image", names=paths)


def preflight(data_cfg, splits=sources.SPLITS, log=print) -> Report:
    """Checks every split's files as `data.check` says; raises or reports bad records.

    Returns:
        A `Report`; `bad_records` is what `ignore_errors` will skip.

    Raises:
        DataError: naming files and record indices / lines, unless
            `data.ignore_errors` is true.
    """
    report = Report()
    if data_cfg.check == "off":
        return report
    for split in splits:
        check_split(data_cfg, split, report)
    if report.problems:
        listing = "\n  ".join(report.problems[: 2 * _SHOW])
        if not data_cfg.ignore_errors:
            raise DataError(
                f"bad input data ({report.bad_records} bad records found by data.check: {data_cfg.check}):\n  "
                f"{listing}\nFix the files, or set data.ignore_errors: true to skip bad records."
            )
        log(f"[tfpipe] data.ignore_errors: skipping {report.bad_records} bad records:\n  {listing}")
    return report

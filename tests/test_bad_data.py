"""The bad-data corpus: one broken thing each in otherwise good data, default settings (data.check: quick).

Each case either trains correctly (the input is legitimately usable: CMYK,
PNG bytes named .jpg, grayscale among RGB) or stops with one line naming the
file; never a traceback, never a silent run on an impossible label. Most
cases run in-process through `check.preflight` and the pipeline; a handful
go through scripts/train.py for the exit code and the one-line message.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

import tfpipe
from tfpipe.data import check, pipeline, workloads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(tmp_path, data, **top):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"data": data, **top}))
    return tfpipe.load_config(path)


def _smooth(seed: int, size: int = 40) -> np.ndarray:
    """An RGB image of gradients: JPEG keeps it close, so decodes can be compared."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    return (np.stack([xx, yy, (xx + yy) / 2], -1) * r.uniform(100, 250, 3) + r.uniform(0, 5, 3)).astype(np.uint8)


def _encode(img: np.ndarray, fmt: str = "JPEG", mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(img)
    (im.convert(mode) if mode else im).save(buf, format=fmt, quality=95)
    return buf.getvalue()


# ---------------------------------------------------------------- image folder

IMAGE_CASES = {
    # name: (file content, usable?)
    "truncated_jpeg": (lambda: _encode(_smooth(99))[:300], False),
    "text_named_jpg": (lambda: b"this is not an image\n", False),
    "cmyk_jpeg": (lambda: _encode(_smooth(99), mode="CMYK"), True),
    "png_named_jpg": (lambda: _encode(_smooth(99), "PNG"), True),
    "grayscale_in_rgb_folder": (lambda: _encode(_smooth(99), mode="L"), True),
}


def _folder(tmp_path, bad: str | None = None):
    root = tmp_path / "folder" / "train"
    for c in range(2):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            (root / str(c) / f"{i:03d}.jpg").write_bytes(_encode(_smooth(10 * c + i)))
    victim = root / "1" / "002.jpg"
    if bad:
        victim.write_bytes(IMAGE_CASES[bad][0]())
    return root, victim


def _image_data(root, op="decode_image", **data):
    step = {"op": "decode_crop_jpeg", "size": 32} if op == "decode_crop_jpeg" else {"op": "decode_image"}
    return {"source": "image_folder", "files": {"train": str(root)}, "cache": "",
            "map": {"steps": [step, {"op": "resize", "size": [32, 32]}]}, **data}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_image_folder_corpus(tmp_path, case):
    root, victim = _folder(tmp_path, case)
    cfg = _cfg(tmp_path, _image_data(root))
    if IMAGE_CASES[case][1]:
        report = check.preflight(cfg.data, log=lambda _: None)
        assert report.problems == []
        images = np.concatenate([x.numpy() for x, _ in pipeline.build(cfg.data, "train", 4, training=False)])
        assert images.shape == (12, 32, 32, 3)
    else:
        with pytest.raises(check.DataError) as err:
            check.preflight(cfg.data, log=lambda _: None)
        message = str(err.value)
        assert "\n" not in message and f"{victim}: " in message and "data.ignore_errors: true" in message


def test_quick_check_reads_every_header_and_says_how_much(tmp_path):
    root, victim = _folder(tmp_path)
    whole = _encode(_smooth(99))
    victim.write_bytes(whole[: len(whole) - 200])  # the header survives: PIL opens it, the end marker is gone
    logged = []
    with pytest.raises(check.DataError, match=rf"{victim}: .*Invalid JPEG data.*\(JPEG without its end marker"):
        check.preflight(_cfg(tmp_path, _image_data(root)).data, log=logged.append)
    assert "train: headers of 12/12 images, decoded " in logged[0]


@pytest.mark.parametrize("name, mode", [("cmyk", "CMYK"), ("png", None), ("gray", "L")])
def test_tensorflow_decodes_cmyk_png_and_grayscale_right(name, mode):
    # What TF 2.21 does, verified: decode_image and decode_jpeg turn a CMYK
    # JPEG into RGB, decode_jpeg also reads PNG bytes, channels=3 expands gray.
    img = _smooth(3)
    data = _encode(img, "PNG" if name == "png" else "JPEG", mode)
    reference = img.astype(np.float32) if name != "gray" else np.asarray(Image.fromarray(img).convert("L"), np.float32)[..., None]
    for decode in (tf.io.decode_jpeg, lambda d, channels: tf.io.decode_image(d, channels=channels)):
        out = decode(tf.constant(data), channels=3).numpy().astype(np.float32)
        assert out.shape == (40, 40, 3)
        assert np.abs(out - reference).mean() < (0.01 if name == "png" else 6.0)


def test_png_named_jpg_with_a_jpeg_only_decoder_names_the_file(tmp_path):
    root, victim = _folder(tmp_path, "png_named_jpg")
    with pytest.raises(check.DataError, match=rf"{victim}: .*\(a PNG file, which decode_crop_jpeg does not read\)"):
        check.preflight(_cfg(tmp_path, _image_data(root, "decode_crop_jpeg")).data, log=lambda _: None)


def test_ignore_errors_names_the_skipped_images(tmp_path):
    root, victim = _folder(tmp_path, "truncated_jpeg")
    (root / "0" / "004.jpg").write_bytes(b"not an image")
    cfg = _cfg(tmp_path, _image_data(root, check="full", ignore_errors=True))
    report = check.preflight(cfg.data, log=lambda _: None)
    assert report.bad_records == 2 and sorted(report.names) == sorted([str(root / "0" / "004.jpg"), str(victim)])
    assert sum(int(y.shape[0]) for _, y in pipeline.build(cfg.data, "train", 4, training=False)) == 10


# ---------------------------------------------------------------- CSV

CLICKS = {"header": True, "columns": {"label": "int", "I*": "float", "C*": "string"}, "label_column": "label"}
CLICKS_STEPS = [
    {"op": "drop_missing", "columns": ["I1", "C1"]},
    {"op": "hash_columns", "columns": ["C*"], "num_bins": 50},
    {"op": "pack", "groups": {"numeric": ["I*"], "categorical": ["C*"]}},
    {"op": "log1p", "key": "numeric"},
    {"op": "binary_label"},
]


def _set(line_no, column, value):
    def edit(lines):
        fields = lines[line_no - 1].split(",")
        fields[column] = value
        lines[line_no - 1] = ",".join(fields)
    return edit


CSV_CASES = {
    # name: (edit of train-00000.csv's lines, expected message)
    "text_in_float_column": (_set(12, 3, "abc"), r"train-00000.csv: line 12: column I3: 'abc' is not a number"),
    "short_row": (lambda ls: ls.__setitem__(6, ls[6].rsplit(",", 2)[0]), r"train-00000.csv: line 7: 38 fields; expected 40"),
    "extra_column": (lambda ls: ls.__setitem__(8, ls[8] + ",x"), r"train-00000.csv: line 9: 41 fields; expected 40"),
    "label_out_of_range": (_set(20, 0, "7"), r"train-00000.csv: line 20: label 7; expected an integer class id in \[0, 2\) \(0 or 1"),
    "nan_feature": (_set(30, 5, "nan"), r"train-00000.csv: line 30: feature 'numeric' NaN or inf after data.map.steps"),
    "header_only": (lambda ls: ls.__delitem__(slice(1, None)), r"data.files.train: .* holds no rows \(header only\?\)"),
    "empty_file": (lambda ls: ls.clear(), r"train-00000.csv: line 1: expected a header row"),
}


@pytest.fixture(name="clicks", scope="module")
def _clicks(tmp_path_factory):
    out = tmp_path_factory.mktemp("clicks")
    workloads.clicks(str(out), rows=200, num_files=1, log=None)
    return out


def _clicks_case(tmp_path, clicks, case):
    d = tmp_path / "csv"
    d.mkdir()
    lines = (clicks / "train-00000.csv").read_text().splitlines()
    CSV_CASES[case][0](lines)
    (d / "train-00000.csv").write_text("\n".join(lines) + ("\n" if lines else ""))
    return d


def _clicks_data(d, **data):
    return {"source": "csv", "files": {"train": str(d / "train-*.csv")}, "csv": CLICKS, "cache": "",
            "map": {"vectorized": True, "steps": CLICKS_STEPS}, **data}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_csv_corpus(tmp_path, clicks, case):
    d = _clicks_case(tmp_path, clicks, case)
    with pytest.raises(check.DataError, match=CSV_CASES[case][1]) as err:
        check.preflight(_cfg(tmp_path, _clicks_data(d)).data, log=lambda _: None)
    assert "\n" not in str(err.value)


def test_label_past_the_quick_window_is_stopped_in_the_graph(tmp_path, clicks, monkeypatch):
    # quick reads the first QUICK_LINES lines; a later bad label must still
    # never reach the loss: the in-graph check fails, and explain() names the line.
    monkeypatch.setattr(check, "QUICK_LINES", 10)
    d = tmp_path / "csv"
    d.mkdir()
    lines = (clicks / "train-00000.csv").read_text().splitlines()
    _set(150, 0, "7")(lines)
    (d / "train-00000.csv").write_text("\n".join(lines) + "\n")
    cfg = _cfg(tmp_path, _clicks_data(d))
    assert check.preflight(cfg.data, log=lambda _: None).problems == []
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"tfpipe-data-check: data.files.train: label outside \[0, 2\)") as err:
        for _ in pipeline.build(cfg.data, "train", 32, training=False):
            pass
    explained = check.explain(err.value, cfg.data, log=lambda _: None)
    assert "\n" not in str(explained)
    assert "during training: " in str(explained) and "train-00000.csv: line 150: label 7" in str(explained)
    # check: off drops the in-graph checks too: the cheap path has none.
    off = _cfg(tmp_path, _clicks_data(d, check="off"))
    assert sum(int(y.shape[0]) for _, y in pipeline.build(off.data, "train", 32, training=False)) > 0


def test_ignore_errors_skips_and_names_bad_csv_values(tmp_path, clicks):
    d = tmp_path / "csv"
    d.mkdir()
    lines = (clicks / "train-00000.csv").read_text().splitlines()
    _set(20, 0, "7")(lines)
    _set(30, 5, "inf")(lines)
    (d / "train-00000.csv").write_text("\n".join(lines) + "\n")
    cfg = _cfg(tmp_path, _clicks_data(d, check="full", ignore_errors=True))
    report = check.preflight(cfg.data, log=lambda _: None)
    assert report.bad_records == 2
    assert report.names == [f"{d}/train-00000.csv: line 20", f"{d}/train-00000.csv: line 30"]
    kept = sum(f[1] != "" and f[14] != "" for f in (line.split(",") for line in lines[1:]))  # drop_missing I1, C1
    assert sum(int(y.shape[0]) for _, y in pipeline.build(cfg.data, "train", 32, training=False)) == kept - 2


# ---------------------------------------------------------------- TFRecord


def test_truncated_tfrecord_is_caught_by_quick(tmp_path):
    info = workloads.images(str(tmp_path / "img"), num_images=16, size=32, num_shards=2, test_fraction=0.0, log=None)
    shard = os.path.join(info["tfrecord"], "train-00001-of-00002.tfrecord")
    data = open(shard, "rb").read()
    open(shard, "wb").write(data[: len(data) - 50])
    cfg = _cfg(tmp_path, {"source": "tfrecord", "files": {"train": os.path.join(info["tfrecord"], "train-*")},
                          "tfrecord": {"spec_file": info["spec"]}, "cache": "", "map": {"steps": [{"op": "decode_image"}]}})
    with pytest.raises(check.DataError, match=r"train-00001-of-00002.tfrecord: record 7: truncated"):
        check.preflight(cfg.data, log=lambda _: None)


def test_tfrecord_label_past_the_quick_window_is_stopped_on_the_batch(tmp_path, monkeypatch):
    # No step changes the labels here, so the in-graph check runs once per batch.
    monkeypatch.setattr(check, "QUICK_RECORDS", 1)
    info = workloads.images(str(tmp_path / "img"), num_images=8, size=32, num_shards=1, test_fraction=0.0, log=None)
    shard = os.path.join(info["tfrecord"], "train-00000-of-00001.tfrecord")
    records = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(shard)]
    records[5].features.feature["label"].int64_list.value[0] = 12  # the spec says 10 classes
    with tf.io.TFRecordWriter(shard) as w:
        for r in records:
            w.write(r.SerializeToString())
    cfg = _cfg(tmp_path, {"source": "tfrecord", "files": {"train": shard}, "tfrecord": {"spec_file": info["spec"]},
                          "cache": "", "map": {"steps": [{"op": "decode_image"}]}})
    assert check.preflight(cfg.data, log=lambda _: None).problems == []
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"label outside \[0, 10\).*labels here span\D+\d+\D+12"):
        for _ in pipeline.build(cfg.data, "train", 4, training=False):
            pass


# ---------------------------------------------------------------- through the script


def _script(tmp_path, data, *overrides):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "data": data, "model": {"name": "cnn", "params": {"filters": [4], "dense_units": 4},
                                "loss": "sparse_categorical_crossentropy"},
        "train": {"batch_size": 4, "epochs": 1, "steps_per_epoch": 2, "steps_per_loop": 1},
    }))
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--config", str(config),
         "--workdir", str(tmp_path / "run"), *[f"--set={o}" for o in overrides]],
        capture_output=True, text=True, timeout=600,
    )


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["truncated_jpeg_mid_run", "header_only_csv", "usable_odd_images", "ignore_errors"])
def test_script(tmp_path, clicks, case):
    if case == "truncated_jpeg_mid_run":
        # data.check: off, so preflight cannot catch it: the error during
        # training is mapped back to the file.
        root, victim = _folder(tmp_path, "truncated_jpeg")
        data = _image_data(root, check="off", shuffle={"buffer_size": 0})
        data["files"]["test"] = str(root)  # read in evaluation if training did not reach it
        line = _one_error_line(_script(tmp_path, data))
        assert f"error: bad input data during training: {victim}: " in line and "Invalid JPEG data" in line
        assert "data.ignore_errors: true" in line
    elif case == "header_only_csv":
        d = _clicks_case(tmp_path, clicks, "header_only")
        line = _one_error_line(_script(tmp_path, _clicks_data(d)))
        assert "holds no rows (header only?)" in line
    elif case == "usable_odd_images":
        root, _ = _folder(tmp_path, "cmyk_jpeg")
        (root / "0" / "001.jpg").write_bytes(IMAGE_CASES["png_named_jpg"][0]())
        (root / "0" / "003.jpg").write_bytes(IMAGE_CASES["grayscale_in_rgb_folder"][0]())
        proc = _script(tmp_path, _image_data(root), "data.files.test=" + str(root))
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:
        root, victim = _folder(tmp_path, "text_named_jpg")
        (tmp_path / "clean").mkdir()
        clean, _ = _folder(tmp_path / "clean")
        proc = _script(tmp_path, _image_data(root, check="full", ignore_errors=True), "data.files.test=" + str(clean))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"skipped 1 bad records, first: {victim}" in proc.stdout
        metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
        assert metrics["skipped_records"] == 1 and metrics["skipped_examples"] == [str(victim)]
        events = list((tmp_path / "run" / "logs" / "train").glob("events.*"))
        tags = {v.tag for e in events for r in tf.data.TFRecordDataset(str(e))
                for v in tf.compat.v1.Event.FromString(r.numpy()).summary.value}
        assert {"data/skipped_records", "data/skipped_examples"} <= tags

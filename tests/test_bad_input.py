"""Bad input, with real broken files: errors name the file and record/line; ignore_errors skips and counts."""

import io
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

import tfpipe
from tfpipe.data import tfrecords
from tfpipe.data import workloads
from tfpipe.data import check, pipeline


def data_cfg(tmp_path, **data):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"data": data}))
    return tfpipe.load_config(path).data


CLICKS_CSV = {"header": True, "columns": {"label": "int", "I*": "float", "C*": "string"}, "label_column": "label"}


@pytest.fixture(name="images")
def _images(tmp_path):
    info = workloads.images(str(tmp_path / "img"), num_images=24, size=64, num_shards=2, test_fraction=0.0, log=None)
    return info


def image_cfg(tmp_path, info, files=None, **data):
    return data_cfg(tmp_path, source="tfrecord", files={"train": files or os.path.join(info["tfrecord"], "train-*")},
                    tfrecord={"spec_file": info["spec"]}, cache="",
                    map={"steps": [{"op": "decode_crop_jpeg", "size": 12, "ratio": 4}]}, **data)


def test_truncated_tfrecord_names_file_and_record(tmp_path, images):
    shard = os.path.join(images["tfrecord"], "train-00001-of-00002.tfrecord")
    data = open(shard, "rb").read()
    open(shard, "wb").write(data[: len(data) - 100])
    with pytest.raises(check.DataError, match=r"train-00001-of-00002.tfrecord: record 11: truncated or corrupted"):
        check.preflight(image_cfg(tmp_path, images, check="full"))


def test_corrupted_tfrecord_names_file_and_record(tmp_path, images):
    shard = os.path.join(images["tfrecord"], "train-00000-of-00002.tfrecord")
    data = bytearray(open(shard, "rb").read())
    data[40] ^= 0xFF  # inside the first record's payload: its checksum no longer matches
    open(shard, "wb").write(bytes(data))
    with pytest.raises(check.DataError, match=r"train-00000-of-00002.tfrecord: record 0: truncated or corrupted"):
        check.preflight(image_cfg(tmp_path, images, check="full"))


def test_ignore_errors_counts_every_record_lost_after_tfrecord_damage(tmp_path, images):
    # TensorFlow's reader stops at a corrupted record, so records 2..11 of the
    # shard are lost, not just record 2: the count must say 10, and the
    # pipeline must deliver exactly the other 14.
    shard = os.path.join(images["tfrecord"], "train-00000-of-00002.tfrecord")
    data = bytearray(open(shard, "rb").read())
    offset = 0
    for _ in range(2):  # skip records 0 and 1: length, length CRC, payload, payload CRC
        offset += 8 + 4 + int.from_bytes(data[offset:offset + 8], "little") + 4
    data[offset + 12 + 30] ^= 0xFF  # inside record 2's payload
    open(shard, "wb").write(bytes(data))
    cfg = image_cfg(tmp_path, images, check="full", ignore_errors=True)
    logged = []
    report = check.preflight(cfg, log=logged.append)
    assert report.bad_records == 10 and report.names == [f"{shard}: record 2"]  # for metrics.json
    assert "records 2-11 of this file are lost" in logged[-1]  # after the "looked at" line
    n = sum(int(y.shape[0]) for _, y in pipeline.build(cfg, "train", 4, training=False))
    assert n == 24 - 10


def _example(image: bytes, label: int):
    return tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }))


def test_undecodable_jpeg_in_a_tfrecord_names_the_record_and_ignore_errors_skips_it(tmp_path, images):
    good = [r.numpy() for r in tf.data.TFRecordDataset(os.path.join(images["tfrecord"], "train-00000-of-00002.tfrecord"))]
    bad = str(tmp_path / "bad.tfrecord")
    with tf.io.TFRecordWriter(bad) as w:
        for i, r in enumerate(good[:6]):
            w.write(_example(b"\xff\xd8 not really a jpeg", 3).SerializeToString() if i == 4 else r)
    with pytest.raises(check.DataError, match=r"bad.tfrecord: record 4: .*Invalid JPEG data.*expected the record to"):
        check.preflight(image_cfg(tmp_path, images, files=bad, check="full"))
    cfg = image_cfg(tmp_path, images, files=bad, check="full", ignore_errors=True)
    report = check.preflight(cfg, log=lambda _: None)
    assert report.bad_records == 1
    got = list(pipeline.build(cfg, "train", 1, training=False))
    assert len(got) == 5


def test_ignore_errors_under_vectorized_parsing_drops_the_bad_record_alone(tmp_path, images):
    good = [r.numpy() for r in tf.data.TFRecordDataset(os.path.join(images["tfrecord"], "train-00000-of-00002.tfrecord"))]
    bad = str(tmp_path / "bad.tfrecord")
    wrong_label = tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"])),
        "label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"three"])),  # spec: int64
    }))
    with tf.io.TFRecordWriter(bad) as w:
        for i, r in enumerate(good[:6]):
            w.write(wrong_label.SerializeToString() if i == 3 else r)
    cfg = data_cfg(tmp_path, source="tfrecord", files={"train": bad}, tfrecord={"spec_file": images["spec"]},
                   cache="", map={"vectorized": True}, check="full", ignore_errors=True)
    assert check.preflight(cfg, log=lambda _: None).bad_records == 1
    # parse_example on a batch of 4 would fail the whole batch; per record only record 3 goes.
    assert sum(int(y.shape[0]) for _, y in pipeline.build(cfg, "train", 4, training=False)) == 5


def test_undecodable_image_in_a_folder_names_the_file(tmp_path, images):
    victim = sorted((tmp_path / "img" / "folder" / "train").glob("*/*.jpg"))[3]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated JPEG
    cfg = data_cfg(tmp_path, source="image_folder", files={"train": images["folder"] + "/train"}, check="full",
                   cache="", map={"steps": [{"op": "decode_image"}]})
    with pytest.raises(check.DataError, match=rf"{victim}: .*expected the image to decode as an image"):
        check.preflight(cfg)


@pytest.fixture(name="clicks")
def _clicks(tmp_path):
    workloads.clicks(str(tmp_path / "clicks"), rows=300, num_files=2, log=None)
    return tmp_path / "clicks"


def _break_line(path, lineno, new):
    lines = path.read_text().splitlines()
    lines[lineno - 1] = new(lines[lineno - 1])
    path.write_text("\n".join(lines) + "\n")


def _set_field(index, value):
    def edit(line):
        fields = line.split(",")
        fields[index] = value
        return ",".join(fields)

    return edit


def clicks_cfg(tmp_path, clicks, **data):
    data.setdefault("files", {"train": str(clicks / "train-*.csv")})
    return data_cfg(tmp_path, source="csv", csv=CLICKS_CSV, cache="",
                    # I1 is sometimes empty (NaN): drop those rows, as the shipped config does,
                    # or the value check rightly stops at the first NaN a model would get.
                    map={"vectorized": True, "steps": [{"op": "drop_missing", "columns": ["I1"]},
                                                       {"op": "hash_columns", "columns": ["C*"], "num_bins": 10}]},
                    **data)


def test_csv_row_with_wrong_field_count_names_the_line(tmp_path, clicks):
    _break_line(clicks / "train-00001.csv", 7, lambda s: s.rsplit(",", 2)[0])
    with pytest.raises(check.DataError, match=r"train-00001.csv: line 7: 38 fields; expected 40"):
        check.preflight(clicks_cfg(tmp_path, clicks, check="full"))
    # quick looks at the first 100 lines only: line 7 is among them.
    with pytest.raises(check.DataError, match="line 7"):
        check.preflight(clicks_cfg(tmp_path, clicks, check="quick"))


def test_csv_unparsable_number_names_line_and_column_and_ignore_errors_counts_it(tmp_path, clicks):
    _break_line(clicks / "train-00000.csv", 12, _set_field(3, "abc"))
    with pytest.raises(check.DataError, match=r"train-00000.csv: line 12: column I3: 'abc' is not a number"):
        check.preflight(clicks_cfg(tmp_path, clicks, check="full"))
    cfg = clicks_cfg(tmp_path, clicks, check="full", ignore_errors=True)
    assert check.preflight(cfg, log=lambda _: None).bad_records == 1
    n = sum(int(y.shape[0]) for _, y in pipeline.build(cfg, "train", 32, training=False))
    missing = sum(line.split(",")[1] == "" for f in clicks.glob("train-*.csv") for line in f.read_text().splitlines()[1:])
    assert n == 270 - 1 - missing  # only the bad row goes, not its whole batch


def test_missing_file_and_empty_glob_name_the_key(tmp_path, clicks):
    with pytest.raises(check.DataError, match=r"data.files.train: '.*missing.csv' matches no file"):
        check.preflight(clicks_cfg(tmp_path, clicks, files={"train": str(clicks / "missing.csv")}))
    with pytest.raises(check.DataError, match=r"data.files.test: '.*nope-\*.csv' matches no file"):
        check.preflight(data_cfg(tmp_path, source="csv", csv=CLICKS_CSV,
                                 files={"train": str(clicks / "train-*.csv"), "test": str(clicks / "nope-*.csv")}))


def test_feature_spec_that_does_not_match_the_records(tmp_path, images):
    spec = json.loads(open(images["spec"]).read())
    spec["features"]["image"] = {"dtype": "float32", "shape": [3]}
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(spec))
    cfg = data_cfg(tmp_path, source="tfrecord", files={"train": os.path.join(images["tfrecord"], "train-*")},
                   tfrecord={"spec_file": str(wrong)}, cache="")
    with pytest.raises(check.DataError, match=r"train-0000\d-of-00002.tfrecord: record 0: .*image.*expected the record to parse with the feature spec"):
        check.preflight(cfg)


def test_ignore_errors_needs_a_full_check():
    with pytest.raises(tfpipe.ConfigError, match="data.ignore_errors: true needs data.check: full"):
        tfpipe.load_config(None, overrides=["data.ignore_errors=true"])


@pytest.mark.slow
def test_training_with_ignore_errors_reports_skipped_rows(tmp_path, clicks):
    _break_line(clicks / "train-00000.csv", 5, lambda s: s + ",extra")
    _break_line(clicks / "train-00001.csv", 9, _set_field(2, "1.5.0"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    overrides = [f"data.files.train={clicks}/train-*.csv", f"data.files.test={clicks}/test-*.csv",
                 "data.check=full", "data.ignore_errors=true", "train.epochs=1", "train.steps_per_epoch=4",
                 "train.batch_size=32"]
    cfg = tfpipe.load_config(os.path.join(root, "configs", "clicks_widedeep.yaml"), overrides=overrides)
    metrics = tfpipe.train(cfg, tmp_path / "run")
    assert metrics["skipped_records"] == 2
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["skipped_records"] == 2

"""Every data source, on real files written by the test."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

import tfpipe
from tfpipe.data import tfrecords
from tfpipe.data import workloads
from tfpipe.data import feature_spec, pipeline, sources


def data_cfg(tmp_path, **data):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"data": data}))
    return tfpipe.load_config(path).data


@pytest.fixture(scope="module", name="clicks")
def _clicks(tmp_path_factory):
    out = tmp_path_factory.mktemp("clicks")
    workloads.clicks(str(out), rows=1000, num_files=4, log=None)
    return out


CLICKS_CSV = {"header": True, "columns": {"label": "int", "I*": "float", "C*": "string"}, "label_column": "label"}


def test_digits_is_the_embedded_default(tmp_path):
    src = sources.load(data_cfg(tmp_path), "train")
    x, y = next(iter(src.dataset))
    assert x.shape == (64,) and y.dtype == tf.int64 and src.num_classes == 10


def test_npz_is_cut_into_the_configured_splits(tmp_path):
    x = np.arange(200, dtype=np.float32).reshape(100, 2)
    y = np.arange(100) % 3
    np.savez(tmp_path / "a.npz", x=x, y=y)
    cfg = data_cfg(tmp_path, source="npz", files={"train": str(tmp_path / "a.npz")}, split={"validation": 0.1, "test": 0.2})
    got = {s: [(a.numpy().tolist(), int(b)) for a, b in sources.load(cfg, s).dataset] for s in sources.SPLITS}
    assert [len(got[s]) for s in ("train", "validation", "test")] == [70, 10, 20]
    rows = sorted(r for s in got.values() for r in s)
    assert rows == sorted((x[i].tolist(), int(y[i])) for i in range(100))
    assert sources.load(cfg, "train").num_classes == 3


def test_synthetic_has_the_configured_shapes_and_dtypes(tmp_path):
    feats = {"img": {"shape": [4, 4, 3], "dtype": "uint8"}, "ids": {"shape": [5], "dtype": "int64"},
             "tag": {"shape": [], "dtype": "string"}}
    cfg = data_cfg(tmp_path, source="synthetic", synthetic={"num_examples": 50, "features": feats, "num_classes": 4})
    src = sources.load(cfg, "train")
    x, y = next(iter(src.dataset))
    assert x["img"].shape == (4, 4, 3) and x["img"].dtype == tf.uint8
    assert x["ids"].shape == (5,) and x["tag"].dtype == tf.string
    assert src.num_examples == 35 and 0 <= int(y) < 4


def test_csv_reads_every_row_of_every_file_with_column_types(tmp_path, clicks):
    cfg = data_cfg(tmp_path, source="csv", files={"train": str(clicks / "train-*.csv"), "test": str(clicks / "test-*.csv")},
                   csv=CLICKS_CSV)
    src = sources.load(cfg, "train")
    assert src.num_examples == 900 and len(src.files) == 4
    rows = list(src.dataset)
    assert len(rows) == 900
    x, y = rows[0]
    assert x["I2"].dtype == tf.float32 and x["C3"].dtype == tf.string and int(y) in (0, 1)
    assert len(x) == 39
    # Missing I1 values read as NaN, so drop_missing can see them.
    assert any(np.isnan(float(r[0]["I1"])) for r in rows)


def test_file_listing_is_sorted_then_permuted_by_the_seed(tmp_path, clicks):
    read = data_cfg(tmp_path).read
    a = sources.list_files(str(clicks / "train-*.csv"), read, "k")
    assert a == sources.list_files(str(clicks / "train-*.csv"), read, "k")
    assert sorted(a) == sorted(str(p) for p in clicks.glob("train-*.csv"))
    orders = {sources.list_files(str(clicks / "train-*.csv"), data_cfg(tmp_path, read={"seed": s}).read, "k")
              for s in range(6)}
    assert len(orders) > 1
    with pytest.raises(FileNotFoundError, match=r"data.files.train: '.*nothing-\*.csv' matches no file"):
        sources.list_files(str(clicks / "nothing-*.csv"), read, "data.files.train")


def test_tfrecord_round_trip_from_npz_with_spec_json(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    y = np.arange(30) % 5
    np.savez(tmp_path / "a.npz", x=x, y=y)
    spec = tfrecords.from_npz(str(tmp_path / "a.npz"), str(tmp_path / "rec"), num_shards=3)
    cfg = data_cfg(tmp_path, source="tfrecord", files={"train": str(tmp_path / "rec" / "train-*.tfrecord")},
                   tfrecord={"spec_file": spec}, read={"cycle_length": 2, "block_length": 2})
    src = sources.load(cfg, "train")
    assert src.num_examples == 30 and src.num_classes == 5 and len(src.files) == 3
    got = sorted((a.numpy().round(5).tolist(), int(b)) for a, b in src.dataset)
    assert got == sorted((x[i].round(5).tolist(), int(y[i])) for i in range(30))
    # Through the interleaving pipeline: every record exactly once.
    batches = list(pipeline.build(cfg, "train", 7, training=False))
    assert sorted(int(v) for _, yb in batches for v in yb) == sorted(y.tolist())


def test_tfrecord_var_len_feature_pads_in_padded_batch(tmp_path):
    path = tmp_path / "v.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for n in (1, 3, 2):
            ex = tf.train.Example(features=tf.train.Features(feature={
                "ids": tf.train.Feature(int64_list=tf.train.Int64List(value=list(range(1, n + 1)))),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[n])),
            }))
            w.write(ex.SerializeToString())
    features = {"ids": {"dtype": "int64", "shape": [], "var_len": True}, "label": {"dtype": "int64", "shape": []}}
    cfg = data_cfg(tmp_path, source="tfrecord", files={"train": str(path)}, tfrecord={"features": features},
                   padded_batch=True, read={"shuffle_files": False})
    (x, y), = list(pipeline.build(cfg, "train", 3, training=False))
    assert x.numpy().tolist() == [[1, 0, 0], [1, 2, 3], [1, 2, 0]] and y.numpy().tolist() == [1, 3, 2]


def test_feature_spec_errors_name_the_feature(tmp_path):
    with pytest.raises(ValueError, match=r"feature 'x': dtype: expected one of float32, int64, string, got 'float64'"):
        feature_spec.parse_feature("x", {"dtype": "float64", "shape": [2]}, "cfg")
    with pytest.raises(ValueError, match="label_key: 'label' is not a feature"):
        feature_spec.load(data_cfg(tmp_path, tfrecord={"features": {"x": {"dtype": "float32"}}}).tfrecord)


def _write_image(path, color, fmt):
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 10, 3), color, np.uint8)).save(buf, format=fmt)
    path.write_bytes(buf.getvalue())


def test_image_folder_reads_jpeg_and_png_with_folder_labels(tmp_path):
    root = tmp_path / "train"
    for cls, color in (("cat", 40), ("dog", 200)):
        os.makedirs(root / cls)
        _write_image(root / cls / "a.jpg", color, "JPEG")
        _write_image(root / cls / "b.png", color, "PNG")
    (root / "cat" / "notes.txt").write_text("not an image")
    cfg = data_cfg(tmp_path, source="image_folder", files={"train": str(root)},
                   map={"steps": [{"op": "decode_image"}]}, cache="")
    src = sources.load(cfg, "train")
    assert src.num_examples == 4 and src.num_classes == 2
    x, y = next(iter(pipeline.build(cfg, "train", 4, training=False)))
    assert x.shape == (4, 12, 10, 3)
    for img, label in zip(x.numpy(), y.numpy()):
        assert abs(img.mean() - (40 if label == 0 else 200)) < 3


MY_SOURCE = '''
import numpy as np
import tensorflow as tf
from tfpipe.data import sources

def arrays(data_cfg, split):
    # 40 training rows of 3 features, 10 test rows, no validation split.
    n = {"train": 40, "test": 10}.get(split)
    if n is None:
        return None
    x = np.full((n, 3), data_cfg.split.seed, np.float32)
    return x, np.arange(n, dtype=np.int64) % 4

def dataset(data_cfg, split):
    x, y = arrays(data_cfg, split) or (None, None)
    return None if x is None else tf.data.Dataset.from_tensor_slices((x, y))

def files(data_cfg, split):
    return sources.Source(num_examples=3, num_classes=2, files=("a",), reader=tf.data.TextLineDataset,
                          parse=lambda line: (line, tf.constant(0, tf.int64)))

def batched(data_cfg, split):
    return dataset(data_cfg, split).batch(4)

def text(data_cfg, split):
    return "train.csv"
'''


def test_source_by_import_path_feeds_the_configured_pipeline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_source_ok.py").write_text(MY_SOURCE)
    for fn in ("arrays", "dataset"):
        cfg = data_cfg(tmp_path, source=f"my_source_ok:{fn}", split={"seed": 7}, cache="", shuffle={"buffer_size": 0})
        src = sources.load(cfg, "train")
        assert (src.num_examples, src.num_classes) == (40, 4), fn
        assert sources.load(cfg, "validation").num_examples == 0  # None: the split is absent
        assert sources.load(cfg, "test").num_examples == 10
        # The pipeline still applies the config: batches of 8, evaluation keeps the order.
        x, y = next(iter(pipeline.build(cfg, "test", 8, training=False)))
        assert x.shape == (8, 3) and float(x[0, 0]) == 7.0 and list(y.numpy()) == [0, 1, 2, 3, 0, 1, 2, 3], fn
    # A Source is taken as it is: files listed there are read through data.read.
    assert sources.load(data_cfg(tmp_path, source="my_source_ok:files"), "train").files == ("a",)


def test_source_by_import_path_fails_in_one_line_naming_data_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_source_bad.py").write_text(MY_SOURCE)
    with pytest.raises(tfpipe.ConfigError) as e:
        data_cfg(tmp_path, source="no_such_module_here:load")
    assert str(e.value) == (f"{tmp_path / 'cfg.yaml'}: data.source: cannot import 'no_such_module_here' for "
                            "'no_such_module_here:load': ModuleNotFoundError: No module named 'no_such_module_here'")
    with pytest.raises(tfpipe.ConfigError, match=r"data.source: module 'my_source_bad' has no attribute 'nope'"):
        data_cfg(tmp_path, source="my_source_bad:nope")
    with pytest.raises(tfpipe.ConfigError, match=r"data.source: expected one of .*synthetic.* or module:function, got 'digit'"):
        data_cfg(tmp_path, source="digit")
    with pytest.raises(ValueError, match=r"^data.source: 'my_source_bad:text' returned a str for the train split; "
                                         r"expected a tf.data.Dataset of \(features, label\) examples"):
        sources.load(data_cfg(tmp_path, source="my_source_bad:text"), "train")
    with pytest.raises(ValueError, match=r"^data.source 'my_source_bad:batched' \(train split\): expected a Dataset "
                                         r"of single examples"):
        sources.load(data_cfg(tmp_path, source="my_source_bad:batched"), "train")

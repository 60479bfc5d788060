"""Image folders as users have them: mixed formats, modes and sizes, nested folders, no validation folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

import tfpipe
from tfpipe.data import check, pipeline, preprocess, samples, sources

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module", name="colours")
def _colours(tmp_path_factory):
    out = tmp_path_factory.mktemp("colours")
    samples.colours(str(out), per_class=10, test_per_class=2)
    return out


def load(tmp_path, **data):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": "image_folder", "cache": "", **data}}))
    return tfpipe.load_config(path).data


DECODE = [{"op": "decode_image"}, {"op": "resize", "size": 8, "policy": "pad"}]


def test_nested_folders_of_every_format_and_mode_are_read_and_junk_is_not(tmp_path, colours):
    cfg = load(tmp_path, files={"train": str(colours / "train")}, map={"steps": DECODE})
    src = sources.load(cfg, "train")
    assert src.num_examples == 20 and src.num_classes == 2
    names = [os.path.relpath(f, colours / "train") for f in src.files]
    assert {os.path.splitext(n)[1] for n in names} >= {".jpg", ".png", ".gif", ".bmp", ".jpeg", ".JPG"}
    assert any(n.count(os.sep) == 3 for n in names)  # blue/more/deeper/x.png
    assert not any(n.endswith((".txt", ".DS_Store")) for n in names)
    images = list(pipeline.build(cfg, "train", 32, training=False).unbatch().as_numpy_iterator())
    assert len(images) == 20 and all(x.shape == (8, 8, 3) for x, _ in images)
    # Grayscale, RGBA and palette files come out as 3 channels; red (mean ~125) is brighter than blue (~20-40).
    for x, y in images:
        inside = x[x.sum(axis=-1) > 0]  # the padding is black
        assert (inside.mean() > 80) == (y == 1), (inside.mean(), y)


def test_validation_is_cut_from_the_training_folder_per_class_and_deterministically(tmp_path, colours):
    cfg = load(tmp_path, files={"train": str(colours / "train")}, holdout={"validation": 0.2})
    train, val = sources.load(cfg, "train"), sources.load(cfg, "validation")
    assert (train.num_examples, val.num_examples) == (16, 4)
    assert not set(train.files) & set(val.files)
    assert sorted(f.split(os.sep + "train" + os.sep)[1].split(os.sep)[0] for f in val.files) == ["blue"] * 2 + ["red"] * 2
    # The same files whatever the read order; another data.split.seed cuts others.
    again = load(tmp_path, files={"train": str(colours / "train")}, holdout={"validation": 0.2},
                 read={"seed": 7})
    assert sorted(sources.load(again, "validation").files) == sorted(val.files)
    other = load(tmp_path, files={"train": str(colours / "train")}, holdout={"validation": 0.2},
                 split={"seed": 1})
    assert sorted(sources.load(other, "validation").files) != sorted(val.files)
    # A test split too: three disjoint parts of every class.
    both = load(tmp_path, files={"train": str(colours / "train")}, holdout={"validation": 0.2, "test": 0.3})
    parts = {s: set(sources.load(both, s).files) for s in sources.SPLITS}
    assert [len(parts[s]) for s in sources.SPLITS] == [10, 4, 6]
    assert set().union(*parts.values()) == set(sources.load(cfg, "train").files) | set(val.files)
    with pytest.raises(tfpipe.ConfigError, match="data.holdout.validation: cuts a validation split"):
        load(tmp_path, files={"train": str(colours / "train"), "validation": str(colours / "test")},
             holdout={"validation": 0.2})


def test_images_of_different_sizes_without_a_resize_are_named_before_training(tmp_path, colours):
    for mode in ("quick", "full"):
        cfg = load(tmp_path, files={"train": str(colours / "train")}, map={"steps": [{"op": "decode_image"}]},
                   check=mode)
        with pytest.raises(check.DataError, match=r"data.files.train: images differ in size \(\d+x\d+ .*add \{op: resize"):
            check.preflight(cfg, log=lambda m: None)


def step(op, training=False, **args):
    (fn,) = preprocess.build([{"op": op, **args}], training=training)
    return lambda img: fn(tf.constant(img), 0)[0].numpy()


def test_crops_of_images_smaller_than_the_crop():
    small = np.full((5, 7, 3), 200, np.uint8)
    for training in (False, True):
        grown = step("random_crop", training, size=8)(small)
        assert grown.shape == (8, 8, 3) and grown.dtype == np.uint8 and (grown == 200).all()
        padded = step("random_crop", training, size=[8, 10], small="pad")(small)
        assert padded.shape == (8, 10, 3) and padded.sum() == small.sum()  # zeros around, nothing lost
    with pytest.raises(tf.errors.InvalidArgumentError):
        step("random_crop", True, size=8, small="error")(small)
    big = np.arange(10 * 10 * 1, dtype=np.float32).reshape(10, 10, 1)
    assert np.array_equal(step("random_crop", size=4)(big), big[3:7, 3:7])  # larger images: centre crop as before


def test_decode_crop_jpeg_takes_height_and_width():
    import io  # pylint: disable=import-outside-toplevel

    from PIL import Image  # pylint: disable=import-outside-toplevel

    buf = io.BytesIO()
    Image.fromarray(np.full((20, 30, 3), 99, np.uint8)).save(buf, format="JPEG")
    for training in (False, True):
        assert step("decode_crop_jpeg", training, size=[8, 12])(buf.getvalue()).shape == (8, 12, 3)


def test_resize_policies():
    wide = np.zeros((4, 8, 1), np.float32)
    wide[:, :4] = 1.0  # left half bright
    assert step("resize", size=[8, 8])(wide).shape == (8, 8, 1)  # stretch
    pad = step("resize", size=8, policy="pad")(wide)
    assert pad.shape == (8, 8, 1) and (pad[:2] == 0).all() and (pad[6:] == 0).all()  # bands above and below
    crop = step("resize", size=8, policy="crop")(wide)
    assert crop.shape == (8, 8, 1) and crop[:, 0].mean() > 0.9 and crop[:, -1].mean() < 0.1  # centre of 8x16


@pytest.mark.slow
def test_image_folder_config_learns_colours(tmp_path):
    samples.colours(str(tmp_path / "colours"))
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(ROOT / "configs" / "image_folder.yaml"),
         "--workdir", str(tmp_path / "run"), "--set", "profile.enabled=false",
         "--set", f"data.files.train={tmp_path}/colours/train", "--set", f"data.files.test={tmp_path}/colours/test"],
        capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9  # the config states 1.0; two classes
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert "val_accuracy" in history[-1]  # the validation split cut from the training folder

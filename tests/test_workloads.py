"""Workload generators, conversion and benchmark scripts through their flags, and the workload configs end to end."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

import tfpipe
from tfpipe.data import workloads
from tfpipe.data import sources

ROOT = Path(__file__).parents[1]


def script(name, *args, cwd=None):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                         timeout=600, check=False, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_images_workload_is_deterministic_and_written_twice(tmp_path):
    a = workloads.images(str(tmp_path / "a"), num_images=30, size=64, num_shards=3, test_fraction=0.2, log=None)
    workloads.images(str(tmp_path / "b"), num_images=30, size=64, num_shards=3, test_fraction=0.2, log=None)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert (a["train"], a["test"]) == (24, 6)
    jpgs = list((tmp_path / "a" / "folder").rglob("*.jpg"))
    assert len(jpgs) == 30 and tf.io.decode_jpeg(jpgs[0].read_bytes()).shape == (64, 64, 3)
    spec = json.loads((tmp_path / "a" / "tfrecord" / "spec.json").read_text())
    assert spec["num_classes"] == 10 and sum(spec["counts"].values()) == 30
    assert len(list((tmp_path / "a" / "tfrecord").glob("train-*.tfrecord"))) == 3


def test_clicks_workload_is_deterministic_with_criteo_columns(tmp_path):
    info = workloads.clicks(str(tmp_path / "a"), rows=500, num_files=3, seed=1, log=None)
    workloads.clicks(str(tmp_path / "b"), rows=500, num_files=3, seed=1, log=None)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    lines = (tmp_path / "a" / "train-00000.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[0] == "label" and len(header) == 40
    assert sum(h.startswith("I") for h in header) == 13 and sum(h.startswith("C") for h in header) == 26
    assert info["train"] == 450 and 0.1 < info["positive_rate"] < 0.9
    assert {len(line.split(",")) for line in lines} == {40}


def test_make_workload_and_make_tfrecords_scripts(tmp_path):
    script("make_workload.py", "clicks", "--out", str(tmp_path / "clicks"), "--rows", "200", "--num_files", "2")
    script("make_tfrecords.py", "--input", str(tmp_path / "clicks" / "train-*.csv"), "--kind", "csv",
           "--out", str(tmp_path / "rec"), "--num_shards", "2")
    cfg = tfpipe.load_config(None, overrides=[
        "data.source=tfrecord", f"data.files.train={tmp_path}/rec/train-*.tfrecord",
        f"data.tfrecord.spec_file={tmp_path}/rec/spec.json"])
    src = sources.load(cfg.data, "train")
    assert src.num_examples == 180
    x, y = next(iter(src.dataset))
    assert x["I2"].dtype == tf.int64 and x["C1"].dtype == tf.string and int(y) in (0, 1)
    script("make_workload.py", "images", "--out", str(tmp_path / "img"), "--num_images", "12", "--size", "32",
           "--num_shards", "2")
    script("make_tfrecords.py", "--input", str(tmp_path / "img" / "folder" / "train"), "--kind", "image_folder",
           "--out", str(tmp_path / "rec2"), "--num_shards", "2")
    assert json.loads((tmp_path / "rec2" / "spec.json").read_text())["num_classes"] == 10


def test_benchmark_input_script_reports_end_to_end_and_every_stage(tmp_path):
    workloads.clicks(str(tmp_path / "clicks"), rows=3000, num_files=2, log=None)
    out = script("benchmark_input.py", "--config", str(ROOT / "configs" / "clicks_widedeep.yaml"),
                 "--batches", "3", "--warmup", "1", "--out", str(tmp_path / "r.json"),
                 "--set", f"data.files.train={tmp_path}/clicks/train-*.csv", "--set", "data.files.test=",
                 "--set", "train.batch_size=64", "--set", "data.shuffle.buffer_size=100")
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["end_to_end"]["examples_per_sec"] > 0
    assert [s["stage"] for s in result["stages"]] == ["read", "shard", "map_before_cache", "cache", "shuffle",
                                                      "repeat", "map", "batch", "prefetch"]
    assert "end to end:" in out.stdout and "after batch" in out.stdout


def _train(tmp_path, config, overrides):
    args = ["--config", str(ROOT / "configs" / config), "--workdir", str(tmp_path / "run")]
    for o in overrides:
        args += ["--set", o]
    script("train.py", *args)
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


@pytest.mark.slow
def test_images_config_trains_end_to_end_on_a_tiny_workload(tmp_path):
    workloads.images(str(tmp_path / "images"), num_images=80, num_shards=2, test_fraction=0.25, log=None)
    rec = tmp_path / "images" / "tfrecord"
    metrics = _train(tmp_path, "images_cnn.yaml", [
        f"data.files.train={rec}/train-*.tfrecord", f"data.files.test={rec}/test-*.tfrecord",
        f"data.tfrecord.spec_file={rec}/spec.json", "train.epochs=1", "train.steps_per_epoch=3",
        "train.batch_size=16", "data.check=full"])
    assert metrics["steps"] == 3 and 0.0 <= metrics["accuracy"] <= 1.0 and metrics["eval_split"] == "test"


@pytest.mark.slow
def test_clicks_config_trains_end_to_end_on_a_tiny_workload(tmp_path):
    workloads.clicks(str(tmp_path / "clicks"), rows=4000, num_files=2, log=None)
    metrics = _train(tmp_path, "clicks_widedeep.yaml", [
        f"data.files.train={tmp_path}/clicks/train-*.csv", f"data.files.test={tmp_path}/clicks/test-*.csv",
        "train.epochs=1", "train.steps_per_epoch=5", "train.batch_size=64"])
    assert metrics["steps"] == 5 and 0.3 <= metrics["accuracy"] <= 1.0

"""Every argument of every preprocessing op is checked at load: one line naming the step and the argument."""

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import tfpipe
from tfpipe.data import preprocess

ROOT = Path(__file__).parents[1]

# A valid step per op (required arguments only, plus what a bad case needs beside it).
VALID = {
    "rescale": {"scale": 0.5},
    "normalize": {"mean": [0.0], "std": [1.0]},
    "log1p": {},
    "reshape": {"shape": [8, 8, 1]},
    "one_hot": {"num_classes": 10},
    "binary_label": {},
    "decode_image": {},
    "decode_crop_jpeg": {"size": 28},
    "resize": {"size": 32},
    "random_crop": {"size": 128},
    "random_flip": {},
    "hash_columns": {"columns": ["C*"], "num_bins": 100},
    "vocab_lookup": {"column": "C1", "vocabulary": ["a", "b"]},
    "drop_missing": {"columns": ["I1"]},
    "fill_missing": {"policy": "constant", "value": 0},
    "pack": {"groups": {"numeric": ["I*"]}},
    "concat_columns": {"columns": ["I*"]},
}

# A wrong value for every argument of every op (wrong type, out of range, wrong shape).
BAD = {
    "rescale": {"scale": "half", "offset": [1], "key": 3},
    "normalize": {"mean": "zero", "std": {}, "key": 1, "stats_examples": 0},
    "log1p": {"key": 5},
    "reshape": {"shape": [0, 2], "key": ""},
    "one_hot": {"num_classes": 0},
    "binary_label": {},
    "decode_image": {"key": 1, "channels": 2},
    "decode_crop_jpeg": {"size": -1, "ratio": 3, "channels": 4, "key": []},
    "resize": {"size": [1, 2, 3], "key": 0, "method": "blurry", "policy": "fit"},
    "random_crop": {"size": "big", "key": 1, "small": "shrink"},
    "random_flip": {"key": True},
    "hash_columns": {"columns": [], "num_bins": 0},
    "vocab_lookup": {"column": "", "vocabulary": ["a", "a"], "num_oov_buckets": 0},
    "drop_missing": {"columns": 5},
    "fill_missing": {"columns": [1], "policy": "median", "value": [1], "means": [1]},
    "pack": {"groups": [], "keep_rest": "yes"},
    "concat_columns": {"columns": {}},
}


def _params(op):
    return [p for p in inspect.signature(preprocess.STEPS[op]).parameters if p != "training"]


def test_the_walk_covers_every_argument_of_every_op():
    assert set(BAD) == set(preprocess.STEPS) == set(VALID)
    for op in preprocess.STEPS:
        assert set(BAD[op]) == set(_params(op)), op


def _load(steps):
    return tfpipe.load_config(overrides=[f"data.map.steps={yaml.safe_dump(steps, default_flow_style=True).strip()}"])


def test_valid_steps_load_and_sizes_take_an_int_or_a_pair():
    _load([{"op": op, **args} for op, args in VALID.items()])
    _load([{"op": "random_crop", "size": [96, 128]}, {"op": "resize", "size": [64, 48], "policy": "pad"}])


CASES = [(op, arg) for op in sorted(BAD) for arg in BAD[op]]


@pytest.mark.parametrize("op,arg", CASES, ids=[f"{op}.{arg}" for op, arg in CASES])
def test_a_wrong_argument_is_one_line_naming_step_and_argument(op, arg):
    step = {"op": op, **VALID[op], arg: BAD[op][arg]}
    with pytest.raises(tfpipe.ConfigError) as e:
        _load([{"op": "rescale", "scale": 1.0}, step])
    msg = str(e.value)
    assert "\n" not in msg
    assert f"data.map.steps[1] ({op}): {arg}: expected " in msg, msg
    assert repr(BAD[op][arg]) in msg


def test_cross_argument_checks():
    with pytest.raises(tfpipe.ConfigError, match=r"steps\[0\] \(normalize\): std: expected as many values as mean"):
        _load([{"op": "normalize", "mean": [0.0, 1.0], "std": [1.0]}])
    with pytest.raises(tfpipe.ConfigError, match=r"steps\[0\] \(fill_missing\): value: expected a number or string"):
        _load([{"op": "fill_missing", "policy": "constant"}])
    with pytest.raises(tfpipe.ConfigError, match=r"steps\[0\] \(fill_missing\): value: only policy: constant"):
        _load([{"op": "fill_missing", "policy": "zero", "value": 3}])
    with pytest.raises(tfpipe.ConfigError, match=r"steps\[0\] \(resize\): missing a required argument: 'size'"):
        _load([{"op": "resize"}])


def test_train_script_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  map:\n    steps:\n      - {op: rescale, scale: 0.0625}\n      - {op: random_crop, size: big}\n")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(bad),
                          "--workdir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: {bad}: data.map.steps[1] (random_crop): size: expected a positive integer or [height, width] "
        "of positive integers, got str 'big'"
    ]
    assert not (tmp_path / "run").exists()

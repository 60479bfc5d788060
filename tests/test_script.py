"""scripts/train.py driven through its flags, as a user runs it."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
MLP = str(ROOT / "configs" / "digits_mlp.yaml")


def train(*args, **kwargs):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        capture_output=True, text=True, timeout=600, check=False, **kwargs,
    )


def test_misspelt_override_exits_nonzero_naming_the_right_key(tmp_path):
    out = train("--config", MLP, "--workdir", str(tmp_path), "--set", "train.epochz=3")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "error: override 'train.epochz=3': unknown key 'train.epochz'; did you mean 'train.epochs'?"
    )
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "config.yaml").exists()


def test_string_for_a_number_in_yaml_exits_nonzero_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(MLP).read_text().replace("epochs: 50", "epochs: fifty"))
    out = train("--config", str(bad), "--workdir", str(tmp_path / "run"))
    assert out.returncode == 2
    assert "train.epochs: expected an integer, got str 'fifty'" in out.stderr
    assert str(bad) in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("overrides, message", [
    # Known only once TensorFlow has the devices: two replicas cannot split 33.
    (["runtime.strategy=mirrored", "runtime.logical_cpus=2", "train.batch_size=33"],
     "error: train.batch_size: expected a multiple of the 2 replicas in sync, got 33"),
    (["optimizer.name=adamz"], "error: optimizer.name: expected a Keras optimizer (adam, sgd, rmsprop, adamw, ...), got 'adamz'"),
    (["train.epochs=[1"], "error: override 'train.epochs=[1': value is not valid YAML: expected ',' or ']', but got '<stream end>'"),
])
def test_errors_found_after_loading_are_one_line_too(tmp_path, overrides, message):
    out = train("--config", MLP, "--workdir", str(tmp_path), *[a for o in overrides for a in ("--set", o)])
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith(message), out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_saved_config_reproduces_the_run(tmp_path):
    first = train("--config", MLP, "--workdir", str(tmp_path / "a"), "--set", "train.epochs=2")
    assert first.returncode == 0, first.stderr[-2000:]
    again = train("--config", str(tmp_path / "a" / "config.yaml"), "--workdir", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr[-2000:]
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert (a["steps"], a["accuracy"], a["loss"]) == (b["steps"], b["accuracy"], b["loss"])
    assert "test accuracy" in first.stdout


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    args = ["--config", MLP, "--workdir", str(tmp_path), "--set", "train.epochs=30", "--set", "train.steps_per_loop=1"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not list((tmp_path / "checkpoints").glob("ckpt-80.index")) and time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-2000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "metrics.json").exists(), "the run finished before it could be killed"

    out = train(*args)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(l for l in out.stdout.splitlines() if "resuming from" in l)
    resumed_at = int(line.split(" at step ")[1].split()[0])
    assert resumed_at >= 80 and resumed_at % 40 == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 1200


def test_every_command_runs_from_python_m_tfpipe_and_lists_its_flags():
    # `python -m tfpipe` is the console command; each command's --help lists its own flags.
    def tfpipe(*args):
        return subprocess.run([sys.executable, "-m", "tfpipe", *args], capture_output=True, text=True, timeout=300,
                              cwd=ROOT.parent, check=False)  # fmt: skip

    listing = tfpipe("--help")
    assert listing.returncode == 0
    for name in ("train", "tune", "export", "serve", "analyze_profile"):
        assert f"\n  {name} " in listing.stdout, listing.stdout
    helps = {"train": "--workdir", "export": "--workdir", "serve": "--max_batch_size"}
    for name, flag in helps.items():
        shown = tfpipe(name, "--help")
        # absl exits 1 after --help (scripts/train.py --help does the same); argparse 0.
        assert shown.returncode in (0, 1) and flag in shown.stdout + shown.stderr, (name, shown.stdout[-2000:])
    wrong = tfpipe("train", "--config", "no_such_config")
    assert wrong.returncode == 2 and wrong.stderr.strip().count("\n") == 0 and "no_such_config" in wrong.stderr
    unknown = tfpipe("trian")
    assert unknown.returncode == 2 and "unknown command 'trian'" in unknown.stderr

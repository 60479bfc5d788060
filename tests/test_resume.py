"""Exact resume: real training processes killed (SIGKILL), preempted (SIGTERM), restarted.

Every case compares the final checkpoint of an interrupted-and-resumed run
with that of an uninterrupted run of the same length: model weights,
optimizer slots and dropout random state must agree to float tolerance.
"""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "train.py")
CONFIG = os.path.join(ROOT, "configs", "digits_mlp.yaml")

STEPS_PER_EPOCH = 40  # ceil(1257 digits training examples / batch 32)
EPOCHS = 4
TOTAL = STEPS_PER_EPOCH * EPOCHS
EVERY = 13  # not a divisor of 40: checkpoints land mid-epoch
# Only the every_steps checkpoints and the final one; 13 steps per loop call.
COMMON = [
    f"train.epochs={EPOCHS}",
    f"checkpoint.every_steps={EVERY}",
    "checkpoint.every_epochs=100",
    "checkpoint.keep=3",
    "data.deterministic=true",
    # Unprofiled: each run here would trace a window (moved earlier on
    # runs this short) and convert it, seconds per process. Profiled
    # training is tests/test_profiling.py's and test_multiworker.py's.
    "profile.enabled=false",
]
# Two replicas on the two logical CPUs conftest.py sets up.
MIRRORED = ["runtime.strategy=mirrored", "runtime.logical_cpus=2"]


def _cmd(workdir, *overrides):
    cmd = [sys.executable, SCRIPT, "--config", CONFIG, "--workdir", str(workdir)]
    for item in (*COMMON, *overrides):
        cmd += ["--set", item]
    return cmd


def _train(workdir, *overrides, expect=0):
    proc = subprocess.run(_cmd(workdir, *overrides), capture_output=True, text=True, timeout=300)
    assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _latest_step(workdir) -> int:
    """The step of the checkpoint the state file names (-1 when none yet)."""
    try:
        with open(os.path.join(workdir, "checkpoints", "checkpoint"), encoding="utf-8") as f:
            m = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', f.read(), re.M)
    except FileNotFoundError:
        return -1
    return int(m.group(1)) if m else -1


def _start_and_wait(workdir, min_step, *overrides):
    """Starts training and returns once a checkpoint at or after `min_step` exists."""
    proc = subprocess.Popen(_cmd(workdir, *overrides), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while _latest_step(workdir) < min_step:
        assert proc.poll() is None, f"training ended before step {min_step}:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.01)
    return proc


def _state(workdir, step):
    """Model, optimizer and random-state tensors of checkpoint `ckpt-<step>`."""
    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints", f"ckpt-{step}"))
    keys = [k for k in reader.get_variable_to_shape_map() if k.startswith(("model/", "optimizer/", "random/"))]
    return {k: reader.get_tensor(k) for k in keys}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    assert any(k.startswith("random/") for k in a), "dropout random state is not checkpointed"
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


def _resumed_from(output) -> int:
    m = re.search(r"resuming from \S+ckpt-(\d+) at step (\d+)", output)
    assert m, output[-3000:]
    return int(m.group(2))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of TOTAL steps: (workdir, final state)."""
    workdir = tmp_path_factory.mktemp("reference")
    _train(workdir)
    return workdir, _state(workdir, TOTAL)


@pytest.fixture(scope="module")
def mirrored_reference(tmp_path_factory):
    """The same under MirroredStrategy, input replayed: (workdir, final state).

    Iterator and replay modes feed each replica the same examples, so one
    reference serves both (checked by the tests that compare against it).
    """
    workdir = tmp_path_factory.mktemp("mirrored_reference")
    _train(workdir, *MIRRORED, "checkpoint.input=replay")
    return workdir, _state(workdir, TOTAL)


def _kill_then_resume(workdir, min_step, *overrides):
    """SIGKILLs a run after its checkpoint at `min_step` or later, restarts it; returns (killed at, output)."""
    proc = _start_and_wait(workdir, min_step, *overrides)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _latest_step(workdir)
    assert 0 < killed_at < TOTAL and not (workdir / "model.keras").exists()
    return killed_at, _train(workdir, *overrides)


@pytest.mark.slow
def test_keep_bounds_checkpoints(reference):
    workdir, _ = reference
    kept = sorted(int(n[5:-6]) for n in os.listdir(workdir / "checkpoints") if n.endswith(".index"))
    # every 13 steps plus the final one, keep=3: the three newest survive.
    assert kept == [143, 156, 160]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(reference, tmp_path):
    killed_at, out = _kill_then_resume(tmp_path, 2 * EVERY)
    assert "input iterator" in out
    step = _resumed_from(out)
    assert step == killed_at and step % STEPS_PER_EPOCH != 0, "resume did not start mid-epoch"
    _assert_same_state(_state(tmp_path, TOTAL), reference[1])


@pytest.mark.slow
def test_mirrored_sigkill_resume_with_input_iterator(mirrored_reference, tmp_path):
    """Two replicas fed by slicing one host batch, whose iterator is in the checkpoint."""
    killed_at, out = _kill_then_resume(tmp_path, 2 * EVERY, *MIRRORED, "checkpoint.input=auto")
    assert "input iterator" in out
    assert _resumed_from(out) == killed_at and killed_at % STEPS_PER_EPOCH != 0
    _assert_same_state(_state(tmp_path, TOTAL), mirrored_reference[1])


@pytest.mark.slow
def test_sigterm_saves_and_exits_then_resume_matches(mirrored_reference, tmp_path):
    """Preemption under MirroredStrategy with the input replayed (rebuilt and skipped) on restart."""
    replay = [*MIRRORED, "checkpoint.input=replay"]
    proc = _start_and_wait(tmp_path, EVERY, *replay)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-3000:]
    m = re.search(r"preempted \(SIGTERM\): stopped at step (\d+), checkpoint \S+ckpt-(\d+)", out)
    assert m and m.group(1) == m.group(2), out[-3000:]
    stopped = int(m.group(1))
    # The checkpoint is written at the loop boundary after the signal, not only on the 13-step schedule.
    assert _latest_step(tmp_path) == stopped < TOTAL

    out = _train(tmp_path, *replay)
    assert _resumed_from(out) == stopped and "input replay" in out
    _assert_same_state(_state(tmp_path, TOTAL), mirrored_reference[1])


@pytest.mark.slow
def test_unreadable_newest_checkpoint_falls_back_to_previous(reference, tmp_path):
    proc = _start_and_wait(tmp_path, 3 * EVERY)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    newest = _latest_step(tmp_path)
    assert newest < TOTAL
    data = tmp_path / "checkpoints" / f"ckpt-{newest}.data-00000-of-00001"
    with open(data, "r+b") as f:  # a torn write: the data file lost its second half
        f.truncate(data.stat().st_size // 2)

    out = _train(tmp_path)
    assert re.search(rf"warning: checkpoint \S+ckpt-{newest} is unreadable", out), out[-3000:]
    assert _resumed_from(out) == newest - EVERY
    _assert_same_state(_state(tmp_path, TOTAL), reference[1])

    # With every checkpoint unreadable the run refuses to start over silently.
    for name in os.listdir(tmp_path / "checkpoints"):
        if ".data-" in name:
            (tmp_path / "checkpoints" / name).write_bytes(b"")
    out = _train(tmp_path, expect=4)
    assert "no checkpoint in" in out and "can be restored" in out, out[-3000:]


def test_pipeline_with_stateful_random_ops_is_replayed_not_saved():
    """tf.data cannot save an iterator over stateful random ops: auto replays, iterator refuses."""
    from tfpipe.train import inputs

    def dataset_fn(ctx):
        ds = tf.data.Dataset.range(64).map(lambda i: tf.cast(i, tf.float32) + tf.random.uniform([]))
        return ds.repeat().batch(8)

    strategy = tf.distribute.get_strategy()
    assert inputs.TrainInput(strategy, "auto", dataset_fn).mode == "replay"
    with pytest.raises(ValueError, match=r"cannot save this pipeline's iterator \(RandomUniform is stateful\)"):
        inputs.TrainInput(strategy, "iterator", dataset_fn)
    plain = lambda ctx: tf.data.Dataset.range(64).repeat().batch(8)  # noqa: E731
    assert inputs.TrainInput(strategy, "auto", plain).mode == "iterator"


def test_iterator_mode_warns_when_the_checkpoint_holds_no_iterator(tmp_path, capsys):
    """A workdir written under replay, resumed under iterator: said, not hidden."""
    from tfpipe.train import inputs

    it = iter(tf.data.Dataset.range(64).repeat().batch(8))
    step = tf.Variable(5, dtype=tf.int64)
    without = tf.train.Checkpoint(step=step).write(str(tmp_path / "replay"))
    with_it = tf.train.Checkpoint(step=step, input=it).write(str(tmp_path / "iterator"))
    inp = inputs.TrainInput(tf.distribute.get_strategy(), "iterator", lambda ctx: tf.data.Dataset.range(8).batch(2))
    inp.start(5, with_it)
    assert "not exact" not in capsys.readouterr().out
    inp.start(5, without)
    assert "holds no input iterator" in capsys.readouterr().out

"""Non-finite loss: the run stops naming the step, or skips the batch, and never saves a bad state."""

import contextlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfpipe
from tfpipe.train import faults
from tfpipe.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAD_RECORD = 100  # with batch 32 and no shuffling: the 4th batch, i.e. step 4
TRAIN_EXAMPLES = 1257  # the digits training split


@pytest.fixture
def digits_with_nan(tmp_path):
    """The digits as an .npz file whose training record BAD_RECORD has NaN pixels (a corrupt record)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(np.int64)
    # The row that the npz source's seeded split puts at position BAD_RECORD of the training split.
    row = sources.split_indices(len(y), 0.1, 0.2, 0)["train"][BAD_RECORD]
    x[row] = np.nan
    path = tmp_path / "digits_with_nan.npz"
    np.savez(path, x=x, y=y)
    return path


# "non-finite loss (nan)" or "non-finite gradients (loss 2.66203)": see below.
NONFINITE = r"non-finite (?:loss \(nan\)|gradients \(loss [\d.]+\))"


def _config(npz_path, *overrides):
    return tfpipe.load_config(
        os.path.join(ROOT, "configs", "digits_mlp.yaml"),
        overrides=[
            "data.source=npz",
            f"data.files.train={npz_path}",
            "data.split.validation=0.1",
            "data.split.test=0.2",
            "data.split.seed=0",
            "data.shuffle.buffer_size=0",  # record 100 lands in a known batch
            "train.epochs=2",
            "checkpoint.every_steps=2",
            # The NaN record is the point here: with the data checks on, preflight
            # would name it before training and the non-finite guard never run.
            "data.check=off",
            *overrides,
        ],
    )


def _checkpoint_steps(workdir):
    return sorted(int(n[5:-6]) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.endswith(".index"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_nan_record_stops_naming_the_step(digits_with_nan, tmp_path, strategy):
    # Under mirrored the NaN record is in replica 0's half of the batch only:
    # the check must combine the replicas' verdicts.
    cfg = _config(digits_with_nan, f"runtime.strategy={strategy}", "runtime.logical_cpus=2", "checkpoint.keep=10")
    tmp_path = tmp_path / "run"
    # Whether the loss itself turns NaN depends on the CPU: Keras cross-entropy
    # clips the predictions, and tf.clip_by_value(NaN) gave a finite value on one
    # machine here and NaN on another. Either way the guard must stop at step 4;
    # with a finite loss only the gradient check catches the batch.
    with pytest.raises(faults.NonFiniteError, match=NONFINITE + r" at step 4; stopping") as err:
        tfpipe.train(cfg, tmp_path)
    assert "ckpt-2" in str(err.value)  # the last good checkpoint is named ...
    assert _checkpoint_steps(tmp_path) == [2]  # ... and nothing was saved after it
    assert not (tmp_path / "model.keras").exists()


@pytest.mark.slow
def test_off_checks_nothing_and_the_nan_spreads(digits_with_nan, tmp_path):
    # train.on_nonfinite: off is `fit`'s behaviour: no per-step check, so the
    # corrupt record's update goes through and the weights end non-finite.
    metrics = tfpipe.train(_config(digits_with_nan, "train.on_nonfinite=off", "train.epochs=1"), tmp_path / "run")
    assert metrics["nonfinite_skipped"] == 0 and metrics["steps"] == 40
    reader = tf.train.load_checkpoint(str(tmp_path / "run" / "checkpoints" / "ckpt-40"))
    weights = [n for n in reader.get_variable_to_shape_map() if n.startswith(("model/", "optimizer/"))]
    assert weights and not all(np.all(np.isfinite(reader.get_tensor(n))) for n in weights)


@pytest.mark.slow
def test_nan_record_skipped_each_epoch(digits_with_nan, tmp_path, capsys):
    cfg = _config(digits_with_nan, "train.on_nonfinite=skip")
    tmp_path = tmp_path / "run"
    metrics = tfpipe.train(cfg, tmp_path)
    out = capsys.readouterr().out
    # The second pass puts record 100 at stream position 1257 + 100: batch 42, step 43.
    second = (TRAIN_EXAMPLES + BAD_RECORD) // 32 + 1
    skipped = [int(s) for s in re.findall(NONFINITE + r" at step (\d+): batch skipped", out)]
    assert skipped == [BAD_RECORD // 32 + 1, second]
    assert metrics["nonfinite_skipped"] == 2 and metrics["steps"] == 80
    reader = tf.train.load_checkpoint(str(tmp_path / "checkpoints" / "ckpt-80"))
    for name in reader.get_variable_to_shape_map():
        if name.startswith(("model/", "optimizer/")):
            assert np.all(np.isfinite(reader.get_tensor(name))), name
    # It kept learning around the bad batches (chance is 0.1; two epochs reach about 0.45).
    assert np.isfinite(metrics["loss"]) and metrics["accuracy"] > 0.3


@pytest.mark.slow
def test_skip_gives_up_after_max_skipped_steps(digits_with_nan, tmp_path):
    cfg = _config(digits_with_nan, "train.on_nonfinite=skip", "train.max_skipped_steps=1")
    tmp_path = tmp_path / "run"
    with pytest.raises(faults.NonFiniteError, match=r"at step 43; stopping \(2 batches skipped, more than"):
        tfpipe.train(cfg, tmp_path)


@pytest.mark.slow
def test_huge_learning_rate_exits_with_code_3_keeping_last_good_checkpoint(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--config",
           os.path.join(ROOT, "configs", "digits_mlp.yaml"), "--workdir", str(tmp_path)]
    for item in ("optimizer.name=sgd", "optimizer.learning_rate=100.0", "train.epochs=2",
                 "checkpoint.every_steps=5", "checkpoint.keep=10"):
        cmd += ["--set", item]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == faults.EXIT_NONFINITE, proc.stdout[-2000:] + proc.stderr[-2000:]
    m = re.search(r"non-finite (loss|gradients) .*at step (\d+); stopping.*last good checkpoint: (\S+)ckpt-(\d+)\.",
                  proc.stderr)
    assert m, proc.stderr[-2000:]
    bad, good = int(m.group(2)), int(m.group(4))
    assert _checkpoint_steps(tmp_path)[-1] == good < bad
    reader = tf.train.load_checkpoint(str(tmp_path / "checkpoints" / f"ckpt-{good}"))
    # Keras weights are stored once, under the optimizer's tracked copy (the shallower path).
    weights = [n for n in reader.get_variable_to_shape_map() if n.startswith(("model/", "optimizer/"))]
    assert len(weights) > 6
    for name in weights:
        assert np.all(np.isfinite(reader.get_tensor(name))), name


@pytest.mark.parametrize("policy, reported", [("stop", 3), ("skip", 7)])
def test_verdict_across_calls_keeps_first_bad_step_under_stop_and_latest_under_skip(policy, reported):
    # Several loop calls can run before Python reads the verdict back. Two
    # calls here, each with one bad step (the 3rd and the 7th): "stop" must
    # report the first, "skip" the latest, and both count two.
    guard = faults.NonFiniteGuard(policy, max_skipped=10)
    strategy = tf.distribute.get_strategy()

    @tf.function
    def loop_call(start, losses):
        verdict = guard.token()
        for i in range(4):
            loss = losses[i]
            flags = guard.flags(loss, [tf.ones([2]) * loss])
            _, verdict = guard.check(strategy, start + i, loss, flags, verdict)
        guard.flush(verdict)

    bad = float("nan")
    loop_call(tf.constant(0), tf.constant([1.0, 1.0, bad, 1.0]))
    loop_call(tf.constant(4), tf.constant([1.0, 1.0, float("inf"), 1.0]))
    assert int(guard.skipped) == 2
    assert int(guard.last_bad_step) == reported
    with pytest.raises(faults.NonFiniteError, match=rf"at step {reported}; stopping") if policy == "stop" else contextlib.nullcontext():
        guard.after_loop("ckpt-0")


def test_flags_read_an_embeddings_sparse_gradient():
    guard = faults.NonFiniteGuard("stop", max_skipped=0)

    def sparse(value):
        return tf.IndexedSlices(tf.constant([[value, 1.0]]), tf.constant([2]), tf.constant([5, 2]))

    assert float(guard.flags(tf.constant(0.5), [sparse(3.0), None, tf.ones([3])])) == 0.0
    assert not np.isfinite(float(guard.flags(tf.constant(0.5), [sparse(float("nan")), tf.ones([3])])))
    assert not np.isfinite(float(guard.flags(tf.constant(float("inf")), [tf.ones([3])])))

"""data.in_graph: the training split held as tensors, batches gathered inside the step.

Checked: each epoch is a permutation of the split (seeded, reshuffled or
not), a resumed run takes the same batches as an uninterrupted one, the
mirrored strategy trains as the default one does, and steps that cannot run
once (random ones) are refused at load.
"""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfpipe
from tfpipe.train import inputs

ROOT = Path(__file__).resolve().parent.parent
MLP = str(ROOT / "configs" / "digits_mlp.yaml")
QUICK = ["data.in_graph=true", "profile.enabled=false", "checkpoint.every_epochs=1"]


def _input(n=10, batch=5, shuffle="{buffer_size: 16, seed: 3}", strategy=None, stamped=False):
    cfg = tfpipe.load_config(MLP, overrides=[f"data.shuffle={shuffle}"])
    x = np.arange(n, dtype=np.float32)[:, None]  # example i holds the value i
    data = tf.data.Dataset.from_tensor_slices((x, np.arange(n))).batch(4)
    return inputs.InGraphInput(strategy or tf.distribute.get_strategy(), lambda: data, cfg.data,
                               steps_per_epoch=-(-n // batch), global_batch=batch, stamped=stamped)  # fmt: skip


def _batches(data, count):
    fetch = tf.function(lambda: data.next_batch(None))
    return [fetch()[1].numpy().tolist() for _ in range(count)]


@pytest.mark.parametrize("reshuffle", [True, False])
def test_every_epoch_is_a_seeded_permutation(reshuffle):
    shuffle = f"{{buffer_size: 16, seed: 3, reshuffle_each_iteration: {str(reshuffle).lower()}}}"
    data = _input(shuffle=shuffle)
    data.start(0)
    epochs = [sum(_batches(data, 2), []) for _ in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(10)), order
    assert epochs[0] != list(range(10))  # shuffled
    assert (epochs[0] != epochs[1]) == reshuffle, epochs
    again = _input(shuffle=shuffle)
    again.start(0)
    assert sum(_batches(again, 2), []) == epochs[0]  # the seed fixes the order


def test_no_shuffle_keeps_the_order_and_the_last_batch_wraps():
    data = _input(n=7, batch=3, shuffle="{buffer_size: 0}")
    data.start(0)
    # 3 steps an epoch: the last takes example 6, then 0 and 1 again.
    assert _batches(data, 4) == [[0, 1, 2], [3, 4, 5], [6, 0, 1], [0, 1, 2]]


def test_start_positions_at_the_step():
    data = _input()
    data.start(0)
    run = _batches(data, 5)
    later = _input()
    later.start(3)
    assert _batches(later, 2) == run[3:5]


def test_stamped_batches_and_mirrored_slices():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    data = _input(strategy=strategy, stamped=True, batch=4, n=8)
    data.start(0)
    (x, y), ready = tf.function(lambda: data.next_batch(None))()
    parts = [t.numpy().tolist() for t in strategy.experimental_local_results(y)]
    assert len(parts) == 2 and sorted(parts[0] + parts[1]) == sorted(set(parts[0] + parts[1])), parts
    assert float(ready) == 0.0  # always ready: nothing is made ahead of the step


def test_resumed_run_takes_the_same_batches(tmp_path):
    whole = tfpipe.train(tfpipe.load_config(MLP, overrides=[*QUICK, "train.epochs=4"]), tmp_path / "whole")
    tfpipe.train(tfpipe.load_config(MLP, overrides=[*QUICK, "train.epochs=2"]), tmp_path / "split")
    resumed = tfpipe.train(tfpipe.load_config(MLP, overrides=[*QUICK, "train.epochs=4"]), tmp_path / "split")
    assert resumed["steps"] == whole["steps"] == 160
    assert resumed["weights_sha256"] == whole["weights_sha256"]


def test_mirrored_trains_as_default(tmp_path):
    # No dropout: each replica draws its own masks, so with it the two runs
    # drift apart by chance (2.8 points at 10 epochs here); without it both
    # compute the same sums in another order.
    common = [*QUICK, "train.epochs=10", "model.params.dropout=0.0"]
    runs = {
        s: tfpipe.train(tfpipe.load_config(MLP, overrides=[*common, f"runtime.strategy={s}"]), tmp_path / s)
        for s in ("default", "mirrored")
    }
    assert runs["default"]["accuracy"] > 0.85, runs["default"]
    assert abs(runs["default"]["accuracy"] - runs["mirrored"]["accuracy"]) <= 0.006, runs
    assert abs(runs["default"]["loss"] - runs["mirrored"]["loss"]) <= 1e-3, runs


def test_random_steps_and_multi_host_strategies_are_refused_at_load():
    with pytest.raises(tfpipe.ConfigError, match=r"data.in_graph: .*deterministic.*'decode_crop_jpeg'"):
        tfpipe.load_config(str(ROOT / "configs" / "images_cnn.yaml"), overrides=["data.in_graph=true"])
    for strategy in ("multi_worker_mirrored", "parameter_server"):
        with pytest.raises(tfpipe.ConfigError, match=rf"data.in_graph: needs a single-host strategy .*'{strategy}'"):
            tfpipe.load_config(str(ROOT / "configs" / "digits_mlp.yaml"),
                               overrides=["data.in_graph=true", f"runtime.strategy={strategy}"])


def test_clicks_wide_deep_trains_in_graph(tmp_path, monkeypatch):
    # Dict features, hashed columns and embeddings, the input-wait timer on.
    # (On the full workload, 882k rows at batch 512, TF 2.21's arithmetic
    # optimizer broke this loop with an AlreadyExistsError until in_graph
    # turned that rewrite off; at this test's size it did not reproduce.)
    from tfpipe.data import workloads

    workloads.clicks(str(tmp_path / "data" / "clicks"), rows=6000, num_files=2, seed=0, log=None)
    monkeypatch.chdir(tmp_path)  # the config's data/clicks/... paths
    cfg = tfpipe.load_config(str(ROOT / "configs" / "clicks_widedeep.yaml"), overrides=[
        *QUICK, "train.epochs=2", "train.steps_per_loop=50", "train.batch_size=64", "model.params.num_bins=1000",
    ])  # fmt: skip
    result = tfpipe.train(cfg, tmp_path / "run")
    assert result["steps"] > 0 and 0.0 <= result["accuracy"] <= 1.0

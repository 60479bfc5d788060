"""The training loop end to end, in-process, under both strategies."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

import tfpipe
from tfpipe.profile import summaries

MLP = Path(__file__).parents[1] / "configs" / "digits_mlp.yaml"


def short(strategy, epochs=2, **extra):
    # No profile: on a run this short the window (moved earlier) would cover
    # every timed step, and profiled steps do not count as throughput.
    overrides = [f"train.epochs={epochs}", f"runtime.strategy={strategy}", "train.steps_per_loop=16", "profile.enabled=false"]
    return tfpipe.load_config(MLP, overrides=overrides + [f"{k}={v}" for k, v in extra.items()])


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_a_short_run_writes_the_whole_workdir(tmp_path, strategy):
    metrics = tfpipe.train(short(strategy), tmp_path)

    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert set(metrics) >= {"accuracy", "loss", "examples_per_sec", "epochs", "steps"}
    assert metrics["steps"] == 2 * 40 and metrics["epochs"] == 2  # 1257 train examples / 32 -> 40 steps
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["examples_per_sec"] > 0
    assert tfpipe.load_config(tmp_path / "config.yaml") == short(strategy)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*.index")) == ["ckpt-40.index", "ckpt-80.index"]

    train = summaries.read_scalars(tmp_path / "logs" / "train")
    assert set(train) >= {"loss", "accuracy", "learning_rate", "examples_per_sec"}
    assert [s for s, _ in train["loss"]] == [40, 80]
    assert np.isclose(train["learning_rate"][-1][1], 1e-3)
    assert set(summaries.read_scalars(tmp_path / "logs" / "validation")) >= {"loss", "accuracy"}

    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.predict(np.zeros((3, 64), "float32"), verbose=0).shape == (3, 10)


def test_rerun_in_the_same_workdir_resumes_instead_of_restarting(tmp_path, capsys):
    tfpipe.train(short("default", epochs=1), tmp_path)
    metrics = tfpipe.train(short("default", epochs=3), tmp_path)
    assert "resuming from" in capsys.readouterr().out
    assert metrics["steps"] == 120
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*.index")) == [
        "ckpt-120.index", "ckpt-40.index", "ckpt-80.index"]


def test_batch_that_does_not_split_across_replicas_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"train.batch_size: expected a multiple of the 2 replicas"):
        tfpipe.train(short("mirrored", **{"train.batch_size": 33}), tmp_path)


@pytest.mark.slow
def test_mirrored_and_default_reach_the_same_accuracy(tmp_path):
    """The full seed config (50 epochs) under both strategies: within 1 point."""
    default = tfpipe.train(tfpipe.load_config(MLP), tmp_path / "default")
    mirrored = tfpipe.train(tfpipe.load_config(MLP, overrides=["runtime.strategy=mirrored"]), tmp_path / "mirrored")
    assert default["accuracy"] >= 0.95, default
    assert abs(default["accuracy"] - mirrored["accuracy"]) <= 0.01, (default, mirrored)

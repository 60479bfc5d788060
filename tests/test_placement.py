"""Model parallelism inside one replica (runtime.placement): a model cut into stages on two logical CPUs."""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfpipe
from tfpipe.train import placement

ROOT = Path(__file__).parents[1]
# The digits MLP without dropout (deterministic): Input, Dense 64, Dropout, Dense 32, Dropout, Dense 10.
MLP = ["model.params={hidden_units: [64, 32], dropout: 0.0}", "train.epochs=2", "profile.enabled=false",
       "runtime.logical_cpus=2", "train.steps_per_loop=10"]
SPLIT = "runtime.placement={devices: [/cpu:0, /cpu:1], split_after: [2]}"


def _weights(run_dir):
    return keras.saving.load_model(run_dir / "model.keras").get_weights()


def test_split_model_trains_to_the_unsplit_weights(tmp_path):
    cfg = tfpipe.load_config(str(ROOT / "configs" / "digits_mlp.yaml"), overrides=MLP)
    whole = tfpipe.train(cfg, tmp_path / "whole")
    split = tfpipe.train(tfpipe.load_config(str(ROOT / "configs" / "digits_mlp.yaml"), overrides=[*MLP, SPLIT]),
                         tmp_path / "split")
    piped = tfpipe.train(tfpipe.load_config(
        str(ROOT / "configs" / "digits_mlp.yaml"),
        overrides=[*MLP, SPLIT.replace("}", ", micro_batches: 4}")]), tmp_path / "piped")
    assert whole["steps"] == split["steps"] == piped["steps"]
    for other in ("split", "piped"):
        for a, b in zip(_weights(tmp_path / "whole"), _weights(tmp_path / other), strict=True):
            np.testing.assert_allclose(a, b, atol=2e-4, err_msg=other)
    assert abs(whole["accuracy"] - split["accuracy"]) <= 0.003 and abs(whole["accuracy"] - piped["accuracy"]) <= 0.003


def test_each_stage_runs_and_differentiates_on_its_device():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="relu", name="first")(inputs)
    x = keras.layers.Dense(16, activation="relu", name="second")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(x))
    cfg = tfpipe.load_config(None, ["runtime.placement={devices: [/cpu:0, /cpu:1], split_after: [first]}"])
    before = model.get_weights()
    chained, stages = placement.split(model, cfg.runtime.placement)
    # The same weights, now created on each stage's device.
    for a, b in zip(before, chained.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    devices = [{v.value.device for v in m.weights} for m in stages.models]
    assert devices == [{"/job:localhost/replica:0/task:0/device:CPU:0"}, {"/job:localhost/replica:0/task:0/device:CPU:1"}]
    x, y = tf.random.normal((4, 8)), tf.constant([0, 1, 2, 0])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step():
        loss = loss_fn(y, stages(x, training=True))
        return stages.gradients(loss, chained.trainable_variables)

    graph = step.get_concrete_function().graph
    placed = {op.name: op.device for op in graph.get_operations() if op.type == "MatMul" and "grad" in op.name}
    assert placed, [op.name for op in graph.get_operations()][:50]
    for name, device in placed.items():
        want = "CPU:0" if "stage0" in name else "CPU:1"
        assert device.endswith(want), (name, device)
    assert any("stage0" in n for n in placed) and any("stage1" in n for n in placed)
    # And the gradients are the unsplit model's.
    with tf.GradientTape() as tape:
        loss = loss_fn(y, chained(x))
    want = tape.gradient(loss, chained.trainable_variables)
    for a, b in zip(want, step(), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_bad_placements_are_one_line_errors(tmp_path):
    digits = str(ROOT / "configs" / "digits_mlp.yaml")
    with pytest.raises(tfpipe.ConfigError, match=r"runtime.placement: expected at least 2 devices"):
        tfpipe.load_config(digits, ["runtime.placement={devices: [/cpu:0, /cpu:1]}"])
    with pytest.raises(tfpipe.ConfigError, match=r"runtime.placement: splits the model of one replica"):
        tfpipe.load_config(digits, [SPLIT, "runtime.strategy=mirrored"])
    with pytest.raises(tfpipe.ConfigError, match=r"micro_batches: 5 must divide train.batch_size 32"):
        tfpipe.load_config(digits, [SPLIT.replace("}", ", micro_batches: 5}")])
    with pytest.raises(tfpipe.ConfigError, match=r"no layer 'nope' in model 'mlp'; its layers: "):
        tfpipe.train(tfpipe.load_config(digits, [*MLP, SPLIT.replace("[2]", "[nope]")]), tmp_path / "a")
    with pytest.raises(tfpipe.ConfigError, match=r"runtime.placement.devices: no device '/gpu:0' here"):
        tfpipe.train(tfpipe.load_config(digits, [*MLP, SPLIT.replace("/cpu:1", "/gpu:0")]), tmp_path / "b")

"""Strategies from config: construction, missing hardware, batch and learning-rate
arithmetic, mixed precision and XLA running real steps (two logical CPUs)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfpipe
from tfpipe import config as config_lib
from tfpipe.distribute import strategies


def runtime(**kw):
    return config_lib.load(None, [f"runtime.{k}={v}" for k, v in kw.items()]).runtime


@pytest.fixture(autouse=True)
def no_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)


@pytest.mark.parametrize(
    "name, replicas, cls",
    [
        ("default", 1, None),
        ("one_device", 1, tf.distribute.OneDeviceStrategy),
        ("mirrored", 2, tf.distribute.MirroredStrategy),
    ],
)
def test_local_strategies(name, replicas, cls):
    strategy = strategies.make_strategy(runtime(strategy=name, logical_cpus=2))
    assert strategy.num_replicas_in_sync == replicas
    if cls is not None:
        assert isinstance(strategy, cls)


def test_unknown_strategy_is_a_config_error():
    with pytest.raises(tfpipe.ConfigError, match=r"runtime.strategy: expected one of .*multi_worker_mirrored.*got 'mirored'.*did you mean 'mirrored'"):
        runtime(strategy="mirored")


@pytest.mark.parametrize("name", ["default", "one_device", "mirrored", "multi_worker_mirrored"])
def test_gpu_request_without_gpu_names_what_is_missing(name):
    assert not tf.config.list_physical_devices("GPU")  # this machine has none
    with pytest.raises(strategies.StrategyError, match=r"runtime.device=gpu .*no GPU"):
        strategies.make_strategy(runtime(strategy=name, device="gpu"))


def test_tpu_without_tpu_names_what_is_missing():
    with pytest.raises(strategies.StrategyError, match=r"strategy=tpu: no TPU reachable .*has CPU only"):
        strategies.make_strategy(runtime(strategy="tpu"))


def test_parameter_server_without_cluster_says_what_to_run():
    with pytest.raises(strategies.StrategyError, match=r"needs TF_CONFIG with 'chief', 'worker' and 'ps'.*launch_local.py"):
        strategies.make_strategy(runtime(strategy="parameter_server"))


def test_bad_tf_config_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(strategies.StrategyError, match="TF_CONFIG: expected JSON"):
        strategies.current_task()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}))
    with pytest.raises(strategies.StrategyError, match=r"task worker:3 is not in the cluster"):
        strategies.current_task()


@pytest.mark.parametrize(
    "cluster, task, chief",
    [
        ({"worker": ["a:1", "b:2"]}, ("worker", 0), True),
        ({"worker": ["a:1", "b:2"]}, ("worker", 1), False),
        ({"chief": ["c:0"], "worker": ["a:1"], "ps": ["p:1"]}, ("chief", 0), True),
        ({"chief": ["c:0"], "worker": ["a:1"], "ps": ["p:1"]}, ("worker", 0), False),
    ],
)
def test_only_the_chief_writes_into_the_workdir(monkeypatch, tmp_path, cluster, task, chief):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": task[0], "index": task[1]}}))
    assert strategies.current_task().is_chief is chief
    out = strategies.output_dir(tmp_path)
    assert (out == tmp_path) is chief
    strategies.cleanup_output_dir(out, tmp_path)
    assert tmp_path.exists()
    if not chief:
        assert not tf.io.gfile.exists(str(out))


def test_linear_lr_scaling_and_the_logged_effective_values():
    strategy = strategies.make_strategy(runtime(strategy="mirrored", logical_cpus=2))
    linear = runtime(strategy="mirrored", lr_scaling="linear")
    assert strategies.learning_rate(0.01, linear, strategy) == pytest.approx(0.02)
    assert strategies.learning_rate(0.01, runtime(strategy="mirrored"), strategy) == pytest.approx(0.01)
    line = strategies.describe(strategy, 64, linear, 0.02)
    for part in ("2 replica(s)", "global batch 64", "per-replica batch 32", "learning rate 0.02 (lr_scaling linear)"):
        assert part in line
    with pytest.raises(ValueError, match="train.batch_size: expected a multiple of the 2 replicas"):
        strategies.check_batch(33, strategy)


def _train(tmp_path, *overrides):
    cfg = tfpipe.load_config(
        "configs/digits_mlp.yaml",
        overrides=[
            "train.epochs=1",
            "train.steps_per_epoch=20",
            "train.steps_per_loop=10",
            "runtime.strategy=mirrored",
            "runtime.logical_cpus=2",
            "optimizer.learning_rate=0.01",  # learn something in 20 steps
            *overrides,
        ],
    )
    metrics = tfpipe.train(cfg, tmp_path)
    return metrics, keras.saving.load_model(tmp_path / "model.keras")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_in_16_bits(tmp_path, policy):
    before = keras.mixed_precision.dtype_policy().name
    metrics, model = _train(tmp_path, f"runtime.mixed_precision={policy}")
    assert np.isfinite(metrics["loss"]) and metrics["accuracy"] > 0.5  # 10 classes: chance is 0.1
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert dense and all(layer.dtype_policy.name == policy for layer in dense)
    assert all(w.dtype == "float32" for w in model.weights)  # variables stay float32
    assert keras.mixed_precision.dtype_policy().name == before  # the global policy is put back


def test_float16_gets_loss_scaling_bfloat16_does_not():
    opt = keras.optimizers.Adam()
    assert isinstance(strategies.wrap_optimizer(opt, runtime(mixed_precision="mixed_float16")), keras.optimizers.LossScaleOptimizer)
    assert strategies.wrap_optimizer(opt, runtime(mixed_precision="mixed_bfloat16")) is opt


def test_jit_compile_trains_like_the_uncompiled_step(tmp_path):
    # Without dropout the two runs draw no random numbers after the (seeded)
    # initialisation; same data, same steps: XLA only reorders float arithmetic.
    plain, _ = _train(tmp_path / "plain", "model.params.dropout=0.0")
    jit, _ = _train(tmp_path / "jit", "model.params.dropout=0.0", "runtime.jit_compile=true")
    assert jit["loss"] == pytest.approx(plain["loss"], rel=1e-3)
    assert jit["accuracy"] == pytest.approx(plain["accuracy"], abs=0.01)


@pytest.mark.parametrize("jit", [True, False])
def test_jit_compile_reaches_xla(tmp_path, jit):
    import os
    import subprocess
    import sys

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0")  # XLA reports compilation at INFO
    cmd = [sys.executable, "scripts/train.py", "--config", "configs/digits_mlp.yaml", "--workdir", str(tmp_path)]
    cmd += ["--set", "train.epochs=1", "--set", "train.steps_per_epoch=5", "--set", f"runtime.jit_compile={str(jit).lower()}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=True)
    assert ("Compiled cluster using XLA" in out.stderr + out.stdout) is jit


def _all_reduce_sum(strategy, size):
    @tf.function
    def step():
        def replica_fn():
            value = tf.ones([size])
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)

        return strategy.run(replica_fn)

    return strategy.experimental_local_results(step())[0].numpy()


def test_a_users_own_mirrored_strategy_does_not_clash_with_tfpipes(tmp_path):
    # tfpipe moves its strategies' all-reduce keys away from TF's default
    # range and leaves the class as it found it, so a MirroredStrategy the
    # user builds in the same notebook keeps TF's numbering and cannot meet
    # tfpipe's shapes.
    ours = strategies.make_strategy(runtime(strategy="mirrored", logical_cpus=2))
    np.testing.assert_array_equal(_all_reduce_sum(ours, 3), [2.0] * 3)
    assert tf.distribute.MirroredStrategy._collective_key_base == 0  # pylint: disable=protected-access
    theirs = tf.distribute.MirroredStrategy(devices=[d.name for d in tf.config.list_logical_devices("CPU")])
    np.testing.assert_array_equal(_all_reduce_sum(theirs, 5), [2.0] * 5)


def test_two_mirrored_runs_with_different_models_in_one_process(tmp_path):
    # A notebook trains one model, then another, in the same kernel. Each
    # MirroredStrategy used to number its all-reduces from the same keys, and
    # the second model's gradients clashed with the first's shapes
    # ("Shape mismatch in the collective instance 100"). The CNN's test split
    # also ends in a batch that leaves one replica empty, which
    # BatchNormalization cannot take.
    for name in ("digits_cnn", "digits_mlp"):
        cfg = tfpipe.load_config(
            f"configs/{name}.yaml",
            overrides=["train.epochs=1", "train.steps_per_epoch=4", "runtime.strategy=mirrored", "runtime.logical_cpus=2"],
        )
        metrics = tfpipe.train(cfg, tmp_path / name)
        assert metrics["steps"] == 4 and np.isfinite(metrics["loss"])

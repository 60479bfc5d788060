"""The fused Adam update (tfpipe/train/optimizers.py) against Keras's own."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfpipe
from tfpipe.distribute import strategies
from tfpipe.train import optimizers


def _train(optimizer, steps, strategy=None):
    """`steps` Adam steps on a fixed regression problem; the weights and the optimizer's variables after them."""
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
        optimizer.build(model.trainable_variables)
    x = tf.random.stateless_normal((64, 8), seed=(1, 2))
    y = tf.random.stateless_normal((64, 3), seed=(3, 4))

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(tf.reduce_sum((model(x) - y) ** 2, axis=1), global_batch_size=64)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    @tf.function
    def step():
        n = strategy.num_replicas_in_sync
        per_replica = strategy.experimental_distribute_values_from_function(
            lambda ctx: (
                x[ctx.replica_id_in_sync_group * 64 // n : (ctx.replica_id_in_sync_group + 1) * 64 // n],
                y[ctx.replica_id_in_sync_group * 64 // n : (ctx.replica_id_in_sync_group + 1) * 64 // n],
            )
        )
        strategy.run(replica_step, args=per_replica)

    for _ in range(steps):
        step()
    return [w.numpy() for w in model.weights], [v.numpy() for v in optimizer.variables], step, model


@pytest.mark.parametrize("fused, reference", [(optimizers.FusedAdam, keras.optimizers.Adam),
                                              (optimizers.FusedAdamW, keras.optimizers.AdamW)])
def test_fused_update_matches_keras(fused, reference):
    weights, slots, step, _ = _train(fused(learning_rate=1e-2), 30)
    want_weights, want_slots, _, _ = _train(reference(learning_rate=1e-2), 30)
    # Same formula; the kernel rounds 1 - beta in float32 where Keras rounds
    # it in float64, so agreement is close, not bit for bit.
    for got, want in zip(weights + slots, want_weights + want_slots):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert int(slots[0]) == 30  # the iteration count moved as Keras's does
    # The fused kernel is really what ran.
    graph = step.get_concrete_function().graph.as_graph_def()
    ops = {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}
    assert "ResourceApplyAdam" in ops


def test_fused_update_under_mirrored_keeps_replicas_equal():
    # The strategy as tfpipe builds it for training.
    strategy = strategies.make_strategy(
        tfpipe.load_config(None, overrides=["runtime.strategy=mirrored", "runtime.logical_cpus=2"]).runtime
    )
    with strategy.scope():
        optimizer = optimizers.FusedAdam(learning_rate=1e-2)
    weights, _, _, _ = _train(optimizer, 10, strategy)
    want, _, _, _ = _train(keras.optimizers.Adam(learning_rate=1e-2), 10)
    for got, expected in zip(weights, want):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    # Each device's copy got the same update.
    for variable in optimizer.variables:
        copies = [v.numpy() for v in strategy.experimental_local_results(variable.value)]
        np.testing.assert_array_equal(copies[0], copies[1])


def test_amsgrad_uses_keras_update_bit_for_bit():
    weights, _, _, _ = _train(optimizers.FusedAdam(learning_rate=1e-2, amsgrad=True), 10)
    want, _, _, _ = _train(keras.optimizers.Adam(learning_rate=1e-2, amsgrad=True), 10)
    for got, expected in zip(weights, want):
        np.testing.assert_array_equal(got, expected)


def test_config_chooses_the_optimizer():
    def built(*overrides):
        return optimizers.build(tfpipe.load_config(None, overrides=list(overrides)).optimizer, 1e-3)

    assert type(built()) is optimizers.FusedAdam
    assert type(built("optimizer.fused=false")) is keras.optimizers.Adam
    assert type(built("optimizer.name=adamw")) is optimizers.FusedAdamW
    assert type(built("optimizer.name=sgd")) is keras.optimizers.SGD  # no fused kernel: Keras's
    with pytest.raises(tfpipe.ConfigError, match=r"optimizer.name: expected a Keras optimizer.*'adamm'"):
        built("optimizer.name=adamm")


def test_checkpoint_of_keras_adam_restores_into_fused(tmp_path):
    # The slots are Keras's own, so a run can switch optimizer.fused and resume.
    source = keras.optimizers.Adam(learning_rate=1e-2)
    _, slots, _, model = _train(source, 5)
    path = tf.train.Checkpoint(optimizer=source).write(str(tmp_path / "ckpt"))
    target = optimizers.FusedAdam(learning_rate=1e-2)
    target.build(model.trainable_variables)
    tf.train.Checkpoint(optimizer=target).read(path).assert_consumed()
    assert len(target.variables) == len(slots)
    for got, want in zip(target.variables, slots):
        np.testing.assert_array_equal(got.numpy(), want)


def test_sparse_embedding_gradient_takes_keras_update_exactly():
    # An embedding's gradient is IndexedSlices, which ResourceApplyAdam does
    # not take: FusedAdam hands it to Keras's update, so with only the
    # embedding trainable the weights match Keras's Adam bit for bit.
    def train(optimizer):
        keras.utils.set_random_seed(0)
        head = keras.layers.Dense(1, trainable=False)
        model = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(50, 8), keras.layers.Flatten(), head])
        optimizer.build(model.trainable_variables)
        x = tf.random.stateless_uniform((16, 4), seed=(1, 2), maxval=50, dtype=tf.int32)
        y = tf.random.stateless_normal((16, 1), seed=(3, 4))
        kinds = []

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((model(x) - y) ** 2)
            grads = tape.gradient(loss, model.trainable_variables)
            kinds[:] = [type(g) for g in grads]
            optimizer.apply_gradients(zip(grads, model.trainable_variables))

        for _ in range(5):
            step()
        return model.get_weights(), kinds

    got, kinds = train(optimizers.FusedAdam(learning_rate=1e-2))
    want, _ = train(keras.optimizers.Adam(learning_rate=1e-2))
    assert kinds == [tf.IndexedSlices]
    assert not np.array_equal(got[0], train(optimizers.FusedAdam(learning_rate=1e-3))[0][0])  # it trained
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)

"""The input pipeline: shapes, per-replica batch, sharding, order."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfpipe
from tfpipe.data import pipeline, sources


MLP = Path(__file__).parents[1] / "configs" / "digits_mlp.yaml"


@pytest.fixture(name="cfg")
def _cfg():
    return tfpipe.load_config(MLP)


def test_training_batches_have_static_shapes(cfg):
    ds = pipeline.build(cfg.data, "train", 32, training=True)
    features, labels = ds.element_spec
    assert features.shape.as_list() == [32, 64] and features.dtype == tf.float32
    assert labels.shape.as_list() == [32, 10]
    x, y = next(iter(ds))
    assert float(tf.reduce_max(x)) <= 1.0 and np.allclose(tf.reduce_sum(y, axis=1), 1.0)


def test_per_replica_batch_under_two_replicas(cfg):
    ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    ds = pipeline.build(cfg.data, "train", 32, ctx, training=True)
    assert ds.element_spec[0].shape.as_list() == [16, 64]


def test_evaluation_is_one_ordered_pass_with_the_last_partial_batch(cfg):
    n = sources.load(cfg.data, "test").num_examples
    batches = list(pipeline.build(cfg.data, "test", 32, training=False))
    assert sum(int(x.shape[0]) for x, _ in batches) == n
    again = list(pipeline.build(cfg.data, "test", 32, training=False))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))


def test_input_pipelines_read_disjoint_shards(cfg):
    seen = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid, num_replicas_in_sync=2)
        ds = pipeline.build(cfg.data, "test", 2, ctx, training=False)
        seen.append({x.numpy().tobytes() for xb, _ in ds for x in xb})
    total = sources.load(cfg.data, "test").num_examples
    assert not seen[0] & seen[1]
    assert len(seen[0]) + len(seen[1]) >= total - 2  # digits has a few duplicate images


def test_shuffle_order_is_fixed_by_the_seed(cfg):
    def first_batch(c):
        return next(iter(pipeline.build(c.data, "train", 32, training=True)))[0].numpy()

    assert np.array_equal(first_batch(cfg), first_batch(cfg))
    reseeded = tfpipe.load_config(MLP, overrides=["data.shuffle.seed=1"])
    assert not np.array_equal(first_batch(cfg), first_batch(reseeded))


def test_splits_are_disjoint_and_fixed(cfg):
    parts = {s: sources.load(cfg.data, s) for s in ("train", "validation", "test")}
    assert sum(p.num_examples for p in parts.values()) == 1797
    assert parts["train"].num_classes == 10

    def rows(split, c=cfg):
        return {x.tobytes() for x, _ in sources.load(c.data, split).dataset.as_numpy_iterator()}

    train, val, test = rows("train"), rows("validation"), rows("test")
    assert not (train & val) and not (train & test) and not (val & test)  # no image in two splits
    assert rows("test") == test  # fixed: the same rows every time
    reseeded = tfpipe.load_config(MLP, overrides=["data.split.seed=1"])
    assert rows("test", reseeded) != test  # and the seed picks them

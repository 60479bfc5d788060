"""Every pipeline stage driven by config: sharding, cache, shuffle, repeat, map, batch, prefetch, options."""

import numpy as np
import pytest
import tensorflow as tf
import yaml

import tfpipe
from tfpipe.data import tfrecords
from tfpipe.data import pipeline


def data_cfg(tmp_path, **data):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"data": data}))
    return tfpipe.load_config(path).data


@pytest.fixture(scope="module", name="records")
def _records(tmp_path_factory):
    """40 examples with x = [i, i] and label i, in 8 TFRecord shards."""
    out = tmp_path_factory.mktemp("rec")
    x = np.repeat(np.arange(40, dtype=np.float32)[:, None], 2, axis=1)
    np.savez(out / "a.npz", x=x, y=np.arange(40))
    spec = tfrecords.from_npz(str(out / "a.npz"), str(out), num_shards=8)
    return {"train": str(out / "train-*.tfrecord"), "spec": spec, "one": str(out / "train-00000-of-00008.tfrecord")}


def rec_cfg(tmp_path, records, files=None, **data):
    return data_cfg(tmp_path, source="tfrecord", files={"train": files or records["train"]},
                    tfrecord={"spec_file": records["spec"]}, cache="", **data)


def labels(ds, limit=None):
    out = []
    for _, y in ds.take(limit) if limit else ds:
        out.extend(int(v) for v in np.ravel(y))
    return out


def ctx(pid, n=2):
    return tf.distribute.InputContext(num_input_pipelines=n, input_pipeline_id=pid, num_replicas_in_sync=1)


@pytest.mark.parametrize("policy,files", [("auto", None), ("file", None), ("data", None), ("auto", "one")])
def test_input_pipelines_read_disjoint_shards_that_cover_the_data(tmp_path, records, policy, files):
    cfg = rec_cfg(tmp_path, records, files=records["one"] if files else None, shard_policy=policy)
    parts = [labels(pipeline.build(cfg, "train", 1, ctx(pid), training=False)) for pid in range(2)]
    expected = labels(pipeline.build(cfg, "train", 1, training=False))
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(expected)
    assert parts[0] and parts[1]


def test_shard_policy_file_needs_a_file_per_pipeline_and_off_reads_everything(tmp_path, records):
    cfg = rec_cfg(tmp_path, records, files=records["one"], shard_policy="file")
    with pytest.raises(ValueError, match="needs at least one file per input pipeline: 1 files, 2 pipelines"):
        pipeline.build(cfg, "train", 1, ctx(0), training=False)
    off = rec_cfg(tmp_path, records, shard_policy="off")
    assert len(labels(pipeline.build(off, "train", 1, ctx(1), training=False))) == 40


def test_shuffle_is_fixed_by_its_seed_and_reshuffles_each_epoch(tmp_path, records):
    def order(seed, reshuffle=True):
        cfg = rec_cfg(tmp_path, records, shuffle={"buffer_size": 64, "seed": seed, "reshuffle_each_iteration": reshuffle},
                      deterministic=True)
        return labels(pipeline.build(cfg, "train", 40, training=True), limit=2)

    a = order(0)
    assert a == order(0)
    assert a != order(1)
    assert a[:40] != a[40:] and sorted(a[:40]) == sorted(a[40:]) == list(range(40))
    fixed = order(0, reshuffle=False)
    assert fixed[:40] == fixed[40:]


def test_repeat_and_batch_with_drop_remainder(tmp_path, records):
    cfg = rec_cfg(tmp_path, records)
    train = pipeline.build(cfg, "train", 16, training=True)
    assert train.element_spec[1].shape.as_list() == [16]  # static: the stream repeats
    assert len(labels(train, limit=5)) == 80  # more than one epoch
    ev = list(pipeline.build(cfg, "train", 16, training=False))
    assert [int(y.shape[0]) for _, y in ev] == [16, 16, 8]
    dropped = rec_cfg(tmp_path, records, drop_remainder=True)
    assert [int(y.shape[0]) for _, y in pipeline.build(dropped, "train", 16, training=False)] == [16, 16]


@pytest.mark.parametrize("cache", ["memory", "file"])
def test_cache_serves_the_same_examples(tmp_path, records, cache):
    where = "memory" if cache == "memory" else str(tmp_path / "cache" / "c")
    (tmp_path / "cache").mkdir()
    steps = [{"op": "normalize", "mean": [1.0, 1.0], "std": [2.0, 2.0]}]
    cfg = data_cfg(tmp_path, source="tfrecord", files={"train": records["train"]},
                   tfrecord={"spec_file": records["spec"]}, cache=where, map={"steps": steps})
    ds = pipeline.build(cfg, "train", 8, training=False)
    first = [x.numpy() for x, _ in ds]
    assert np.allclose(np.concatenate(first)[:, 0], (np.array(labels(ds)) - 1) / 2)
    if cache == "file":
        assert list((tmp_path / "cache").glob("c*.index"))
    assert all(np.array_equal(a, b.numpy()) for a, (b, _) in zip(first, ds))


def test_vectorized_map_gives_the_same_batches_as_per_example_map(tmp_path, records):
    steps = [{"op": "rescale", "scale": 2.0}, {"op": "one_hot", "num_classes": 40}]
    per_example = rec_cfg(tmp_path, records, map={"steps": steps}, read={"shuffle_files": False})
    vectorized = rec_cfg(tmp_path, records, map={"steps": steps, "vectorized": True}, read={"shuffle_files": False})
    a = list(pipeline.build(per_example, "train", 8, training=False))
    b = list(pipeline.build(vectorized, "train", 8, training=False))
    assert len(a) == len(b) == 5
    for (xa, ya), (xb, yb) in zip(a, b):
        assert np.array_equal(xa.numpy(), xb.numpy()) and np.array_equal(ya.numpy(), yb.numpy())


def test_normalize_statistics_come_from_the_training_split(tmp_path, records):
    cfg = data_cfg(tmp_path, source="tfrecord", files={"train": records["train"], "test": records["one"]},
                   tfrecord={"spec_file": records["spec"]}, cache="", map={"steps": [{"op": "normalize"}]})
    steps = pipeline.resolve_stats(cfg)
    assert np.allclose(steps[0]["mean"], [19.5, 19.5]) and np.allclose(steps[0]["std"], np.std(np.arange(40)))
    x = np.concatenate([b.numpy() for b, _ in pipeline.build(cfg, "train", 40, training=False)])
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-4
    test = np.concatenate([b.numpy() for b, _ in pipeline.build(cfg, "test", 40, training=False)])
    assert abs(test.mean()) > 0.01  # the test split is normalized with the training statistics


def test_evaluation_is_deterministic_even_with_random_steps(tmp_path, records):
    # The records hold x = [i, i]; the normalize makes it [i, i + 1000], so a
    # left-right flip shows as x[0] > x[1].
    steps = [{"op": "normalize", "mean": [0.0, -1000.0], "std": [1.0, 1.0]},
             {"op": "reshape", "shape": [1, 2, 1]}, {"op": "random_flip"}]
    cfg = rec_cfg(tmp_path, records, map={"steps": steps}, deterministic=True)
    a = [x.numpy() for x, _ in pipeline.build(cfg, "train", 8, training=False)]
    b = [x.numpy() for x, _ in pipeline.build(cfg, "train", 8, training=False)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert all((x[:, 0, 0, 0] < x[:, 0, 1, 0]).all() for x in a)  # evaluation never flips
    trained = np.concatenate([x.numpy() for x, _ in pipeline.build(cfg, "train", 40, training=True).take(3)])
    assert trained.shape == (120, 1, 2, 1)
    flipped = (trained[:, 0, 0, 0] > trained[:, 0, 1, 0]).mean()
    assert 0.2 < flipped < 0.8, f"training should flip about half the examples, flipped {flipped:.0%}"


def test_options_follow_the_config(tmp_path, records):
    cfg = rec_cfg(tmp_path, records, deterministic=False, options={
        "private_threadpool_size": 3, "autotune": False, "autotune_cpu_budget": 1,
        "autotune_ram_budget_mb": 64, "inject_prefetch": False})
    opts = pipeline.build(cfg, "train", 8).options()
    assert opts.threading.private_threadpool_size == 3
    assert opts.autotune.enabled is False and opts.autotune.cpu_budget == 1
    assert opts.autotune.ram_budget == 64 * 1024 * 1024
    assert opts.experimental_optimization.inject_prefetch is False and opts.deterministic is False
    default = pipeline.build(rec_cfg(tmp_path, records), "train", 8).options()
    assert default.threading.private_threadpool_size in (None, 0) and default.autotune.enabled in (None, True)


@pytest.mark.parametrize("stage", pipeline.STAGES)
def test_the_pipeline_can_be_cut_after_every_stage(tmp_path, records, stage):
    cfg = rec_cfg(tmp_path, records, map={"steps": [{"op": "rescale", "scale": 1.0}]})
    ds = pipeline.build(cfg, "train", 4, training=True, stop_after=stage)
    element = next(iter(ds))
    batched = pipeline.STAGES.index(stage) >= pipeline.STAGES.index("batch")
    parsed = pipeline.STAGES.index(stage) >= pipeline.STAGES.index("map")
    if batched:
        assert element[0].shape == (4, 2)
    elif parsed:
        assert element[0].shape == (2,)
    else:
        assert element.dtype == tf.string  # raw serialized records


def test_batch_tail_runs_trailing_steps_per_batch_with_the_same_result(tmp_path, records):
    steps = [{"op": "reshape", "shape": [2]}, {"op": "normalize", "mean": [1.0, 1.0], "std": [2.0, 2.0]},
             {"op": "one_hot", "num_classes": 40}]
    plain = rec_cfg(tmp_path, records, map={"steps": steps}, read={"shuffle_files": False})
    tail = rec_cfg(tmp_path, records, map={"steps": steps, "batch_tail": True}, read={"shuffle_files": False})
    a = list(pipeline.build(plain, "train", 8, training=False))
    b = list(pipeline.build(tail, "train", 8, training=False))
    for (xa, ya), (xb, yb) in zip(a, b):
        assert np.allclose(xa.numpy(), xb.numpy()) and np.array_equal(ya.numpy(), yb.numpy())
    # The per-example map now stops at reshape: its output is not yet normalized.
    x, y = next(iter(pipeline.build(tail, "train", 8, training=False, stop_after="map")))
    assert y.shape == () and float(x[0]) == float(y)

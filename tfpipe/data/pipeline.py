"""The input pipeline: the one place where tf.data stages are put together.

`build` reads top to bottom in the order the stages run:
source -> shard -> deterministic map -> cache -> shuffle -> repeat -> random map
-> batch -> prefetch.
Every stage is driven by `DataConfig`; nothing here is tuned behind the
config's back.
"""

from __future__ import annotations

import tensorflow as tf

from tfpipe.data import preprocess, sources


def build(
    data_cfg,
    split: str,
    global_batch_size: int,
    input_context: tf.distribute.InputContext | None = None,
    training: bool = True,
) -> tf.data.Dataset:
    """Builds the batched dataset one input pipeline feeds to its replicas.

    Args:
        data_cfg: a `tfpipe.config.DataConfig`.
        split: "train", "validation" or "test".
        global_batch_size: examples per step across all replicas.
        input_context: given by `strategy.distribute_datasets_from_function`;
            None for a single pipeline.
        training: shuffle and repeat forever (train) or make one ordered pass.

    Returns:
        A dataset of `(features, labels)` batches of the per-replica size.
    """
    # get_per_replica_batch_size raises if the global batch does not split evenly;
    # distribute.check_batch says so earlier, with the config key.
    batch_size = input_context.get_per_replica_batch_size(global_batch_size) if input_context else global_batch_size
    ds = sources.load(data_cfg, split).dataset

    if input_context is not None and input_context.num_input_pipelines > 1 and data_cfg.shard_policy != "off":
        # Each worker reads a disjoint 1/N of the examples.
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)

    # Deterministic steps run before the cache, so they run once rather than
    # once per epoch: on the digits MLP a per-example map after `repeat` held
    # the pipeline to ~47k examples/s, the same map before the cache ~670k.
    before_cache, after_repeat = preprocess.split_at_first_random(data_cfg.map.steps)
    if data_cfg.cache and before_cache:
        ds = ds.map(
            preprocess.compose(before_cache),
            num_parallel_calls=data_cfg.map.num_parallel_calls,
            deterministic=data_cfg.deterministic,
        )
    else:
        after_repeat = before_cache + after_repeat

    if data_cfg.cache == "memory":
        ds = ds.cache()
    elif data_cfg.cache:
        ds = ds.cache(data_cfg.cache)

    if training:
        if data_cfg.shuffle.buffer_size > 0:
            ds = ds.shuffle(
                data_cfg.shuffle.buffer_size,
                seed=data_cfg.shuffle.seed,
                reshuffle_each_iteration=data_cfg.shuffle.reshuffle_each_iteration,
            )
        ds = ds.repeat()

    if after_repeat:
        ds = ds.map(
            preprocess.compose(after_repeat),
            num_parallel_calls=data_cfg.map.num_parallel_calls,
            deterministic=data_cfg.deterministic,
        )

    # A repeated stream never yields a short batch, so training keeps static
    # batch shapes; evaluation keeps its last partial batch unless asked not to.
    ds = ds.batch(batch_size, drop_remainder=training or data_cfg.drop_remainder)

    if data_cfg.prefetch != 0:
        ds = ds.prefetch(data_cfg.prefetch)

    if training:
        # Evaluation stays local: under parallel_epochs every service worker
        # would produce the whole split, so each example would count once per worker.
        ds = _on_data_service(ds, data_cfg.service)

    options = tf.data.Options()
    options.deterministic = data_cfg.deterministic
    return ds.with_options(options)


# ---------------------------------------------------------------- tf.data service stage


def _on_data_service(ds: tf.data.Dataset, service_cfg) -> tf.data.Dataset:
    """Runs everything built so far on tf.data service workers (`data.service`).

    The dataset graph is sent to the dispatcher; its workers run it and this
    process only receives finished batches, so preprocessing costs the
    training host nothing. With `address: ""` the dataset is returned as is.
    """
    if not service_cfg.address:
        return ds
    mode = {
        # Every service worker runs the full pipeline; a consumer gets batches
        # from all of them (each example about once per worker per epoch).
        "parallel_epochs": tf.data.experimental.service.ShardingPolicy.OFF,
        # The dispatcher splits the source so each example goes out once per epoch.
        "distributed_epoch": tf.data.experimental.service.ShardingPolicy.DYNAMIC,
    }[service_cfg.processing_mode]
    return ds.apply(
        tf.data.experimental.service.distribute(
            processing_mode=mode,
            service=service_cfg.address if "://" in service_cfg.address else f"grpc://{service_cfg.address}",
            job_name=service_cfg.job_name or None,
        )
    )

"""The input pipeline: the one place where tf.data stages are put together.

`build` reads top to bottom in the order the stages run:

    source (list files -> shard by file -> parallel interleave | in-memory)
    -> shard by example -> [parse + deterministic steps] -> cache
    -> shuffle -> repeat -> [random steps] -> batch -> [batch_tail or vectorized steps]
    -> prefetch -> options

Every stage is driven by `DataConfig`; nothing here is tuned behind the
config's back. `stages` lists the stage names in order and `build(...,
stop_after=name)` cuts the pipeline after one of them, which is how
`tfpipe.data.benchmark` measures each stage's throughput.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfpipe.data import guards, preprocess, sources

STAGES = ("read", "shard", "map_before_cache", "cache", "shuffle", "repeat", "map", "batch", "prefetch")

_STATS_CACHE: dict = {}
# Steps that turn class ids into something else (a one-hot or float label).
_LABEL_OPS = ("one_hot", "binary_label")


def _map_calls(data_cfg):
    """`data.map.num_parallel_calls` for `Dataset.map`: 1 means a plain map."""
    calls = data_cfg.map.num_parallel_calls
    return None if calls == 1 else calls


def _apply(ds, fns, data_cfg, batched: bool):
    """Applies step functions: consecutive maps fused into one map call, filters as filters."""
    run: list = []

    def flush(ds):
        if not run:
            return ds
        chain = list(run)
        run.clear()

        def fn(*args):
            x, y = args if len(args) == 2 else (args[0], None)
            for f in chain:
                x, y = f(x, y)
            return x, y

        return ds.map(fn, num_parallel_calls=_map_calls(data_cfg), deterministic=data_cfg.deterministic)

    for f in fns:
        if getattr(f, "is_filter", False):
            ds = flush(ds)
            if batched:
                # Within a batch a filter is a mask: rows go, the batch shrinks.
                def mask(x, y, keep_fn=f):
                    keep = keep_fn(x, y)
                    return tf.nest.map_structure(lambda t: tf.boolean_mask(t, keep), (x, y))

                ds = ds.map(mask, num_parallel_calls=_map_calls(data_cfg), deterministic=data_cfg.deterministic)
            else:
                ds = ds.filter(f)
        else:
            run.append(f)
    return flush(ds)


def resolve_stats(data_cfg) -> tuple:
    """The steps with every `normalize` lacking mean/std, and every `fill_missing`
    by the mean lacking `means`, filled from the training split.

    Statistics come from the training split only (so evaluation never leaks
    into preprocessing), through the steps before the normalize, without
    augmentation; they are computed once per process and config.
    """
    steps = list(data_cfg.map.steps)
    for i, step in enumerate(steps):
        if step["op"] == "fill_missing" and step.get("policy", "mean") == "mean" and step.get("means") is None:
            steps[i] = {**step, "means": _column_means(data_cfg, steps, i)}
            continue
        if step["op"] != "normalize" or ("mean" in step and "std" in step):
            continue
        cache_key = (repr(data_cfg), i)
        if cache_key not in _STATS_CACHE:
            limit = step.get("stats_examples", 50_000)
            prefix = dataclasses.replace(
                data_cfg, map=dataclasses.replace(data_cfg.map, steps=tuple(steps[:i]), vectorized=False)
            )
            ds = build(prefix, "train", 256, training=False, resolve=False, ignore_errors=data_cfg.ignore_errors)
            ds = ds.unbatch().take(limit).batch(1024)
            try:
                _STATS_CACHE[cache_key] = preprocess.compute_stats(ds, step.get("key"))
            except ValueError as e:  # an empty training split: the data's fault, not the code's
                from tfpipe.data.check import DataError  # pylint: disable=import-outside-toplevel

                raise DataError(f"data.files.train: {e}") from None
        mean, std = _STATS_CACHE[cache_key]
        steps[i] = {**step, "mean": mean, "std": std}
    return tuple(steps)


def _column_means(data_cfg, steps, i: int) -> dict:
    """fill_missing's column means over the whole training split, through the steps before it (cached)."""
    cache_key = (repr(data_cfg), i, "means")
    if cache_key not in _STATS_CACHE:
        # check: off: the missing values are what this pass is for (the finite
        # check would stop on them); the training pipeline checks as configured.
        prefix = dataclasses.replace(
            data_cfg, check="off", map=dataclasses.replace(data_cfg.map, steps=tuple(steps[:i]), vectorized=False)
        )
        ds = build(prefix, "train", 1024, training=False, resolve=False, ignore_errors=data_cfg.ignore_errors)
        _STATS_CACHE[cache_key] = preprocess.compute_means(ds, steps[i].get("columns", "*"))
    return _STATS_CACHE[cache_key]


def _read(source, data_cfg, input_context):
    """Raw records of one input pipeline, and whether they are sharded already."""
    n = input_context.num_input_pipelines if input_context else 1
    i = input_context.input_pipeline_id if input_context else 0
    policy = data_cfg.shard_policy
    if source.reader is None:
        return source.examples, False
    files = tf.data.Dataset.from_tensor_slices(list(source.files))
    # Sharding by file keeps each worker reading whole files (no worker reads
    # and discards the others' records); it needs at least one file per worker.
    by_file = n > 1 and (policy == "file" or (policy == "auto" and len(source.files) >= n))
    if by_file:
        if len(source.files) < n:
            raise ValueError(
                f"data.shard_policy: file needs at least one file per input pipeline: "
                f"{len(source.files)} files, {n} pipelines; use shard_policy: data or auto"
            )
        files = files.shard(n, i)
    read = data_cfg.read
    ds = files.interleave(
        source.reader,
        # -1 = AUTOTUNE for both: tf.data picks the cycle from the core count
        # and tunes the reader threads.
        cycle_length=None if read.cycle_length == -1 else read.cycle_length,
        block_length=read.block_length,
        num_parallel_calls=None if read.num_parallel_calls == 1 else read.num_parallel_calls,
        deterministic=data_cfg.deterministic,
    )
    return ds, by_file


def options(data_cfg) -> tf.data.Options:
    """`tf.data.Options` from `data.options` and `data.deterministic`."""
    cfg = data_cfg.options
    opts = tf.data.Options()
    opts.deterministic = data_cfg.deterministic
    if cfg.private_threadpool_size:
        # Own threads for the input pipeline: on a 2-core host the model's
        # and the input's threads otherwise compete for the same pool.
        opts.threading.private_threadpool_size = cfg.private_threadpool_size
    if not cfg.autotune:
        # Baselines only: fixed parallelism and buffer sizes as written.
        opts.autotune.enabled = False
    if cfg.autotune_cpu_budget:
        # Caps the cores the autotuner may hand to input stages.
        opts.autotune.cpu_budget = cfg.autotune_cpu_budget
    if cfg.autotune_ram_budget_mb:
        # Caps the memory of autotuned buffers (prefetch, parallel map).
        opts.autotune.ram_budget = cfg.autotune_ram_budget_mb * 1024 * 1024
    if not cfg.inject_prefetch:
        # tf.data otherwise adds a prefetch of its own; the sequential
        # baseline must not get one behind its back.
        opts.experimental_optimization.inject_prefetch = False
    if not cfg.map_and_batch_fusion:
        # Same reason: the fused MapAndBatch overlaps input with compute.
        opts.experimental_optimization.map_and_batch_fusion = False
    return opts


@preprocess.step_errors()  # a step that cannot take its features: one line naming it
def build(
    data_cfg,
    split: str,
    global_batch_size: int,
    input_context: tf.distribute.InputContext | None = None,
    training: bool = True,
    stop_after: str | None = None,
    resolve: bool = True,
    ignore_errors: bool | None = None,
    stamp: bool = False,
) -> tf.data.Dataset:
    """Builds the batched dataset one input pipeline feeds to its replicas.

    Args:
        data_cfg: a `tfpipe.config.DataConfig`.
        split: "train", "validation" or "test".
        global_batch_size: examples per step across all replicas.
        input_context: given by `strategy.distribute_datasets_from_function`;
            None for a single pipeline.
        training: shuffle, repeat forever and augment (train), or make one
            ordered, deterministic pass (evaluation).
        stop_after: one of `STAGES`: return the pipeline cut after that stage
            (for per-stage benchmarks); None builds all of it.
        resolve: fill `normalize` statistics from the training split.
        ignore_errors: skip records whose parsing or decoding fails; default
            `data_cfg.ignore_errors`.
        stamp: add a third element, the time (`tf.timestamp`) each batch was
            finished, before the prefetch (the input-wait timer reads it).

    Returns:
        A dataset of `(features, labels)` batches of the per-replica size
        (unbatched elements if cut before `batch`).
    """
    if stop_after is not None and stop_after not in STAGES:
        raise ValueError(f"stop_after: expected one of {', '.join(STAGES)}, got {stop_after!r}")
    ignore_errors = data_cfg.ignore_errors if ignore_errors is None else ignore_errors
    # get_per_replica_batch_size raises if the global batch does not split evenly;
    # distribute.check_batch says so earlier, with the config key.
    batch_size = input_context.get_per_replica_batch_size(global_batch_size) if input_context else global_batch_size
    steps = resolve_stats(data_cfg) if resolve else tuple(data_cfg.map.steps)
    vectorized = data_cfg.map.vectorized
    source = sources.load(data_cfg, split)

    def done(ds, stage):
        return stop_after == stage

    # ---- read: files interleaved in parallel, or the in-memory examples.
    ds, sharded = _read(source, data_cfg, input_context)
    if done(ds, "read"):
        return ds.with_options(options(data_cfg))

    # ---- shard by example when files were not sharded (too few, or policy).
    n = input_context.num_input_pipelines if input_context else 1
    if n > 1 and not sharded and data_cfg.shard_policy != "off":
        ds = ds.shard(n, input_context.input_pipeline_id)
    if done(ds, "shard"):
        return ds.with_options(options(data_cfg))

    # ---- split the steps: parse and deterministic steps can run once, before
    # the cache; random ones (augmentation) every epoch, after repeat.
    # Raw records are single tensors; parse makes them (features, label).
    parse = [lambda record, _, p=source.parse: p(record)] if source.parse is not None else []
    # Labels are checked where they enter (right after parse), float features
    # where the model takes them (the finished batch); data.check: off drops
    # both. Both are Asserts, which tf.data can still checkpoint.
    checks = data_cfg.check != "off"
    label_check = []
    if checks and parse and source.num_classes > 0:
        batched = vectorized and source.parse_batchable
        if batched or any(s["op"] in _LABEL_OPS for s in steps):
            parse.append(guards.labels(source.num_classes, split, ignore_errors, batched=batched))
        else:
            # No step changes the labels, so they are checked on the batch: a
            # check per record measured ~9% of images_cnn's input CPU time.
            label_check = [guards.labels(source.num_classes, split, ignore_errors, batched=True)]
    fns_before, fns_after, fns_tail = [], preprocess.build(steps, training), []
    if not vectorized:
        before, after = preprocess.split_at_first_random(steps) if data_cfg.cache else ((), steps)
        tail = ()
        if data_cfg.map.batch_tail:
            after, tail = preprocess.split_batchable_tail(after)
        if data_cfg.cache:
            fns_before = parse + preprocess.build(before, training)
            fns_after = preprocess.build(after, training, first=len(before))
        else:
            fns_after = parse + preprocess.build(after, training, first=len(before))
        fns_tail = preprocess.build(tail, training, first=len(before) + len(after))
        parse = []
    elif not source.parse_batchable:
        fns_before, parse = parse, []

    if fns_before:
        ds = _apply(ds, fns_before, data_cfg, batched=False)
        if ignore_errors:
            # Records that fail to parse or decode are dropped; check.py has
            # counted them up front, so the skip is reported, not silent.
            ds = ds.ignore_errors()
    if done(ds, "map_before_cache"):
        return ds.with_options(options(data_cfg))

    if data_cfg.cache == "memory":
        ds = ds.cache()
    elif data_cfg.cache:
        ds = ds.cache(data_cfg.cache)
    if done(ds, "cache"):
        return ds.with_options(options(data_cfg))

    if training and data_cfg.shuffle.buffer_size > 0:
        ds = ds.shuffle(
            data_cfg.shuffle.buffer_size,
            seed=data_cfg.shuffle.seed,
            reshuffle_each_iteration=data_cfg.shuffle.reshuffle_each_iteration,
        )
    if done(ds, "shuffle"):
        return ds.with_options(options(data_cfg))
    if training:
        ds = ds.repeat()
    if done(ds, "repeat"):
        return ds.with_options(options(data_cfg))

    if not vectorized and fns_after:
        ds = _apply(ds, fns_after, data_cfg, batched=False)
        if ignore_errors and not fns_before:
            ds = ds.ignore_errors()
    if done(ds, "map"):
        return ds.with_options(options(data_cfg))

    # A repeated stream never yields a short batch, so training keeps static
    # batch shapes; evaluation keeps its last partial batch unless asked not to.
    drop = training or data_cfg.drop_remainder
    if data_cfg.padded_batch:
        ds = ds.padded_batch(batch_size, drop_remainder=drop)
    else:
        ds = ds.batch(batch_size, drop_remainder=drop)
    # The finite check joins the last batch-level map when there is one (no
    # extra tf.data stage), else it is a map of its own over batches. Only
    # file sources get it: preflight reads in-memory arrays whole (a stage
    # of its own cost the digits MLP's input ~10%, BENCHMARKS.md).
    finite = label_check + ([guards.finite(split, ignore_errors)] if checks and source.reader is not None else [])
    if fns_tail:
        # The trailing batch-capable steps (flip, normalize, ...) run once per
        # batch instead of once per example.
        ds = _apply(ds, fns_tail + (finite if not vectorized else []), data_cfg, batched=True)
    elif finite and not vectorized:
        ds = _apply(ds, finite, data_cfg, batched=True)
    if vectorized:
        # Batch first, then one call per batch: per-element overhead dominates
        # cheap parsing (CSV, tf.Example), so this is many times faster.
        ds = _apply(ds, parse + fns_after + finite, data_cfg, batched=True)
        if ignore_errors:
            ds = ds.ignore_errors()
    if done(ds, "batch"):
        return ds.with_options(options(data_cfg))

    if training and data_cfg.repeat_one_batch:
        # The perfect-input bound: the same model, fed one cached batch.
        ds = ds.take(1).cache().repeat()
    if stamp:
        # When each batch was finished, for the always-on input-wait timer
        # (tfpipe/profile/trace.py): a step waited for input only if it asked
        # before its batch was ready. One scalar op per batch.
        ds = ds.map(lambda x, y: (x, y, tf.timestamp()), name="input_wait_stamp")
    if data_cfg.prefetch != 0:
        ds = ds.prefetch(data_cfg.prefetch)

    if training:
        # Evaluation stays local: under parallel_epochs every service worker
        # would produce the whole split, so each example would count once per worker.
        ds = _on_data_service(ds, data_cfg.service)
    return ds.with_options(options(data_cfg))


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

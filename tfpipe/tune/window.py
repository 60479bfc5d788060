"""What runs inside one trial's child process: short, real measurement windows.

The parent (`tfpipe.tune.trials`) starts `python -m tfpipe.tune.window SPEC`
in a fresh process per trial, so a crash or an out-of-memory kill ends one
trial and not the tool, and every trial starts with fresh thread pools and
graphs. SPEC is a JSON file: `{"config", "overrides", "workdir", "kind",
"warmup_seconds", "window_seconds", "windows", "out"}`; the child writes its
result as JSON to `out`.

Under `multi_worker_mirrored` and `parameter_server` the parent starts the
child once per task of a localhost cluster (`tfpipe.distribute.launch`,
`Runner(cluster=...)`), so a trial trains as the run would. Every timing
decision (warm-up over, window full, calls per step of the budget, stop
of the range test) is the chief's, sent to every worker with one small
all-reduce, so all workers run the same calls; under parameter_server only
the chief (the coordinator) runs this program, the ps and worker tasks
serve, and a sync is `ClusterCoordinator.join()`. Only the chief writes
`out`. The `ceiling` kind measures one process and is refused there.

Kinds (a plain dict, `KINDS`):

- `train`: tfpipe's own training step (`tfpipe.train.steps.Steps`, the same
  model, optimizer, strategy, input and loop calls as `tfpipe.train`),
  `train.steps_per_loop` steps per call, clipped at epoch ends as the loop
  does. The first call (tracing) and `warmup_seconds` after it are dropped;
  when `data.cache` is set the warm-up also covers the first epoch, which
  fills the cache (its time is reported as `cache_fill_seconds`). Then
  `windows` windows of at least `window_seconds` each are timed, with one
  host sync per window. No evaluation, checkpoints or profiling: a trial
  measures training throughput only.
- `budget`: equal wall time: train `budget_seconds`, then the validation
  metrics (the batch-size tuner's time-to-accuracy comparison).
- `lr_range`: the learning-rate range test (one step per rate, rates
  growing exponentially, stop on divergence).
- `ceiling`: the two halves of the CPU ceiling, the way the tf.data paper
  measures them. The input pipeline alone (batches pulled inside a compiled
  loop, so Python's own per-call cost is not counted), and the same model
  and step fed one cached batch repeated ("perfect input"). Each gives
  examples/sec and CPU-seconds per example (`time.process_time`, all
  threads of the process). `cpu_ceiling = cores / (cpu_in + cpu_model)`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Strategies whose trial runs as several processes (the parent launches them).
CLUSTER_STRATEGIES = ("multi_worker_mirrored", "parameter_server")


def cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _Clock:
    """Wall and CPU seconds since `start()` (CPU: every thread of the process)."""

    def start(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def _trainer(cfg):
    """Model, optimizer, input and compiled steps as `tfpipe.train.loop.run` sets them up.

    (The loop's Setup, Input and Model phases without checkpoints, logs or
    evaluation; keep the two in step when the loop changes.)

    Args:
        cfg: the trial's `Config`.

    Returns:
        `(steps, steps_per_epoch)`.
    """
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfpipe import models  # pylint: disable=import-outside-toplevel
    from tfpipe.data import pipeline, sources  # pylint: disable=import-outside-toplevel
    from tfpipe.distribute import sharding, strategies  # pylint: disable=import-outside-toplevel
    from tfpipe.profile import trace  # pylint: disable=import-outside-toplevel
    from tfpipe.train import custom, faults, inputs, losses, placement, recipes, schedules  # pylint: disable=import-outside-toplevel
    from tfpipe.train.steps import Metrics, Steps  # pylint: disable=import-outside-toplevel

    strategies.configure_devices(cfg.runtime)
    strategies.serve_parameter_server_task(cfg.runtime)  # ps/worker tasks block here, as in training
    keras.utils.set_random_seed(cfg.runtime.seed)
    strategy = strategies.make_strategy(cfg.runtime)
    coordinator = (
        tf.distribute.coordinator.ClusterCoordinator(strategy) if strategies.is_parameter_server(strategy) else None
    )
    batch = cfg.train.batch_size
    strategies.check_batch(batch, strategy)
    train_source = sources.load(cfg.data, "train")
    steps_per_epoch = cfg.train.steps_per_epoch or math.ceil(train_source.num_examples / batch)
    # Stamped batches, as the loop builds them: the input-wait timer reads the stamps.
    stamp = cfg.profile.measure_input_wait
    mode = cfg.checkpoint.input if not cfg.data.service.address else "replay"
    if coordinator:  # one pipeline per worker, as the loop builds it (statistics first, eagerly)
        pipeline.resolve_stats(cfg.data)
        train_data = strategies.PerWorkerInput(coordinator, lambda: pipeline.build(cfg.data, "train", batch))
    else:
        train_data = inputs.from_config(cfg, strategy, batch, steps_per_epoch, mode, stamp)
    features_spec, labels_spec = pipeline.build(cfg.data, "train", batch, training=False).element_spec
    cfg = custom.resolve_loss(cfg, labels_spec)  # model.loss: auto -> sparse or categorical, as the loop does
    lr = strategies.learning_rate(cfg.optimizer.learning_rate, cfg.runtime, strategy)
    with strategy.scope():
        input_shape = tf.nest.map_structure(lambda spec: spec.shape[1:], features_spec)
        with strategies.precision_policy(cfg.runtime):
            model = models.build(cfg.model.name, input_shape, train_source.num_classes, cfg.model.params)
        stages = None
        if cfg.runtime.placement.devices:  # as the loop splits it
            model, stages = placement.split(model, cfg.runtime.placement)  # its ValueError: one line in the record
        # The run's schedule, as the loop builds it (a trial's window sees its first steps).
        total = steps_per_epoch * cfg.train.epochs
        optimizer, _ = schedules.build_optimizer(cfg, lr, steps_per_epoch, total)
        optimizer = strategies.wrap_optimizer(optimizer, cfg.runtime)
        optimizer.build(sharding.train_variables(model))  # a sharded variable's slots sit by each shard
        names = recipes.metric_names(cfg.train, cfg.model.loss)
        train_metrics = Metrics(cfg.model.loss, "train", names, train_source.num_classes)
        eval_metrics = Metrics(cfg.model.loss, "eval", names, train_source.num_classes)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    steps = Steps(
        strategy, model, optimizer, keras.losses.get(cfg.model.loss), train_metrics, eval_metrics,
        faults.NonFiniteGuard(cfg.train.on_nonfinite, cfg.train.max_skipped_steps),
        trace.InputWaitTimer(cfg.profile.measure_input_wait), step, train_data,
        coordinator=coordinator, jit_compile=cfg.runtime.jit_compile, l2=cfg.model.l2, clipnorm=cfg.optimizer.clipnorm,
        global_clipnorm=cfg.optimizer.global_clipnorm, stages=stages,
        train_loss_fn=losses.from_config(cfg, train_source.num_classes,
                                         pipeline.build(cfg.data, "train", batch, training=False), log=lambda _: None),
    )  # fmt: skip
    train_data.start(0)
    return steps, steps_per_epoch


def _sync(steps, results) -> float:
    """Waits for the calls queued so far; returns the loss (the first metric)."""
    if steps.coordinator is not None:  # parameter_server: scheduled closures run on the workers
        steps.coordinator.join()
        results = steps.train_metrics.results()
    return float(results[0])


def _one_call(steps, n: int) -> float:
    """`n` training steps in one call, waited for; the loss."""
    if steps.coordinator is not None:
        return _sync(steps, steps.schedule_call(n, False))
    return _sync(steps, steps.train_call(n))


def _chief_says(steps, value: float) -> float:
    """The chief's `value`, on every task: timing decisions must be the same everywhere.

    Under multi_worker_mirrored each worker runs this program and its calls
    are collective, so all must make the same calls: one all-reduce where
    only the first replica (the chief's) adds its value. Elsewhere `value`.
    Every task must call this at the same points.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    strategy = steps.strategy
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return value

    def mine():
        first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
        return tf.where(first, tf.constant(value, tf.float64), tf.constant(0.0, tf.float64))

    return float(strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(mine), axis=None))


class _Calls:
    """Loop calls as `tfpipe.train` makes them: `train.steps_per_loop` steps, clipped at epoch ends."""

    def __init__(self, steps, steps_per_epoch, cfg):
        self.steps, self.steps_per_epoch, self.cfg = steps, steps_per_epoch, cfg
        self.current = 0
        self.profiler = None

    def __call__(self):
        epoch_end = (self.current // self.steps_per_epoch + 1) * self.steps_per_epoch
        n = min(self.cfg.train.steps_per_loop, epoch_end - self.current)
        if self.steps.coordinator is not None:  # parameter_server: queued for whichever worker is free
            results = self.steps.schedule_call(n, False)
        elif self.profiler:
            results = self.profiler.call(self.steps.train_call, self.current, n)
        else:
            results = self.steps.train_call(n)
        self.current += n
        if self.profiler and self.current == epoch_end:
            self.profiler.end_of_epoch()
        return results, n


def _loop_windows(steps, steps_per_epoch, cfg, spec, warmup_steps_at_least=0, profile_dir=None) -> dict:
    """Runs loop calls as `tfpipe.train` does; drops warm-up, times `windows` windows.

    With `profile_dir`, the timed windows are followed by one profiled window
    (tfpipe's own `Profiler`, as in training) whose report is returned too.
    """
    call = _Calls(steps, steps_per_epoch, cfg)
    clock = _Clock()
    clock.start()
    results, _ = call()
    _sync(steps, results)  # the first call traces and compiles
    compile_seconds, _ = clock.stop()
    clock.start()
    warm_calls = 0
    while _chief_says(steps, clock.stop()[0] < spec["warmup_seconds"] or call.current < warmup_steps_at_least):
        results, _ = call()
        _sync(steps, results)
        warm_calls += 1
    warmup_seconds, _ = clock.stop()
    # Calls are queued without reading results (as the loop does between
    # progress-bar redraws), with one read per about 0.2 s of calls; the
    # window's end is checked there, at the same calls on every task.
    every = int(_chief_says(steps, max(1, round(0.2 * warm_calls / max(warmup_seconds, 1e-6)))))
    windows = []
    for _ in range(spec["windows"]):
        clock.start()
        done = calls = 0
        while True:
            results, n = call()
            done += n
            calls += 1
            if calls % every == 0:
                _sync(steps, results)
                if _chief_says(steps, clock.stop()[0] >= spec["window_seconds"]):
                    break
        wall, cpu = clock.stop()
        examples = done * cfg.train.batch_size
        windows.append({"steps": done, "seconds": round(wall, 4), "examples_per_sec": round(examples / wall, 2),
                        "cpu_sec_per_example": cpu / examples})
    out = {"compile_seconds": round(compile_seconds, 3), "warmup_seconds": round(warmup_seconds, 3),
           "windows": windows, "final_loss": _sync(steps, results)}
    if profile_dir is not None:
        out["report"] = _profile(call, profile_dir)
    return out


def _profile(call: _Calls, profile_dir) -> dict | None:
    """One trace window from the next call on, reported by `tfpipe.profile` as in training."""
    import dataclasses  # pylint: disable=import-outside-toplevel

    from tfpipe.profile import trace  # pylint: disable=import-outside-toplevel

    cfg = call.cfg
    # 20 traced steps at most (the report's minimum of markers): tracing a
    # per-element pipeline records every element, and a long window of a
    # slow config would cost minutes for the same diagnosis.
    num_steps = min(cfg.profile.num_steps, 20)
    profile_cfg = dataclasses.replace(cfg.profile, enabled=True, start_step=call.current, server_port=0,
                                      num_steps=num_steps)
    call.profiler = trace.Profiler(profile_cfg, profile_dir, call.steps.input_timer)
    # As if the run went on for long: the window opens at the next call.
    call.profiler.plan(call.current + 100 * profile_cfg.num_steps + 10 * call.steps_per_epoch, call.current,
                       call.steps_per_epoch)
    # Calls until the window has its steps (it pauses at epoch ends and
    # resumes), bounded in case it never fills.
    per_call = min(cfg.train.steps_per_loop, call.steps_per_epoch)
    for _ in range(10 + 4 * math.ceil(profile_cfg.num_steps / per_call)):
        results, _ = call()
        if getattr(call.profiler, "_state", "") in ("captured", "failed", "off"):
            break
    float(results[0])
    report = call.profiler.finish(cfg)
    call.profiler = None
    return report


def _one_process(cfg) -> bool:
    return cfg.runtime.strategy not in CLUSTER_STRATEGIES


def _train(cfg, spec) -> dict:
    steps, steps_per_epoch = _trainer(cfg)
    # A cache fills during the first epoch: that epoch is warm-up, the
    # steady state is what the remaining epochs see.
    fill = steps_per_epoch + 1 if cfg.data.cache else 0
    # The profiled window is one process's (the pipeline tuner's diagnosis):
    # not under a cluster, where its calls would differ from task to task.
    profile_dir = os.path.join(spec["workdir"], "profile") if spec.get("profile") and _one_process(cfg) else None
    out = _loop_windows(steps, steps_per_epoch, cfg, spec, warmup_steps_at_least=fill, profile_dir=profile_dir)
    if fill:
        out["cache_fill_seconds"] = out["warmup_seconds"]
    out["replicas"] = steps.strategy.num_replicas_in_sync
    return out


def _input_alone(cfg, spec) -> dict:
    """The training pipeline alone; batches pulled by a compiled loop (no Python per batch)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfpipe.data import pipeline  # pylint: disable=import-outside-toplevel
    from tfpipe.distribute import strategies  # pylint: disable=import-outside-toplevel

    strategies.configure_devices(cfg.runtime)
    batch = cfg.train.batch_size
    iterator = iter(pipeline.build(cfg.data, "train", batch, training=True))

    @tf.function
    def pull(n):
        for _ in tf.range(n):
            element = next(iterator)
        return tf.nest.flatten(element)[0][0]

    clock = _Clock()
    clock.start()
    chunk = 8
    while clock.stop()[0] < spec["warmup_seconds"]:
        pull(tf.constant(chunk))
    # Chunks sized to ~0.2 s so the timing's own cost is negligible.
    clock.start()
    pull(tf.constant(chunk))
    chunk = max(1, int(chunk * 0.2 / max(clock.stop()[0], 1e-4)))
    windows = []
    for _ in range(spec["windows"]):
        clock.start()
        pulled = 0
        while clock.stop()[0] < spec["window_seconds"]:
            pull(tf.constant(chunk))
            pulled += chunk
        wall, cpu = clock.stop()
        windows.append({"examples_per_sec": pulled * batch / wall, "cpu_sec_per_example": cpu / (pulled * batch)})
    return {"windows": windows}


def _model_alone(cfg, spec) -> dict:
    """The same model and step fed one cached batch, repeated (the tf.data paper's upper bound)."""
    import dataclasses  # pylint: disable=import-outside-toplevel

    one = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, repeat_one_batch=True))
    steps, steps_per_epoch = _trainer(one)
    return _loop_windows(steps, steps_per_epoch, one, spec)


def _median(windows, key):
    values = sorted(w[key] for w in windows)
    return values[len(values) // 2]


def _ceiling(cfg, spec) -> dict:
    if not _one_process(cfg):
        raise ValueError(f"ceiling: measures one process (input alone, model alone); runtime.strategy "
                         f"{cfg.runtime.strategy} runs several: measure it under default or mirrored")
    # Both halves in one process, input first: the model half's TensorFlow
    # runtime would otherwise keep threads busy while the input is timed.
    inp = _input_alone(cfg, spec)
    mod = _model_alone(cfg, spec)
    cpu_in = _median(inp["windows"], "cpu_sec_per_example")
    cpu_model = _median(mod["windows"], "cpu_sec_per_example")
    n = cores()
    return {
        "cores": n,
        "input_examples_per_sec": _median(inp["windows"], "examples_per_sec"),
        "input_cpu_sec_per_example": cpu_in,
        "model_examples_per_sec": _median(mod["windows"], "examples_per_sec"),
        "model_cpu_sec_per_example": cpu_model,
        "cpu_ceiling_examples_per_sec": n / (cpu_in + cpu_model),
        "input": inp,
        "model": mod,
    }


def _validation(cfg, steps, split="validation"):
    """The validation split (or `split`), batched and distributed as the loop evaluates it."""
    from tfpipe.data import pipeline  # pylint: disable=import-outside-toplevel

    batch = cfg.train.batch_size
    if steps.coordinator is not None:  # the coordinator evaluates inline, as the loop does
        return pipeline.build(cfg.data, split, batch, training=False)
    return steps.strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.build(cfg.data, split, batch, ctx, training=False))


def _budget(cfg, spec) -> dict:
    """Trains for `budget_seconds` of wall time, then evaluates on the validation split.

    The time-to-accuracy half of the batch-size tuner: every size gets the
    same seconds. The clock starts after the first call (tracing and
    compiling cost about the same at every size and are not training); calls
    are sized to about 0.2 s so the budget is not overshot by a long call.
    Validation is also evaluated at `checkpoints` points along the way
    (their time is not counted), which gives the curve of accuracy against
    seconds.
    """
    from tfpipe.data import sources  # pylint: disable=import-outside-toplevel

    steps, steps_per_epoch = _trainer(cfg)  # first: it sets up the devices before anything runs TensorFlow
    split = spec.get("eval_split", "validation")
    if sources.load(cfg.data, split).num_examples == 0:
        raise ValueError(f"batch_size: the equal-time comparison evaluates on the {split} split and this config has "
                         "none: set data.split.validation (in-memory sources) or data.holdout.validation (csv, "
                         "image folders), or --eval_split test")
    val = _validation(cfg, steps, split)
    budget = float(spec["budget_seconds"])
    marks = [budget * (i + 1) / spec.get("checkpoints", 4) for i in range(spec.get("checkpoints", 4))]
    clock = _Clock()
    clock.start()
    _one_call(steps, 1)
    compile_seconds, _ = clock.stop()
    trained, done, per_call, curve = 0.0, 1, 1, []
    while marks:
        start = time.perf_counter()
        _one_call(steps, per_call)
        took = time.perf_counter() - start
        # The chief's clock, on every task (the same calls everywhere).
        trained += _chief_says(steps, took)
        done += per_call
        per_call = max(1, min(int(per_call * 0.2 / max(took, 1e-4)), 4 * per_call, steps_per_epoch))
        per_call = int(_chief_says(steps, per_call))
        if trained >= marks[0]:
            marks.pop(0)
            curve.append({"seconds": round(trained, 3), "steps": done, **steps.evaluate(val)})
    last = curve[-1]
    acc = last.get("accuracy")
    summary = (f"{done} steps ({done / steps_per_epoch:.1f} epochs) "
               f"in {trained:.1f} s: validation loss {last['loss']:.4f}"
               + (f", accuracy {acc:.4f}" if acc is not None else ""))
    return {"compile_seconds": round(compile_seconds, 3), "seconds": round(trained, 3), "steps": done,
            "epochs": round(done / steps_per_epoch, 3), "validation": {k: v for k, v in last.items()
                                                                       if k not in ("seconds", "steps")},
            "curve": curve, "summary": summary}


def _lr_range(cfg, spec) -> dict:
    """The learning-rate range test: one step at each rate, rates growing exponentially.

    From `lr_min` to `lr_max` over `lr_steps` steps (rate_i = lr_min *
    (lr_max / lr_min) ** (i / (steps - 1))), the loss of each step's batch
    (the train metrics are reset before every step, so it is that step's
    loss, not an epoch's running mean) is recorded with an exponentially
    smoothed copy. The test stops when the smoothed loss passes
    `diverge_factor` times its best, or a loss is not finite.

    The config should have a constant schedule (the parent sets it); the
    rate is written into the optimizer's variable before each step, which
    the compiled step reads without retracing.
    """
    steps, _ = _trainer(cfg)
    lo, hi, n = float(spec["lr_min"]), float(spec["lr_max"]), int(spec["lr_steps"])
    beta, factor = float(spec.get("smoothing", 0.95)), float(spec.get("diverge_factor", 4.0))
    # `runtime.lr_scaling`: the strategy's factor applies to every probed rate as well.
    from tfpipe.distribute import strategies  # pylint: disable=import-outside-toplevel

    scale = strategies.learning_rate(1.0, cfg.runtime, steps.strategy)
    opt = getattr(steps.optimizer, "inner_optimizer", steps.optimizer)
    points, avg, best, stop = [], 0.0, math.inf, "reached lr_max"
    for i in range(n):
        rate = lo * (hi / lo) ** (i / max(n - 1, 1))
        opt.learning_rate.assign(rate * scale)
        steps.train_metrics.reset()
        # The chief's loss on every task: the same stop everywhere.
        loss = _chief_says(steps, _one_call(steps, 1))
        if not math.isfinite(loss):
            stop = f"loss not finite at rate {rate:.3g}"
            break
        avg = beta * avg + (1 - beta) * loss
        smooth = avg / (1 - beta ** (i + 1))  # bias-corrected, as Adam's moments
        points.append({"step": i, "lr": rate, "loss": loss, "smoothed": smooth})
        best = min(best, smooth)
        if i > 10 and smooth > factor * best:
            stop = f"diverged at rate {rate:.3g} (smoothed loss {smooth:.3g} > {factor:g} x best {best:.3g})"
            break
    return {"points": points, "stopped": stop, "lr_scaling_factor": scale,
            "summary": f"{len(points)} steps, rates {lo:.2g}..{points[-1]['lr'] if points else lo:.2g}; {stop}"}


KINDS = {"train": _train, "ceiling": _ceiling, "budget": _budget, "lr_range": _lr_range}


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB (VmHWM)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def peak_device_mb() -> float | None:
    """Peak memory TensorFlow allocated on this process's GPUs (the largest), in MiB; None without any.

    Read at the end of a trial: the peak since the process started, so the
    model's build and the first steps count (TensorFlow's allocator
    statistics, `tf.config.experimental.get_memory_info`). Untested here:
    this machine has no GPU.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    names = [d.name.split("device:")[-1] for d in tf.config.list_logical_devices("GPU")]
    try:
        peaks = [tf.config.experimental.get_memory_info(n)["peak"] for n in names]
    except (ValueError, RuntimeError):  # an allocator without statistics: not measured, the trial stands
        return None
    return round(max(peaks) / 2**20, 1) if peaks else None


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    from absl import logging  # pylint: disable=import-outside-toplevel

    logging.set_verbosity(logging.ERROR)
    from tfpipe import config as config_lib  # pylint: disable=import-outside-toplevel

    cfg = config_lib.load(spec["config"], spec["overrides"])
    os.makedirs(spec["workdir"], exist_ok=True)
    result = KINDS[spec["kind"]](cfg, spec)
    from tfpipe.distribute import strategies  # pylint: disable=import-outside-toplevel

    if not strategies.current_task().is_chief:  # a cluster's other workers: the chief reports
        return 0
    result["peak_rss_mb"] = peak_rss_mb()
    # The chief's GPUs, in a cluster: under multi_worker_mirrored it trains as
    # every worker does; under parameter_server it trains nothing (None there).
    result["peak_device_mb"] = None if cfg.runtime.strategy == "parameter_server" else peak_device_mb()
    tmp = spec["out"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, spec["out"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

"""tfpipe's training loop: one loop for every strategy.

`run(cfg, workdir)` reads top to bottom in phases:
Setup -> Input -> Model -> Restore -> Loop -> Evaluate -> Export -> Report.

Why not `model.fit`: Keras 3's `fit` fails under MultiWorkerMirroredStrategy
(verified, see DESIGN.md), and tfpipe needs per-step profiler markers and
checkpointed input iterators. Keras still supplies the model, optimizer,
losses, metrics and progress bar. Each call of the compiled loop runs
`train.steps_per_loop` steps, so Python and dispatch costs are paid once per
call rather than once per step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import keras
import tensorflow as tf

from tfpipe.train import checkpoints
from tfpipe import config as config_lib
from tfpipe import logs
from tfpipe.distribute import sharding, strategies
from tfpipe.train import faults
from tfpipe.profile import trace
from tfpipe.train import inputs
from tfpipe.data import check, labels, pipeline, sources
from tfpipe.train import custom, placement, probe, progress
from tfpipe.train import result as result_lib
from tfpipe.train import losses, recipes, schedules, stopping
from tfpipe.train.steps import Metrics, Steps

def _say(msg: str) -> None:
    print(f"[tfpipe] {msg}", flush=True)


def _input_mode(cfg) -> str:
    """`checkpoint.input`, except that a tf.data service stream cannot be saved
    (TF 2.21: "SaveInternal is not yet supported"), so there `auto` means replay."""
    if not cfg.data.service.address:
        return cfg.checkpoint.input
    if cfg.checkpoint.input == "iterator":
        raise ValueError(
            "checkpoint.input: 'iterator' cannot be saved when data.service.address is set "
            "(a tf.data service iterator is not checkpointable); use 'replay' or 'auto'"
        )
    return "replay"


@check.names_bad_input  # a TF error from the input pipeline -> one line naming the file
def run(cfg: config_lib.Config, workdir: str | os.PathLike, model=None) -> result_lib.Result:
    """Trains, evaluates and exports the model `cfg` describes.

    Rerunning with the same `workdir` resumes from its latest checkpoint; a
    finished run is not trained again (its saved results come back).

    Args:
        cfg: a `tfpipe.config.Config` (see `tfpipe.load_config`).
        workdir: where config.yaml, checkpoints/, logs/, model.keras,
            metrics.json and history.json are written.
        model: None builds `model.name`; a `keras.Model` or a builder
            callable (see tfpipe/train/custom.py). Data from Python comes in
            through `tfpipe.train(cfg, data=...)`.

    Returns:
        A `tfpipe.train.result.Result`: reads like the metrics dict written
        to `workdir/metrics.json` (test-split `accuracy` and `loss`,
        training `examples_per_sec` (warm-up excluded), `epochs`, `steps`),
        and carries `history`, `model`, `workdir` and `report`.

    Example:

    ```python
    cfg = tfpipe.load_config("configs/digits_mlp.yaml", overrides=["train.epochs=5"])
    metrics = tfpipe.train(cfg, "runs/quick")
    ```
    """
    # ---------------------------------------------------------------- Setup
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with logs.quiet():  # device set-up logs cuInit & co. when TF was imported before tfpipe
        strategies.configure_devices(cfg.runtime)
    strategies.serve_parameter_server_task(cfg.runtime)  # ps/worker tasks block here
    keras.utils.set_random_seed(cfg.runtime.seed)
    with logs.quiet():
        strategy = strategies.make_strategy(cfg.runtime)
    faults.keep_sigterm_handler()  # multi_worker_mirrored's coordination service replaces it
    # parameter_server: this process is the coordinator; steps run on workers.
    coordinator = (
        tf.distribute.coordinator.ClusterCoordinator(strategy) if strategies.is_parameter_server(strategy) else None
    )
    global_batch = cfg.train.batch_size
    strategies.check_batch(global_batch, strategy)
    learning_rate = strategies.learning_rate(cfg.optimizer.learning_rate, cfg.runtime, strategy)
    _say(strategies.describe(strategy, global_batch, cfg.runtime, learning_rate))
    # Only the chief writes into workdir; other workers write to a temporary dir.
    outdir = Path(strategies.output_dir(workdir))
    config_lib.dump(cfg, outdir / "config.yaml")
    labels.save(cfg.data, outdir)  # a string label column's class names (labels.json), checked on resume

    # ---------------------------------------------------------------- Input
    # Bad files fail here, naming file and record, before any training.
    data_report = check.preflight(cfg.data, log=_say)
    check.require_eval_split(cfg.data)  # the run ends by evaluating: a split for it must exist
    train_source = sources.load(cfg.data, "train")
    steps_per_epoch = cfg.train.steps_per_epoch or math.ceil(train_source.num_examples / global_batch)
    total_steps = steps_per_epoch * cfg.train.epochs

    def input_fn(split, training, stamp=False):
        return lambda ctx: pipeline.build(cfg.data, split, global_batch, ctx, training=training, stamp=stamp)

    eval_splits = [split for split in ("validation", "test") if sources.load(cfg.data, split).num_examples > 0]
    if coordinator:
        # The statistics of `normalize` steps are computed here, eagerly, and
        # cached: inside the per-worker dataset function (a tf.function) that
        # pass over the training data cannot run.
        pipeline.resolve_stats(cfg.data)
        train_data = strategies.PerWorkerInput(coordinator, lambda: pipeline.build(cfg.data, "train", global_batch))
        # The coordinator evaluates inline, reading the variables from the ps tasks.
        eval_datasets = {split: pipeline.build(cfg.data, split, global_batch, training=False) for split in eval_splits}
    else:
        # Stamped: each batch carries when it was ready, for the input-wait timer.
        stamp = cfg.profile.measure_input_wait
        try:  # data.in_graph: the split held as tensors, batches gathered in the step
            train_data = inputs.from_config(cfg, strategy, global_batch, steps_per_epoch, _input_mode(cfg), stamp)
        except ValueError as e:
            if not cfg.data.in_graph:
                raise
            raise config_lib.ConfigError(str(e)) from None
        if cfg.data.in_graph:
            _say(f"data.in_graph: {train_data.num_examples} training examples held in memory "
                 f"({train_data.nbytes / 2**20:,.1f} MiB), batches gathered inside the step")
        eval_datasets = {split: strategy.distribute_datasets_from_function(input_fn(split, False)) for split in eval_splits}
    train_pass = pipeline.build(cfg.data, "train", global_batch, training=False)
    features_spec, labels_spec = train_pass.element_spec
    cfg = custom.resolve_loss(cfg, labels_spec)  # model.loss: auto -> sparse or categorical
    metric_names = recipes.metric_names(cfg.train, cfg.model.loss)
    watched = [k for k, on in (("optimizer.schedule.monitor", cfg.optimizer.schedule.name == "plateau"),
                               ("train.early_stopping.monitor", cfg.train.early_stopping.enabled)) if on]
    if watched and "validation" not in eval_splits:
        raise config_lib.ConfigError(
            f"{watched[0]}: needs a validation split, and this data has none "
            "(set data.split.validation or data.files.validation)"
        )
    # Label smoothing and class weights ("balanced" reads the training labels once).
    train_loss_fn = losses.from_config(cfg, train_source.num_classes, train_pass, log=_say)

    # ---------------------------------------------------------------- Model
    with strategy.scope():
        with strategies.precision_policy(cfg.runtime):
            # model.name, or the caller's keras.Model or builder (tfpipe/train/custom.py).
            model = custom.build_model(model, cfg, features_spec, train_source.num_classes, strategy)
        stages = None
        if cfg.runtime.placement.devices:  # the model cut into stages on devices (tfpipe/train/placement.py)
            try:
                model, stages = placement.split(model, cfg.runtime.placement)
            except ValueError as e:
                raise config_lib.ConfigError(str(e)) from None
            _say("runtime.placement: " + ", ".join(
                f"stage {k} on {d} ({len(m.layers) - 1} layers, {m.count_params():,} weights)"
                for k, (d, m) in enumerate(zip(stages.devices, stages.models)))
                + (f"; {stages.micro_batches} micro-batches per batch" if stages.micro_batches > 1 else ""))
        # optimizer.schedule (evaluated at optimizer.iterations, which the
        # checkpoint holds); fused Adam unless optimizer.fused is false.
        optimizer, plateau = schedules.build_optimizer(
            cfg, learning_rate, steps_per_epoch, total_steps,
            recipes.mode(cfg.optimizer.schedule.monitor),
        )  # fmt: skip
        optimizer = strategies.wrap_optimizer(optimizer, cfg.runtime)
        # Build the slots now so a checkpoint restores into existing variables.
        # A sharded variable gets one set of slots per shard, beside it on its ps.
        optimizer.build(sharding.train_variables(model))
        try:
            train_metrics = Metrics(cfg.model.loss, "train", metric_names, train_source.num_classes)
            eval_metrics = Metrics(cfg.model.loss, "eval", metric_names, train_source.num_classes)
        except ValueError as e:  # top_k of too few classes
            raise config_lib.ConfigError(str(e)) from None
        stopper = stopping.EarlyStopping(cfg.train.early_stopping, model) if cfg.train.early_stopping.enabled else None
    if cfg.model.l2 and not losses.kernels(model):
        raise config_lib.ConfigError(f"model.l2: the model {model.name!r} has no kernel variables to apply it to")
    # The functional form returns one loss per example; tf.nn.compute_average_loss
    # then divides by the global batch, which is right for any replica count.
    loss_fn = keras.losses.get(cfg.model.loss)
    # Created outside the scope: a plain variable that Python can read with
    # int() under any strategy (a MirroredVariable cannot be).
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    nonfinite = faults.NonFiniteGuard(cfg.train.on_nonfinite, cfg.train.max_skipped_steps)
    input_timer = trace.InputWaitTimer(cfg.profile.measure_input_wait)
    line = progress.EpochLine(cfg.train.epochs, steps_per_epoch)
    profiler = trace.Profiler(cfg.profile, outdir, input_timer, trace=strategies.current_task().is_chief, log=line.print)
    preemption = faults.PreemptionVote(strategy)

    steps = Steps(
        strategy, model, optimizer, loss_fn, train_metrics, eval_metrics, nonfinite, input_timer, step,
        train_data, coordinator=coordinator, jit_compile=cfg.runtime.jit_compile, train_loss_fn=train_loss_fn,
        l2=cfg.model.l2, clipnorm=cfg.optimizer.clipnorm, global_clipnorm=cfg.optimizer.global_clipnorm,
        stages=stages,
    )  # fmt: skip

    # ---------------------------------------------------------------- Restore
    # Every worker saves, each into its own outdir: under multi_worker_mirrored
    # saving a sync-on-read variable all-reduces it, and a chief saving alone
    # pairs that with a peer's next step (verified: "Shape mismatch in the
    # collective instance"). Every worker restores from the chief's checkpoints.
    # The plateau and early-stopping state (best value, wait, best weights) is
    # in it too, so a resumed run waits and stops as an uninterrupted one.
    recipe_state = {}
    if plateau:
        recipe_state["plateau"] = tf.train.Checkpoint(**plateau.trackables())
    if stopper:
        recipe_state["early_stopping"] = tf.train.Checkpoint(**stopper.trackables())
    checkpointer = checkpoints.Checkpointer(
        outdir / "checkpoints", cfg.checkpoint.keep, cfg.checkpoint.every_steps, step,
        restore_dir=workdir / "checkpoints",
        model=model, optimizer=optimizer, random=checkpoints.random_state(model),
        optional=recipe_state, **train_data.trackables,
    )  # fmt: skip
    # runtime.variable_partitioner: say where the shards went, make them
    # checkpointable, and refuse checkpoints written with another split
    # (tfpipe/distribute/sharding.py).
    shard_layout = sharding.layout(model)
    if shard_layout:
        sharding.make_checkpointable(model.variables)
        _say(f"runtime.variable_partitioner: {sharding.describe(shard_layout)}")
    try:
        sharding.check_layout(workdir / "checkpoints", shard_layout, bool(checkpointer.candidates()))
    except ValueError as e:
        raise checkpoints.CheckpointError(str(e)) from None
    if shard_layout:
        sharding.write_layout(outdir / "checkpoints", shard_layout)
    restored = checkpointer.restore()
    stopped = bool(stopper and stopper.stopped)  # an early-stopped run is not trained on
    if (int(step) >= total_steps or stopped) and (workdir / "metrics.json").exists():
        if stopped:
            _say(f"train.early_stopping ended this run after epoch {int(stopper.stopped_epoch.numpy())}; "
                 "more epochs will not resume it (a new workdir trains afresh)")
        # If model.keras does not load (a subclassed model), `model` holds the restored final weights.
        return custom.finished(workdir, total_steps, lambda: custom.compiled_copy(model, cfg, strategy, features_spec))
    if restored:
        _say(
            f"resuming from {checkpointer.latest} at step {int(step)} "
            f"(epoch {int(step) // steps_per_epoch} of {cfg.train.epochs}, input {train_data.mode})"
        )
    train_data.start(int(step), checkpointer.latest)
    profiler.plan(total_steps, int(step), steps_per_epoch)  # a run too short for the window gets it earlier

    # ---------------------------------------------------------------- Loop
    try:
        writers = {
            name: tf.summary.create_file_writer(str(outdir / "logs" / name)) for name in ("train", "validation")
        }
        # Throughput counts only loop calls, and not the first call of the process
        # (it traces and compiles). Results are read back (a host sync) only when
        # the progress bar is due to redraw and at epoch ends, so Python queues the
        # next call while the previous one runs, as `fit` does.
        timed_steps, timed_seconds, timed_wait, traced = 0, 0.0, 0.0, False
        current = int(step)
        history = result_lib.read_history(workdir, current)  # a resumed run keeps its earlier epochs
        values = []
        while current < total_steps and not stopped:
            epoch = current // steps_per_epoch
            epoch_end = (epoch + 1) * steps_per_epoch
            line.start(epoch)
            train_metrics.reset()
            start, epoch_steps, last_draw = time.perf_counter(), 0, 0.0
            wait_start = input_timer.seconds()
            while current < epoch_end:
                n = min(cfg.train.steps_per_loop, epoch_end - current, checkpointer.steps_to_next(current))
                why = "compiling the training loop" if not traced else profiler.upcoming(current, n)
                if why:  # a slow call: say what it waits for instead of a stalled bar
                    line.waiting(current - epoch * steps_per_epoch, dict(values), why)
                if coordinator:  # parameter servers: closures scheduled on workers
                    results = steps.schedule_call(n, current + n >= epoch_end)
                else:  # marks, traces or unrolls the call when the profiler asks for it
                    results = profiler.call(steps.train_call, current, n)
                current += n
                if not traced:  # wait for the tracing call, then start the clock
                    float(results[0])
                    traced, start = True, time.perf_counter()
                    wait_start = input_timer.seconds()
                    # Neither its steps nor its seconds count, so what the profiler
                    # booked for it (a window moved to step 0 starts here) is dropped
                    # too; subtracting it later made examples_per_sec negative.
                    profiler.pop_profiled_time()
                else:
                    epoch_steps += n
                now = time.perf_counter()
                if now - last_draw > 0.2 or current == epoch_end:
                    values = [(key, float(value)) for key, value in zip(train_metrics.keys, results)]
                    line.update(current - epoch * steps_per_epoch, dict(values), profiler.ms_per_step(epoch_steps, now - start))
                    last_draw = now
                    nonfinite.after_loop(checkpointer.latest)  # reports skips; raises under "stop"
                preempted = preemption()  # agreed by all workers of a multi-worker job
                if checkpointer.due(current) or preempted:
                    nonfinite.after_loop(checkpointer.latest)  # never save past a stop
                    checkpointer.save(current)
                if preempted:
                    line.close()
                    for writer in writers.values():
                        writer.flush()
                    raise faults.Preempted(current, checkpointer.latest)
            profiler.end_of_epoch()
            epoch_seconds = time.perf_counter() - start
            epoch_wait = input_timer.seconds() - wait_start
            # The profiler's calls compile or trace: their time is not throughput.
            skip_steps, skip_seconds, skip_wait = profiler.pop_profiled_time()
            epoch_steps, epoch_seconds, epoch_wait = epoch_steps - skip_steps, epoch_seconds - skip_seconds, epoch_wait - skip_wait
            if epoch_steps:
                timed_steps, timed_seconds = timed_steps + epoch_steps, timed_seconds + epoch_seconds
                timed_wait += epoch_wait
            result = dict(values)

            with writers["train"].as_default(step=current):
                for name, value in result.items():
                    tf.summary.scalar(name, value)
                if epoch_steps:
                    tf.summary.scalar("examples_per_sec", epoch_steps * global_batch / epoch_seconds)
                    if input_timer.enabled:
                        tf.summary.scalar("input_wait_fraction", epoch_wait / epoch_seconds)
            val = {}
            if "validation" in eval_datasets:
                val = steps.evaluate(eval_datasets["validation"])
                with writers["validation"].as_default(step=current):
                    for name, value in val.items():
                        tf.summary.scalar(name, value)
            if skip_seconds >= 0.05:
                line.note(f"profiler calls {skip_seconds:.1f} s, not counted")
            if plateau and (note := plateau.update(val, epoch + 1)):
                line.note(note)
            if stopper and (note := stopper.update(val, epoch + 1)):
                line.note(note)
                stopped = True
            # The rate the next step uses: the schedule at optimizer.iterations,
            # after any plateau cut made just above.
            rate = schedules.current_rate(optimizer)
            with writers["train"].as_default(step=current):
                tf.summary.scalar("learning_rate", rate)
            ms = 1000 * epoch_seconds / epoch_steps if epoch_steps else None
            history.append({"epoch": epoch + 1, "step": current, **result, **{f"val_{k}": v for k, v in val.items()},
                            "learning_rate": rate,
                            "examples_per_sec": epoch_steps * global_batch / epoch_seconds if epoch_steps else None})
            hidden = ("epoch", "step", "examples_per_sec", "learning_rate")
            shown = {k: v for k, v in history[-1].items() if k not in hidden}
            if cfg.optimizer.schedule.name != "constant" or cfg.optimizer.schedule.warmup:
                shown["lr"] = rate
            line.end(shown, ms)
            if (epoch + 1) % cfg.checkpoint.every_epochs == 0 or current >= total_steps or stopped:
                checkpointer.save(current)
                result_lib.write_history(outdir, history)  # matches the checkpoint a resume starts from
        for writer in writers.values():
            writer.flush()
        perfect = None
        if profiler.has_window and cfg.profile.perfect_input_probe and coordinator is None and timed_steps \
                and inputs.single_worker(strategy) and not cfg.data.in_graph:
            # The report's perfect-input speed-up, measured (tfpipe/train/probe.py);
            # not for data.in_graph, whose gather beats one cached batch through tf.data.
            one_batch = dataclasses.replace(cfg.data, repeat_one_batch=True)
            perfect = probe.perfect_input(
                steps, train_data, inputs.train_dataset_fn(one_batch, global_batch, stamp),
                min(cfg.train.steps_per_loop, steps_per_epoch), run_ms_per_step=1000 * timed_seconds / timed_steps,
            )  # fmt: skip
        profiler.finish(cfg, perfect_input=perfect)
    except BaseException:
        profiler.abort()  # a failed run leaves no trace session open in the process
        raise

    # ---------------------------------------------------------------- Evaluate
    if stopper:
        restored = stopper.restore_best()  # train.early_stopping.restore_best: the best epoch is evaluated and exported
        _say(
            (f"early stopping: stopped after epoch {int(stopper.stopped_epoch.numpy())} of {cfg.train.epochs}"
             if stopper.stopped else f"early stopping: ran all {cfg.train.epochs} epochs")
            + f"; best {cfg.train.early_stopping.monitor} {stopper.best:.4f} at epoch {stopper.best_epoch}"
            + ("; restored its weights for evaluation and export" if restored else "; kept the last weights")
        )
    split = "test" if "test" in eval_datasets else "validation"
    final = steps.evaluate(eval_datasets[split])

    # ---------------------------------------------------------------- Export
    exported = custom.export(model, cfg, strategy, outdir / "model.keras", features_spec)  # compiled: predict and evaluate
    if cfg.export.serving:
        # Imported here: serving sits on top of training, not under it.
        from tfpipe.serve import export as serve_export  # pylint: disable=import-outside-toplevel

        served = serve_export.export(model, cfg, outdir / "export" / serve_export.model_name(cfg))
        _say(f"exported serving_default -> {served}")

    # ---------------------------------------------------------------- Report
    metrics = {
        **final,  # loss and train.metrics (accuracy, auc, ...) on the test split
        "eval_split": split,
        "examples_per_sec": timed_steps * global_batch / timed_seconds if timed_seconds else None,
        "input_wait_fraction": timed_wait / timed_seconds if timed_seconds and input_timer.enabled else None,
        "epochs": cfg.train.epochs,
        "steps": int(step),
        "nonfinite_skipped": int(nonfinite.skipped),
        # Equal on every worker of a synchronous run: a cheap check they did not diverge.
        "weights_sha256": strategies.weights_digest(model),
    }
    if stopper:
        metrics["early_stopping"] = stopper.summary(len(history))
    if cfg.data.ignore_errors:
        metrics["skipped_records"] = data_report.bad_records
        metrics["skipped_examples"] = data_report.names
        check.summarize_skipped(data_report, writers["train"], step=int(step))
        _say(f"data.ignore_errors: skipped {data_report.bad_records} bad records"
             + (f", first: {', '.join(data_report.names)}" if data_report.names else "") + " (listed at start-up)")
    with open(outdir / "metrics.json", "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    result_lib.write_history(outdir, history)
    strategies.cleanup_output_dir(outdir, workdir)
    eps = f"{metrics['examples_per_sec']:.0f}" if metrics["examples_per_sec"] else "n/a"
    _say(
        f"done: {split} " + " ".join(f"{k} {final[k]:.4f}" for k in eval_metrics.keys[1:] + ["loss"]) + ", "
        f"{eps} examples/sec, {metrics['steps']} steps, weights {metrics['weights_sha256'][:12]} -> "
        + (str(workdir) if outdir == workdir else "(not the chief: outputs discarded)")
    )
    return result_lib.Result(metrics, history, exported, workdir, profiler.report)

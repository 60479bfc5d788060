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

import json
import math
import os
import time
from pathlib import Path

import keras
import tensorflow as tf

import models
from tfpipe import config as config_lib
from tfpipe import distribute, profiling
from tfpipe.data import pipeline, sources

_ACCURACY = {
    "categorical_crossentropy": keras.metrics.CategoricalAccuracy,
    "sparse_categorical_crossentropy": keras.metrics.SparseCategoricalAccuracy,
    "binary_crossentropy": keras.metrics.BinaryAccuracy,
}


def _say(msg: str) -> None:
    print(f"[tfpipe] {msg}", flush=True)


class _Metrics:
    """Loss mean and accuracy for one phase (train or eval); built in strategy scope."""

    def __init__(self, loss_name: str, prefix: str):
        self.loss = keras.metrics.Mean(name=f"{prefix}_loss")
        self.accuracy = _ACCURACY[loss_name](name=f"{prefix}_accuracy")

    def update(self, per_example_loss, labels, predictions):
        self.loss.update_state(per_example_loss)
        self.accuracy.update_state(labels, predictions)

    def reset(self):
        self.loss.reset_state()
        self.accuracy.reset_state()

    def result(self) -> dict:
        return {"loss": float(self.loss.result()), "accuracy": float(self.accuracy.result())}


def run(cfg: config_lib.Config, workdir: str | os.PathLike) -> dict:
    """Trains, evaluates and exports the model `cfg` describes.

    Rerunning with the same `workdir` resumes from its latest checkpoint.

    Args:
        cfg: a `tfpipe.config.Config` (see `tfpipe.load_config`).
        workdir: where config.yaml, checkpoints/, logs/, model.keras and
            metrics.json are written.

    Returns:
        The metrics also written to `workdir/metrics.json`: test-split
        `accuracy` and `loss`, training `examples_per_sec` (warm-up
        excluded), `epochs`, `steps`.

    Example:

    ```python
    cfg = tfpipe.load_config("configs/digits_mlp.yaml", overrides=["train.epochs=5"])
    metrics = tfpipe.train(cfg, "runs/quick")
    ```
    """
    # ---------------------------------------------------------------- Setup
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    distribute.configure_devices(cfg.runtime)
    keras.utils.set_random_seed(cfg.runtime.seed)
    strategy = distribute.make_strategy(cfg.runtime)
    global_batch = cfg.train.batch_size
    distribute.check_batch(global_batch, strategy)
    _say(distribute.describe(strategy, global_batch))
    config_lib.dump(cfg, workdir / "config.yaml")

    # ---------------------------------------------------------------- Input
    train_source = sources.load(cfg.data, "train")
    steps_per_epoch = cfg.train.steps_per_epoch or math.ceil(train_source.num_examples / global_batch)
    total_steps = steps_per_epoch * cfg.train.epochs

    def input_fn(split, training):
        return lambda ctx: pipeline.build(cfg.data, split, global_batch, ctx, training=training)

    train_iterator = iter(strategy.distribute_datasets_from_function(input_fn("train", True)))
    eval_datasets = {
        split: strategy.distribute_datasets_from_function(input_fn(split, False))
        for split in ("validation", "test")
        if sources.load(cfg.data, split).num_examples > 0
    }
    features_spec = pipeline.build(cfg.data, "train", global_batch, training=False).element_spec[0]

    # ---------------------------------------------------------------- Model
    with strategy.scope():
        model = models.build(cfg.model.name, features_spec.shape[1:], train_source.num_classes, cfg.model.params)
        optimizer = keras.optimizers.get(
            {"class_name": cfg.optimizer.name, "config": {"learning_rate": cfg.optimizer.learning_rate}}
        )
        # Build the slots now so a checkpoint restores into existing variables.
        optimizer.build(model.trainable_variables)
        train_metrics = _Metrics(cfg.model.loss, "train")
        eval_metrics = _Metrics(cfg.model.loss, "eval")
    # The functional form returns one loss per example; tf.nn.compute_average_loss
    # then divides by the global batch, which is right for any replica count.
    loss_fn = keras.losses.get(cfg.model.loss)
    # Created outside the scope: a plain variable that Python can read with
    # int() under any strategy (a MirroredVariable cannot be).
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    input_timer = profiling.InputWaitTimer(cfg.profile.measure_input_wait)
    profiler = profiling.Profiler(cfg.profile, workdir, input_timer)

    def train_step(features, labels):
        with tf.GradientTape() as tape:
            predictions = model(features, training=True)
            per_example = loss_fn(labels, predictions)
            loss = tf.nn.compute_average_loss(per_example)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        train_metrics.update(per_example, labels, predictions)

    @tf.function
    def train_loop(iterator, num_steps):
        # A tensor num_steps makes a while loop; a Python int (inside the
        # profiler's window) unrolls it, see tfpipe/profiling.py.
        done = input_timer.token()
        for _ in range(num_steps):
            strategy.run(train_step, args=input_timer.next(iterator, done))
            step.assign_add(1)
            done = input_timer.step_done(model.trainable_variables)

    def eval_step(features, labels):
        predictions = model(features, training=False)
        eval_metrics.update(loss_fn(labels, predictions), labels, predictions)

    @tf.function
    def eval_loop(dataset):
        for features, labels in dataset:
            strategy.run(eval_step, args=(features, labels))

    def evaluate(split) -> dict:
        eval_metrics.reset()
        eval_loop(eval_datasets[split])
        return eval_metrics.result()

    # ---------------------------------------------------------------- Restore
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(
        checkpoint, str(workdir / "checkpoints"), max_to_keep=cfg.checkpoint.keep, step_counter=step
    )
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        _say(
            f"resuming from {manager.latest_checkpoint} at step {int(step)} "
            f"(epoch {int(step) // steps_per_epoch} of {cfg.train.epochs})"
        )

    # ---------------------------------------------------------------- Loop
    writers = {
        name: tf.summary.create_file_writer(str(workdir / "logs" / name)) for name in ("train", "validation")
    }
    timed_steps, timed_seconds, timed_wait, warm = 0, 0.0, 0.0, False
    while int(step) < total_steps:
        epoch = int(step) // steps_per_epoch
        epoch_end = (epoch + 1) * steps_per_epoch
        _say(f"epoch {epoch + 1}/{cfg.train.epochs}")
        progbar = keras.utils.Progbar(steps_per_epoch, stateful_metrics=["loss", "accuracy"])
        train_metrics.reset()
        epoch_steps, epoch_seconds, epoch_wait = 0, 0.0, 0.0
        while int(step) < epoch_end:
            n = min(cfg.train.steps_per_loop, epoch_end - int(step))
            wait = input_timer.seconds()
            start = time.perf_counter()
            with profiler.loop_call(int(step), n) as num_steps:
                train_loop(train_iterator, num_steps)
                result = train_metrics.result()  # reading the metric waits for the steps to finish
            seconds = time.perf_counter() - start
            wait = input_timer.seconds() - wait
            epoch_steps, epoch_seconds, epoch_wait = epoch_steps + n, epoch_seconds + seconds, epoch_wait + wait
            # The first call of a process includes tracing, and the profiler's
            # calls compile or trace: not counted.
            if warm and not profiler.last_call_profiled:
                timed_steps, timed_seconds, timed_wait = timed_steps + n, timed_seconds + seconds, timed_wait + wait
            warm = True
            progbar.update(int(step) - epoch * steps_per_epoch, values=list(result.items()))
        profiler.end_of_epoch()

        with writers["train"].as_default(step=int(step)):
            for name, value in result.items():
                tf.summary.scalar(name, value)
            tf.summary.scalar("learning_rate", float(tf.convert_to_tensor(optimizer.learning_rate)))
            tf.summary.scalar("examples_per_sec", epoch_steps * global_batch / epoch_seconds)
            if input_timer.enabled:
                tf.summary.scalar("input_wait_fraction", epoch_wait / epoch_seconds)
        if "validation" in eval_datasets:
            val = evaluate("validation")
            with writers["validation"].as_default(step=int(step)):
                for name, value in val.items():
                    tf.summary.scalar(name, value)
            _say(f"validation loss {val['loss']:.4f} accuracy {val['accuracy']:.4f}")
        if (epoch + 1) % cfg.checkpoint.every_epochs == 0 or int(step) >= total_steps:
            manager.save(checkpoint_number=int(step))
    for writer in writers.values():
        writer.flush()
    profiler.finish(cfg)

    # ---------------------------------------------------------------- Evaluate
    split = "test" if "test" in eval_datasets else "validation"
    final = evaluate(split)

    # ---------------------------------------------------------------- Export
    model.save(workdir / "model.keras")

    # ---------------------------------------------------------------- Report
    metrics = {
        "accuracy": final["accuracy"],
        "loss": final["loss"],
        "eval_split": split,
        "examples_per_sec": timed_steps * global_batch / timed_seconds if timed_seconds else None,
        "input_wait_fraction": timed_wait / timed_seconds if timed_seconds and input_timer.enabled else None,
        "epochs": cfg.train.epochs,
        "steps": int(step),
    }
    with open(workdir / "metrics.json", "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    eps = f"{metrics['examples_per_sec']:.0f}" if metrics["examples_per_sec"] else "n/a"
    _say(
        f"done: {split} accuracy {metrics['accuracy']:.4f} loss {metrics['loss']:.4f}, "
        f"{eps} examples/sec, {metrics['steps']} steps -> {workdir}"
    )
    return metrics

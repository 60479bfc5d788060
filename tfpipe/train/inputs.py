"""The training input stream, and how its position survives a restart.

Exact resume needs the first batch after a restart to be the batch the
stopped run would have read next. `checkpoint.input` chooses how:

- `iterator`: the tf.data iterator is saved in the checkpoint. tf.data
  saves its buffers with it: the shuffle buffer, prefetched batches and an
  in-memory cache (all of it), so the checkpoint grows by about the size of
  the cached data. Restoring is instant.
- `replay`: only the step is saved. On restart the pipeline is rebuilt and
  the batches already consumed are produced and dropped. Exact only for a
  deterministic pipeline (`data.deterministic: true` and a fixed
  `data.shuffle.seed`); costs input time proportional to the steps done.
- `auto`: `iterator` where the strategy and the pipeline allow it, else `replay`.

tf.data cannot save an iterator whose pipeline holds stateful random ops
(`tf.random.uniform` in an augmentation map: "RandomUniformInt is
stateful"). A fresh iterator is probed once at start: under `auto` such a
pipeline is replayed, `iterator` is refused with the reason. Replaying
redraws the same random numbers only if the map runs sequentially.

The iterator that `strategy.distribute_datasets_from_function` returns is
not trackable under MirroredStrategy (TF 2.21: `tf.train.Checkpoint`
rejects it). For `iterator` under a single-worker strategy, tfpipe therefore
keeps one plain tf.data iterator of global batches and, inside the compiled
step, slices each batch across the replicas with
`strategy.experimental_distribute_values_from_function`. Multi-worker
strategies use `replay`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable

import numpy as np
import tensorflow as tf
from absl import logging

# Strategies whose replicas all live in this process: one host pipeline can
# feed them and its iterator can be checkpointed.
_SINGLE_WORKER = (tf.distribute.MirroredStrategy, tf.distribute.OneDeviceStrategy)


def single_worker(strategy) -> bool:
    """Whether every replica of `strategy` lives in this process (the default strategy included)."""
    return isinstance(strategy, _SINGLE_WORKER) or not tf.distribute.has_strategy() and (
        strategy is tf.distribute.get_strategy()
    )


def _why_unsaveable(iterator) -> str | None:
    """Why tf.data cannot checkpoint `iterator` (None if it can): one small trial write."""
    with tempfile.TemporaryDirectory(prefix="tfpipe-probe-") as tmp:
        try:
            tf.train.Checkpoint(input=iterator).write(os.path.join(tmp, "probe"))
        except (tf.errors.FailedPreconditionError, tf.errors.UnimplementedError) as e:
            return e.message.split("}}")[-1].split("[Op:")[0].strip().rstrip(".")
    return None


class TrainInput:
    """The training batches of one run, resumable from a checkpoint.

    Args:
        strategy: the run's `tf.distribute.Strategy`.
        mode: `checkpoint.input`: "auto", "iterator" or "replay".
        dataset_fn: `InputContext | None -> tf.data.Dataset` of batches. Called
            with None it must give global batches (one host pipeline);
            with a context, per-replica batches for that input pipeline.
        data_cfg: the `DataConfig`, to warn when replay cannot be exact.

    Use: put `trackables` into the checkpoint, restore, call `start(step)`,
    then inside the compiled loop `strategy.run(fn, args=next_batch(it))`
    with `it = self.iterator` passed in as an argument.
    """

    def __init__(self, strategy, mode: str, dataset_fn: Callable, data_cfg=None, stamped: bool = False):
        self._strategy = strategy
        # The datasets carry each batch's ready time (pipeline.build(stamp=True));
        # next_batch then returns (batch, ready_time).
        self.stamped = stamped
        self._dataset_fn = dataset_fn
        supported = single_worker(strategy)
        if mode == "iterator" and not supported:
            raise ValueError(
                f"checkpoint.input: 'iterator' needs a single-worker strategy; "
                f"{type(strategy).__name__} cannot save its input iterator. Use 'replay' or 'auto'."
            )
        self.mode = "iterator" if mode == "iterator" or (mode == "auto" and supported) else "replay"
        self.iterator = iter(dataset_fn(None)) if self.mode == "iterator" else None
        if self.mode == "iterator":
            unsaveable = _why_unsaveable(self.iterator)
            if unsaveable and mode == "iterator":
                raise ValueError(
                    f"checkpoint.input: 'iterator': tf.data cannot save this pipeline's iterator ({unsaveable}); "
                    "use 'replay' or 'auto', or stateless random ops in data.map.steps"
                )
            if unsaveable:
                logging.warning("checkpoint.input auto: replaying the input, the iterator cannot be saved (%s)",
                                unsaveable)
                self.mode, self.iterator = "replay", None
        if self.mode == "replay" and data_cfg is not None:
            if not data_cfg.deterministic or (data_cfg.shuffle.buffer_size > 0 and data_cfg.shuffle.seed is None):
                logging.warning(
                    "checkpoint.input is replay but the pipeline is not deterministic "
                    "(data.deterministic false or no data.shuffle.seed): a resumed run will see "
                    "different batches than an uninterrupted one"
                )

    @property
    def trackables(self) -> dict:
        """What the checkpoint must hold for this input: the iterator, or nothing."""
        return {"input": self.iterator} if self.mode == "iterator" else {}

    def start(self, step: int, restored: str | None = None) -> None:
        """Positions the input after `step` steps (replay); a restored iterator is already there.

        Args:
            step: steps already done.
            restored: the checkpoint restored, if any: a checkpoint written
                under `replay` holds no iterator, so the iterator starts over
                and the resumed run is not exact; that is said, not hidden.
        """
        if self.mode == "iterator":
            if restored and step and not tf.train.load_checkpoint(restored).has_tensor(
                "input/.ATTRIBUTES/ITERATOR_STATE"
            ):
                msg = (f"{restored} holds no input iterator (written with checkpoint.input: replay?): "
                       "the input starts a new pass, so this resume is not exact")
                logging.warning(msg)
                print(f"[tfpipe] warning: {msg}", flush=True)
            return

        def skipped(ctx):
            ds = self._dataset_fn(ctx)
            # Each step takes one per-replica batch for each replica this
            # pipeline feeds. Dropping them at the end of the pipeline keeps
            # every random op and shuffle in the same state as the first run.
            batches = step * (ctx.num_replicas_in_sync // ctx.num_input_pipelines)
            return ds.skip(batches) if batches else ds

        self.iterator = iter(self._strategy.distribute_datasets_from_function(skipped))

    def iterator_for(self, dataset_fn: Callable):
        """An iterator over another `dataset_fn`'s batches, built as this input builds its own
        (one host pipeline sliced in the step, or a distributed dataset), so `next_batch` reads it."""
        if self.mode == "iterator":
            return iter(dataset_fn(None))
        return iter(self._strategy.distribute_datasets_from_function(dataset_fn))

    def next_batch(self, iterator):
        """The next step's arguments for `strategy.run`; call inside the compiled loop.

        With `stamped`, `(arguments, ready_time)`: when the batch was finished.
        """
        batch = next(iterator)
        if self.stamped:
            batch, ready = batch[:2], batch[2]
            # Per replica under a distributed dataset: the last one to be ready counts.
            ready = tf.reduce_max(tf.stack(self._strategy.experimental_local_results(ready)))
            return self._slice(batch), ready
        return self._slice(batch)

    def _slice(self, batch):
        if self.mode == "replay":
            return batch
        replicas = self._strategy.num_replicas_in_sync
        if replicas == 1:
            return batch

        def replica_slice(ctx):
            i = ctx.replica_id_in_sync_group
            # The global batch splits evenly: distribute.check_batch said so at start.
            return tf.nest.map_structure(
                lambda t: t[i * (tf.shape(t)[0] // replicas) : (i + 1) * (tf.shape(t)[0] // replicas)], batch
            )

        return self._strategy.experimental_distribute_values_from_function(replica_slice)


def from_config(cfg, strategy, global_batch: int, steps_per_epoch: int, mode: str, stamp: bool) -> TrainInput:
    """The run's training input: the split held in the graph (`data.in_graph`) or a tf.data stream.

    Shared by the loop and the tuner's trial windows (tfpipe/tune/window.py),
    so a trial trains on the input a run would.

    Raises:
        ValueError: `data.in_graph` that cannot be had (strategy, size), one line.
    """
    from tfpipe.data import pipeline  # pylint: disable=import-outside-toplevel

    if cfg.data.in_graph:
        return InGraphInput(
            strategy, lambda: pipeline.build(cfg.data, "train", global_batch, training=False), cfg.data,
            steps_per_epoch, global_batch, seed=cfg.runtime.seed, stamped=stamp,
        )  # fmt: skip
    return TrainInput(strategy, mode, train_dataset_fn(cfg.data, global_batch, stamp), cfg.data, stamped=stamp)


def train_dataset_fn(data_cfg, global_batch: int, stamp: bool) -> Callable:
    """The training split's `dataset_fn(input_context)`, as a run builds it."""
    from tfpipe.data import pipeline  # pylint: disable=import-outside-toplevel

    return lambda ctx: pipeline.build(data_cfg, "train", global_batch, ctx, training=True, stamp=stamp)


# The most the in-graph split may hold: it is a copy in host memory, captured
# by the compiled loop.
IN_GRAPH_MAX_BYTES = 2 << 30


class InGraphInput(TrainInput):
    """`data.in_graph`: the training split held as tensors, each batch gathered inside the step.

    The pipeline runs once (deterministically, no shuffle) and its examples
    are kept as host tensors. Step `p` of the run takes the examples at
    positions `k*B .. k*B+B-1` (wrapping) of epoch `p // steps_per_epoch`'s
    permutation, `k = p % steps_per_epoch`, a seeded shuffle of the whole
    split (`data.shuffle.seed`, else `runtime.seed`; the same order every
    epoch when `reshuffle_each_iteration` is false, none when
    `buffer_size` is 0). The position is the step, so a resumed run takes
    the batches an uninterrupted one would: nothing goes into the checkpoint.

    Why: on the digits MLP (0.3 ms steps) handing each batch over from
    tf.data's threads is about half a step (DESIGN.md: 59k examples/s
    through an iterator, 123k with the batch held as a tensor); a gather
    from memory costs microseconds. Single-host strategies only: the
    global batch is gathered and sliced across the replicas.

    Args:
        strategy: the run's strategy (one host).
        materialize: `() -> tf.data.Dataset` of the split's finished batches,
            in order (the pipeline built with `training=False`).
        data_cfg: the `DataConfig`.
        steps_per_epoch: steps per pass over the split.
        global_batch: examples per step.
        seed: the shuffle seed when `data.shuffle.seed` is unset.
        stamped: return `(batch, ready)` as a stamped `TrainInput` does.
    """

    def __init__(self, strategy, materialize: Callable, data_cfg, steps_per_epoch: int, global_batch: int,
                 seed: int = 0, stamped: bool = False):  # fmt: skip
        if not single_worker(strategy):
            raise ValueError(
                f"data.in_graph: needs a single-host strategy (default, one_device, mirrored), got "
                f"{type(strategy).__name__}; under several workers each would hold the whole split"
            )
        self._strategy, self.stamped, self.mode, self.iterator = strategy, stamped, "in_graph", None
        self._dataset_fn = None
        # Grappler's arithmetic optimizer rewrote adds in the compiled loop of
        # the clicks wide & deep fed this way into an accumulator whose
        # temporary variable collided between loop iterations
        # ("AlreadyExistsError: ... AddOpsRewrite_add_4/tmp_var", TF 2.21);
        # without that one rewrite it trains. Process-wide: TF has no
        # per-function switch.
        tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
        parts = [tf.nest.map_structure(lambda t: t.numpy(), b) for b in materialize()]
        if not parts:
            raise ValueError("data.in_graph: the training split is empty")
        arrays = tf.nest.map_structure(lambda *xs: np.concatenate(xs), *parts)
        if data_cfg.repeat_one_batch:
            # Measuring only: every step gathers the split's first batch, the
            # perfect input of a step that gathers its own (benchmarks/diagnosis.py).
            arrays = tf.nest.map_structure(lambda a: a[:global_batch], arrays)
        nbytes = sum(a.nbytes for a in tf.nest.flatten(arrays))
        if nbytes > IN_GRAPH_MAX_BYTES:
            raise ValueError(
                f"data.in_graph: the preprocessed training split takes {nbytes / 2**20:,.0f} MiB; expected at most "
                f"{IN_GRAPH_MAX_BYTES / 2**20:,.0f} MiB (turn data.in_graph off and cache it instead)"
            )
        self.num_examples, self.nbytes = len(tf.nest.flatten(arrays)[0]), nbytes
        with tf.device("/cpu:0"):
            self._tensors = tf.nest.map_structure(tf.constant, arrays)
            # Written by next_batch in the graph; start() sets it to the step.
            self._position = tf.Variable(0, dtype=tf.int64, trainable=False, name="in_graph_position")
            self._order = tf.Variable(tf.range(self.num_examples, dtype=tf.int64), trainable=False,
                                      name="in_graph_order")  # fmt: skip
            self._order_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="in_graph_order_epoch")
        shuffle = data_cfg.shuffle
        self._shuffle = shuffle.buffer_size > 0
        self._reshuffle = shuffle.reshuffle_each_iteration
        self._seed = shuffle.seed if shuffle.seed is not None else seed
        self._steps_per_epoch, self._batch = int(steps_per_epoch), int(global_batch)

    @property
    def trackables(self) -> dict:
        return {}

    def start(self, step: int, restored: str | None = None) -> None:
        self._position.assign(step)
        self._order_epoch.assign(-1)  # recomputed for the step's epoch on the first fetch

    def iterator_for(self, dataset_fn: Callable):
        return iter(dataset_fn(None))

    def _epoch_order(self, epoch):
        seed = tf.stack([tf.constant(self._seed, tf.int64), epoch if self._reshuffle else tf.constant(0, tf.int64)])
        keys = tf.random.stateless_uniform([self.num_examples], seed=seed)
        return tf.argsort(keys, stable=True)

    def next_batch(self, iterator):
        """The next step's batch gathered from memory; `iterator` (the probe's) is read instead when given."""
        if iterator is not None:  # one host pipeline of global batches, sliced like the gathered ones
            return super().next_batch(iterator)
        with tf.device("/cpu:0"):
            position = self._position.assign_add(1) - 1
            epoch, k = position // self._steps_per_epoch, position % self._steps_per_epoch
            if self._shuffle:
                # A new permutation once per epoch (a cond, not an argsort every step).
                def reorder():
                    self._order.assign(tf.cast(self._epoch_order(epoch), tf.int64))
                    self._order_epoch.assign(epoch)
                    return tf.constant(True)

                fresh = tf.cond(tf.equal(self._order_epoch, epoch), lambda: tf.constant(False), reorder)
                with tf.control_dependencies([fresh]):
                    order = self._order.read_value()
            else:
                order = self._order.read_value()
            slots = (k * self._batch + tf.range(self._batch, dtype=tf.int64)) % self.num_examples
            index = tf.gather(order, slots)
            batch = tf.nest.map_structure(lambda t: tf.gather(t, index), self._tensors)
        batch = self._slice(batch)
        if not self.stamped:
            return batch
        # Always ready: nothing is made ahead of the step, so the timer counts
        # no wait (the gather is the step's own work).
        with tf.device("/cpu:0"):
            return batch, tf.constant(0.0, tf.float64)

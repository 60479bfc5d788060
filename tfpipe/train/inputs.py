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

import tensorflow as tf
from absl import logging

# Strategies whose replicas all live in this process: one host pipeline can
# feed them and its iterator can be checkpointed.
_SINGLE_WORKER = (tf.distribute.MirroredStrategy, tf.distribute.OneDeviceStrategy)


def _iterator_supported(strategy) -> bool:
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
        supported = _iterator_supported(strategy)
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

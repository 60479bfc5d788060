"""The compiled step functions of tfpipe's loop, built once per run.

`loop.run` reads top to bottom in phases; what runs inside each step lives
here, so that it can be read, tested and reused apart from the phases:

```python
steps = Steps(strategy, model, optimizer, loss_fn, train_metrics, eval_metrics,
              nonfinite, input_timer, step, train_data)
loss, accuracy = steps.train_call(40)           # 40 steps in one compiled call
val = steps.evaluate(validation_dataset)        # eval_metrics' results
```

- `train_call(n)`: `n` steps in one `tf.function` call (a graph while loop);
  `unrolled=True` unrolls it for the profiler's window (xprof finds no steps
  in a while loop), and `n == 1` runs a loop-free function.
- `schedule_call(n, epoch_ends)`: parameter_server, queues `n` steps on
  whichever worker is free.
- `evaluate(dataset)`: one pass over a distributed dataset.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfpipe.distribute import sharding
from tfpipe.train import losses
from tfpipe.train.metrics import _ACCURACY, Metrics  # noqa: F401  # re-exported: tfpipe.tune and custom use them


class Steps:
    """Training and evaluation steps for one model under one strategy.

    Args:
        strategy: the `tf.distribute.Strategy` the model was built under.
        model, optimizer: built in `strategy.scope()`; the optimizer's slots
            already built.
        loss_fn: a Keras loss returning one value per example.
        train_metrics, eval_metrics: `Metrics` built in scope.
        nonfinite: `tfpipe.train.faults.NonFiniteGuard`.
        input_timer: `tfpipe.profile.trace.InputWaitTimer`.
        step: the global step, a plain int64 `tf.Variable`.
        train_data: `tfpipe.train.inputs.TrainInput` (or, under
            parameter_server, `tfpipe.distribute.strategies.PerWorkerInput`).
        coordinator: the `ClusterCoordinator` under parameter_server, else None.
        jit_compile: XLA-compile each step's forward and backward pass.
        train_loss_fn: the per-example training loss (label smoothing, class
            weights: `tfpipe.train.losses.training_loss`); default `loss_fn`,
            which evaluation always uses.
        l2: `model.l2`, on the model's kernels.
        clipnorm, global_clipnorm: `optimizer.clipnorm`, `.global_clipnorm`
            (0 = off), applied to the gradient summed over all replicas.
        stages: `tfpipe.train.placement.Stages` when the model is split across
            devices (`runtime.placement`): training runs them, each on its
            device, and takes gradients with their ops placed likewise.
    """

    def __init__(self, strategy, model, optimizer, loss_fn, train_metrics, eval_metrics, nonfinite, input_timer,
                 step, train_data, coordinator=None, jit_compile=False, train_loss_fn=None, l2=0.0, clipnorm=0.0,
                 global_clipnorm=0.0, stages=None):  # fmt: skip
        self.strategy, self.model, self.optimizer, self.loss_fn = strategy, model, optimizer, loss_fn
        self.stages = stages
        self.train_loss_fn = train_loss_fn or loss_fn
        self.l2, self.clipnorm, self.global_clipnorm = l2, clipnorm, global_clipnorm
        self.kernels = losses.kernels(model) if l2 else []
        self.train_metrics, self.eval_metrics = train_metrics, eval_metrics
        self.nonfinite, self.input_timer, self.step = nonfinite, input_timer, step
        self.train_data, self.coordinator = train_data, coordinator
        self.loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.compute_step = self._compute_step
        if jit_compile:
            # XLA compiles the model's forward and backward pass; the optimizer
            # update stays outside because its cross-replica sum cannot be compiled.
            compiled = tf.function(self._compute_step, jit_compile=True)

            def compute_step(features, labels):
                # Batches sliced from one host pipeline sit on the first device;
                # XLA runs where its inputs are, so copy them to this replica's
                # device first (else: "Trying to access resource .../replica_1").
                return compiled(*tf.nest.map_structure(tf.identity, (features, labels)))

            self.compute_step = compute_step
        self._train_loop = tf.function(self._train_loop_fn)
        self._train_once = tf.function(self._train_once_fn)
        self._worker_loop = tf.function(self._worker_loop_fn)
        self._eval_loop = tf.function(self._eval_loop_fn)

    # ------------------------------------------------------------ one step
    def _compute_step(self, features, labels):
        model, optimizer = self.model, self.optimizer
        with tf.GradientTape() as tape:
            # Under mixed precision the model computes in 16 bits; the loss
            # and the metrics are kept in float32.
            predictions = tf.cast((self.stages or model)(features, training=True), tf.float32)
            per_example = self.train_loss_fn(labels, predictions)
            loss = tf.nn.compute_average_loss(per_example)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            if self.kernels:  # model.l2; each replica adds 1/replicas of it
                loss += tf.nn.scale_regularization_loss(losses.l2_penalty(self.l2, self.kernels))
            # Identity unless a LossScaleOptimizer (mixed_float16) scales it;
            # its apply_gradients unscales the gradients again.
            scaled = optimizer.scale_loss(loss)
        # A sharded variable (runtime.variable_partitioner) is differentiated
        # shard by shard: tape.gradient cannot take the ShardedVariable itself.
        if self.stages:  # runtime.placement: each gradient op on its stage's device
            grads = self.stages.gradients(scaled, model.trainable_variables)
        else:
            grads = tape.gradient(scaled, sharding.train_variables(model))
        # With loss scaling an overflowing gradient is routine (the optimizer
        # lowers the scale and skips that update), so only the loss is checked.
        checked = [loss] if self.loss_scaled else grads
        return grads, (per_example, labels, predictions), loss, self.nonfinite.flags(loss, checked)

    def _clip(self, grads):
        """`optimizer.clipnorm`/`global_clipnorm` applied to the gradient of the whole global batch.

        Keras's own clipnorm runs before its all-reduce, so under a strategy
        each replica's part would be clipped alone (verified: with 2 replicas
        the update's norm was 2x the clip norm). Here the parts are summed
        first; the optimizer then sums what it is given over the replicas
        again, so each replica hands it 1/replicas of the clipped sum (one
        extra all-reduce per step, only with clipping on). With loss scaling
        the norm is that of the unscaled gradient.
        """
        replicas = self.strategy.num_replicas_in_sync if self.coordinator is None else 1
        if replicas > 1:
            grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        factor = 1.0 / replicas
        scale = tf.cast(self.optimizer.dynamic_scale, tf.float32) if self.loss_scaled else None
        dense = [None if g is None else tf.convert_to_tensor(g) for g in grads]
        if scale is not None:
            dense = [None if g is None else g / scale for g in dense]
        if self.global_clipnorm:
            present = [g for g in dense if g is not None]
            clipped, _ = tf.clip_by_global_norm(present, self.global_clipnorm)
            it = iter(clipped)
            dense = [None if g is None else next(it) for g in dense]
        else:
            dense = [None if g is None else tf.clip_by_norm(g, self.clipnorm) for g in dense]
        if scale is not None:
            factor = factor * scale
        return [None if g is None else g * factor for g in dense]

    def _apply_step(self, grads, outputs):
        if self.clipnorm or self.global_clipnorm:
            grads = self._clip(grads)
        self.optimizer.apply_gradients(zip(grads, sharding.train_variables(self.model)))
        self.train_metrics.update(*outputs)

    def _train_step(self, iterator, index, done, verdict):
        # The input-wait timer brackets the fetch; `done` is when the previous
        # step's updates finished (tfpipe/profile/trace.py).
        batch = self.input_timer.next(
            iterator, done, fetch=self.train_data.next_batch, stamped=getattr(self.train_data, "stamped", False)
        )
        # Gradients are checked before they are applied (tfpipe/train/faults.py).
        grads, outputs, loss, bad = self.strategy.run(self.compute_step, args=batch)
        ok, verdict = self.nonfinite.check(self.strategy, index, loss, bad, verdict)
        if ok:
            self.strategy.run(self._apply_step, args=(grads, outputs))
        return self.input_timer.step_done(self.model.trainable_variables), verdict

    # ------------------------------------------------------------ loop calls
    def _train_loop_fn(self, iterator, num_steps):
        # A tensor num_steps makes a graph while-loop; a Python int (the
        # profiler's window) unrolls it: xprof finds no steps in a while-loop.
        # Both tokens ride through the loop and are written out once per call.
        done, verdict = self.input_timer.token(), self.nonfinite.token()
        for i in range(num_steps):
            done, verdict = self._train_step(iterator, self.step + i, done, verdict)
        self.input_timer.flush(done)
        self.nonfinite.flush(verdict)
        self.step.assign_add(num_steps)
        return self.train_metrics.results()

    # One step per call needs no graph while-loop around it; at
    # steps_per_loop=1 the loop's own cost is a measurable share of a step.
    def _train_once_fn(self, iterator):
        token, verdict = self.input_timer.token(), self.nonfinite.token()
        done, verdict = self._train_step(iterator, self.step.read_value(), token, verdict)
        self.input_timer.flush(done)
        self.nonfinite.flush(verdict)
        self.step.assign_add(1)
        return self.train_metrics.results()

    def train_call(self, n: int, unrolled: bool = False, iterator=None):
        """Runs `n` training steps in one compiled call; returns the metric tensors (loss first).

        `iterator` replaces the run's own for this call (the perfect-input
        probe, tfpipe/train/probe.py); it must yield what the run's does.
        """
        iterator = self.train_data.iterator if iterator is None else iterator
        if n == 1:
            return self._train_once(iterator)
        return self._train_loop(iterator, n if unrolled else tf.constant(n, tf.int64))

    def _worker_loop_fn(self, iterator, num_steps):
        # parameter_server: runs on whichever worker the coordinator picks; the
        # coordinator counts the steps it schedules. The non-finite guard's
        # variables live on the coordinator, so workers apply every update.
        for _ in tf.range(num_steps):
            grads, outputs, _, _ = self.strategy.run(self.compute_step, args=next(iterator))
            self.strategy.run(self._apply_step, args=(grads, outputs))

    def schedule_call(self, n: int, epoch_ends: bool):
        """parameter_server: queues `n` steps for whichever worker is free and
        returns at once; the metrics are final once the epoch is joined."""
        self.coordinator.schedule(self._worker_loop, args=(self.train_data.iterator, tf.constant(n, tf.int64)))
        self.step.assign_add(n)
        if epoch_ends:
            self.coordinator.join()
        return self.train_metrics.results()

    # ------------------------------------------------------------ evaluation
    def _eval_step(self, features, labels):
        # A pass's last, partial batch may leave some replicas with zero
        # examples, and BatchNormalization fails on an empty batch
        # ("Incompatible shapes: [64] vs. [0,4,4,32]": digits_cnn, mirrored).
        # An empty batch adds nothing to the metrics, so it is not run.
        if tf.shape(tf.nest.flatten(labels)[0])[0] > 0:
            predictions = self.model(features, training=False)
            self.eval_metrics.update(self.loss_fn(labels, predictions), labels, predictions)

    def _eval_loop_fn(self, dataset):
        for features, labels in dataset:
            if self.coordinator:
                self._eval_step(features, labels)
            else:
                self.strategy.run(self._eval_step, args=(features, labels))

    def evaluate(self, dataset) -> dict:
        """One pass over `dataset`; returns `{'loss': ..., 'accuracy': ..., ...}` (eval_metrics' keys)."""
        self.eval_metrics.reset()
        self._eval_loop(dataset)
        return self.eval_metrics.result()

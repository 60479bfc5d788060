"""Planted bottlenecks: small plain TensorFlow programs, each slow for one known reason.

They check the bottleneck report (`tfpipe.profile.report`) the way a user
would meet it: a tf.data pipeline feeding a Keras model through a custom
loop with root step markers, traced by TensorFlow's profiler and read back
headlessly. Each case knows its true cause, whether it is input-bound, and
the program change that each recommended config key stands for, so
`benchmarks/diagnosis.py` can apply the report's first recommendation and
measure it, and can feed the same model one cached batch repeated (the
tf.data paper's perfect input) to check the report's predicted speed-up.

The slowness planted is real work or real latency, never a fake timer:
CPU work in TensorFlow ops, a Python generator, or `time.sleep` inside
`tf.py_function` standing for storage or lookup latency (it holds no core,
so the fix's speed-up does not depend on how busy the machine is).

Example:

```python
from tfpipe.profile import planted
case = planted.CASES["sequential_map"]
result = planted.diagnose(case, "/tmp/planted/sequential_map", scale=0.25)
print(result["report"]["cause"], planted.throughput(case, "fixed", scale=0.25))
```

The steps also run tfpipe's always-on input-wait timer
(`tfpipe.profile.trace.InputWaitTimer`, stamped batches), so the two input
figures can be compared on every case.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from tfpipe.profile import perfect as perfect_lib
from tfpipe.profile import planted_data
from tfpipe.profile import report as report_lib
from tfpipe.profile import trace

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Case:
    """One planted bottleneck.

    Attributes:
        name: the case's name.
        cause: the true cause, a key of `report.CAUSES`.
        input_bound: whether the true verdict is input-bound (5% or more waiting).
        dataset: `(variant, scale, workdir) -> tf.data.Dataset` of (x, y)
            batches, repeated; variant "planted", "fixed" (the first
            recommendation applied) or "perfect" (one cached batch).
        model: `() -> keras.Model`.
        fix: the config key the first recommendation should name.
        steps_per_call: steps per compiled call (the dispatch case runs 1).
        fixed_steps_per_call: steps per call once fixed.
        in_graph: the program holds the examples as tensors and gathers
            each batch inside the step (no tf.data iterator at all);
            "perfect" then gathers the first batch every step.
        what: one line on what was planted.
    """

    name: str
    cause: str
    input_bound: bool
    dataset: Callable
    model: Callable
    fix: str | None
    what: str
    steps_per_call: int = 4
    fixed_steps_per_call: int | None = None
    in_graph: bool = False


def _mlp(units=(32,), inputs=64, classes=10):
    import keras  # pylint: disable=import-outside-toplevel

    layers = [keras.Input((inputs,))] + [keras.layers.Dense(u, activation="relu") for u in units]
    return keras.Sequential(layers + [keras.layers.Dense(classes)])


def _examples(n, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, dim), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64)


def _finish(ds, variant, prefetch=True):
    """One cached batch for "perfect"; the input-wait stamp; prefetch."""
    if variant == "perfect":
        ds = ds.take(1).cache().repeat()
    ds = ds.map(lambda x, y: (x, y, tf.timestamp()))  # the always-on timer's stamp
    return ds.prefetch(AUTOTUNE) if prefetch or variant != "planted" else ds


def _sequential_options(ds):
    # No tf.data help behind the program's back: no injected prefetch, no
    # autotuning, no map-and-batch fusion.
    opts = tf.data.Options()
    opts.autotune.enabled = False
    opts.experimental_optimization.inject_prefetch = False
    opts.experimental_optimization.map_and_batch_fusion = False
    return ds.with_options(opts)


def _sleep_fn(seconds):
    def sleep(x):
        time.sleep(seconds)
        return x

    def fn(x, y):
        return tf.ensure_shape(tf.py_function(sleep, [x], tf.float32), [64]), y

    return fn


# ---------------------------------------------------------------- the cases


def _python_source(variant, scale, workdir):
    x, y = _examples(int(1024 * scale) or 64)

    def gen():
        for i in range(len(x)):
            # Python work per example (a feature computed in Python).
            v = x[i].copy()
            for _ in range(20):
                v = np.sqrt(v * v + 1e-3)
            yield v, y[i]

    ds = tf.data.Dataset.from_generator(
        gen, output_signature=(tf.TensorSpec([64], tf.float32), tf.TensorSpec([], tf.int64))
    )
    if variant == "fixed":
        ds = ds.cache()  # data.cache: memory
    return _finish(ds.repeat().batch(32, drop_remainder=True), variant)


def _heavy(x, y):
    # About a millisecond of CPU per example in TensorFlow ops.
    m = tf.reshape(tf.tile(x, [16]), [32, 32])
    for _ in range(12):
        m = tf.tanh(tf.matmul(m, m) * 0.05)
    return x + tf.reduce_mean(m) * 1e-3, y


def _slow_map(variant, scale, workdir):
    x, y = _examples(512)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.map(_heavy, num_parallel_calls=AUTOTUNE)
    if variant == "fixed":
        ds = ds.cache()  # data.cache: memory (the map is deterministic)
    return _finish(ds.repeat().batch(32, drop_remainder=True), variant)


def _sequential_map(variant, scale, workdir):
    x, y = _examples(1024)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat()
    # 0.3 ms of latency per example (a per-example lookup), one at a time.
    calls = AUTOTUNE if variant == "fixed" else None  # data.map.num_parallel_calls: -1
    ds = ds.map(_sleep_fn(0.0003), num_parallel_calls=calls)
    return _finish(ds.batch(16, drop_remainder=True), variant)


def _no_prefetch(variant, scale, workdir):
    x, y = _examples(4096)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(256, drop_remainder=True)

    def slow_batch(xb, yb):
        def sleep(t):
            time.sleep(0.0025)  # 2.5 ms per batch of latency, about the step's compute (MLP 512x512)
            return t

        return tf.ensure_shape(tf.py_function(sleep, [xb], tf.float32), xb.shape), yb

    ds = ds.map(slow_batch)
    ds = _finish(ds, variant, prefetch=variant != "planted")  # data.prefetch: -1
    return _sequential_options(ds) if variant == "planted" else ds


def _per_element(variant, scale, workdir):
    x, y = _examples(8192)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat()

    def cheap(a, b):
        return a * 2.0 - 1.0, b

    if variant == "fixed":  # data.map.vectorized: batch first, map whole batches
        ds = ds.batch(256, drop_remainder=True).map(cheap, num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.map(cheap, num_parallel_calls=AUTOTUNE).batch(256, drop_remainder=True)
    return _finish(ds, variant)


def _slow_reads(variant, scale, workdir):
    files = planted_data.write_records(workdir)  # the same files as the planted config reads

    def read(path):
        # Storage with 0.25 ms of latency per record (a remote filesystem).
        def fetch(r):
            time.sleep(0.00025)
            return r

        ds = tf.data.TFRecordDataset(path)
        return ds.map(lambda r: tf.ensure_shape(tf.py_function(fetch, [r], tf.string), []))

    spec = {"x": tf.io.FixedLenFeature([64], tf.float32), "y": tf.io.FixedLenFeature([], tf.int64)}
    ds = tf.data.Dataset.from_tensor_slices(files).repeat()
    if variant == "fixed":  # data.read.num_parallel_calls: -1, several files at once
        ds = ds.interleave(read, cycle_length=8, num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.interleave(read, cycle_length=1)
    ds = ds.batch(16, drop_remainder=True)
    ds = ds.map(lambda r: (lambda e: (e["x"], e["y"]))(tf.io.parse_example(r, spec)))
    return _finish(ds, variant)


def _cached(variant, scale, workdir, batch=256):
    x, y = _examples(4096)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache().repeat().batch(batch, drop_remainder=True)
    return _finish(ds, variant)


def _in_graph(batch, one=False):
    """The data of an `in_graph` case: the examples as tensors (`one`: the first batch only), `batch` a step."""
    x, y = _examples(4096)
    if one:
        x, y = x[:batch], y[:batch]
    return tf.constant(x), tf.constant(y), batch


CASES = {
    c.name: c
    for c in (
        Case("python_generator", "python_source", True, _python_source, lambda: _mlp(), "data.cache",
             "from_generator with Python work per example; tiny MLP"),
        Case("slow_map", "map", True, _slow_map, lambda: _mlp(), "data.cache",
             "parallel per-example map of ~1 ms CPU (deterministic, uncached); tiny MLP"),
        Case("sequential_map", "map", True, _sequential_map, lambda: _mlp(), "data.map.num_parallel_calls",
             "per-example map with 0.3 ms latency, num_parallel_calls unset; tiny MLP"),
        # Latency about the step (512x512: ~2.3 ms on a quiet host), so overlapping
        # them can pay nearly 2x (256x256 with 6 ms: 1.14x; 512x512 with 6 ms: 1.39x).
        Case("no_prefetch", "no_prefetch", True, _no_prefetch, lambda: _mlp((512, 512)), "data.prefetch",
             "2.5 ms of batch latency, no prefetch (none injected, autotune off); MLP 512x512 on batch 256"),
        Case("per_element", "per_element_overhead", True, _per_element, lambda: _mlp(), "data.map.vectorized",
             "cheap map on 64-float examples, batch 256, map before batch; tiny MLP"),
        Case("slow_reads", "interleave", True, _slow_reads, lambda: _mlp(), "data.read.num_parallel_calls",
             "8 TFRecord files, 0.25 ms latency per record, cycle_length 1; tiny MLP"),
        # 1024x1024: under 512x512 the input's batching, sharing the 2 cores
        # with the model, cost 4-6% (perfect input 1.04-1.06x measured apart),
        # on the 5% line; four times the compute per example leaves it ~1%.
        Case("compute_bound", "compute", False, _cached, lambda: _mlp((1024, 1024)), None,
             "cached input, MLP 1024x1024 on batch 256"),
        # Batches gathered inside the step: with a tf.data iterator, handing
        # 64-example batches over on 2 cores cost these 0.7 ms steps 6-11%
        # (perfect input 1.06-1.11x, measured apart), a second bottleneck on
        # the 5% line that flipped the verdict from run to run.
        Case("dispatch_bound", "dispatch", False, lambda v, s, w: _cached(v, s, w, batch=64), lambda: _mlp((64,)),
             "train.steps_per_loop", "examples held as tensors, batch 64 gathered in the step, small MLP, "
             "one step per call", steps_per_call=1, fixed_steps_per_call=50, in_graph=True),
    )
}  # fmt: skip


# ---------------------------------------------------------------- running a case


class _Program:
    """The model, optimizer and compiled loop for one case and variant."""

    def __init__(self, case: Case, variant: str, scale: float, workdir):
        import keras  # pylint: disable=import-outside-toplevel

        keras.utils.set_random_seed(0)
        self.dataset = case.dataset(variant, scale, workdir)
        self.model = case.model()
        self.optimizer = keras.optimizers.SGD(0.01)
        self.optimizer.build(self.model.trainable_variables)
        self.loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.timer = trace.InputWaitTimer(True)
        self.batch_size = int(self.dataset.element_spec[0].shape[0])
        self.in_graph = None
        if case.in_graph:  # no tf.data iterator in the step (the dataset gives the batch size)
            self.in_graph = _in_graph(self.batch_size, one=variant == "perfect")
            self.cursor = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.iterator = None if case.in_graph else iter(self.dataset)
        self._loop = tf.function(self._loop_fn)
        self._once = tf.function(self._once_fn)

    def _step(self, x, y):
        with tf.GradientTape() as tape:
            loss = self.loss(y, self.model(x, training=True))
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss

    def _fetch(self, iterator):
        if self.in_graph is not None:
            # The next batch of a fixed order, gathered from the tensors: it
            # is ready before it is asked for (stamp 0: no input wait).
            x, y, batch = self.in_graph
            start = self.cursor.assign_add(batch) - batch
            idx = (start + tf.range(batch, dtype=tf.int64)) % tf.shape(x, out_type=tf.int64)[0]
            return (tf.gather(x, idx), tf.gather(y, idx)), tf.constant(0.0, tf.float64)
        x, y, ready = next(iterator)
        return (x, y), ready

    def _loop_fn(self, iterator, n):
        done, loss = self.timer.token(), tf.constant(0.0)
        for _ in range(n):  # a Python int (the profile window) unrolls
            x, y = self.timer.next(iterator, done, fetch=self._fetch, stamped=True)
            loss = self._step(x, y)
            done = self.timer.step_done(self.model.trainable_variables)
        self.timer.flush(done)
        return loss

    def _once_fn(self, iterator):
        done = self.timer.token()
        x, y = self.timer.next(iterator, done, fetch=self._fetch, stamped=True)
        loss = self._step(x, y)
        self.timer.flush(self.timer.step_done(self.model.trainable_variables))
        return loss

    def call(self, n: int, unrolled: bool):
        if n == 1:
            return self._once(self.iterator).numpy()
        return self._loop(self.iterator, n if unrolled else tf.constant(n)).numpy()


def diagnose(case: Case, workdir, scale: float = 1.0, markers: int = 24, steps_per_call: int | None = None,
             probe: bool = True) -> dict:
    """Runs the planted program under the profiler and builds its report.

    With `probe`, the program then does what tfpipe's loop does after a
    profiled run (tfpipe/train/probe.py): its own compiled loop, back to
    back, on one cached batch and on its own input
    (`tfpipe.profile.perfect.time_blocks`), and the report gets the measured
    perfect-input speed-up instead of the estimate from the waiting share.
    A program whose batches are gathered in the step (`Case.in_graph`) has
    no iterator to swap and keeps the estimate, as tfpipe's in-graph runs do.

    Returns:
        {"report": the report dict, "always_on": the timer's share over the
        traced calls, "seconds": wall time}.
    """
    workdir = Path(workdir)
    logdir = workdir / "logs"
    shutil.rmtree(logdir, ignore_errors=True)
    start = time.perf_counter()
    prog = _Program(case, "planted", scale, workdir)
    k = steps_per_call or case.steps_per_call
    warm = max(2, int(round(10 * scale)))
    for _ in range(warm):  # compile, fill caches and autotune outside the window
        prog.call(k, unrolled=True)
    tf.profiler.experimental.start(str(logdir))
    wait0, t0 = prog.timer.seconds(), time.perf_counter()
    for i in range(markers):
        with tf.profiler.experimental.Trace("train", step_num=i * k, _r=1):
            prog.call(k, unrolled=True)
    seconds = time.perf_counter() - t0
    wait = prog.timer.seconds() - wait0
    tf.profiler.experimental.stop()
    always_on = wait / seconds
    measured = None
    if probe and not case.in_graph:
        cached = iter(case.dataset("perfect", scale, workdir))

        def call(iterator):
            (prog._once(iterator) if k == 1 else prog._loop(iterator, k)).numpy()

        measured = perfect_lib.time_blocks(call, {"perfect": cached, "input": prog.iterator}, num_steps=k)
    rep = report_lib.analyze(
        logdir, out_dir=workdir, steps_per_marker=k, always_on_input_wait_fraction=always_on,
        config={"profile": {"measure_input_wait": True}}, perfect_input=measured,
    )  # fmt: skip
    return {"report": rep, "always_on": always_on, "seconds": time.perf_counter() - start}


def programs(case: Case, variants, scale: float = 1.0, workdir=None) -> dict:
    """Built programs for several variants of one case (for side-by-side timing)."""
    workdir = workdir or tempfile.mkdtemp(prefix="planted-")
    return {v: _Program(case, v, scale, workdir) for v in variants}


# Untimed calls before a timed round, at least this long: the rounds take
# turns, so a program's pipeline sat idle during the others' and filled its
# buffers; timing from the first call gave the input-bound variants that
# head start (slow_map's perfect-input speed-up: 6.7x timed from one untimed
# call against 8.8x from the in-run probe, which drains first; 7.9x against
# 8.1x with the drain, BENCHMARKS.md "Diagnosis").
DRAIN_SECONDS = 0.5


def timed_round(prog: _Program, case: Case, variant: str, seconds: float = 1.0) -> float:
    """Examples per second over about `seconds` of steps (after DRAIN_SECONDS of untimed calls)."""
    k = case.fixed_steps_per_call if variant == "fixed" and case.fixed_steps_per_call else case.steps_per_call
    start = time.perf_counter()
    prog.call(k, unrolled=False)
    while time.perf_counter() - start < DRAIN_SECONDS:
        prog.call(k, unrolled=False)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        prog.call(k, unrolled=False)
        steps += k
    return steps * prog.batch_size / (time.perf_counter() - start)

"""Server-side dynamic batching: one model call per batch of requests.

TF Serving's knobs, with its meaning:

- `max_batch_size`: rows per model call at most; 1 turns batching off
  (every request is its own call).
- `batch_timeout_micros`: how long a batch may wait for more rows after
  its first request was enqueued; 0 = take whatever is queued now.
- `max_enqueued_batches`: the queue holds at most this many full batches
  (`max_enqueued_batches * max_batch_size` rows); a request that would
  overflow it is refused at once (`Overloaded`, HTTP 503) instead of
  waiting behind a queue that only grows.
- `num_batch_threads`: threads that close batches and call the model; the
  model call releases the GIL, so two threads overlap one call's kernels
  with the next batch's Python.

Why batch before calling the model, measured here (DESIGN.md): a concrete
`tf.function` call costs ~0.6 ms whatever its rows up to ~64, so 64 rows in
one call cost about what one row does; `tf.nondifferentiable_batch_function`
coalesces too but every request still pays its own Python-to-TensorFlow
call, which gave no gain.

A request bigger than `max_batch_size` runs alone, as one call.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time

import numpy as np
import tensorflow as tf

from tfpipe.profile import capture_server


class Overloaded(RuntimeError):
    """The queue is full: answer 503 now."""


class Closed(RuntimeError):
    """The batcher stopped taking requests (shutting down)."""


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 64
    batch_timeout_micros: int = 1000
    max_enqueued_batches: int = 16
    num_batch_threads: int = 1

    def check(self) -> None:
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}: expected an integer >= 1. Received: {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"--batch_timeout_micros: expected an integer >= 0. Received: {self.batch_timeout_micros}")


@dataclasses.dataclass
class Task:
    inputs: dict
    rows: int
    future: object  # asyncio.Future, resolved on the loop
    enqueued: float
    taken: float = 0.0
    closed: float = 0.0
    done: float = 0.0


class Batcher:
    """Collects tasks from the event loop and runs them in batches on `num_batch_threads` threads.

    Args:
        fn: the concrete signature function: keyword tensors -> dict of tensors.
        options: `BatchingOptions`.
        loop: the asyncio loop whose futures the results resolve.
        on_batch: called on the loop with each batch's row count (metrics).
    """

    def __init__(self, fn, options: BatchingOptions, loop, on_batch=lambda rows: None):
        options.check()
        self.fn, self.options, self.loop, self.on_batch = fn, options, loop, on_batch
        self.capacity = options.max_enqueued_batches * options.max_batch_size
        self.queue: collections.deque[Task] = collections.deque()
        self.queued_rows = 0
        self.cond = threading.Condition()
        self.closing = False
        self.batches = 0
        self.threads = [threading.Thread(target=self._work, name=f"tfpipe-batch-{i}", daemon=True)
                        for i in range(options.num_batch_threads)]
        for t in self.threads:
            t.start()

    def submit(self, inputs: dict, rows: int, future) -> Task:
        """Enqueues one request; raises `Overloaded` when it does not fit, `Closed` when stopping."""
        task = Task(inputs, rows, future, time.perf_counter())
        with self.cond:
            if self.closing:
                raise Closed("the server is shutting down")
            # A request bigger than the whole queue still gets in when the queue is empty.
            if self.queued_rows and self.queued_rows + rows > self.capacity:
                raise Overloaded(f"queue full ({self.queued_rows} rows waiting, room for {self.capacity}: "
                                 "max_enqueued_batches x max_batch_size)")
            self.queue.append(task)
            self.queued_rows += rows
            self.cond.notify()
        return task

    def close(self, timeout: float = 30.0) -> None:
        """Stops taking requests, runs what is queued, joins the threads."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        for t in self.threads:
            t.join(timeout)

    # ------------------------------------------------------------ batch threads

    def _next_batch(self) -> list[Task] | None:
        opts = self.options
        with self.cond:
            while not self.queue:
                if self.closing:
                    return None
                self.cond.wait()
            first = self.queue.popleft()
            first.taken = time.perf_counter()
            batch, rows = [first], first.rows
            deadline = first.enqueued + opts.batch_timeout_micros / 1e6
            while rows < opts.max_batch_size:
                if self.queue:
                    if rows + self.queue[0].rows > opts.max_batch_size:
                        break
                    task = self.queue.popleft()
                    task.taken = time.perf_counter()
                    batch.append(task)
                    rows += task.rows
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self.closing:
                    break
                self.cond.wait(remaining)
            self.queued_rows -= rows
        return batch

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            closed = time.perf_counter()
            try:
                outputs = self._call(batch)
                error = None
            except Exception as e:  # pylint: disable=broad-except  # answered as a 500, the server goes on
                outputs, error = None, e
            done = time.perf_counter()
            for t in batch:
                t.closed, t.done = closed, done
            self.loop.call_soon_threadsafe(self._resolve, batch, outputs, error)

    def _call(self, batch: list[Task]) -> dict:
        names = list(batch[0].inputs)
        if len(batch) == 1:
            feed = batch[0].inputs
        else:
            feed = {n: np.concatenate([t.inputs[n] for t in batch]) for n in names}
        self.batches += 1
        if capture_server.lock.locked():
            # Only while a capture runs: each batch is a step for the profile's
            # step analysis (capture_profile.py --analyze); a few µs otherwise wasted.
            with tf.profiler.experimental.Trace("serve_batch", step_num=self.batches, _r=1):
                out = self.fn(**{n: tf.constant(v) for n, v in feed.items()})
        else:
            out = self.fn(**{n: tf.constant(v) for n, v in feed.items()})
        return {k: v.numpy() for k, v in out.items()}

    def _resolve(self, batch: list[Task], outputs: dict | None, error) -> None:
        self.on_batch(sum(t.rows for t in batch))
        start = 0
        for t in batch:
            if t.future.done():  # the client went away
                start += t.rows
                continue
            if error is not None:
                t.future.set_exception(error)
            else:
                t.future.set_result({k: v[start:start + t.rows] for k, v in outputs.items()})
            start += t.rows

"""Profiler hooks for the training loop: step markers, one trace window,
an optional profiler server, and the always-on input-wait timer.

The trainer calls into this module with a few lines:

```python
input_timer = profiling.InputWaitTimer(cfg.profile.measure_input_wait)
profiler = profiling.Profiler(cfg.profile, workdir, input_timer)

@tf.function
def train_loop(iterator, num_steps):
    done = input_timer.token()
    for _ in range(num_steps):  # a tensor: while-loop; a Python int: unrolled
        batch = input_timer.next(iterator, done)
        strategy.run(train_step, args=batch)
        done = input_timer.step_done(model.trainable_variables)
    input_timer.flush(done)

def train_call(n, unrolled=False):
    return train_loop(iterator, n if unrolled else tf.constant(n, tf.int64))

results = profiler.call(train_call, first_step, n)   # each loop call
profiler.end_of_epoch()                              # before evaluation
steps, seconds, wait = profiler.pop_profiled_time()  # not throughput
profiler.finish(cfg)  # stops the trace, writes report.json and report.png
```

Two facts about the TensorFlow 2.21 profiler shape this module (both
verified here, see tests/test_profiling.py):

- The input-pipeline analyzer finds steps only through root step markers
  (`tf.profiler.experimental.Trace(..., step_num=n, _r=1)`) *and only when
  the trace holds no TensorFlow while loop*: a `tf.range` loop inside the
  compiled function makes xprof treat its iterations as the steps, and the
  analyzer then reports "No step time measured". So inside the window the
  loop is unrolled: `call` asks the trainer for an unrolled call, and a
  Python int makes AutoGraph unroll `for _ in range(num_steps)`, while
  outside the window the tensor keeps the compact while loop. One untraced call
  before the window compiles the unrolled loop, so compilation stays out of
  the measured steps. Each marker covers one loop call of `n` steps and
  carries the call's first step number; the report divides by `n`.
- `tf.profiler.experimental.server.start(port)` binds `[::]:port`, every
  interface, and has no host argument. When the port is taken it only logs
  a C++ error. So on-demand capture is served by tfpipe itself on
  `profile.server_host` (127.0.0.1 by default, tfpipe/profile/capture_server.py);
  `server_host: all` starts TensorFlow's server, after checking the port.

Observability never stops training: every profiler failure (unwritable log
directory, port in use, another profiler session, a converter error) is
logged as a warning and the run goes on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from pathlib import Path

import tensorflow as tf
from absl import logging

from tfpipe.profile import capture_server

STEP_MARKER = "train"


def _warn(msg: str) -> None:
    # Printed as well as logged: scripts/train.py hides absl INFO lines, and a
    # profiler problem is something the user should see next to the progress bar.
    print(f"[tfpipe] warning: {msg}", flush=True)
    logging.warning(msg)


class InputWaitTimer:
    """Measures, inside the compiled loop, how long each step waits for its batch.

    Each step's wait runs from "the previous step's computation is done" to
    "the batch is in hand": `step_done` takes a timestamp once every updated
    variable has been written, the loop carries it into the next step, and
    `next` starts the clock from it, fetches the batch and stops the clock.
    The differences add up in a float64 variable that the trainer reads once
    per loop call; the share of wall time is `input_wait_fraction`.

    Why the chaining: the graph executor runs ready ops in no fixed order.
    Unchained, a start timestamp may run when the call begins (and the next
    fetch may overlap the previous step's compute), so compute would count
    as waiting; this was measured here at 50-75% on a cached pipeline that
    the profiler put at 10-20%. The cost is a few scalar ops and one read per
    updated variable each step, no extra host round trip; what it costs in
    throughput is in BENCHMARKS.md (benchmarks/measurement_overhead.py).
    On sub-millisecond steps the figure still runs high: the iterator's
    hand-over between threads counts as waiting, and `stop` may run a little
    after the batch arrives.

    Args:
        enabled: False makes `next` a plain `next(iterator)` (for measuring
            what the timing itself costs).

    Example (inside a `tf.function`):

    ```python
    done = input_timer.token()
    for _ in range(num_steps):
        batch = input_timer.next(iterator, done)
        strategy.run(train_step, args=batch)
        done = input_timer.step_done(model.trainable_variables)
    ```
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        # A plain variable, created outside any strategy scope like the step
        # counter: the timing runs in cross-replica context around next().
        self._seconds = (
            tf.Variable(0.0, dtype=tf.float64, trainable=False, name="input_wait_seconds") if enabled else None
        )
        self._waited = None

    def token(self):
        """The token a loop starts with: [start time, seconds waited so far]."""
        if not self.enabled:
            return tf.zeros([2], tf.float64)
        return tf.stack([tf.timestamp(), tf.constant(0.0, tf.float64)])

    def next(self, iterator, token, fetch=next):
        """`fetch(iterator)`, timed from `token` (from `token` or `step_done`)."""
        if not self.enabled:
            return fetch(iterator)
        # Started inside this step (the token arrives through the loop), so
        # the while loop's own per-iteration bookkeeping is not counted.
        with tf.control_dependencies([token]):
            start = tf.timestamp()
        with tf.control_dependencies([start]):
            batch = fetch(iterator)
        # expand_composites: a distributed iterator yields PerReplica values.
        with tf.control_dependencies(tf.nest.flatten(batch, expand_composites=True)):
            stop = tf.timestamp()
        # Handed to the step_done call of the same step (traced right after);
        # no gate holds the step's compute until `stop` has run: on the digits
        # MLP (0.2 ms steps) such a gate cost 7-17% of throughput.
        self._waited = token[1] + (stop - start)
        return batch

    def step_done(self, variables):
        """The token for the next step: when this step's updates were done.

        Reading every updated variable makes the timestamp wait for the last
        update (automatic control dependencies order a read after the writes
        before it). Without this the graph may fetch the next batch while
        the step still computes, and the "wait" would include compute. The
        token also carries the seconds waited so far in this call, so the
        variable is written once per call (`flush`), not once per step.
        """
        if not self.enabled:
            return tf.zeros([2], tf.float64)
        waited, self._waited = self._waited, None
        with tf.control_dependencies([tf.convert_to_tensor(v) for v in variables]):
            return tf.stack([tf.timestamp(), waited])

    def flush(self, token):
        """Adds the seconds a loop call waited (its last token) to the total."""
        if self.enabled:
            self._seconds.assign_add(token[1])

    def seconds(self) -> float:
        """Total seconds waited so far (0 when disabled)."""
        return float(self._seconds.numpy()) if self.enabled else 0.0


def port_is_free(port: int) -> bool:
    """Whether `port` can be bound on every interface, as TF's server will try."""
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((address, port))
            return True
        except OSError as e:
            if family == socket.AF_INET6 and e.errno in (97, 99):  # no IPv6 here: try IPv4
                continue
            return False
    return False


def start_server(port: int, host: str = "127.0.0.1") -> bool:
    """Starts a server for on-demand capture on `host:port`.

    `host` "all" starts TensorFlow's gRPC profiler server (every interface);
    any other host, tfpipe's capture endpoint bound to that address.

    Returns:
        True when the server was started; False (with a warning) otherwise.
    """
    hint = (f"capture with: python scripts/capture_profile.py --address {'127.0.0.1' if host == 'all' else host}:{port} "
            f"--duration_ms 2000 --logdir LOGDIR")
    if host != "all":
        try:
            capture_server.start(host, port)
        except OSError as e:
            why = f"port {port} is in use on {host}" if e.errno == errno.EADDRINUSE else f"cannot listen on {host}:{port} ({e})"
            _warn(f"profile.server_port: {why}; no capture server started")
            return False
        print(f"[tfpipe] capture server on {host}:{port} (this address only); {hint}", flush=True)
        return True
    if not port_is_free(port):
        _warn(f"profile.server_port: port {port} is in use; no profiler server started")
        return False
    try:
        tf.profiler.experimental.server.start(port)
    except Exception as e:  # pylint: disable=broad-except
        _warn(f"profile.server_port: the profiler server did not start on port {port}: {e}")
        return False
    print(f"[tfpipe] profiler server on port {port} (TensorFlow binds every interface, [::]:{port}); {hint}",
          flush=True)
    return True


class Profiler:
    """Runs one trace window over whole loop calls and reports on it.

    Args:
        profile_cfg: a `tfpipe.config.ProfileConfig`.
        workdir: the run directory. Traces go to `workdir/logs/plugins/profile/<run>/`,
            where TensorBoard's profile plugin finds them when opened on
            `workdir/logs`; `report.json` and `report.png` go to `workdir`.
        input_timer: the loop's `InputWaitTimer`, read around the traced calls
            so that the report can set the always-on figure next to the profile's.
        log: prints one line (the loop passes its progress line's `print`).
    """

    def __init__(self, profile_cfg, workdir, input_timer: InputWaitTimer | None = None, trace: bool = True, log=None):
        self._cfg = profile_cfg
        self._log = log or (lambda msg: print(msg, flush=True))
        # trace=False (multi-worker non-chiefs) keeps the same call schedule,
        # unrolling and markers, so every worker runs the same functions in the
        # same order (their collectives must pair up), but records nothing: a
        # non-chief's files are discarded, and TF 2.21 crashed (SIGSEGV in
        # profiler stop) in 1 of 3 two-worker runs where both workers traced.
        self._trace = trace
        self._workdir = Path(workdir)
        self._logdir = self._workdir / "logs"
        self._timer = input_timer
        self._state = "waiting" if profile_cfg.enabled else "off"
        self._unrolled = None  # the steps per call the unrolled loop was compiled for
        self._traced = {"calls": 0, "steps": 0, "seconds": 0.0, "wait_seconds": 0.0, "first_step": None}
        self._run_dir = None
        self._before = set()
        self._calls = 0
        self._profiled = [0, 0.0, 0.0]
        self.report = None
        self._server = bool(profile_cfg.server_port) and start_server(profile_cfg.server_port, profile_cfg.server_host)

    def call(self, train_call, first_step: int, num_steps: int):
        """Runs one call of the training loop, `train_call(num_steps, unrolled=...)`.

        Ordinary calls run as they are (the loop stays a graph while-loop).
        The warm-up call, the calls in the trace window, and every call while
        a profiler server runs (so that an on-demand capture finds steps too)
        run unrolled. Calls in the window, and every call while a server
        runs, are wrapped in a root step marker numbered by the call's first
        step, and their results are read inside the marker so that it covers
        the computation.

        Returns:
            What `train_call` returns.
        """
        first_call = self._calls == 0
        self._calls += 1
        state = self._state
        if state == "waiting" and first_step >= self._cfg.start_step:
            # Compile the unrolled loop outside the window.
            self._unrolled, self._state = num_steps, "warm"
            return self._run(train_call, first_step, num_steps, unrolled=True, profiled=not first_call)
        if state in ("warm", "tracing") and num_steps != self._unrolled:
            # A shorter call (before a checkpoint, say) would retrace inside the
            # window; the window ends instead, or waits for a full call.
            if state == "tracing":
                self._stop()
        elif state == "warm":
            self._start()
        if self._state != "tracing":
            return self._run(train_call, first_step, num_steps, unrolled=self._server, profiled=False)

        wait0 = self._timer.seconds() if self._timer and self._timer.enabled else None
        start = time.perf_counter()
        results = self._run(train_call, first_step, num_steps, unrolled=True, profiled=not first_call, marker=True)
        traced = self._traced
        traced["seconds"] += time.perf_counter() - start
        if wait0 is not None:
            traced["wait_seconds"] += self._timer.seconds() - wait0
        traced["calls"] += 1
        traced["steps"] += num_steps
        if traced["first_step"] is None:
            traced["first_step"] = first_step
        if traced["steps"] >= self._cfg.num_steps:
            self._stop()
        return results

    def _run(self, train_call, first_step, num_steps, unrolled, profiled, marker=False):
        marker = marker or self._server
        if not (marker or profiled):
            return train_call(num_steps, unrolled=unrolled)
        wait0 = self._timer.seconds() if profiled and self._timer else 0.0
        start = time.perf_counter()
        context = (
            tf.profiler.experimental.Trace(STEP_MARKER, step_num=first_step, _r=1)
            if marker
            else contextlib.nullcontext()
        )
        with context:
            results = train_call(num_steps, unrolled=unrolled)
            # Waits for the call to finish, inside the marker.
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, results)
        if profiled:
            self._profiled[0] += num_steps
            self._profiled[1] += time.perf_counter() - start
            self._profiled[2] += self._timer.seconds() - wait0 if self._timer else 0.0
        return results

    def upcoming(self, first_step: int) -> str | None:
        """What the next call starting at `first_step` spends its time on, when that is not training."""
        if self._state == "waiting" and first_step >= self._cfg.start_step and self._calls:
            return "profiler: compiling the unrolled loop once, not counted"
        if self._state == "warm":
            return "profiler: tracing, not counted"
        return None

    def ms_per_step(self, steps: int, seconds: float) -> float | None:
        """ms per step over `steps` and `seconds` since the epoch began, less the profiler's calls so far."""
        steps, seconds = steps - self._profiled[0], seconds - self._profiled[1]
        return 1000 * seconds / steps if steps > 0 and seconds > 0 else None

    def pop_profiled_time(self) -> tuple[int, float, float]:
        """Steps, seconds and input-wait seconds spent in the warm-up and traced
        calls since the last pop: the trainer leaves them out of throughput."""
        steps, seconds, wait = self._profiled
        self._profiled = [0, 0.0, 0.0]
        return steps, seconds, wait

    def end_of_epoch(self) -> None:
        """Closes an open window before evaluation runs.

        Evaluating a distributed dataset runs a TensorFlow while loop; in the
        same trace it makes xprof take the loop's iterations for the steps
        and the analyzer finds no step time (seen under the mirrored
        strategy). A window therefore never spans an epoch end, and can hold
        fewer than `profile.num_steps` steps.
        """
        if self._state == "tracing":
            self._stop()

    def _marker(self, first_step: int, always: bool = False):
        if always or self._server:
            return tf.profiler.experimental.Trace(STEP_MARKER, step_num=first_step, _r=1)
        return contextlib.nullcontext()

    def _start(self) -> str:
        if not self._trace:
            self._state = "tracing"
            return self._state
        if not capture_server.lock.acquire(blocking=False):
            _warn("profiler: an on-demand capture is running; the scheduled trace window is skipped")
            self._state = "failed"
            return self._state
        try:
            self._logdir.mkdir(parents=True, exist_ok=True)
            before = capture_server.run_dirs(self._logdir)
            tf.profiler.experimental.start(str(self._logdir))
        except Exception as e:  # pylint: disable=broad-except
            capture_server.lock.release()
            _warn(f"profiler: could not start a trace in {self._logdir}: {e}; training goes on without one")
            self._state = "failed"
            return self._state
        self._before = before
        self._state = "tracing"
        return self._state

    def _stop(self) -> None:
        self._state = "captured"
        if not self._trace:
            return
        try:
            tf.profiler.experimental.stop()
        except Exception as e:  # pylint: disable=broad-except
            _warn(f"profiler: could not write the trace to {self._logdir}: {e}")
            self._state = "failed"
            return
        finally:
            capture_server.lock.release()
        new = capture_server.run_dirs(self._logdir) - self._before
        self._run_dir = max(new, key=os.path.getmtime) if new else None
        traced = self._traced
        self._log(
            f"[tfpipe] profiled {traced['steps']} steps ({traced['calls']} loop calls from step "
            f"{traced['first_step']}) -> {self._run_dir}"
        )

    def finish(self, config=None) -> dict | None:
        """Ends an open window and writes `report.json`, `report.png` and a summary.

        Args:
            config: the run's `tfpipe.config.Config`, so that recommendations
                start from the values the run used.

        Returns:
            The report dict, or None when no window was captured.
        """
        if self._state == "tracing":
            self._stop()
        if self._state == "waiting" or self._state == "warm":
            if self._cfg.enabled:
                self._log(
                    f"[tfpipe] no profile: the run ended before profile.start_step={self._cfg.start_step} "
                    f"plus one warm-up call"
                )
            return None
        if self._state != "captured" or self._run_dir is None:
            return None
        traced = self._traced
        always_on = None
        if traced["wait_seconds"] and traced["seconds"]:
            always_on = traced["wait_seconds"] / traced["seconds"]
        try:
            # Imported here: the converters load a large native library.
            from tfpipe.profile import report as report_lib  # pylint: disable=import-outside-toplevel

            self.report = report_lib.analyze(
                self._run_dir,
                out_dir=self._workdir,
                steps_per_marker=self._unrolled,
                config=config,
                always_on_input_wait_fraction=always_on,
            )
            self._log(report_lib.summary(self.report))
        except Exception as e:  # pylint: disable=broad-except
            _warn(f"profiler: could not analyse {self._run_dir}: {type(e).__name__}: {e}")
            return None
        return self.report

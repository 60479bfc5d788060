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

from tfpipe import logs
from tfpipe.profile import capture_server

STEP_MARKER = "train"
# The trace window holds at least this many step markers (statistics over
# one marker are no statistics).
MIN_MARKERS = 20
# Markers xprof's step analysis drops at the edges of one trace session.
EDGE_MARKERS = 2


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

    def next(self, iterator, token, fetch=next, stamped=False):
        """`fetch(iterator)`, timed from `token` (from `token` or `step_done`).

        With `stamped`, `fetch` returns `(batch, ready)`: when the pipeline
        finished the batch (`pipeline.build(stamp=True)` takes a timestamp
        just before the prefetch buffer). The wait is then the part of the
        fetch before the batch was ready, `clip(ready - start, 0, stop - start)`:
        a batch already waiting in the buffer costs no input wait, whatever
        the iterator's hand-over between threads takes. That hand-over is paid
        by a perfect tf.data pipeline too (one cached batch repeated), so it
        is not input time in the tf.data paper's sense, and on sub-millisecond
        steps it was most of what the unstamped timer counted (digits MLP:
        70-76% against the profile's 12-17%).
        """
        if not self.enabled:
            batch = fetch(iterator)
            return batch[0] if stamped else batch
        # Started inside this step (the token arrives through the loop), so
        # the while loop's own per-iteration bookkeeping is not counted.
        with tf.control_dependencies([token]):
            start = tf.timestamp()
        with tf.control_dependencies([start]):
            batch = fetch(iterator)
        ready = None
        if stamped:
            batch, ready = batch
        # expand_composites: a distributed iterator yields PerReplica values.
        with tf.control_dependencies(tf.nest.flatten(batch, expand_composites=True)):
            stop = tf.timestamp()
        waited = stop - start
        if ready is not None:
            waited = tf.clip_by_value(ready - start, 0.0, waited)
        # Handed to the step_done call of the same step (traced right after);
        # no gate holds the step's compute until `stop` has run: on the digits
        # MLP (0.2 ms steps) such a gate cost 7-17% of throughput.
        self._waited = token[1] + waited
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
    """Runs one trace window of at least `MIN_MARKERS` step markers and reports on it.

    Args:
        profile_cfg: a `tfpipe.config.ProfileConfig`.
        workdir: the run directory. Traces go to `workdir/logs/plugins/profile/<run>/`,
            where TensorBoard's profile plugin finds them when opened on
            `workdir/logs`; `report.json` and `report.png` go to `workdir`.
        input_timer: the loop's `InputWaitTimer`, read around the traced calls
            so that the report can set the always-on figure next to the profile's.
        trace: False records nothing but keeps the same call schedule
            (multi-worker non-chiefs).
        log: prints one line (the loop passes its progress line's `print`).

    Call `plan(total_steps, first_step)` once the run's length and its first
    step (after a restore) are known: a window that would not fit moves earlier.
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
        # Steps per traced call: small enough that num_steps gives MIN_MARKERS
        # markers. Each marker is one compiled call, so shorter calls pay
        # their per-call cost over fewer steps; a call of 5 steps on the digits
        # MLP still spends most of its time in the steps.
        self._piece = max(1, profile_cfg.num_steps // MIN_MARKERS)
        self._traced = {"calls": 0, "steps": 0, "seconds": 0.0, "wait_seconds": 0.0, "first_step": None}
        self._sizes: dict[int, int] = {}  # marker step number -> steps it covers
        self._waits: dict[int, float] = {}  # marker step number -> seconds the always-on timer counted
        self._run_dirs: list = []
        self._before = set()
        self._last_stop = 0.0
        self._sessions = 0  # trace sessions begun, on every worker
        self._calls = 0
        self._profiled = [0, 0.0, 0.0]
        self._start_at, self.window_note, self._epoch = profile_cfg.start_step, None, 0
        self.report = None
        self._server = bool(profile_cfg.server_port) and start_server(profile_cfg.server_port, profile_cfg.server_host)

    def plan(self, total_steps: int, first_step: int = 0, steps_per_epoch: int = 0) -> None:
        """Opens the window at profile.start_step, or earlier when the run ends too soon (and says so)."""
        self._epoch = steps_per_epoch
        self._start_at, self.window_note = self._window_start(total_steps, first_step)
        if self.window_note:
            self._log(f"[tfpipe] profile: {self.window_note}")

    def _window_start(self, total_steps: int, first: int) -> tuple[int, str | None]:
        want = self._cfg.start_step
        if not self._cfg.enabled or not total_steps:
            return want, None
        # A warm-up of a piece and a step, then enough pieces for num_steps
        # and MIN_MARKERS, plus the markers lost at each session's edges and
        # the single steps that fill each epoch's remainder.
        piece, epoch = self._piece, self._epoch
        traced = max(self._cfg.num_steps, piece * MIN_MARKERS)
        sessions = -(-traced // epoch) + 1 if epoch else 1
        needed = piece + 1 + traced + sessions * (EDGE_MARKERS + 1) * piece
        if want + needed <= total_steps:
            return want, None
        start = max(first, total_steps - needed)
        if start >= total_steps - self._piece:
            return total_steps, f"no room for a window: the run has {total_steps - first} steps left"
        return start, (
            f"profile.start_step={want} moved to step {start}: the run ends at step {total_steps}, "
            f"too short for {self._cfg.num_steps} traced steps after step {want}"
        )

    def call(self, train_call, first_step: int, num_steps: int):
        """Runs one call of the training loop, `train_call(num_steps, unrolled=...)`.

        Ordinary calls run as they are (the loop stays a graph while-loop).
        The window opens in the call that holds the step it starts at. The
        warm-up, the calls in the trace window, and every call while
        a profiler server runs (so that an on-demand capture finds steps too)
        run unrolled. In the window a call is split into pieces of
        `num_steps // MIN_MARKERS` steps (the rest as single steps), each in
        its own root step marker numbered by its first step, its results read
        inside the marker so that the marker covers the computation.

        Returns:
            What the last call of `train_call` returns.
        """
        first_call = self._calls == 0
        self._calls += 1
        if self._state == "waiting" and first_step + num_steps > self._start_at:
            # Compiles the traced functions (a piece unrolled, one step)
            # outside the window; the window opens right after, in this call.
            self._state, results = "warm", None
            for n in sorted({self._piece, 1}, reverse=True):
                if num_steps >= n:
                    results = self._run(train_call, first_step, n, unrolled=True, profiled=not first_call)
                    first_step, num_steps = first_step + n, num_steps - n
            if not num_steps:
                return results
        if self._state in ("warm", "paused"):
            self._timed(self._start)
        if self._state != "tracing":
            return self._run(train_call, first_step, num_steps, unrolled=self._server, profiled=False)
        results, step, left = None, first_step, num_steps
        while left and self._state == "tracing":
            n = self._piece if left >= self._piece else 1
            results = self._traced_call(train_call, step, n, profiled=True)
            step, left = step + n, left - n
            if self._enough():
                self._timed(self._stop)
        if left:
            results = self._run(train_call, step, left, unrolled=self._server, profiled=False)
        return results

    def _timed(self, fn, *args):
        # Starting and stopping a trace session (writing the trace) take
        # tenths of a second: booked as profiler time, never as training time.
        start = time.perf_counter()
        fn(*args)
        self._profiled[1] += time.perf_counter() - start

    def _enough(self) -> bool:
        # xprof leaves out the first and last marker of a trace session
        # (measured: 12 of 16 markers over two sessions), so each session
        # the window spans costs EDGE_MARKERS more.
        # Counted on every worker, tracing or not: under multi_worker_mirrored
        # all workers must split their calls alike (their collectives pair up
        # by function); counting the chief's trace directories made the chief
        # close the window earlier than the others, and the job hung.
        sessions = self._sessions
        return (
            self._traced["steps"] >= self._cfg.num_steps
            and self._traced["calls"] >= MIN_MARKERS + EDGE_MARKERS * sessions
        )

    def _traced_call(self, train_call, first_step, n, profiled):
        wait0 = self._timer.seconds() if self._timer and self._timer.enabled else None
        start = time.perf_counter()
        results = self._run(train_call, first_step, n, unrolled=True, profiled=profiled, marker=True)
        traced = self._traced
        traced["seconds"] += time.perf_counter() - start
        if wait0 is not None:
            waited = self._timer.seconds() - wait0
            traced["wait_seconds"] += waited
            self._waits[first_step] = waited
        traced["calls"] += 1
        traced["steps"] += n
        self._sizes[first_step] = n
        if traced["first_step"] is None:
            traced["first_step"] = first_step
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

    def upcoming(self, first_step: int, num_steps: int) -> str | None:
        """What the next call of `num_steps` from `first_step` spends its time on, when that is not training."""
        if self._state == "waiting" and first_step + num_steps > self._start_at and self._calls:
            return "profiler: compiling the traced loop once, then tracing; not counted"
        if self._state in ("warm", "tracing", "paused"):
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
        """Pauses an open window before evaluation runs; the next call resumes it.

        Evaluating a distributed dataset runs a TensorFlow while loop; in the
        same trace it makes xprof take the loop's iterations for the steps
        and the analyzer finds no step time (seen under the mirrored
        strategy). So the window's trace session stops at an epoch end and a
        new one starts with the next epoch's first call, until
        `profile.num_steps` steps are traced; the report reads every session.
        """
        if self._state == "tracing":
            self._timed(self._stop, False)

    def abort(self) -> None:
        """Closes a trace session left open by a failed run, so that the
        process (a notebook kernel, a test session) can profile again."""
        if self._state == "tracing":
            self._state = "failed"
            if self._trace:
                try:
                    tf.profiler.experimental.stop()
                except Exception:  # pylint: disable=broad-except
                    pass
                finally:
                    capture_server.lock.release()

    def _start(self) -> str:
        self._sessions += 1
        if not self._trace:
            self._state = "tracing"
            return self._state
        if not capture_server.lock.acquire(blocking=False):
            _warn("profiler: an on-demand capture is running; the scheduled trace window is skipped")
            self._state = "failed" if not self._run_dirs else "captured"
            return self._state
        try:
            self._logdir.mkdir(parents=True, exist_ok=True)
            before = capture_server.run_dirs(self._logdir)
            with logs.quiet():  # the session's I0000 lines
                tf.profiler.experimental.start(str(self._logdir))
        except Exception as e:  # pylint: disable=broad-except
            capture_server.lock.release()
            _warn(f"profiler: could not start a trace in {self._logdir}: {e}; training goes on without one")
            self._state = "failed" if not self._run_dirs else "captured"
            return self._state
        self._before = before
        self._state = "tracing"
        return self._state

    def _stop(self, final: bool = True) -> None:
        self._state = "captured" if final else "paused"
        if not self._trace:
            return
        # TensorFlow names a session's directory by the second its trace is
        # written (at stop): a second session written within the same second
        # as the first would write over its trace (seen when an epoch end
        # paused the window and the next epoch's calls finished it at once).
        if self._run_dirs and int(time.time()) == int(self._last_stop):
            time.sleep(1.05 - (time.time() % 1.0))
        try:
            with logs.quiet():
                tf.profiler.experimental.stop()
            self._last_stop = time.time()
        except Exception as e:  # pylint: disable=broad-except
            _warn(f"profiler: could not write the trace to {self._logdir}: {e}")
            self._state = "failed" if not self._run_dirs else "captured"
            return
        finally:
            capture_server.lock.release()
        new = capture_server.run_dirs(self._logdir) - self._before
        if new:
            self._run_dirs.append(max(new, key=os.path.getmtime))
        traced = self._traced
        if final:
            self._log(
                f"[tfpipe] profiled {traced['steps']} steps ({traced['calls']} step markers from step "
                f"{traced['first_step']}, {len(self._run_dirs)} trace session(s)) -> {self._logdir / 'plugins' / 'profile'}"
            )

    @property
    def has_window(self) -> bool:
        """Whether a window was traced (or is open), so that `finish` will write a report."""
        return self._state in ("tracing", "paused") or (self._state == "captured" and bool(self._run_dirs))

    def finish(self, config=None, perfect_input: dict | None = None) -> dict | None:
        """Ends an open window and writes `report.json`, `report.png` and a summary.

        Args:
            config: the run's `tfpipe.config.Config`, so that recommendations
                start from the values the run used.
            perfect_input: the perfect-input probe's measurement
                (tfpipe/train/probe.py), `{"ms_per_step", "run_ms_per_step", ...}`.

        Returns:
            The report dict, or None when no window was captured.
        """
        if self._state in ("tracing", "paused"):
            if self._state == "tracing":
                self._stop()
            else:
                self._state = "captured"
                traced = self._traced
                self._log(f"[tfpipe] profiled {traced['steps']} steps ({traced['calls']} step markers from step "
                          f"{traced['first_step']}, {len(self._run_dirs)} trace session(s))")  # fmt: skip
        if self._state in ("waiting", "warm"):
            if self._cfg.enabled:
                self._log(f"[tfpipe] no profile: {self.window_note or 'the run ended before the window opened'}")
            return None
        if self._state != "captured" or not self._run_dirs:
            return None
        traced = self._traced
        always_on = None
        if self._timer and self._timer.enabled and traced["seconds"]:
            always_on = traced["wait_seconds"] / traced["seconds"]
        note = self.window_note
        if traced["steps"] < self._cfg.num_steps:
            note = (note + "; " if note else "") + (
                f"the run ended after {traced['steps']} of profile.num_steps={self._cfg.num_steps} traced steps"
            )
        try:
            # Imported here: the converters load a large native library.
            from tfpipe.profile import report as report_lib  # pylint: disable=import-outside-toplevel

            with logs.quiet():  # xprof's native converters log their own start-up lines
                self.report = report_lib.analyze(
                    self._run_dirs[-1],
                    out_dir=self._workdir,
                    steps_per_marker=dict(self._sizes),
                    config=config,
                    always_on_input_wait_fraction=always_on,
                    always_on_waits=dict(self._waits) if always_on is not None else None,
                    run_dirs=self._run_dirs,
                    window_note=note,
                    perfect_input=perfect_input,
                )
            self._log(report_lib.summary(self.report))
        except Exception as e:  # pylint: disable=broad-except
            _warn(f"profiler: could not analyse {self._run_dirs}: {type(e).__name__}: {e}")
            return None
        return self.report

"""Trials: one config (plus overrides) measured in a child process, repeated, remembered.

A trial is a short real training window of a config: the same model,
optimizer, strategy, input pipeline and compiled loop calls as
`tfpipe.train`, in a fresh `python -m tfpipe.tune.window` process (so an
out-of-memory kill or a crash ends that trial, not the tuner). The first
call and a warm-up are dropped; a few timed windows follow and their median
is the run's figure. A trial is repeated `repeats` times (one process each);
its figure is the median over runs and its noise the run-to-run spread.

Every finished run is appended to a JSON store, keyed by what was measured
(config file contents, overrides, window settings, run index), so a tuning
session that is interrupted and started again repeats no finished run (runs
that timed out are tried again; crashes are not).
Each run prints one progress line.

Example:

```python
from tfpipe.tune import trials
store = trials.Store("runs/tune/trials.json")
runner = trials.Runner("configs/images_cnn.yaml", "runs/tune", store)
m = runner.measure(["data.map.num_parallel_calls=1"], repeats=3, label="sequential map")
m["examples_per_sec"], m["noise"], m["runs"][0]["peak_rss_mb"]
```

The API is `Store`, `Runner` (`run`, `measure`, `ceiling`) and
`WindowSettings`; the other tuners (batch size, learning rate, sweeps)
build on these.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from tfpipe.tune import window  # no TensorFlow at import: the children import it

# Exit statuses a child ends with when the kernel kills it; SIGKILL is what
# the out-of-memory killer sends.
_SIGNALS = {-9: "killed (SIGKILL: out of memory?)", -11: "crashed (SIGSEGV)", -6: "aborted (SIGABRT)"}


_OOM_MARKS = ("MemoryError", "ResourceExhaustedError", "std::bad_alloc", "OOM when allocating")


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MiB (VmRSS; 0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def tree_rss_mb(pid: int) -> float:
    """Resident memory of process `pid` and all its descendants, in MiB (a cluster trial's processes)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += rss_mb(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="ascii") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            pass
    return total


def _watch(proc: subprocess.Popen, timeout: float, limit_mb: float) -> tuple[float, bool | None]:
    """Waits for `proc`; kills it past `timeout` or past `limit_mb` of resident memory.

    Memory is that of `proc` and its descendants: a cluster trial's launcher
    and every task it started.

    Returns:
        `(peak resident MB seen, over)`: over is True when the memory limit
        killed it, False when it ended by itself, None on a timeout.
    """
    deadline = time.perf_counter() + timeout
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_rss_mb(proc.pid))
        if limit_mb:
            if peak > limit_mb:
                proc.kill()
                proc.wait()
                return peak, True
        if time.perf_counter() > deadline:
            proc.kill()
            proc.wait()
            return peak, None
        # Polled every 20 ms: memory grows over a step's allocations, not in one jump.
        time.sleep(0.02)
    return peak, False


@dataclasses.dataclass(frozen=True)
class WindowSettings:
    """How long one run measures.

    Args:
        warmup_seconds: dropped after the first (compiling) call; tf.data's
            autotuner and the thread pools settle here.
        window_seconds: the length of each timed window.
        windows: timed windows per run; the run's figure is their median.
        timeout_seconds: a run still going after this is killed and recorded
            as failed (a hang ends one trial, not the tuner).
    """

    warmup_seconds: float = 3.0
    window_seconds: float = 2.0
    windows: int = 3
    timeout_seconds: float = 300.0


class Store:
    """Finished runs, kept in one JSON file (a list of records) and rewritten atomically.

    Args:
        path: the JSON file; it is read if it exists, so a restarted session
            finds the runs already done.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._records: dict[str, dict] = {}
        if self.path.exists():
            try:
                records = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.path}: not a trial store (invalid JSON: {e.msg}, line {e.lineno})") from None
            self._records = {r["key"]: r for r in records}

    def get(self, key: str) -> dict | None:
        return self._records.get(key)

    def add(self, record: dict) -> None:
        self._records[record["key"]] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(list(self._records.values()), indent=1), encoding="utf-8")
        os.replace(tmp, self.path)

    def __len__(self):
        return len(self._records)


def write_report(workdir, mode: str, result: dict, chart, log, tag: str = "[tune]") -> None:
    """Writes `workdir/MODE.json` and, with `chart(result, path)`, `workdir/MODE.png`.

    Every tuner mode ends with these two files; a chart that fails to draw
    is a warning, never a lost result.
    """
    workdir = Path(workdir)
    with open(workdir / f"{mode}.json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=str)
    try:
        chart(result, workdir / f"{mode}.png")
    except Exception as e:  # pylint: disable=broad-except
        log(f"{tag} warning: no chart ({type(e).__name__}: {e})")


def _error_line(stderr: str) -> str:
    """The last line of a child's stderr that says what went wrong (TensorFlow logs a lot besides)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line or "Killed" in line:
            return line[:400]
    return lines[-1][:400] if lines else ""


def _say(msg: str) -> None:
    print(f"[tune] {msg}", flush=True)


class Runner:
    """Runs trials of one config in child processes and keeps them in a `Store`.

    Args:
        config: the YAML file every trial starts from.
        workdir: scratch space for the children (`workdir/trials/`).
        store: where finished runs are kept (and found again on resume).
        base_overrides: `--set` overrides applied before every trial's own.
        settings: a `WindowSettings`.
        log: called with each progress line; default prints `[tune] ...`.
        memory_limit_mb: a trial past this resident memory (all its processes)
            is killed and recorded as out of memory; 0: no limit.
        cluster: `(workers, ps)`: the localhost cluster a trial under
            multi_worker_mirrored (`workers` processes) or parameter_server
            (a chief, `workers` workers and `ps` parameter servers) runs as.
    """

    def __init__(self, config, workdir, store: Store, base_overrides: Sequence[str] = (),
                 settings: WindowSettings | None = None, log: Callable[[str], None] = _say,
                 memory_limit_mb: float = 0, cluster: tuple[int, int] = (2, 1)):  # fmt: skip
        self.cluster = cluster
        self.config = os.path.abspath(config)
        # A child whose resident memory passes this is killed with SIGKILL, as
        # the kernel's out-of-memory killer (or a cgroup limit) would, and the
        # run is recorded as "oom" (0: no limit but the machine's).
        self.memory_limit_mb = memory_limit_mb
        self.workdir = Path(workdir)
        self.store = store
        self.base_overrides = list(base_overrides)
        self.settings = settings or WindowSettings()
        self.log = log
        self._config_digest = hashlib.sha256(Path(self.config).read_bytes()).hexdigest()[:16]

    def _key(self, kind: str, overrides: Sequence[str], index: int, profile: bool, extra: dict | None = None,
             strategy: str = "") -> str:
        what = {"config": self._config_digest, "overrides": self.base_overrides + list(overrides), "kind": kind,
                "settings": dataclasses.asdict(self.settings), "run": index, "profile": profile}
        if extra:
            what["extra"] = extra
        if strategy in window.CLUSTER_STRATEGIES:
            what["cluster"] = list(self.cluster)
        if self.memory_limit_mb:
            what["memory_limit_mb"] = self.memory_limit_mb
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]

    def run(self, overrides: Sequence[str] = (), index: int = 0, kind: str = "train", label: str = "",
            profile: bool = False, extra: dict | None = None) -> dict:
        """One run in a child process (or its stored record when it ran before).

        Args:
            overrides: `a.b=value` strings applied after `base_overrides`.
            index: which repeat this is (repeats are stored separately).
            kind: `train` (a training window) or `ceiling` (input alone and
                model alone; see `tfpipe.tune.window`).
            label: shown in the progress line.
            profile: after the timed windows, trace one window with tfpipe's
                profiler; the bottleneck report lands in `result["report"]`
                (its `recommendations` are the diagnosis).
            extra: more of the child's spec (a kind's own settings, e.g.
                `budget_seconds`); part of the stored key.

        Returns:
            A record: `status` ("ok", "failed", "oom", "timeout"), `returncode`,
            `error` (one line, "" when ok), `examples_per_sec` (median of the
            windows), `step_ms`, `cpu_sec_per_example`, `peak_rss_mb`,
            `seconds` (the child's whole life), `overrides`, `result` (the
            child's full output), `cached` (True when read from the store).
        """
        strategy = strategy_of(self.config, self.base_overrides + list(overrides))  # once: key and launch
        key = self._key(kind, overrides, index, profile, extra, strategy)
        known = self.store.get(key)
        label = label or (" ".join(overrides) or "as configured")
        # A run that timed out is tried again on resume (a busy machine may
        # have been the cause); a crash or an out-of-memory kill is not.
        if known is not None and known["status"] != "timeout":
            self.log(f"{label} run {index + 1}: {_describe(known)} (done before, from {self.store.path.name})")
            return {**known, "cached": True}
        record = self._spawn(kind, overrides, key, profile, extra or {}, strategy)
        record.update(key=key, kind=kind, overrides=list(overrides), index=index, label=label)
        self.store.add(record)
        self.log(f"{label} run {index + 1}: {_describe(record)}")
        return {**record, "cached": False}

    def _spawn(self, kind: str, overrides, key: str, profile: bool, extra: dict, strategy: str) -> dict:
        s = self.settings
        child_dir = self.workdir / "trials" / key
        child_dir.mkdir(parents=True, exist_ok=True)
        out = child_dir / "result.json"
        out.unlink(missing_ok=True)
        spec = {"config": self.config, "overrides": self.base_overrides + list(overrides), "kind": kind,
                "workdir": str(child_dir), "out": str(out), "warmup_seconds": s.warmup_seconds,
                "window_seconds": s.window_seconds, "windows": s.windows, "profile": profile, **extra}
        spec_path = child_dir / "spec.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        env = dict(os.environ)
        # The child imports this very tfpipe, wherever it was imported from.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        start = time.perf_counter()
        stderr_path = child_dir / "stderr.txt"
        clustered = strategy in window.CLUSTER_STRATEGIES  # one process per task, on 127.0.0.1
        command = cluster_command([sys.executable, "-m", "tfpipe.tune.window", str(spec_path)], strategy, self.cluster)
        with open(stderr_path, "w", encoding="utf-8") as err:
            # A cluster's launcher prints its tasks' output (errors included) on stdout.
            proc = subprocess.Popen(command, env=env, stdout=err if clustered else subprocess.DEVNULL, stderr=err)
            peak, over = _watch(proc, s.timeout_seconds, self.memory_limit_mb)
        stderr = stderr_path.read_text(encoding="utf-8", errors="replace")
        if over is None:
            return {"status": "timeout", "returncode": None, "seconds": round(time.perf_counter() - start, 1),
                    "error": f"no result after {s.timeout_seconds:.0f} s (killed)"}
        if over:
            return {"status": "oom", "returncode": proc.returncode, "seconds": round(time.perf_counter() - start, 1),
                    "peak_rss_mb": peak, "error": f"out of memory: resident memory {peak:,.0f} MB passed the "
                                                  f"limit of {self.memory_limit_mb:,.0f} MB (killed)"}
        seconds = round(time.perf_counter() - start, 1)
        if proc.returncode != 0 or not out.exists():
            error = _SIGNALS.get(proc.returncode) or _error_line(stderr) or f"exit status {proc.returncode}"
            # Out of memory inside TensorFlow or Python, or the kernel's killer.
            oom = proc.returncode == -9 or any(m in stderr for m in _OOM_MARKS)
            return {"status": "oom" if oom else "failed", "returncode": proc.returncode, "seconds": seconds, "error": error}
        result = json.loads(out.read_text(encoding="utf-8"))
        # A cluster's memory is all its processes' (sampled); one process reports its own peak.
        record = {"status": "ok", "returncode": 0, "seconds": seconds, "error": "", "result": result,
                  "peak_rss_mb": round(peak, 1) if clustered else result.get("peak_rss_mb"),
                  "peak_device_mb": result.get("peak_device_mb")}
        if kind == "train":
            windows = result["windows"]
            eps = statistics.median(w["examples_per_sec"] for w in windows)
            batch = _batch_size(self.config, self.base_overrides + list(overrides))
            record.update(
                examples_per_sec=round(eps, 2),
                step_ms=round(1000 * batch / eps, 3),
                cpu_sec_per_example=statistics.median(w["cpu_sec_per_example"] for w in windows),
                window_spread=_spread([w["examples_per_sec"] for w in windows]),
            )
        return record

    def measure(self, overrides: Sequence[str] = (), repeats: int = 3, label: str = "", profile: bool = False) -> dict:
        """`repeats` runs of one trial: their median and run-to-run noise.

        With `profile`, the first run also traces a window (see `run`).

        Returns:
            `examples_per_sec` (median over the runs that finished; None if
            none did), `noise` (relative spread (max - min) / median over
            the runs; with one run, the spread of its windows), `step_ms`,
            `cpu_sec_per_example`, `peak_rss_mb` (max), `status` ("ok" if
            every run finished, else the first failure's), `error`, `runs`.
        """
        runs = [self.run(overrides, i, label=label, profile=profile and i == 0) for i in range(repeats)]
        ok = [r for r in runs if r["status"] == "ok"]
        failed = [r for r in runs if r["status"] != "ok"]
        if not ok:
            return {"examples_per_sec": None, "noise": None, "status": failed[0]["status"],
                    "error": failed[0]["error"], "runs": runs, "overrides": list(overrides)}
        rates = [r["examples_per_sec"] for r in ok]
        eps = statistics.median(rates)
        noise = _spread(rates) if len(ok) > 1 else ok[0]["window_spread"]
        return {
            "examples_per_sec": round(eps, 2),
            "noise": round(noise, 4),
            "step_ms": round(statistics.median(r["step_ms"] for r in ok), 3),
            "cpu_sec_per_example": statistics.median(r["cpu_sec_per_example"] for r in ok),
            "peak_rss_mb": max(r["peak_rss_mb"] or 0 for r in ok),
            "peak_device_mb": max((r.get("peak_device_mb") for r in ok if r.get("peak_device_mb") is not None),
                                  default=None),
            "status": failed[0]["status"] if failed else "ok",
            "error": failed[0]["error"] if failed else "",
            "runs": runs,
            "overrides": list(overrides),
        }

    def ceiling(self, overrides: Sequence[str] = ()) -> dict:
        """The CPU ceiling of a config: `cores / (CPU-s per example of input alone + of model alone)`.

        Returns:
            The child's figures (`cpu_ceiling_examples_per_sec`,
            `input_examples_per_sec`, `model_examples_per_sec`, their CPU
            seconds per example, `cores`), or `{"status": "failed", "error": ...}`.
        """
        record = self.run(overrides, kind="ceiling", label="ceiling: input alone, model on one cached batch")
        if record["status"] != "ok":
            return {"status": record["status"], "error": record["error"]}
        return {"status": "ok", **{k: v for k, v in record["result"].items() if k not in ("input", "model")}}


def _spread(values) -> float:
    values = list(values)
    return (max(values) - min(values)) / statistics.median(values) if values else 0.0


def strategy_of(config, overrides) -> str:
    """The strategy a trial trains under ("" when its overrides do not load: the child says why)."""
    from tfpipe import config as config_lib  # pylint: disable=import-outside-toplevel

    try:
        return config_lib.load(config, overrides).runtime.strategy
    except config_lib.ConfigError:
        return ""


def cluster_command(command: list[str], strategy: str, cluster: tuple[int, int]) -> list[str]:
    """`command` as a localhost cluster (`tfpipe launch_local`) under a multi-process strategy, else as is."""
    if strategy not in window.CLUSTER_STRATEGIES:
        return command
    workers, ps = cluster
    ps_flag = ["--num_ps", str(ps)] if strategy == "parameter_server" else []
    return [sys.executable, "-m", "tfpipe", "launch_local", "--num_workers", str(workers), *ps_flag, "--", *command]


def _batch_size(config, overrides) -> int:
    from tfpipe import config as config_lib  # pylint: disable=import-outside-toplevel

    return config_lib.load(config, overrides).train.batch_size


def _describe(record: dict) -> str:
    if record["status"] != "ok":
        return f"{record['status']}: {record['error']} ({record['seconds']} s)"
    if "summary" in record.get("result", {}):  # kinds that say what they found themselves
        return f"{record['result']['summary']} ({record['seconds']} s)"
    if record.get("kind") == "ceiling" or "examples_per_sec" not in record:
        r = record["result"]
        return (f"input alone {r['input_examples_per_sec']:,.0f} ex/s ({1e6 * r['input_cpu_sec_per_example']:.1f} "
                f"CPU-us/ex), model alone {r['model_examples_per_sec']:,.0f} ex/s "
                f"({1e6 * r['model_cpu_sec_per_example']:.1f} CPU-us/ex), CPU ceiling "
                f"{r['cpu_ceiling_examples_per_sec']:,.0f} ex/s on {r['cores']} cores ({record['seconds']} s)")
    return (f"{record['examples_per_sec']:,.0f} ex/s, step {record['step_ms']:.2f} ms, "
            f"{1e6 * record['cpu_sec_per_example']:.1f} CPU-us/ex, peak RSS {record['peak_rss_mb']:,.0f} MB"
            + (f", peak GPU {record['peak_device_mb']:,.0f} MB" if record.get("peak_device_mb") is not None else "")
            + f" ({record['seconds']} s)")


"""The bottleneck report: a captured trace in, report.json + report.png + a summary out.

`analyze(path)` reads the `.xplane.pb` files of one profile run headlessly
with the converters of TensorBoard's profile plugin (xprof), the same data
the plugin's "Input pipeline analyzer" page shows, and turns it into:

- average step time and its spread;
- the share of step time waiting for input, in host compute, on a device
  (accelerators only) and everything else;
- a verdict: input-bound, compute-bound or balanced, with the percentage;
- the slowest tf.data stages by self time;
- recommendations naming tfpipe config keys and the value to try.

It works on any profile directory, including traces written by programs
other than tfpipe, as long as their steps carry root step markers
(`tf.profiler.experimental.Trace(name, step_num=n, _r=1)`); without them the
report says so instead of guessing.

Example:

```python
from tfpipe.profile import report
r = report.analyze("runs/x/logs")      # newest run under logs/plugins/profile/
print(report.summary(r))               # also in runs/x/logs/.../report.json
```
"""

from __future__ import annotations

import collections
import json
import os
import re
import statistics
from pathlib import Path

# Verdict thresholds on the share of step time waiting for input. The
# analyzer's own wording calls more than 20% "highly input-bound"; tfpipe
# keeps a middle band so that a pipeline that nearly keeps up is not sent
# chasing the wrong half of the program.
INPUT_BOUND_AT = 0.30
COMPUTE_BOUND_BELOW = 0.10

# Stages (the last part of an iterator name like Iterator::Root::Prefetch::Map)
# whose work is a user map function run one element at a time.
_SEQUENTIAL_MAP = {"Map", "MapAndBatch"}
_PARALLEL_MAP = {"ParallelMap", "ParallelMapV2"}
_READERS = {"TFRecord", "TextLine", "FixedLengthRecord", "ParallelInterleaveV4", "ParallelInterleave", "Interleave"}


# Below this many milliseconds per loop call, raising train.steps_per_loop pays.
SHORT_CALL_MS = 20.0


class ProfileError(ValueError):
    """A path that holds no readable profile."""


def find_run_dir(path: str | os.PathLike) -> Path:
    """The profile run directory under `path` with the newest `.xplane.pb`.

    `path` may be a TensorBoard log directory (with `plugins/profile/<run>/`),
    a run directory, or a single `.xplane.pb` file.

    Raises:
        ProfileError: when there is no `.xplane.pb` under `path`.
    """
    path = Path(path)
    if path.is_file():
        if not path.name.endswith(".xplane.pb"):
            raise ProfileError(f"{path}: expected a .xplane.pb file or a directory holding one")
        return path.parent
    if not path.exists():
        raise ProfileError(f"{path}: no such file or directory")
    files = sorted(path.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise ProfileError(
            f"{path}: no *.xplane.pb profile found (expected <logdir>/plugins/profile/<run>/<host>.xplane.pb)"
        )
    return files[-1].parent


def tool_data(run_dir: str | os.PathLike, tool: str):
    """One profile-plugin tool's output for a run directory, parsed from JSON."""
    # Imported here: the converters load a large native library.
    from xprof.convert import raw_to_tool_data  # pylint: disable=import-outside-toplevel

    paths = [str(p) for p in sorted(Path(run_dir).glob("*.xplane.pb"))]
    data, _ = raw_to_tool_data.xspace_to_tool_data(paths, tool, {})
    if not data:
        raise ProfileError(f"{run_dir}: the profile plugin returned no {tool} data")
    return json.loads(data)


def analyze(
    path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    steps_per_marker: int | None = None,
    config=None,
    always_on_input_wait_fraction: float | None = None,
) -> dict:
    """Builds the bottleneck report for one profile run and writes it.

    Args:
        path: a log directory, profile run directory or `.xplane.pb` file
            (see `find_run_dir`).
        out_dir: where `report.json` and `report.png` go; default the run
            directory.
        steps_per_marker: training steps covered by one step marker (tfpipe
            marks whole loop calls). None infers it from the step numbers the
            markers carry: tfpipe numbers each call by its first step, so
            consecutive markers differ by the steps per call; a program that
            marks single steps gives 1.
        config: the run's `tfpipe.config.Config` (or its dict form); None
            looks for a `config.yaml` in the workdir that holds `path`.
            Recommendations start from its values.
        always_on_input_wait_fraction: tfpipe's own timing over the traced
            steps, recorded next to the profile's figure.

    Returns:
        The report as a dict (also written to `report.json`).

    Raises:
        ProfileError: when `path` holds no profile.
    """
    run_dir = find_run_dir(path)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = _config_dict(config, run_dir)
    tables = tool_data(run_dir, "input_pipeline_analyzer")
    step_table, stage_table = tables[1], tables[2]
    props = step_table.get("p", {})
    rows = [_row(step_table, r) for r in step_table.get("rows", [])]

    report: dict = {
        "profile_dir": str(run_dir),
        "hardware": props.get("hardware_type", ""),
        "analyzer_conclusion": props.get("input_conclusion", ""),
    }
    stages = _stages(stage_table)
    report["slowest_input_stages"] = stages[:5]
    if not rows:
        report.update(
            verdict="unknown",
            verdict_text=(
                "no step time measured: the trace has no root step markers "
                "(wrap each step in tf.profiler.experimental.Trace('train', step_num=n, _r=1)) "
                "or is shorter than one step"
            ),
            recommendations=[],
        )
        _write(report, out_dir)
        return report

    numbers = [_step_number(r["stepnum"]) for r in rows]
    if steps_per_marker is None:
        steps_per_marker = _infer_steps_per_marker(numbers)
    spm = max(1, int(steps_per_marker))
    per_step = []
    for r, number in zip(rows, numbers):
        total = r["stepTimeMs"] / spm
        parts = {
            "input_ms": r.get("infeedTimeMs", 0.0) / spm,
            "host_compute_ms": r.get("hostComputeTimeMs", 0.0) / spm,
            "device_compute_ms": sum(
                r.get(k, 0.0) for k in ("deviceComputeTimeMs", "deviceToDeviceTimeMs", "deviceCollectivesTimeMs")
            )
            / spm,
        }
        parts["other_ms"] = max(0.0, total - sum(parts.values()))
        per_step.append({"marker": r["stepnum"], "first_step": number, "step_ms": total, **parts})

    times = [s["step_ms"] for s in per_step]
    total_ms = sum(times)
    shares = {
        name: sum(s[f"{name}_ms"] for s in per_step) / total_ms if total_ms else 0.0
        for name in ("input", "host_compute", "device_compute", "other")
    }
    verdict, verdict_text = _verdict(shares)
    report.update(
        steps_per_marker=spm,
        markers=len(per_step),
        step_time_ms={
            "mean": statistics.fmean(times),
            "stdev": statistics.stdev(times) if len(times) > 1 else 0.0,
            "min": min(times),
            "max": max(times),
        },
        shares=shares,
        verdict=verdict,
        verdict_text=verdict_text,
        input_wait_fraction_profile=shares["input"],
        input_wait_fraction_always_on=always_on_input_wait_fraction,
        per_step=per_step,
    )
    report["recommendations"] = recommend(report, cfg)
    chart_path = out_dir / "report.png"
    try:
        _chart(per_step, spm, verdict_text, chart_path)
        report["chart"] = str(chart_path)
    except Exception as e:  # pylint: disable=broad-except
        # The chart is a convenience; the numbers are already in the report.
        report["chart_error"] = f"{type(e).__name__}: {e}"
    _write(report, out_dir)
    return report


def recommend(report: dict, cfg: dict | None) -> list[dict]:
    """Config changes to try, most promising first.

    Each item names a config key, the value to try and why. With `cfg`
    (the run's config as a dict) keys already at the suggested value are
    skipped; without it (a profile from another program) the tf.data call to
    change is named next to tfpipe's key.
    """
    data = (cfg or {}).get("data", {})
    train = (cfg or {}).get("train", {})
    mapc = data.get("map", {}) if isinstance(data.get("map"), dict) else {}
    shares = report["shares"]
    stages = report.get("slowest_input_stages", [])
    top = stages[0]["stage"] if stages else ""
    recs: list[dict] = []

    def add(key, value, why):
        current = _lookup(cfg, key) if cfg else None
        if cfg and current == value:
            return
        if _lookup_default(key) is None:
            # This tfpipe version has no such key: keep the advice, name no key.
            key, value = None, None
        recs.append({"key": key, "value": value, "current": current, "why": why})

    def note(why):
        # Advice that names no single key to change.
        recs.append({"key": None, "value": None, "current": None, "why": why})

    if shares["input"] >= COMPUTE_BOUND_BELOW:
        input_pct = f"{shares['input']:.0%} of step time waits for input"
        map_is_slow = top in _SEQUENTIAL_MAP or any(s["stage"] in _SEQUENTIAL_MAP for s in stages[:2])
        if map_is_slow or mapc.get("num_parallel_calls") == 1:
            add(
                "data.map.num_parallel_calls",
                -1,
                f"{input_pct} and the map runs one element at a time (stage {top or 'Map'}); "
                "-1 (AUTOTUNE) runs it on every core [tf.data: map(..., num_parallel_calls=tf.data.AUTOTUNE)]",
            )
        per_element = any(
            s["stage"] in _SEQUENTIAL_MAP | _PARALLEL_MAP and s["count"] > 2 * report["markers"] * report["steps_per_marker"]
            for s in stages[:3]
        )
        # Only when every step can run on a whole batch (decoding images cannot).
        from tfpipe.data import preprocess  # pylint: disable=import-outside-toplevel

        steps = mapc.get("steps") or ()
        batchable = all(isinstance(st, dict) and st.get("op") in preprocess.BATCHABLE for st in steps)
        if per_element and batchable:
            add(
                "data.map.vectorized",
                True,
                "the map is called once per example; batching first and mapping whole batches "
                "pays the per-call overhead once per batch [tf.data: batch() before map()]",
            )
        readers_slow = any(s["stage"] in _READERS for s in stages[:3])
        read = data.get("read", {}) if isinstance(data.get("read"), dict) else {}
        if readers_slow and read.get("num_parallel_calls") == 1:
            add(
                "data.read.num_parallel_calls",
                -1,
                f"{input_pct} and files are read one at a time; -1 (AUTOTUNE) reads several in parallel "
                "[tf.data: interleave(..., num_parallel_calls=tf.data.AUTOTUNE)]",
            )
        options = data.get("options", {}) if isinstance(data.get("options"), dict) else {}
        if options.get("autotune") is False:
            add(
                "data.options.autotune",
                True,
                f"{input_pct} and tf.data's autotuning is off; it sizes parallelism and buffers to the machine",
            )
        if data and not data.get("cache"):
            add(
                "data.cache",
                "memory",
                f"{input_pct}; caching after the deterministic steps skips re-reading and re-decoding "
                "every epoch (use a file path when the data does not fit in memory) [tf.data: cache()]",
            )
        elif not data and top in _READERS:
            add("data.cache", "memory", f"{input_pct} and file reading is the slowest stage [tf.data: cache()]")
        if data.get("prefetch") == 0 or (not data and not any("Prefetch" in s["iterator"] for s in stages)):
            add(
                "data.prefetch",
                -1,
                "nothing overlaps input with compute; a prefetch buffer lets the next batch be prepared "
                "during the current step [tf.data: prefetch(tf.data.AUTOTUNE)]",
            )
    spm = report["steps_per_marker"]
    loop_steps = train.get("steps_per_loop", spm)
    call_ms = report["step_time_ms"]["mean"] * spm
    # Each call from Python costs a fraction of a millisecond to dispatch and
    # sync: negligible for calls of tens of milliseconds, not below that.
    # Calls shorter than train.steps_per_loop were cut by an epoch's end or a
    # checkpoint (digits: 40-step epochs); a larger value would not lengthen them.
    if call_ms < SHORT_CALL_MS and spm >= loop_steps:
        value = max(50, 2 * loop_steps)
        add(
            "train.steps_per_loop",
            value,
            f"one loop call ({spm} step(s)) takes {call_ms:.2f} ms, so per-call Python and dispatch costs "
            f"are a visible share ({shares['other']:.0%} of step time is neither input nor compute); "
            "more steps per compiled call pay them once per call",
        )
    if not recs and report["verdict"] == "compute-bound":
        note(
            "the input pipeline keeps up; speed now comes from the model side "
            "(model.params, train.batch_size) rather than data:"
        )
    if call_ms < SHORT_CALL_MS and spm < loop_steps:
        ckpt = (cfg or {}).get("checkpoint", {}).get("every_steps")
        epoch = train.get("steps_per_epoch")
        limits = ["an epoch's end" + (f" (train.steps_per_epoch: {epoch})" if epoch else "")]
        if ckpt:
            limits.append(f"a step checkpoint (checkpoint.every_steps: {ckpt})")
        note(
            f"one loop call ({spm} step(s)) takes {call_ms:.2f} ms, short enough that per-call costs show, "
            f"but train.steps_per_loop ({loop_steps}) is not the limit: calls stop at "
            + " and at ".join(limits)
            + ("; longer calls need longer epochs or rarer step checkpoints" if ckpt else "; longer calls need longer epochs")
        )
    return recs


def summary(report: dict) -> str:
    """A short plain-text summary of a report."""
    lines = [f"[tfpipe] profile report for {report['profile_dir']}"]
    if report["verdict"] == "unknown":
        lines.append(f"  verdict: unknown - {report['verdict_text']}")
        return "\n".join(lines)
    st, sh = report["step_time_ms"], report["shares"]
    lines.append(
        f"  step time    {st['mean']:.3f} ms per step (sd {st['stdev']:.3f}, min {st['min']:.3f}, "
        f"max {st['max']:.3f}) over {report['markers']} markers x {report['steps_per_marker']} steps"
    )
    parts = [f"input {sh['input']:.1%}", f"host compute {sh['host_compute']:.1%}"]
    if sh["device_compute"]:
        parts.append(f"device {sh['device_compute']:.1%}")
    parts.append(f"other {sh['other']:.1%}")
    lines.append("  breakdown    " + ", ".join(parts))
    lines.append(f"  verdict      {report['verdict'].upper()}: {report['verdict_text']}")
    if report.get("input_wait_fraction_always_on") is not None:
        lines.append(
            f"  always-on    input_wait_fraction {report['input_wait_fraction_always_on']:.1%} over the same steps "
            f"(profile: {sh['input']:.1%})"
        )
    if report["slowest_input_stages"]:
        lines.append("  slowest tf.data stages by self time:")
        for s in report["slowest_input_stages"][:3]:
            lines.append(f"    {s['stage']:<22} {s['self_ms']:9.2f} ms  {s['self_share']:6.1%}  x{s['count']}")
    if report["recommendations"]:
        lines.append("  try:")
        for r in report["recommendations"]:
            head = f"{r['key']}: {json.dumps(r['value'])}" if r["key"] else "note"
            now = f" (now {json.dumps(r['current'])})" if r.get("current") is not None else ""
            lines.append(f"    {head}{now} - {r['why']}")
    if report.get("chart"):
        lines.append(f"  chart        {report['chart']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- helpers


def _row(table: dict, row: dict) -> dict:
    ids = [c["id"] for c in table["cols"]]
    return {i: cell.get("v") for i, cell in zip(ids, row["c"])}


def _step_number(label) -> int | None:
    match = re.search(r"(-?\d+)\s*$", str(label))
    return int(match.group(1)) if match else None


def _infer_steps_per_marker(numbers) -> int:
    known = [n for n in numbers if n is not None]
    diffs = [b - a for a, b in zip(known, known[1:]) if b > a]
    if not diffs:
        return 1
    return collections.Counter(diffs).most_common(1)[0][0]


def _stages(table: dict) -> list[dict]:
    stages = []
    total_self = 0.0
    for r in table.get("rows", []):
        row = _row(table, r)
        total_self += row.get("selfTimeInMs") or 0.0
        stages.append(
            {
                "iterator": row["opName"],
                "stage": str(row["opName"]).split("::")[-1],
                "count": int(row.get("count") or 0),
                "total_ms": row.get("timeInMs") or 0.0,
                "self_ms": row.get("selfTimeInMs") or 0.0,
            }
        )
    for s in stages:
        s["self_share"] = s["self_ms"] / total_self if total_self else 0.0
    return sorted(stages, key=lambda s: -s["self_ms"])


def _verdict(shares: dict) -> tuple[str, str]:
    wait = shares["input"]
    if wait >= INPUT_BOUND_AT:
        return "input-bound", f"{wait:.1%} of step time waits for input"
    if wait < COMPUTE_BOUND_BELOW:
        busy = 1.0 - wait
        return "compute-bound", f"only {wait:.1%} of step time waits for input ({busy:.1%} is compute and other)"
    return "balanced", f"{wait:.1%} of step time waits for input"


def _config_dict(config, run_dir: Path) -> dict | None:
    if config is not None:
        if isinstance(config, dict):
            return config
        from tfpipe import config as config_lib  # pylint: disable=import-outside-toplevel

        return config_lib.to_dict(config)
    # <workdir>/logs/plugins/profile/<run>/: the resolved config sits in <workdir>.
    candidate = run_dir.parent.parent.parent.parent / "config.yaml"
    if candidate.is_file():
        import yaml  # pylint: disable=import-outside-toplevel

        with open(candidate, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
        return loaded if isinstance(loaded, dict) else None
    return None


def _lookup(tree: dict | None, dotted: str):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _lookup_default(dotted: str):
    """The default of a config key in this tfpipe version, None if there is no such key."""
    from tfpipe import config as config_lib  # pylint: disable=import-outside-toplevel

    return _lookup(config_lib.to_dict(config_lib.Config()), dotted)


def _write(report: dict, out_dir: Path) -> None:
    report["report_json"] = str(out_dir / "report.json")
    with open(out_dir / "report.json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)


def _chart(per_step: list[dict], spm: int, title: str, path: Path) -> None:
    # A Figure without pyplot renders to PNG with no backend at all, so the
    # caller's matplotlib (a notebook's inline backend) is left as it was.
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    labels = [str(s["first_step"] if s["first_step"] is not None else s["marker"]) for s in per_step]
    series = [
        ("input_ms", "waiting for input", "#d62728"),
        ("host_compute_ms", "host compute", "#1f77b4"),
        ("device_compute_ms", "device compute", "#9467bd"),
        ("other_ms", "other", "#7f7f7f"),
    ]
    fig = Figure(figsize=(max(6.0, 0.35 * len(labels) + 2), 4.0))
    ax = fig.subplots()
    positions = list(range(len(per_step)))
    bottom = [0.0] * len(per_step)
    for key, name, color in series:
        values = [s[key] for s in per_step]
        if not any(values):
            continue
        ax.bar(positions, values, bottom=bottom, label=name, color=color)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(positions, labels)
    ax.set_xlabel("first step of the marked call" if spm > 1 else "step")
    ax.set_ylabel(f"ms per step{f' (call of {spm} steps / {spm})' if spm > 1 else ''}")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    if len(labels) > 20:
        ax.tick_params(axis="x", labelrotation=90)
    fig.tight_layout()
    fig.savefig(path, dpi=100)

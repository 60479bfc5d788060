"""The bottleneck report: a captured trace in, report.json + report.png + a summary out.

`analyze(path)` reads the `.xplane.pb` files of one profile window (one or
more trace sessions: a window that spans epoch ends is traced in pieces)
headlessly with the converters of TensorBoard's profile plugin (xprof), the
same data the plugin's "Input pipeline analyzer" page shows, and turns it
into one verdict a user can act on.

The report dict (`report.json`) holds, among others:

- `verdict`: `not-input-bound`, `moderately-input-bound` or
  `highly-input-bound`, the profile plugin's own bands (5% and 20% of step
  time waiting for input); `verdict_text` says it with the percentage.
- `input_share`: the share of step time waiting for a batch not yet made,
  which the verdict uses (the profile's, `input_wait_fraction_profile`: each
  GetNext matched to when its batch was finished, tfpipe/profile/waiting.py),
  `input_share_source` and `input_share_note` (one line: it and the
  always-on timer's figure, and which one is trusted and why when they
  differ by more than `AGREE_WITHIN`). `profile_plugin_input_share` is the
  plugin's figure (the whole GetNext) and `handover_share` the difference:
  handing ready batches over, which one cached batch through tf.data pays
  too. When the plugin's figure falls in another band, `verdict_text` says
  so after the verdict.
- `perfect_input_speedup`: how much faster training would run with a perfect
  input pipeline. `perfect_input_source` says where it comes from:
  `measured` (tfpipe's run timed the same step fed one cached batch repeated,
  the tf.data paper's check, `perfect_input` holds the figures:
  tfpipe/train/probe.py) or `estimate`, `1 / (1 - input_share)`, kept as
  `perfect_input_estimate` either way. The estimate is a lower bound: a step
  that waited also starts on idle threads, which a perfect input does not
  (on a Python generator source it read 8.5x where 20.8x was measured;
  `benchmarks/diagnosis.py` sets both next to a separate measurement).
- `cause`: one identifier from `CAUSES` naming the slow part; `cause_text`,
  a sentence saying why (with the stage and its rate).
- `stages`: every tf.data stage with its own work (`work_ms`; waiting on the
  stage's input, as a Prefetch buffer does, is not work), elements per
  second produced, its capacity (elements per second of its own work) and
  `utilization` (share of the window its own work took), Plumber-style;
  `slowest_input_stages` is the same list ranked by own work.
- `recommendations`: `recommend(report, cfg)`, a list of dicts
  `{"key", "value", "current", "why"}`, most promising first; the first one
  targets `cause`. `key` is a tfpipe config key (None for advice no key can
  carry); for a profile of a program that is not tfpipe, `why` also names
  the tf.data call in brackets.

It works on any profile directory, including traces written by programs
other than tfpipe, as long as their steps carry root step markers
(`tf.profiler.experimental.Trace(name, step_num=n, _r=1)`); without them the
report says so instead of guessing.

Example:

```python
from tfpipe.profile import report
r = report.analyze("runs/x/logs")      # newest run under logs/plugins/profile/
print(report.summary(r))               # also in runs/x/logs/.../report.json
print(r["cause"], r["recommendations"][0])
```
"""

from __future__ import annotations

import collections
import json
import os
import re
import statistics
from pathlib import Path

from tfpipe import config as config_lib

# Verdict bands on the share of step time waiting for input: the profile
# plugin's own (xprof's input_pipeline_analyzer says "HIGHLY input-bound" at
# 20% or more, "MODERATELY" from 5%), so tfpipe and TensorBoard use one word.
HIGHLY_AT = 0.20
MODERATELY_AT = 0.05
VERDICTS = ("not-input-bound", "moderately-input-bound", "highly-input-bound")

# The two input figures (profile, always-on timer) count as agreeing within this.
AGREE_WITHIN = 0.05

# What `cause` can be: a stable identifier for tools (scripts/tune.py) and a
# phrase for people.
CAUSES = {
    "source_read": "reading the source files",
    "python_source": "a Python generator source",
    "interleave": "too few parallel file reads (the interleave)",
    "map": "a per-example map function",
    "per_element_overhead": "tf.data's per-element overhead (many tiny elements, cheap work each)",
    "shuffle": "the shuffle buffer",
    "batch": "batching",
    "no_prefetch": "no prefetch: input and compute never overlap",
    "iterator": "handing each ready batch over from tf.data's threads (short steps, a pipeline with spare capacity)",
    "input_cpu": "the input pipeline's own CPU work, taking cores the model needs (steps barely wait)",
    "dispatch": "host dispatch between steps (Python and per-call costs)",
    "compute": "model compute",
    "unknown": "unknown (no step markers in the trace)",
}

# Stages (the last part of an iterator name like Iterator::Root::Prefetch::Map).
_SEQUENTIAL_MAP = {"Map", "MapAndBatch"}
_PARALLEL_MAP = {"ParallelMap", "ParallelMapV2"}
_READERS = {"TFRecord", "TextLine", "FixedLengthRecord", "SSTable"}
_INTERLEAVES = {"Interleave", "ParallelInterleave", "ParallelInterleaveV4", "ParallelInterleaveV2", "FlatMap"}
_GENERATORS = {"Generator", "FromGenerator", "PyFunc"}
# Stages whose GetNext waits on the stage's own worker threads (a parallel
# map, a parallel interleave) or on its input (a prefetch buffer): their
# self time is waiting, not work. A parallel map's waiting is the only view
# of its function's work the trace gives; a buffer's never is.
_BUFFERS = {"Prefetch", "ParallelBatch", "ModelDataset", "MaxIntraOpParallelism", "PrivateThreadPool"}
_ASYNC_WORK = {"ParallelMap", "ParallelMapV2", "MapAndBatch", "ParallelInterleaveV4", "ParallelInterleave"}

# A per-example stage doing less own work than this per element is mostly
# tf.data's per-element bookkeeping (measured here: a cheap map ~5-15 us).
PER_ELEMENT_US = 30.0
# Elements per step from which a per-example map is taken for per-element
# overhead whatever its cost per element: a bare source stage alone costs
# 1-4 us per element here (a millisecond a step at 256), more on a busy host,
# where a cheap map measured 300 us per element of wall time; batching first
# is the first thing to try. (A heuristic: the trace cannot tell a map's CPU
# from its waiting for a core.)
MANY_ELEMENTS = 256
# Compiled calls shorter than this are dominated by the per-call cost of
# calling from Python (a fraction of a millisecond each).
DISPATCH_CALL_MS = 5.0
# "other" (neither input nor compute) above this share names dispatch.
DISPATCH_SHARE = 0.30

# Steps wait although the busiest tf.data stage works less than this share of
# the window: the pipeline keeps up on average and what costs is getting
# batches across (digits MLP: busiest stage 6%, every input-bound planted case
# 82% or more). Where the trace matches batches to GetNexts, the hand-over of
# ready batches is not waiting and names `iterator` on its own (diagnose).
SPARE_UTILIZATION = 0.5

# A measured perfect-input speed-up implying at least this share of step
# time, where steps wait less than MODERATELY_AT: the input's threads slow
# the model's without making it wait (images_cnn: 0.8% waiting, 1.37x
# measured, on 2 cores that JPEG decoding and the model share).
CONTENTION_SHARE = 0.10

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
    steps_per_marker: int | dict | None = None,
    config=None,
    always_on_input_wait_fraction: float | None = None,
    always_on_waits: dict | None = None,
    run_dirs: list | None = None,
    window_note: str | None = None,
    perfect_input: dict | None = None,
) -> dict:
    """Builds the bottleneck report for one profile window and writes it.

    Args:
        path: a log directory, profile run directory or `.xplane.pb` file
            (see `find_run_dir`).
        out_dir: where `report.json` and `report.png` go; default the run
            directory.
        steps_per_marker: training steps covered by one step marker: an int
            for every marker, or a dict {marker step number: steps} (tfpipe's
            window mixes calls of several sizes). None infers it from the
            step numbers the markers carry: tfpipe numbers each call by its
            first step, so consecutive markers differ by the steps per call;
            a program that marks single steps gives 1.
        config: the run's `tfpipe.config.Config` (or its dict form); None
            looks for a `config.yaml` in the workdir that holds `path`.
            Recommendations start from its values.
        always_on_input_wait_fraction: tfpipe's own timing over the traced
            steps, set next to the profile's figure.
        always_on_waits: the timer's seconds per marker ({marker step number:
            seconds}); when given, the timer's figure is taken over the
            markers the profile kept (xprof drops each session's first and
            last) and the same step time, so both figures share their steps
            and denominator: the calls timed from Python also hold the
            marker's own Python work, 10% of a 3 ms one-step call.
        run_dirs: every trace session of the window (a window spanning epoch
            ends is traced in pieces); default the one `path` names.
        window_note: a line about the window (moved earlier, cut short), shown
            first in the summary.
        perfect_input: the run's own measurement of the same step fed one
            cached batch, `{"ms_per_step", "run_ms_per_step", ...}`
            (tfpipe/train/probe.py); None estimates the speed-up from the share.

    Returns:
        The report as a dict (also written to `report.json`).

    Raises:
        ProfileError: when `path` holds no profile.
    """
    run_dirs = [Path(d) for d in run_dirs] if run_dirs else [find_run_dir(path)]
    run_dir = run_dirs[-1]
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = _config_dict(config, run_dir)
    rows, stage_rows, conclusions, props = [], [], [], {}
    for d in run_dirs:
        tables = tool_data(d, "input_pipeline_analyzer")
        step_table, stage_table = tables[1], tables[2]
        props = step_table.get("p", {}) or props
        conclusions.append(step_table.get("p", {}).get("input_conclusion", ""))
        waits = _waits(d)
        for r in step_table.get("rows", []):
            row = _row(step_table, r)
            w = waits.get(_step_number(row["stepnum"]))
            # The share of the marker's GetNext time spent waiting (None: not
            # told apart, all of it counts as waiting, as the plugin counts it).
            row["wait_ratio"] = min(1.0, w["wait_ms"] / w["getnext_ms"]) if w and w["getnext_ms"] > 0 else None
            rows.append(row)
        stage_rows += [_row(stage_table, r) for r in stage_table.get("rows", [])]

    report: dict = {
        "profile_dir": str(run_dir),
        "profile_dirs": [str(d) for d in run_dirs],
        "hardware": props.get("hardware_type", ""),
        "analyzer_conclusion": " | ".join(c for c in conclusions if c),
        "window_note": window_note,
    }
    if not rows:
        report.update(
            verdict="unknown",
            verdict_text=(
                "no step time measured: the trace has no root step markers "
                "(wrap each step in tf.profiler.experimental.Trace('train', step_num=n, _r=1)) "
                "or is shorter than one step"
            ),
            cause="unknown",
            cause_text=CAUSES["unknown"],
            stages=[],
            slowest_input_stages=[],
            recommendations=[],
        )
        _write(report, out_dir)
        return report

    per_step, spm = _per_step(rows, steps_per_marker)
    times = [s["step_ms"] for s in per_step]
    steps_total = sum(s["steps"] for s in per_step)
    window_ms = sum(s["step_ms"] * s["steps"] for s in per_step)
    shares = {
        name: sum(s[f"{name}_ms"] * s["steps"] for s in per_step) / window_ms if window_ms else 0.0
        for name in ("input", "host_compute", "device_compute", "other")
    }
    wait_share = sum(s["wait_ms"] * s["steps"] for s in per_step) / window_ms if window_ms else 0.0
    # Whether the trace told waiting from hand-over on any marker (else the
    # plugin's whole input share counts as waiting).
    split = any(r.get("wait_ratio") is not None for r in rows)
    report.update(
        steps_per_marker=spm,
        markers=len(per_step),
        steps_traced=steps_total,
        step_time_ms={
            "mean": window_ms / steps_total if steps_total else 0.0,
            "stdev": statistics.stdev(times) if len(times) > 1 else 0.0,
            "min": min(times),
            "max": max(times),
        },
        shares=shares,
        profile_plugin_input_share=shares["input"],
        input_split=split,
        handover_share=max(0.0, shares["input"] - wait_share),
        input_wait_fraction_profile=wait_share,
        input_wait_fraction_always_on=always_on_input_wait_fraction,
        per_step=per_step,
    )
    if always_on_waits:
        kept = {s["first_step"]: s for s in per_step}
        waits = {int(k): v for k, v in always_on_waits.items()}
        if kept and all(k in waits for k in kept):
            always_on_input_wait_fraction = 1000 * sum(waits[k] for k in kept) / window_ms
            report["input_wait_fraction_always_on"] = always_on_input_wait_fraction
    measured = None
    if perfect_input and perfect_input.get("ms_per_step") and perfect_input.get("run_ms_per_step"):
        measured = perfect_input["run_ms_per_step"] / perfect_input["ms_per_step"]
    report.update(_input_share(wait_share, always_on_input_wait_fraction, report["step_time_ms"]["mean"], measured))
    report["verdict"], report["verdict_text"] = _verdict(report["input_share"])
    plugin_verdict = _verdict(shares["input"])[0]
    if plugin_verdict != report["verdict"]:
        # Said in the first line: TensorBoard's Profile tab shows the other word.
        report["verdict_text"] += (
            f"; TensorBoard's Profile tab says {plugin_verdict} ({shares['input']:.1%}): it also counts the "
            f"{report['handover_share']:.1%} spent handing ready batches over from tf.data's threads, which one "
            "cached batch fed through tf.data pays too"
        )
    share = report["input_share"]
    if measured:
        report["perfect_input_share"] = implied = max(0.0, 1.0 - 1.0 / measured)
        # Only a gain larger than the probe's own spread: on sub-millisecond
        # steps its blocks vary by 10% and more (the digits MLP read 0.98-1.59x
        # over nine runs where separate runs measured 0.90-1.09x).
        low = (perfect_input.get("speedup_range") or [measured])[0]
        report["perfect_input_significant"] = low > 1.0
        # The share the probe shows at the least: the contention tests use it.
        report["perfect_input_share_low"] = max(0.0, 1.0 - 1.0 / low)
        if share < MODERATELY_AT <= CONTENTION_SHARE <= report["perfect_input_share_low"]:
            # Steps do not wait, yet the input costs: the verdict says so in its first words.
            report["verdict"] = _verdict(implied)[0]
            report["verdict_text"] = (
                f"a perfect input would make steps {implied:.0%} shorter (measured), though they wait for input "
                f"only {share:.1%} of the time: the input's own work slows them (TensorBoard's Profile tab counts "
                f"only the GetNext time: {plugin_verdict}, {shares['input']:.1%})"
            )
    report["perfect_input_estimate"] = 1.0 / (1.0 - share) if share < 0.99 else None
    if measured:
        report.update(perfect_input_speedup=measured, perfect_input_source="measured", perfect_input=perfect_input)
    else:
        report.update(perfect_input_speedup=report["perfect_input_estimate"], perfect_input_source="estimate")
    stages = _stages(stage_rows, window_ms, steps_total)
    _mark_timer_stage(stages, cfg)
    report["stages"] = stages
    report["slowest_input_stages"] = [s for s in stages if s["kind"] not in ("buffer", "timer")][:5]
    report["cause"], report["cause_text"] = diagnose(report, cfg)
    report["recommendations"] = recommend(report, cfg)
    chart_path = out_dir / "report.png"
    try:
        _chart(per_step, spm, report["verdict_text"], chart_path)
        report["chart"] = str(chart_path)
    except Exception as e:  # pylint: disable=broad-except
        # The chart is a convenience; the numbers are already in the report.
        report["chart_error"] = f"{type(e).__name__}: {e}"
    _write(report, out_dir)
    return report


def _per_step(rows: list[dict], steps_per_marker) -> tuple[list[dict], int]:
    """One entry per marker, in ms per training step; the most common steps per marker."""
    numbers = [_step_number(r["stepnum"]) for r in rows]
    if steps_per_marker is None:
        steps_per_marker = _infer_steps_per_marker(numbers)
    if isinstance(steps_per_marker, dict):
        sizes = {int(k): int(v) for k, v in steps_per_marker.items()}
        common = collections.Counter(sizes.values()).most_common(1)[0][0] if sizes else 1
    else:
        sizes, common = {}, max(1, int(steps_per_marker))
    per_step = []
    for r, number in zip(rows, numbers):
        spm = max(1, sizes.get(number, common))
        total = r["stepTimeMs"] / spm
        ratio = r.get("wait_ratio")
        parts = {
            "input_ms": r.get("infeedTimeMs", 0.0) / spm,
            "host_compute_ms": r.get("hostComputeTimeMs", 0.0) / spm,
            "device_compute_ms": sum(
                r.get(k, 0.0) for k in ("deviceComputeTimeMs", "deviceToDeviceTimeMs", "deviceCollectivesTimeMs")
            )
            / spm,
        }
        parts["other_ms"] = max(0.0, total - sum(parts.values()))
        wait = parts["input_ms"] * (1.0 if ratio is None else ratio)
        per_step.append({"marker": r["stepnum"], "first_step": number, "steps": spm, "step_ms": total, **parts,
                         "wait_ms": wait, "handover_ms": parts["input_ms"] - wait})
    return per_step, common


def _input_share(profile: float, always_on: float | None, step_ms: float, measured: float | None = None) -> dict:
    """The input share the verdict uses, and one line on the two figures.

    The profile's figure is the part of each step's GetNext spent waiting
    for a batch not yet made (tfpipe/profile/waiting.py: each batch's
    production matched to the GetNext that took it); the hand-over of a
    ready batch is reported apart (`handover_share`), since one cached batch
    fed through tf.data pays it too. The always-on timer (stamped batches,
    tfpipe/profile/trace.py) measures the same waiting from inside the step.
    When they differ by more than AGREE_WITHIN, the profile's is trusted: it
    sees every thread and every GetNext of the window.
    """
    out = {"input_share": profile, "input_share_source": "profile"}
    if always_on is None:
        out["input_share_note"] = f"input waiting {profile:.1%} from the profile (the always-on timer was off)"
        out["figures_agree"] = None
        return out
    gap = abs(always_on - profile)
    out["figures_agree"] = gap <= AGREE_WITHIN
    if gap <= AGREE_WITHIN:
        out["input_share_note"] = (
            f"input waiting {profile:.1%} (profile) and {always_on:.1%} (always-on timer) agree within "
            f"{AGREE_WITHIN:.0%}"
        )
        return out
    measured_text = f"; the measured perfect-input speed-up is {measured:.2f}x" if measured else ""
    if always_on < profile:
        why = "the timer stamps a batch when the pipeline's last stage ends, the profile sees every GetNext"
    else:
        why = "the timer brackets one op, the profile sees every thread of the window"
    out["input_share_note"] = (
        f"input waiting: trusting the profile's {profile:.1%} over the always-on timer's {always_on:.1%} "
        f"({gap * 100:.1f} points apart; {why}{measured_text})"
    )
    return out


def diagnose(report: dict, cfg: dict | None) -> tuple[str, str]:
    """The cause (a key of `CAUSES`) and a sentence saying why.

    Reads the verdict first: below MODERATELY_AT waiting for input, the cause
    is the input's CPU work when one cached batch measurably runs faster
    (`input_cpu`), the iterator when handing ready batches over takes
    MODERATELY_AT or more (`iterator`), else on the model side (`dispatch`
    when most of a step is neither input nor compute, else `compute`). Otherwise the tf.data stage doing the most
    work of its own names it (never a buffer waiting on its input), with the
    pipeline's shape deciding between neighbours: no asynchronous stage at
    all is `no_prefetch`; a reader or interleave is `interleave` when reads
    are not parallel, else `source_read`; a map (or batch) doing little work
    per element, many elements a step, is `per_element_overhead`.
    """
    shares, share = report["shares"], report["input_share"]
    data = (cfg or {}).get("data", {}) or {}
    # The run's own calls: tfpipe's window may run shorter ones than
    # train.steps_per_loop; a plain program's calls are its markers.
    call_steps = ((cfg or {}).get("train", {}) or {}).get("steps_per_loop") or report["steps_per_marker"]
    call_ms = report["step_time_ms"]["mean"] * call_steps
    # Only calls under DISPATCH_CALL_MS: two 4.6 ms steps of plain compute
    # per call (9 ms, measured on a quiet host) are compute, not dispatch; a
    # one-step call of a tiny model measured 0.6-0.9 ms.
    short = call_ms < DISPATCH_CALL_MS
    implied = report.get("perfect_input_share_low", report.get("perfect_input_share"))
    if share < MODERATELY_AT and implied is not None and implied >= CONTENTION_SHARE:
        return "input_cpu", (
            f"steps wait for input only {share:.1%} of the time, yet the same loop fed one cached batch runs "
            f"{report['perfect_input_speedup']:.2f}x faster: the input pipeline's threads take CPU the model needs"
        )
    handover = report.get("handover_share", 0.0)
    if share < MODERATELY_AT and handover >= MODERATELY_AT:
        return "iterator", (
            f"steps wait for input only {share:.1%} of the time, but handing each ready batch over from tf.data's "
            f"threads takes {handover:.1%} of a {report['step_time_ms']['mean']:.2f} ms step: a faster pipeline "
            "cannot remove that, taking the iterator out of the step can"
        )
    if share < HIGHLY_AT and short:
        # Calls this short: per-call costs are a large share of each, and more
        # steps per call amortize them and the iterator's per-call start alike;
        # a moderate wait is taken up by the longer calls' prefetching.
        return "dispatch", (
            f"{share:.1%} of step time waits for input and each compiled call runs {call_steps} step(s) "
            f"in {call_ms:.2f} ms: Python and per-call dispatch costs are a large share of it"
        )
    if share < MODERATELY_AT:
        if shares["other"] >= DISPATCH_SHARE:
            return "dispatch", (
                f"only {share:.1%} of step time waits for input and {shares['other']:.0%} is neither input nor "
                f"compute: Python and per-call costs between {report['step_time_ms']['mean']:.2f} ms steps"
            )
        return "compute", f"only {share:.1%} of step time waits for input; the model's compute sets the pace"
    stages = report["stages"]
    work = [s for s in stages if s["kind"] not in ("buffer", "timer")]
    top = work[0] if work else None
    iterators = " ".join(s["iterator"] for s in stages)
    overlapped = any(name in iterators for name in ("Prefetch", "ParallelMap", "MapAndBatch", "ParallelBatch"))
    prefix = f"{share:.1%} of step time waits for input"
    if (data and data.get("prefetch") == 0 and not overlapped) or (not data and stages and not overlapped):
        return "no_prefetch", (
            f"{prefix} and no stage works ahead of the step (no prefetch, nothing parallel): "
            "input and compute take turns"
        )
    if top is None:
        return "map", f"{prefix}; the trace names no tf.data stage"
    if top["utilization"] < SPARE_UTILIZATION:
        return "iterator", (
            f"{prefix}, yet the busiest stage ({top['stage']}) works only {top['utilization']:.0%} of the window: "
            f"the pipeline keeps up on average, and getting each batch across between threads is a visible "
            f"share of a {report['step_time_ms']['mean']:.2f} ms step"
        )
    name, rate = top["stage"], _rate_text(top)
    if name in _GENERATORS or "Generator" in top["iterator"]:
        return "python_source", f"{prefix} and the Python generator source does the most work ({rate})"
    reading = any(f"::{i}::" in top["iterator"] for i in _INTERLEAVES)
    if name in _READERS or name in _INTERLEAVES or reading:
        read = data.get("read", {}) if isinstance(data.get("read"), dict) else {}
        sequential = (read.get("num_parallel_calls") == 1 or read.get("cycle_length") == 1) if data else (
            "ParallelInterleave" not in top["iterator"]
        )
        if sequential:
            return "interleave", f"{prefix} and files are read one at a time: {name} does the most work ({rate})"
        return "source_read", f"{prefix} and reading the files does the most work ({name}, {rate})"
    eps, us = top["elements_per_step"], top["work_us_per_element"]
    # Cheap work per element, or so many elements a step that tf.data's own
    # bookkeeping (its cost per element grows with a busy host) dominates.
    per_element = (eps >= 8 and us < PER_ELEMENT_US) or eps >= MANY_ELEMENTS
    if name in _SEQUENTIAL_MAP | _PARALLEL_MAP | {"Batch", "BatchV2"} and per_element:
        return "per_element_overhead", (
            f"{prefix}; {name} handles {top['elements_per_step']:.0f} elements a step at "
            f"{top['work_us_per_element']:.1f} us each: tf.data's per-element cost, not the work, dominates"
        )
    if name in _SEQUENTIAL_MAP | _PARALLEL_MAP:
        return "map", f"{prefix} and the per-example map does the most work ({name}, {rate})"
    if name.startswith("Shuffle"):
        return "shuffle", f"{prefix} and the shuffle does the most work ({rate})"
    if name.startswith("Batch") or name.startswith("PaddedBatch"):
        return "batch", f"{prefix} and batching does the most work ({rate})"
    return "map", f"{prefix}; {name} does the most work ({rate})"


def _rate_text(stage: dict) -> str:
    return (
        f"{stage['work_us_per_element']:.0f} us per element, busy {stage['utilization']:.0%} of the window, "
        f"capacity {stage['capacity_per_sec'] or 0:,.0f}/s vs {stage['elements_per_sec']:,.0f}/s consumed"
    )


def recommend(report: dict, cfg: dict | None) -> list[dict]:
    """Config changes to try, most promising first; the first targets `report["cause"]`.

    Each item is `{"key", "value", "current", "why"}`: a tfpipe config key,
    the value to try, the run's current value (None when unknown) and why.
    With `cfg` (the run's config as a dict) keys already at the suggested
    value are skipped; without it (a profile from another program) `why`
    also names the tf.data call to change, in brackets. `key` None is advice
    no single key carries.
    """
    data = (cfg or {}).get("data", {}) or {}
    train = (cfg or {}).get("train", {}) or {}
    mapc = data.get("map", {}) if isinstance(data.get("map"), dict) else {}
    read = data.get("read", {}) if isinstance(data.get("read"), dict) else {}
    options = data.get("options", {}) if isinstance(data.get("options"), dict) else {}
    shares, share, cause = report["shares"], report["input_share"], report.get("cause")
    recs: list[dict] = []

    def add(key, value, why):
        current = config_lib.lookup(cfg, key) if cfg else None
        if cfg and current == value:
            return
        if any(r["key"] == key for r in recs if key):
            return
        if _lookup_default(key) is None:
            # This tfpipe version has no such key: keep the advice, name no key.
            key, value = None, None
        recs.append({"key": key, "value": value, "current": current, "why": why})

    def note(why):
        recs.append({"key": None, "value": None, "current": None, "why": why})

    input_pct = f"{share:.0%} of step time waits for input"
    handover = report.get("handover_share")
    handover_pct = (f"{handover:.0%} of step time goes to" if handover is not None and handover >= MODERATELY_AT
                    else input_pct)
    from tfpipe.data import preprocess  # pylint: disable=import-outside-toplevel

    steps = mapc.get("steps") or ()
    batchable = all(isinstance(st, dict) and st.get("op") in preprocess.BATCHABLE for st in steps)
    random_steps = any(isinstance(st, dict) and st.get("op") in preprocess.RANDOM_OPS for st in steps)
    map_sequential = mapc.get("num_parallel_calls") == 1 if data else any(
        s["stage"] in _SEQUENTIAL_MAP for s in report.get("slowest_input_stages", [])[:2]
    )

    def parallel_map():
        add("data.map.num_parallel_calls", -1,
            f"{input_pct} and the map runs one element at a time; -1 (AUTOTUNE) runs it on every core "
            "[tf.data: map(..., num_parallel_calls=tf.data.AUTOTUNE)]")  # fmt: skip

    def cache(what):
        if data.get("cache"):
            return
        add("data.cache", "memory",
            f"{input_pct}; {what}: caching after the deterministic steps does it once, not every epoch "
            "(a file path when the data does not fit in memory) [tf.data: cache() after the deterministic work]")  # fmt: skip

    def vectorize():
        if data and not batchable:
            return
        add("data.map.vectorized", True,
            "each example pays tf.data's per-element cost; batching first and mapping whole batches pays it "
            "once per batch [tf.data: batch() before map()]")  # fmt: skip

    def parallel_reads():
        if cfg and read.get("cycle_length") == 1:
            add("data.read.cycle_length", -1,
                f"{input_pct} and one file is read at a time; -1 lets several files be read at once "
                "[tf.data: interleave(..., cycle_length=N)]")  # fmt: skip
        add("data.read.num_parallel_calls", -1,
            f"{input_pct} and files are read one at a time; -1 (AUTOTUNE) reads several in parallel "
            "[tf.data: interleave(..., num_parallel_calls=tf.data.AUTOTUNE)]")  # fmt: skip

    def prefetch():
        add("data.prefetch", -1,
            "nothing overlaps input with compute; a prefetch buffer lets the next batch be prepared "
            "during the current step [tf.data: prefetch(tf.data.AUTOTUNE)]")  # fmt: skip

    def more_steps_per_call():
        spm, loop_steps = report["steps_per_marker"], train.get("steps_per_loop", report["steps_per_marker"])
        call_ms = report["step_time_ms"]["mean"] * spm
        add("train.steps_per_loop", max(50, 2 * loop_steps),
            f"one loop call ({spm} step(s)) takes {call_ms:.2f} ms, so per-call Python and dispatch costs are "
            f"a visible share ({shares['other']:.0%} of step time is neither input nor compute); more steps "
            "per compiled call pay them once per call [tf.function: loop over several steps per call]")  # fmt: skip

    def in_graph_blocked():
        return preprocess.in_graph_blocker(steps, (data.get("service") or {}).get("address"), data.get("padded_batch"),
                                           strategy=((cfg or {}).get("runtime") or {}).get("strategy", "default"))

    def in_graph():
        if data.get("in_graph"):
            return
        if cfg and in_graph_blocked():
            # Steps that must run every epoch: no in-graph copy; fewer, larger hand-overs.
            size = train.get("batch_size")
            if size:
                add("train.batch_size", 2 * size,
                    f"{handover_pct} handing ready batches over; twice the batch halves the hand-overs per example "
                    "(scale optimizer.learning_rate with it: scripts/tune.py batch_size measures both)")  # fmt: skip
            return
        add("data.in_graph", True,
            f"{handover_pct} handing ready batches over from tf.data's threads; holding the preprocessed split as "
            "tensors and gathering each batch inside the step removes the iterator from the step (if the split "
            "fits in memory) [hold the data as tensors, index them inside the tf.function]")  # fmt: skip

    def less_input_work():
        if cfg and not data.get("in_graph") and not in_graph_blocked():
            add("data.in_graph", True,
                f"the input's CPU work costs {report.get('perfect_input_share', 0):.0%} of step time; with "
                "deterministic steps the split can be preprocessed once and held as tensors, each batch gathered "
                "inside the step: no input work per step at all (if the split fits in memory)")  # fmt: skip
        if cfg and preprocess.split_at_first_random(steps)[0]:  # steps that a cache would run once
            cache("the deterministic steps run again every epoch, on cores the model needs")
        note(f"the input's CPU work costs {report.get('perfect_input_share', 0):.0%} of step time without making steps "
             "wait: do less of it per example (decode_crop_jpeg decodes only the crop; store images near the size "
             "trained on) or move it off this host (data.service.address, a tf.data service: scripts/data_service.py); "
             "scripts/tune.py pipeline measures the CPU ceiling, cores / (input + model CPU per example)")  # fmt: skip

    first = {
        "input_cpu": less_input_work,
        "iterator": in_graph,
        "python_source": lambda: cache("the Python generator runs one element at a time under the GIL"),
        "source_read": lambda: cache("the files are read and parsed again every epoch"),
        "interleave": parallel_reads,
        "map": lambda: parallel_map() if map_sequential else (
            cache("the per-example map runs again every epoch") if not random_steps else vectorize()
        ),
        "per_element_overhead": vectorize,
        "shuffle": lambda: add("data.shuffle.buffer_size", max(1, int((config_lib.lookup(cfg, "data.shuffle.buffer_size") or 2048) // 4)),
                               "the shuffle buffer does the most work; a smaller buffer refills faster"),
        "batch": vectorize,
        "no_prefetch": prefetch,
        "dispatch": more_steps_per_call,
    }
    if cause in first:
        first[cause]()
    if share >= MODERATELY_AT:
        if map_sequential:
            parallel_map()
        if any(s["stage"] in _SEQUENTIAL_MAP | _PARALLEL_MAP for s in report.get("slowest_input_stages", [])[:3]):
            vectorize()
        if read.get("num_parallel_calls") == 1 or read.get("cycle_length") == 1:
            parallel_reads()
        if options.get("autotune") is False:
            add("data.options.autotune", True,
                f"{input_pct} and tf.data's autotuning is off; it sizes parallelism and buffers to the machine")  # fmt: skip
        if cfg and not data.get("cache"):
            cache("the deterministic steps run again every epoch")
        if data.get("prefetch") == 0:
            prefetch()
    spm = report["steps_per_marker"]
    loop_steps = train.get("steps_per_loop", spm)
    call_ms = report["step_time_ms"]["mean"] * spm
    # Each call from Python costs a fraction of a millisecond to dispatch and
    # sync: negligible for calls of tens of milliseconds, not below that.
    # The profile window may run shorter calls than train.steps_per_loop (at
    # least 20 markers); the advice is about the run's own calls.
    if cfg and cause == "dispatch" or (cfg and call_ms < SHORT_CALL_MS and shares["other"] >= DISPATCH_SHARE
                                        and loop_steps <= spm):
        more_steps_per_call()
    if cause == "compute" and not recs:
        note("the input pipeline keeps up; speed now comes from the model side "
             "(model.params, train.batch_size, runtime.*_op_threads) rather than data")  # fmt: skip
    return recs


def summary(report: dict) -> str:
    """A short plain-text summary of a report."""
    lines = [f"[tfpipe] profile report for {report['profile_dir']}"]
    if report.get("window_note"):
        lines.append(f"  window       {report['window_note']}")
    if report["verdict"] == "unknown":
        lines.append(f"  verdict: unknown - {report['verdict_text']}")
        return "\n".join(lines)
    st, sh = report["step_time_ms"], report["shares"]
    lines.append(f"  verdict      {report['verdict'].upper()}: {report['verdict_text']}")
    lines.append(f"  cause        {report['cause']}: {report['cause_text']}")
    lines.append(f"  perfect input {_perfect_text(report)}")
    lines.append(f"  figures      {report['input_share_note']}")
    lines.append(
        f"  step time    {st['mean']:.3f} ms per step (sd {st['stdev']:.3f}, min {st['min']:.3f}, "
        f"max {st['max']:.3f}) over {report['markers']} markers, {report['steps_traced']} steps"
    )
    if report.get("input_split"):
        split = (f" (waiting {report['input_wait_fraction_profile']:.1%}, "
                 f"handing ready batches over {report['handover_share']:.1%})")
    else:
        split = " (not split: the trace shows no matched GetNext)" if "input_split" in report else ""
    parts = [f"input {sh['input']:.1%}{split}"]
    parts.append(f"host compute {sh['host_compute']:.1%}")
    if sh["device_compute"]:
        parts.append(f"device {sh['device_compute']:.1%}")
    parts.append(f"other {sh['other']:.1%}")
    lines.append("  breakdown    " + ", ".join(parts))
    if report["slowest_input_stages"]:
        lines.append("  tf.data stages by own work (us/element, busy share of the window, produced vs capacity /s):")
        for s in report["slowest_input_stages"][:3]:
            lines.append(
                f"    {s['stage']:<20} {s['work_ms']:9.2f} ms {s['work_us_per_element']:8.1f} us  {s['utilization']:5.0%}"
                f"  {s['elements_per_sec']:10,.0f} / {s['capacity_per_sec'] or 0:,.0f}"
            )
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


def _perfect_text(report: dict) -> str:
    """The perfect-input line of the summary: measured, or the estimate as the lower bound it is."""
    estimate = report.get("perfect_input_estimate")
    if report.get("perfect_input_source") == "measured":
        p = report["perfect_input"]
        also = f"; the waiting share alone says {estimate:.2f}x" if estimate else ""
        spread = ""
        if p.get("speedup_range"):
            low, high = p["speedup_range"]
            spread = f"; its blocks give {low:.2f}-{high:.2f}x"
            if low <= 1.0:
                spread += ", so no gain beyond the probe's own spread"
            elif 1.0 - 1.0 / low < CONTENTION_SHARE:
                spread += (f", so at least {1.0 - 1.0 / low:.0%} shorter steps: under the {CONTENTION_SHARE:.0%} "
                           "the report needs to blame the input's CPU work")
        return (f"{report['perfect_input_speedup']:.2f}x faster (measured: the run's compiled loop back to back, "
                f"{p['ms_per_step']:.3f} ms per step on one cached batch vs {p['run_ms_per_step']:.3f} on the run's "
                f"input{spread}{also})")
    if not estimate:
        return "- (the waiting share is too close to 100% to estimate it)"
    return (f"at least {estimate:.2f}x faster (from the waiting share; a step that waits also starts on idle "
            "threads, so the gain can be larger)")


def _waits(run_dir: Path) -> dict:
    """`waiting.waiting_ms` for one trace session; {} (count every GetNext as waiting) if it cannot be read."""
    from tfpipe.profile import waiting  # pylint: disable=import-outside-toplevel

    try:
        return waiting.waiting_ms(run_dir)
    except Exception:  # pylint: disable=broad-except
        # An older or foreign trace format: the plugin's figure stands unsplit.
        return {}


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


def _stages(rows: list[dict], window_ms: float, steps: int) -> list[dict]:
    """tf.data stages with their own work and rates, ranked by own work.

    A stage's self time (its GetNext time minus its inputs') is work for a
    synchronous stage; for a parallel map it is the time its consumer waited
    on the map's workers, the trace's only view of the function's work, so it
    counts as the map's; for a buffer (Prefetch) it is waiting on its input
    and counts as none. Rates: `elements_per_sec` produced over the window,
    `capacity_per_sec` = elements per second of own work (what the stage
    could produce if nothing else ran), `utilization` = own work / window.
    """
    merged: dict = {}
    for row in rows:
        # A repeated or interleaved input is a new iterator each time
        # (ForeverRepeat[8]::FlatMap[0]::Generator): one stage for all of them.
        it = re.sub(r"\[\d+\]", "", str(row["opName"]))
        m = merged.setdefault(it, {"iterator": it, "stage": it.split("::")[-1], "count": 0, "total_ms": 0.0, "self_ms": 0.0})
        m["count"] += int(row.get("count") or 0)
        m["total_ms"] += row.get("timeInMs") or 0.0
        m["self_ms"] += row.get("selfTimeInMs") or 0.0
    stages = list(merged.values())
    total_self = sum(s["self_ms"] for s in stages)
    window_s = window_ms / 1000.0
    for s in stages:
        name = s["stage"]
        s["kind"] = "buffer" if name in _BUFFERS else ("parallel" if name in _ASYNC_WORK else "work")
        s["work_ms"] = 0.0 if s["kind"] == "buffer" else s["self_ms"]
        if s["kind"] == "parallel":
            # Its workers also wait on its input, whose events run on those
            # workers' threads rather than nested in this stage's: that
            # waiting is the input's work, not this stage's.
            child = merged.get(s["iterator"] + "::" + _child_of(s["iterator"], merged))
            if child:
                s["work_ms"] = max(0.0, s["self_ms"] - child["total_ms"])
        s["self_share"] = s["self_ms"] / total_self if total_self else 0.0
        n = max(1, s["count"])
        # A fused map-and-batch is called once per batch but maps every
        # example: its elements are what its input produced.
        if name == "MapAndBatch":
            child = merged.get(s["iterator"] + "::" + _child_of(s["iterator"], merged), {})
            n = max(n, child.get("count", 0))
        s["elements"] = n
        s["work_us_per_element"] = 1000.0 * s["work_ms"] / n
        s["elements_per_step"] = n / steps if steps else 0.0
        s["elements_per_sec"] = n / window_s if window_s else 0.0
        s["capacity_per_sec"] = n / (s["work_ms"] / 1000.0) if s["work_ms"] else None
        s["utilization"] = s["work_ms"] / window_ms if window_ms else 0.0
    stages.sort(key=lambda s: -s["work_ms"])
    return stages


def _child_of(iterator: str, merged: dict) -> str:
    """The last name of `iterator`'s direct input stage, '' if none."""
    prefix = iterator + "::"
    children = [k[len(prefix):] for k in merged if k.startswith(prefix) and "::" not in k[len(prefix):]]
    return children[0] if children else ""


def _mark_timer_stage(stages: list[dict], cfg: dict | None) -> None:
    """tfpipe's own stamp map (pipeline.build(stamp=True)) is instrumentation, not the user's work."""
    if not cfg or not (cfg.get("profile", {}) or {}).get("measure_input_wait", True):
        return
    for s in stages:
        if s["iterator"] in ("Iterator::Root::Prefetch::Map", "Iterator::Root::Map"):
            s["kind"], s["work_ms"] = "timer", 0.0
            s["work_us_per_element"], s["capacity_per_sec"], s["utilization"] = 0.0, None, 0.0
    stages.sort(key=lambda s: -s["work_ms"])


def _verdict(share: float) -> tuple[str, str]:
    if share >= HIGHLY_AT:
        return "highly-input-bound", f"{share:.1%} of step time waits for input (profile plugin: HIGHLY at {HIGHLY_AT:.0%})"
    if share >= MODERATELY_AT:
        return "moderately-input-bound", (
            f"{share:.1%} of step time waits for input (profile plugin: MODERATELY from {MODERATELY_AT:.0%})"
        )
    return "not-input-bound", f"only {share:.1%} of step time waits for input (profile plugin: NOT below {MODERATELY_AT:.0%})"


def _config_dict(config, run_dir: Path) -> dict | None:
    if config is not None:
        if isinstance(config, dict):
            return config

        return config_lib.to_dict(config)
    # <workdir>/logs/plugins/profile/<run>/: the resolved config sits in <workdir>.
    candidate = run_dir.parent.parent.parent.parent / "config.yaml"
    if candidate.is_file():
        import yaml  # pylint: disable=import-outside-toplevel

        with open(candidate, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
        return loaded if isinstance(loaded, dict) else None
    return None


def _lookup_default(dotted: str):
    """The default of a config key in this tfpipe version, None if there is no such key."""

    return config_lib.lookup(config_lib.to_dict(config_lib.Config()), dotted)


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
        ("wait_ms", "waiting for input", "#d62728"),
        ("handover_ms", "handing ready batches over", "#ff9896"),
        ("host_compute_ms", "host compute", "#1f77b4"),
        ("device_compute_ms", "device compute", "#9467bd"),
        ("other_ms", "other", "#7f7f7f"),
    ]
    fig = Figure(figsize=(max(6.0, 0.35 * len(labels) + 2), 4.0))
    ax = fig.subplots()
    positions = list(range(len(per_step)))
    bottom = [0.0] * len(per_step)
    for key, name, color in series:
        # Rows without the split (an older report.json) chart all input as waiting.
        values = [s.get(key, s.get("input_ms", 0.0) if key == "wait_ms" else 0.0) for s in per_step]
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

"""The input-pipeline tuner: measure, diagnose, try one change at a time, keep what beats the noise.

`scripts/tune.py pipeline --config C --workdir W [--set ...]` runs `tune`:

1. Measure the config as given: `--repeats` short real training windows
   (`tfpipe.tune.trials`), median, and their run-to-run spread as the noise.
   The first run also traces a window with tfpipe's profiler; the report's
   recommendations (`tfpipe.profile.report.recommend`) are the diagnosis.
2. Measure the CPU ceiling: cores / (CPU-seconds per example of the input
   pipeline alone + of the model fed one cached batch), the tf.data paper's
   method. Whichever half is slower says which side's knobs go first.
3. Try candidates in order: the diagnosis's first, then tfpipe's own knob
   list (`KNOBS`), each on top of the changes kept so far. A change is kept
   only if its speed-up beats `max(noise, --min_gain)` in each of two runs
   (one to find it, one to confirm it); a trial whose peak memory exceeds the RAM
   budget is rejected. When throughput is within 5% of the measured CPU
   ceiling, only changes that cut the work per example are still tried
   (more parallelism cannot help there). The search stops when a pass over
   the candidates keeps nothing, or after `--max_trials`.
4. Write `W/tuned.yaml`, `W/pipeline.json` (every trial: change,
   examples/sec, speed-up, kept or not, and why), `W/pipeline.png`, and
   print the config diff with each kept change's measured speed-up.

Changes that alter what is trained on (`data.deterministic: false`, a
different file interleave, random augmentation moved into a per-batch map)
are listed as such and tried only with `--allow_result_changes`. Caching
never lands after a random op: `tfpipe.data.pipeline` places the cache
before the first random step, so `data.cache` changes speed, not results.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

from tfpipe import config as config_lib
from tfpipe.tune import trials as trials_lib
from tfpipe.tune import window

# Within this share of the CPU ceiling, more parallelism has nothing left to use.
AT_CEILING = 0.95
# Below this many milliseconds per loop call, per-call dispatch shows (as in the report).
SHORT_CALL_MS = 20.0


@dataclasses.dataclass
class Candidate:
    """One change to try: config keys and values, applied together."""

    change: dict
    why: str
    source: str = "knobs"  # "diagnosis" (the profile report) or "knobs" (tfpipe's own list)
    alters_results: str = ""  # non-empty: how the change alters what is trained on
    reduces_work: bool = False  # cuts CPU work per example (can raise the ceiling)

    def overrides(self) -> list[str]:
        return [f"{k}={json.dumps(v)}" for k, v in self.change.items()]

    def label(self) -> str:
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in self.change.items())


def _print(msg: str) -> None:
    print(msg, flush=True)  # progress lines must show at once, also in a log file


# ---------------------------------------------------------------- the knobs


def _random_ops(steps) -> list[str]:
    from tfpipe.data import preprocess  # pylint: disable=import-outside-toplevel

    return [s["op"] for s in steps if s["op"] in preprocess.RANDOM_OPS]


def _file_source(cfg) -> bool:
    return cfg.data.source in ("csv", "tfrecord", "image_folder")


def _vectorized(cfg, ctx):
    from tfpipe.data import preprocess  # pylint: disable=import-outside-toplevel

    if cfg.data.map.vectorized:
        return []
    try:
        preprocess.check_steps(cfg.data.map.steps, vectorized=True)
    except ValueError:
        return []  # a step that cannot take batches (image decoding)
    rnd = _random_ops(cfg.data.map.steps)
    return [Candidate(
        {"data.map.vectorized": True},
        "parse and map whole batches: per-element tf.data overhead is paid once per batch",
        alters_results=f"{', '.join(rnd)} draw(s) once per batch op instead of per example" if rnd else "",
        reduces_work=True)]


def _batch_tail(cfg, ctx):
    from tfpipe.data import preprocess  # pylint: disable=import-outside-toplevel

    if cfg.data.map.vectorized or cfg.data.map.batch_tail:
        return []
    _, tail = preprocess.split_batchable_tail(cfg.data.map.steps)
    if not tail:
        return []
    rnd = _random_ops(tail)
    return [Candidate(
        {"data.map.batch_tail": True},
        f"run the trailing batch-capable steps ({', '.join(s['op'] for s in tail)}) once per batch",
        alters_results=f"{', '.join(rnd)} drawn by a batch op (same distribution, other draws)" if rnd else "",
        reduces_work=True)]


def _map_parallelism(cfg, ctx):
    calls = cfg.data.map.num_parallel_calls
    if calls == 1:
        return [Candidate({"data.map.num_parallel_calls": -1}, "the map runs one element at a time; AUTOTUNE parallelises it")]
    if calls == -1 and ctx["cores"] > 1:
        # On 2 cores AUTOTUNE can lose to fixed parallelism: its threads compete with the model's.
        return [Candidate({"data.map.num_parallel_calls": ctx["cores"]}, "fixed map parallelism, one call per core")]
    return [Candidate({"data.map.num_parallel_calls": -1}, "AUTOTUNE the map's parallelism")]


def _read_parallelism(cfg, ctx):
    read = cfg.data.read
    if not _file_source(cfg) or (read.num_parallel_calls != 1 and read.cycle_length != 1):
        return []
    change = {"data.read.num_parallel_calls": -1}
    alters = ""
    if read.cycle_length == 1:
        change["data.read.cycle_length"] = 2 * ctx["cores"]
        alters = "reads files interleaved, so records arrive in another (still seeded) order"
    return [Candidate(change, "files are read one at a time; read several in parallel", alters_results=alters)]


def _block_length(cfg, ctx):
    if not _file_source(cfg) or cfg.data.read.block_length > 1 or cfg.data.read.cycle_length == 1:
        return []
    return [Candidate({"data.read.block_length": 16}, "take 16 records per file visit: fewer switches between files",
                      alters_results="records arrive in another (still seeded) order")]


def _cache(cfg, ctx):
    if cfg.data.cache:
        return []
    return [Candidate({"data.cache": "memory"},
                      "cache the parsed, deterministic part in memory (before any random step), "
                      f"within the RAM budget of {ctx['ram_budget_mb']:,} MB", reduces_work=True)]


def _prefetch(cfg, ctx):
    if cfg.data.prefetch == 0:
        return [Candidate({"data.prefetch": -1}, "nothing overlaps input with compute; prefetch (AUTOTUNE depth)")]
    if cfg.data.prefetch == -1:
        return [Candidate({"data.prefetch": 2}, "a fixed prefetch depth of 2 batches instead of AUTOTUNE")]
    return [Candidate({"data.prefetch": -1}, "let tf.data size the prefetch buffer")]


def _autotune(cfg, ctx):
    if cfg.data.options.autotune:
        return []
    return [Candidate({"data.options.autotune": True}, "tf.data's autotuning is off")]


def _threads(cfg, ctx):
    opts = cfg.data.options
    out = []
    if not opts.private_threadpool_size:
        out.append(Candidate({"data.options.private_threadpool_size": ctx["cores"]},
                             "the input's own thread pool: input and model threads stop competing for one pool"))
    if not opts.autotune_cpu_budget and ctx["cores"] > 1 and opts.autotune:
        out.append(Candidate({"data.options.autotune_cpu_budget": ctx["cores"] - 1},
                             "cap the cores tf.data's autotuner hands to input stages, leaving one for the model"))
    return out


def _deterministic(cfg, ctx):
    parallel = cfg.data.map.num_parallel_calls != 1 or (_file_source(cfg) and cfg.data.read.num_parallel_calls != 1)
    if not cfg.data.deterministic or not parallel:
        return []
    return [Candidate({"data.deterministic": False},
                      "let parallel stages hand over whichever element is ready first (a slow one no longer stalls the rest)",
                      alters_results="element order varies from run to run")]


IN_GRAPH_ORDER = "a seeded permutation of the whole split each epoch instead of the shuffle buffer's order"


def _in_graph(cfg, ctx):
    from tfpipe.data import preprocess  # pylint: disable=import-outside-toplevel

    # Whenever the steps are deterministic: the split is read and preprocessed
    # once, and no step pays an iterator (clicks wide & deep: 213k vs 48k ex/s).
    # Whether it fits is the trial's to find: one over the RAM budget is rejected.
    d = cfg.data
    if d.in_graph or preprocess.in_graph_blocker(d.map.steps, d.service.address, d.padded_batch,
                                                  strategy=cfg.runtime.strategy):  # fmt: skip
        return []
    return [Candidate({"data.in_graph": True},
                      "hold the preprocessed split as tensors and gather each batch inside the step: the split is "
                      "preprocessed once, and no step waits on a tf.data iterator",
                      alters_results=IN_GRAPH_ORDER, reduces_work=True)]


def _steps_per_loop(cfg, ctx):
    step_ms = ctx["step_ms"]
    per_call = min(cfg.train.steps_per_loop, ctx["steps_per_epoch"])
    if step_ms is None or per_call * step_ms >= SHORT_CALL_MS or cfg.train.steps_per_loop >= ctx["steps_per_epoch"]:
        return []
    # Aim at calls of ~50 ms, at least twice as many steps, within one epoch.
    value = min(ctx["steps_per_epoch"], max(2 * cfg.train.steps_per_loop, int(50 / max(step_ms, 1e-3))))
    return [Candidate({"train.steps_per_loop": value},
                      f"a loop call takes {per_call * step_ms:.1f} ms; more steps per call pay Python and dispatch once",
                      reduces_work=True)]


def _op_threads(cfg, ctx):
    rt, step_ms = cfg.runtime, ctx["step_ms"]
    if step_ms is None:
        return []
    if rt.inter_op_threads == 0 and rt.intra_op_threads == 0 and step_ms < 5:
        return [Candidate({"runtime.inter_op_threads": 1, "runtime.intra_op_threads": 1},
                          f"{step_ms:.2f} ms steps of small ops lose more to handing work between threads than they gain",
                          reduces_work=True)]
    if (rt.inter_op_threads or rt.intra_op_threads) and step_ms >= 5:
        return [Candidate({"runtime.inter_op_threads": 0, "runtime.intra_op_threads": 0},
                          "large ops: one op thread per core", reduces_work=False)]
    return []


# (name, side, proposer). Side "input" or "model": the slower half's knobs go first.
KNOBS: list[tuple[str, str, Callable]] = [
    ("vectorized", "input", _vectorized),
    ("batch_tail", "input", _batch_tail),
    ("map parallelism", "input", _map_parallelism),
    ("read parallelism", "input", _read_parallelism),
    ("autotune", "input", _autotune),
    ("cache", "input", _cache),
    ("prefetch", "input", _prefetch),
    ("block_length", "input", _block_length),
    ("deterministic", "input", _deterministic),
    ("input threads", "input", _threads),
    ("in_graph", "input", _in_graph),
    ("steps_per_loop", "model", _steps_per_loop),
    ("op threads", "model", _op_threads),
]

# Keys whose change alters results whatever the value; used for the diagnosis's suggestions.
_ALTERS = {"data.deterministic": "element order varies from run to run",
           "data.read.cycle_length": "records arrive in another (still seeded) order",
           "data.read.block_length": "records arrive in another (still seeded) order",
           "data.in_graph": IN_GRAPH_ORDER}
_REDUCES_WORK = {"data.map.vectorized", "data.map.batch_tail", "data.cache", "train.steps_per_loop", "data.in_graph",
                 "runtime.inter_op_threads", "runtime.intra_op_threads"}


def candidates(cfg, ctx, diagnosis: list[dict], knobs=None) -> list[Candidate]:
    """What to try next on `cfg`: the diagnosis's keys first, then `KNOBS`, slower side first.

    Args:
        cfg: the config with the changes kept so far.
        ctx: `cores`, `step_ms`, `steps_per_epoch`, `ram_budget_mb`, `side`
            ("input" or "model": the slower half of the ceiling measurement).
        diagnosis: the profile report's recommendations, `{key, value, current, why}` dicts.
        knobs: `(name, side, proposer)` triples; default `KNOBS`.
    """
    knobs = KNOBS if knobs is None else knobs
    out: list[Candidate] = []
    tree = config_lib.to_dict(cfg)
    for rec in diagnosis:
        key = rec.get("key")
        if not key or config_lib.lookup(tree, key) == rec.get("value"):
            continue
        own = [c for _, _, p in knobs for c in p(cfg, ctx) if key in c.change and c.change[key] == rec["value"]]
        if own:  # the same change as a knob's: keep its notes on results and work
            out.append(dataclasses.replace(own[0], why=rec.get("why", own[0].why), source="diagnosis"))
        else:
            out.append(Candidate({key: rec["value"]}, rec.get("why", ""), source="diagnosis",
                                 alters_results=_ALTERS.get(key, ""), reduces_work=key in _REDUCES_WORK))
    order = sorted(knobs, key=lambda k: k[1] != ctx.get("side", "input"))
    for _, _, propose in order:
        out.extend(propose(cfg, ctx))
    seen, unique = set(), []
    for c in out:
        sig = json.dumps(c.change, sort_keys=True)
        if sig not in seen:
            seen.add(sig)
            unique.append(c)
    return unique


def default_ram_budget_mb() -> int:
    """Half of the memory available now (MemAvailable), in MiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024 // 2
    except OSError:
        pass
    return 4096


# ---------------------------------------------------------------- the search


class Tuner:
    """One tuning session of one config.

    Args:
        runner: a `tfpipe.tune.trials.Runner` for the config.
        repeats: runs of the starting config (their spread is the noise).
        allow_result_changes: also try changes that alter what is trained on.
        min_gain: the smallest speed-up kept, whatever the noise.
        max_trials: candidate trials at most.
        ram_budget_mb: peak memory a trial may use.
        profile: diagnose the start with tfpipe's profiler report.
        knobs: `(name, side, proposer)` triples; default `KNOBS`.
        log: progress lines.
    """

    def __init__(self, runner: trials_lib.Runner, repeats=2, allow_result_changes=False, min_gain=0.03,
                 max_trials=16, ram_budget_mb=0, profile=True, knobs=None, log=_print):  # fmt: skip
        self.runner, self.repeats = runner, repeats
        self.allow, self.min_gain, self.max_trials = allow_result_changes, min_gain, max_trials
        self.ram_budget_mb = ram_budget_mb or default_ram_budget_mb()
        self.profile, self.knobs, self.log = profile, knobs, log
        self.kept: dict = {}
        self.trials: list[dict] = []

    def _cfg(self, change: dict | None = None):
        merged = {**self.kept, **(change or {})}
        overrides = self.runner.base_overrides + [f"{k}={json.dumps(v)}" for k, v in merged.items()]
        return config_lib.load(self.runner.config, overrides)

    def _overrides(self, change: dict | None = None) -> list[str]:
        merged = {**self.kept, **(change or {})}
        return [f"{k}={json.dumps(v)}" for k, v in merged.items()]

    def run(self) -> dict:
        """Runs the session; returns what `pipeline.json` holds."""
        base = self.runner.measure([], repeats=self.repeats, label="start", profile=self.profile)
        if base["examples_per_sec"] is None:
            raise RuntimeError(f"the starting config failed to train: {base['status']}: {base['error']}")
        noise = base["noise"]
        threshold = max(noise, self.min_gain)
        report = base["runs"][0].get("result", {}).get("report") or {}
        diagnosis = [r for r in report.get("recommendations") or [] if r.get("key")]
        ceiling = self.runner.ceiling([])
        self.log(f"[tune] start {base['examples_per_sec']:,.0f} ex/s, run-to-run noise {noise:.1%}: a change is kept "
                 f"above x{1 + threshold:.3f}; diagnosis: {_diagnosis_line(report)}")
        cores = ceiling.get("cores") or window.cores()
        side = "input"
        if ceiling.get("status") == "ok" and ceiling["input_examples_per_sec"] > ceiling["model_examples_per_sec"]:
            side = "model"
        start_cfg = self._cfg()
        from tfpipe.data import sources  # pylint: disable=import-outside-toplevel

        num_examples = sources.load(start_cfg.data, "train").num_examples
        best = base
        ceiling_eps = ceiling.get("cpu_ceiling_examples_per_sec")
        tried: set = set()
        stop_reason = ""
        count = 0
        while not stop_reason:
            cfg = self._cfg()
            steps_per_epoch = cfg.train.steps_per_epoch or -(-num_examples // cfg.train.batch_size)
            ctx = {"cores": cores, "step_ms": best["step_ms"], "steps_per_epoch": steps_per_epoch,
                   "ram_budget_mb": self.ram_budget_mb, "side": side}
            todo = [c for c in candidates(cfg, ctx, diagnosis, self.knobs)
                    if json.dumps(c.change, sort_keys=True) not in tried]
            at_ceiling = bool(ceiling_eps) and best["examples_per_sec"] >= AT_CEILING * ceiling_eps
            if at_ceiling:
                todo = [c for c in todo if c.reduces_work]
            if not todo:
                stop_reason = ("within 5% of the measured CPU ceiling and no change left that cuts work per example"
                               if at_ceiling else "no candidate left")
                break
            kept_one = False
            for cand in todo:
                tried.add(json.dumps(cand.change, sort_keys=True))
                if count >= self.max_trials:
                    stop_reason = f"--max_trials {self.max_trials} reached"
                    break
                entry = self._try(cand, best, threshold)
                if entry.get("ran"):
                    count += 1
                if entry["kept"]:
                    self.kept.update(cand.change)
                    best = entry["measurement"]
                    kept_one = True
                    # Work per example changed: the old ceiling no longer bounds the new config.
                    if cand.reduces_work:
                        ceiling_eps = None
                    break  # candidates depend on what is kept (step time, cache): propose again
            if not kept_one and not stop_reason:
                stop_reason = "a full pass kept nothing"
        final_ceiling = self.runner.ceiling(self._overrides()) if self.kept else ceiling
        return self._summary(base, best, ceiling, final_ceiling, noise, threshold, report, stop_reason)

    def _try(self, cand: Candidate, best: dict, threshold: float) -> dict:
        entry = {"change": cand.change, "label": cand.label(), "why": cand.why, "source": cand.source,
                 "alters_results": cand.alters_results, "reduces_work": cand.reduces_work,
                 "kept": False, "ran": False}
        self.trials.append(entry)
        if cand.alters_results and not self.allow:
            entry["reason"] = f"not tried: alters results ({cand.alters_results}); --allow_result_changes tries it"
            self.log(f"[tune] skip {cand.label()}: {entry['reason']}")
            return entry
        try:
            self._cfg(cand.change)
        except config_lib.ConfigError as e:
            entry["reason"] = f"not tried: invalid with the kept changes: {e}"
            self.log(f"[tune] skip {cand.label()}: {entry['reason']}")
            return entry
        entry["ran"] = True
        overrides = self._overrides(cand.change)
        m = self.runner.measure(overrides, repeats=1, label=f"try {cand.label()}")
        if m["examples_per_sec"] is not None and m["examples_per_sec"] / best["examples_per_sec"] > 1 + threshold:
            # Looks like a gain: a second run must agree (median of the two).
            m = self.runner.measure(overrides, repeats=2, label=f"confirm {cand.label()}")
        entry.update(measurement=m, examples_per_sec=m["examples_per_sec"], status=m["status"], error=m["error"],
                     peak_rss_mb=m.get("peak_rss_mb"), runs=len(m["runs"]))
        if m["examples_per_sec"] is None:
            entry["reason"] = f"trial {m['status']}: {m['error']}"
        else:
            speedup = m["examples_per_sec"] / best["examples_per_sec"]
            entry["speedup"] = round(speedup, 4)
            # Every run must beat the threshold, not just their median: on a
            # loaded host one run of a pair can be 4x off the other.
            worst = min(r["examples_per_sec"] for r in m["runs"] if r["status"] == "ok") / best["examples_per_sec"]
            entry["worst_run_speedup"] = round(worst, 4)
            if m.get("peak_rss_mb", 0) > self.ram_budget_mb:
                entry["reason"] = f"peak RSS {m['peak_rss_mb']:,.0f} MB over the RAM budget {self.ram_budget_mb:,} MB"
            elif speedup > 1 + threshold and worst <= 1 + threshold:
                entry["reason"] = (f"x{speedup:.3f} (median) but one run only x{worst:.3f}, "
                                   f"within the noise threshold x{1 + threshold:.3f}")
            elif speedup > 1 + threshold:
                entry["kept"] = True
                entry["reason"] = f"x{speedup:.3f} beats the noise threshold x{1 + threshold:.3f}"
            else:
                entry["reason"] = f"x{speedup:.3f} within the noise threshold x{1 + threshold:.3f}"
        verdict = "KEPT" if entry["kept"] else "rejected"
        self.log(f"[tune] {verdict} {cand.label()}: {entry['reason']}")
        return entry

    def _summary(self, base, best, ceiling, final_ceiling, noise, threshold, report, stop_reason) -> dict:
        for t in self.trials:
            m = t.pop("measurement", None)
            if m and m["examples_per_sec"]:
                t["speedup_vs_start"] = round(m["examples_per_sec"] / base["examples_per_sec"], 4)
        ceil = final_ceiling.get("cpu_ceiling_examples_per_sec")
        return {
            "config": self.runner.config,
            "base_overrides": self.runner.base_overrides,
            "start": {k: base[k] for k in ("examples_per_sec", "noise", "step_ms", "cpu_sec_per_example", "peak_rss_mb")},
            "diagnosis": {"verdict": report.get("verdict"), "cause": report.get("cause"),
                          "recommendations": report.get("recommendations") or []},
            "noise": noise,
            "threshold": threshold,
            "ram_budget_mb": self.ram_budget_mb,
            "allow_result_changes": self.allow,
            "ceiling_start": ceiling,
            "ceiling_tuned": final_ceiling,
            "trials": self.trials,
            "kept": self.kept,
            "tuned": {k: best[k] for k in ("examples_per_sec", "step_ms", "cpu_sec_per_example", "peak_rss_mb")},
            "speedup": round(best["examples_per_sec"] / base["examples_per_sec"], 4),
            "fraction_of_ceiling": round(best["examples_per_sec"] / ceil, 4) if ceil else None,
            "stopped": stop_reason,
            "result_changing": [t["label"] + ": " + t["alters_results"] for t in self.trials if t["alters_results"]],
        }


def _diagnosis_line(report: dict) -> str:
    if not report:
        return "none (no profile); tfpipe's own knob list"
    first = next((r for r in report.get("recommendations") or [] if r.get("key")), None)
    cause = report.get("cause")
    cause = cause.get("name", cause) if isinstance(cause, dict) else cause
    parts = [str(report.get("verdict", "?"))] + ([f"cause {cause}"] if cause else [])
    parts.append(f"first {first['key']}={json.dumps(first['value'])}" if first else "no key to change")
    return ", ".join(parts)


# ---------------------------------------------------------------- outputs


def diff_lines(start_cfg, tuned_cfg, result: dict) -> list[str]:
    """`key: old -> new (xS measured)` for every kept key, in the order kept."""
    start, tuned = config_lib.to_dict(start_cfg), config_lib.to_dict(tuned_cfg)
    gains = {}
    for t in result["trials"]:
        if t["kept"]:
            for k in t["change"]:
                gains[k] = t["speedup"]
    return [f"  {k}: {json.dumps(config_lib.lookup(start, k))} -> {json.dumps(config_lib.lookup(tuned, k))}   (x{gains.get(k, 1):.2f} measured)"
            for k in result["kept"]]


def chart(result: dict, path) -> None:
    """`pipeline.png`: examples/sec of the start and every trial, kept ones highlighted, with the ceilings.

    Uses a `matplotlib.figure.Figure` with the Agg canvas only: no pyplot, no
    global matplotlib state (a notebook's own settings stay as they were).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    ran = [t for t in result["trials"] if t.get("ran")]
    labels = ["start"] + [t["label"] + ("" if t.get("status") == "ok" else f" ({t.get('status')})") for t in ran]
    values = [result["start"]["examples_per_sec"]] + [t.get("examples_per_sec") or 0 for t in ran]
    colors = ["#777777"] + ["#2a9d4a" if t["kept"] else ("#c0392b" if t.get("status") != "ok" else "#bbbbbb")
                            for t in ran]
    fig = Figure(figsize=(9, 0.45 * len(labels) + 1.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(labels)), values, color=colors)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    for name, ceiling, style in (("CPU ceiling (start)", result["ceiling_start"], ":"),
                                 ("CPU ceiling (tuned)", result["ceiling_tuned"], "--")):
        value = ceiling.get("cpu_ceiling_examples_per_sec") if ceiling else None
        if value:
            ax.axvline(value, color="#1f4e9c", linestyle=style, label=f"{name} {value:,.0f}")
    ax.set_xlabel("training examples/sec (median; green kept, grey rejected, red failed)")
    ax.set_title(f"{Path(result['config']).name}: x{result['speedup']:.2f} after {len(ran)} trials", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_outputs(result: dict, workdir, start_cfg, tuned_cfg, log=_print) -> None:
    workdir = Path(workdir)
    config_lib.dump(tuned_cfg, workdir / "tuned.yaml")
    trials_lib.write_report(workdir, "pipeline", result, chart, log)
    start, tuned = result["start"]["examples_per_sec"], result["tuned"]["examples_per_sec"]
    ceiling = result["ceiling_tuned"].get("cpu_ceiling_examples_per_sec")
    log(f"[tune] {start:,.0f} -> {tuned:,.0f} examples/sec (x{result['speedup']:.2f})"
        + (f", {result['fraction_of_ceiling']:.0%} of the measured CPU ceiling {ceiling:,.0f}" if ceiling else "")
        + f"; stopped: {result['stopped']}")
    lines = diff_lines(start_cfg, tuned_cfg, result)
    log("[tune] config diff (kept changes, each with its measured speed-up):" if lines else "[tune] no change kept")
    for line in lines:
        log(line)
    skipped = [t for t in result["trials"] if t["alters_results"] and not t.get("ran")]
    for t in skipped:
        log(f"[tune] not tried (alters results: {t['alters_results']}): {t['label']}; --allow_result_changes")
    log(f"[tune] wrote {workdir / 'tuned.yaml'}, {workdir / 'pipeline.json'}, {workdir / 'pipeline.png'}")


def tune(config, workdir, overrides=(), settings=None, log=_print, **tuner_kwargs) -> dict:
    """Tunes `config`'s input pipeline and training loop knobs; writes the outputs to `workdir`.

    Args:
        config: YAML config path.
        workdir: outputs and the trial store (`trials.json`); reusing it resumes.
        overrides: `--set` strings applied before tuning.
        settings: `tfpipe.tune.trials.WindowSettings`.
        log: progress lines.
        **tuner_kwargs: `Tuner` arguments (`repeats`, `allow_result_changes`, ...).

    Returns:
        The `pipeline.json` dict.

    Example:

    ```python
    from tfpipe.tune import pipeline
    result = pipeline.tune("configs/digits_mlp.yaml", "runs/tune-mlp")
    result["kept"], result["speedup"]
    ```
    """
    strategy = config_lib.load(config, list(overrides)).runtime.strategy
    if strategy in window.CLUSTER_STRATEGIES:
        # Its CPU ceiling and profiled diagnosis measure one process.
        raise config_lib.ConfigError(
            f"pipeline: tunes the input of one process; runtime.strategy {strategy} runs several: tune with "
            "--set runtime.strategy=default (the pipeline each worker runs is the same)"
        )
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    store = trials_lib.Store(workdir / "trials.json")
    runner = trials_lib.Runner(config, workdir, store, overrides, settings, log=lambda m: log(f"[tune] {m}"))
    tuner = Tuner(runner, log=log, **tuner_kwargs)
    result = tuner.run()
    start_cfg = config_lib.load(config, list(overrides))
    write_outputs(result, workdir, start_cfg, tuner._cfg(), log=log)  # pylint: disable=protected-access
    return result


def main(fl) -> int:
    """`scripts/tune.py pipeline`: see `tfpipe.tune.cli`."""
    from tfpipe.tune import cli  # pylint: disable=import-outside-toplevel

    tune(fl.config, fl.workdir, fl.set, cli.settings(fl), repeats=fl.repeats,
         allow_result_changes=fl.allow_result_changes, min_gain=fl.min_gain, max_trials=fl.max_trials,
         ram_budget_mb=fl.ram_budget_mb, profile=fl.profile)
    return 0

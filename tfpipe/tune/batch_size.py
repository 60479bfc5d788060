"""`scripts/tune.py batch_size`: the throughput curve over batch sizes, then accuracy at equal time.

Two measurements, both in child processes (`tfpipe.tune.trials`):

1. **Throughput.** Global batch sizes in powers of two from `--min_batch`
   up to `--max_batch` or the first size that runs out of memory
   (`--memory_limit_mb` kills a child whose resident memory passes it, as a
   cgroup or the kernel's killer would; without it the machine's own limit
   applies). Each size is a short real training window: examples/sec, step
   time, peak host RSS (VmHWM). The *knee* is the smallest size reaching
   `--knee` (0.9) of the best throughput: beyond it a bigger batch buys
   little speed.
2. **Equal wall time.** The throughput-best sizes (`--compare` of them), the
   knee and the config's own size each train for `--budget_seconds` seconds from the start of
   the config, with the learning rate scaled to the batch (`--lr_scale`:
   `linear`, k times the batch, k times the rate; `sqrt`; `none`; `auto`,
   the default: sqrt for adaptive optimizers, linear for SGD) relative
   to the config's own batch size and a linear warm-up
   over the first `--warmup_fraction` (10%) of the steps the size is expected
   to make in the budget (from its measured rate; `optimizer.schedule.warmup`
   counted in steps); `runtime.lr_scaling`
   still applies on top for the replicas. Validation accuracy (or loss)
   after the same seconds decides.

The fastest size and the best-at-equal-time size differ when a bigger batch
makes fewer updates per second than it gains in examples per second:
accuracy comes from updates, throughput from examples.

Writes `batch_size.json`, `batch_size.png` and `tuned.yaml` (the
best-at-equal-time size with its scaled rate and warm-up).
"""

from __future__ import annotations

import math
from pathlib import Path

from tfpipe import config as config_lib
from tfpipe.tune import trials as trials_lib


def _print(msg: str) -> None:
    print(msg, flush=True)


def sizes(min_batch: int, max_batch: int, replicas: int = 1) -> list[int]:
    """Powers of two from `min_batch` (rounded up, at least `replicas`) to `max_batch`, each divisible by `replicas`."""
    b = 1 << max(0, math.ceil(math.log2(max(min_batch, replicas, 1))))
    out = []
    while b <= max_batch:
        if b % replicas == 0:
            out.append(b)
        b *= 2
    return out


def knee(curve: list[dict], fraction: float) -> int | None:
    """The smallest batch whose examples/sec reach `fraction` of the best measured."""
    ok = [c for c in curve if c["status"] == "ok"]
    if not ok:
        return None
    best = max(c["examples_per_sec"] for c in ok)
    return min(c["batch_size"] for c in ok if c["examples_per_sec"] >= fraction * best)


# Adaptive optimizers normalize the gradient's scale per parameter; the rule
# that keeps their updates' noise in step with the batch is the square root
# (Malladi et al. 2022), while plain SGD and momentum follow the linear rule
# (Goyal et al. 2017). Measured here: digits_cnn (Adam) at batch 512 with
# linear scaling (16x the rate) reached 0.78 validation accuracy in 10 s.
_ADAPTIVE = ("adam", "adamw", "nadam", "adamax", "rmsprop", "adagrad", "adadelta", "adafactor", "lion", "lamb")


def resolve_rule(rule: str, optimizer_name: str) -> str:
    """`auto`: `sqrt` for adaptive optimizers (Adam & co.), `linear` for SGD; other rules as given."""
    if rule != "auto":
        return rule
    return "sqrt" if optimizer_name.lower() in _ADAPTIVE else "linear"


def scaled_rate(base_lr: float, batch: int, base_batch: int, rule: str) -> float:
    """`base_lr` for `batch` when it was set for `base_batch` (linear, sqrt or none)."""
    k = batch / base_batch
    return base_lr * {"linear": k, "sqrt": math.sqrt(k), "none": 1.0}[rule]


def _equal_time_overrides(cfg, batch: int, rule: str, warmup_fraction: float, expected_steps: float) -> list[str]:
    lr = scaled_rate(cfg.optimizer.learning_rate, batch, cfg.train.batch_size, rule)
    out = [f"train.batch_size={batch}", f"optimizer.learning_rate={lr:.6g}"]
    s = cfg.optimizer.schedule
    # The warm-up counts in steps: an epoch of a small data set is one or two
    # steps at a large batch, and a warm-up of one epoch there (measured on
    # digits_cnn at 1024 and 2048) handed over the scaled rate at once.
    # Only where the config has no warm-up, and its schedule is constant or
    # counts steps already (switching an epoch-counted schedule's unit
    # would change its other keys' meaning).
    steps = max(1, math.ceil(warmup_fraction * expected_steps))
    if warmup_fraction and not s.warmup and (s.name == "constant" or s.unit == "steps"):
        if s.unit != "steps":
            out.append("optimizer.schedule.unit=steps")
        out.append(f"optimizer.schedule.warmup={steps}")
    return out


def _replicas_line(batch: int, replicas: int) -> str:
    return f"global batch {batch}" + (f" ({batch // replicas} per replica x {replicas} replicas)" if replicas > 1 else
                                      " (1 replica)")


def tune(config, workdir, overrides=(), settings=None, log=_print, *, min_batch=8, max_batch=4096,
         memory_limit_mb=0, repeats=1, knee_fraction=0.9, compare=3, budget_seconds=10.0, lr_scale="auto",
         warmup_fraction=0.1, eval_split="validation", cluster=(2, 1)) -> dict:  # fmt: skip
    """Measures the throughput curve over batch sizes and compares the best at equal wall time.

    Args:
        config: YAML config path.
        workdir: outputs and the trial store (`trials.json`); reusing it resumes.
        overrides: `--set` strings applied first.
        settings: `tfpipe.tune.trials.WindowSettings` for the throughput windows.
        log: progress lines.
        min_batch, max_batch: the global batch sizes tried (powers of two).
        memory_limit_mb: a child past this resident memory is out of memory (0: none).
        repeats: runs per size (their median).
        knee_fraction: the knee is the smallest size reaching this share of the best rate.
        compare: how many of the fastest sizes train for `budget_seconds` (plus the knee).
        budget_seconds: the equal wall time each compared size trains.
        lr_scale: the rate for a batch k times the config's: `linear` (k
            times), `sqrt`, `none`, or `auto` (sqrt for adaptive optimizers
            such as Adam, linear for SGD).
        warmup_fraction: linear warm-up of the compared runs over this share
            of the steps each is expected to make in `budget_seconds` (0: none).
        eval_split: what the equal-time runs are judged on: `validation`, or
            `test` for configs without one (then the choice has seen the
            test split: say so when reporting it).
        cluster: `(workers, ps)` processes per trial under multi_worker_mirrored
            or parameter_server (`tfpipe.tune.trials.Runner`).

    Returns:
        The `batch_size.json` dict: `curve` (per size: `examples_per_sec`,
        `step_ms`, `peak_rss_mb`, `peak_device_mb` (GPUs; else None), `status`), `limit` (the first size out of
        memory, or None), `knee`, `fastest`, `equal_time` (per compared size:
        its overrides, steps, epochs, validation metrics, curve),
        `best_at_equal_time`, `recommendation`, `replicas`.

    Example:

    ```python
    from tfpipe.tune import batch_size
    result = batch_size.tune("configs/digits_cnn.yaml", "runs/tune-batch", max_batch=1024)
    result["fastest"], result["best_at_equal_time"], result["recommendation"]
    ```
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = config_lib.load(config, list(overrides))
    lr_scale = resolve_rule(lr_scale, cfg.optimizer.name)
    store = trials_lib.Store(workdir / "trials.json")
    runner = trials_lib.Runner(config, workdir, store, overrides, settings, log=lambda m: log(f"[tune] {m}"),
                               memory_limit_mb=memory_limit_mb, cluster=cluster)
    # Replicas come from the strategy, known only once TF has set up devices:
    # the config's `logical_cpus` or the strategy name gives it without TF.
    replicas = cfg.runtime.logical_cpus if cfg.runtime.strategy == "mirrored" and cfg.runtime.logical_cpus else 1
    if cfg.runtime.strategy == "multi_worker_mirrored":
        replicas = cluster[0]  # on CPUs one replica per worker (GPUs: the first run reports the true count)
    curve, limit, stop = [], None, f"reached --max_batch {max_batch}"
    for b in sizes(min_batch, max_batch, replicas):
        m = runner.measure([f"train.batch_size={b}"], repeats=repeats, label=f"batch {b}")
        run0 = next((r for r in m["runs"] if r["status"] == "ok"), None)
        if run0:
            replicas = run0["result"].get("replicas", replicas)
        row = {"batch_size": b, "per_replica": b // replicas, "status": m["status"], "error": m["error"],
               "examples_per_sec": m["examples_per_sec"], "step_ms": m.get("step_ms"),
               "steps_per_sec": round(m["examples_per_sec"] / b, 2) if m["examples_per_sec"] else None,
               "peak_rss_mb": m.get("peak_rss_mb") or max((r.get("peak_rss_mb") or 0) for r in m["runs"]),
               "peak_device_mb": m.get("peak_device_mb"),  # GPUs only
               "noise": m.get("noise")}
        curve.append(row)
        if m["status"] == "oom":
            limit, stop = b, f"out of memory at batch {b}: {m['error']}"
            log(f"[tune] batch {b} is the limit: {m['error']}")
            break
        if m["status"] != "ok":
            stop = f"batch {b} {m['status']}: {m['error']}"
            break
    ok = [c for c in curve if c["status"] == "ok"]
    if not ok:
        raise config_lib.ConfigError(f"batch_size: no batch size trained ({stop})")
    fastest = max(ok, key=lambda c: c["examples_per_sec"])["batch_size"]
    knee_batch = knee(curve, knee_fraction)
    ranked = sorted(ok, key=lambda c: -c["examples_per_sec"])
    # The config's own size runs beside them as the reference (when it was measured).
    own = {cfg.train.batch_size} & {c["batch_size"] for c in ok}
    candidates = sorted({c["batch_size"] for c in ranked[:compare]} | {knee_batch} | own)
    log(f"[tune] fastest batch {fastest}, knee {knee_batch} (>= {knee_fraction:.0%} of the best rate); "
        f"{budget_seconds:g} s of training each for {candidates}")
    equal = []
    for b in candidates:
        eps = next(c["examples_per_sec"] for c in ok if c["batch_size"] == b)
        ov = _equal_time_overrides(cfg, b, lr_scale, warmup_fraction, budget_seconds * eps / b)
        rec = runner.run(ov, kind="budget", label=f"batch {b} for {budget_seconds:g} s",
                         extra={"budget_seconds": budget_seconds, "checkpoints": 4,
                                **({"eval_split": eval_split} if eval_split != "validation" else {})})
        row = {"batch_size": b, "overrides": ov, "status": rec["status"], "error": rec["error"]}
        if rec["status"] == "ok":
            r = rec["result"]
            row.update(steps=r["steps"], epochs=r["epochs"], seconds=r["seconds"], validation=r["validation"],
                       curve=r["curve"])
        equal.append(row)
    metric, sign = ("accuracy", 1) if any("accuracy" in e.get("validation", {}) for e in equal) else ("loss", -1)
    done = [e for e in equal if e["status"] == "ok"]
    best = max(done, key=lambda e: sign * e["validation"][metric]) if done else None
    result = {
        "config": str(config), "overrides": list(overrides), "replicas": replicas,
        "batch": "global (train.batch_size); per replica = global / replicas", "curve": curve, "limit": limit,
        "stopped": stop, "knee": knee_batch, "knee_fraction": knee_fraction, "fastest": fastest,
        "budget_seconds": budget_seconds, "lr_scale": lr_scale, "warmup_fraction": warmup_fraction,
        "equal_time": equal, "eval_split": eval_split,
        "metric": f"val_{metric}" if eval_split == "validation" else f"{eval_split}_{metric}", "best_at_equal_time": best["batch_size"] if best else None,
    }
    result["recommendation"] = _recommend(result, best)
    _write(result, workdir, cfg, best, log)
    return result


def _recommend(result: dict, best: dict | None) -> str:
    fastest, by = result["fastest"], {c["batch_size"]: c for c in result["curve"]}
    if best is None:
        return f"fastest {fastest}; no equal-time run finished"
    b, m = best["batch_size"], result["metric"]
    key = m.split("_", 1)[1]
    value = best["validation"][key]
    head = (f"fastest: batch {fastest} ({by[fastest]['examples_per_sec']:,.0f} ex/s); best after "
            f"{result['budget_seconds']:g} s of training: batch {b} ({m} {value:.4f}, {best['steps']} steps, "
            f"{best['epochs']:.1f} epochs). ")
    if b == fastest:
        return head + "The same size: its extra examples per second also bought accuracy."
    f = next((e for e in result["equal_time"] if e["batch_size"] == fastest and e["status"] == "ok"), None)
    why = (f"batch {fastest} made {f['steps']} updates in that time against {best['steps']}"
           f" ({m} {f['validation'][key]:.4f})" if f else f"batch {fastest}'s run did not finish")
    direction = "fewer, larger" if fastest > b else "more, smaller"
    return head + (f"They differ because accuracy comes from updates and throughput from examples: {why}; "
                   f"its {direction} steps helped less per second than batch {b}'s. Use {b} to train to a "
                   f"target soonest; {fastest} when examples/sec is the goal (e.g. a fixed number of epochs).")


def chart(result: dict, path) -> None:
    """`batch_size.png`: examples/sec and peak RSS per size (knee and limit marked); accuracy against seconds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    ok = [c for c in result["curve"] if c["status"] == "ok"]
    ax.plot([c["batch_size"] for c in ok], [c["examples_per_sec"] for c in ok], "o-", color="#1f4e9c")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"global batch size ({result['replicas']} replica(s))")
    ax.set_ylabel("training examples/sec", color="#1f4e9c")
    if result["knee"]:
        ax.axvline(result["knee"], color="#2a9d4a", linestyle="--", label=f"knee {result['knee']}")
    if result["limit"]:
        ax.axvline(result["limit"], color="#c0392b", linestyle=":", label=f"out of memory {result['limit']}")
    rss = ax.twinx()
    rss.plot([c["batch_size"] for c in result["curve"]], [c["peak_rss_mb"] for c in result["curve"]], "s:",
             color="#999999", markersize=3)
    rss.set_ylabel("peak RSS MB", color="#777777")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{Path(result['config']).name}: throughput", fontsize=9)
    ax2 = fig.add_subplot(1, 2, 2)
    m = result["metric"].split("_", 1)[1]
    for e in result["equal_time"]:
        if e["status"] == "ok":
            ax2.plot([p["seconds"] for p in e["curve"]], [p[m] for p in e["curve"]], "o-", label=f"batch {e['batch_size']}")
    ax2.set_xlabel("seconds of training")
    ax2.set_ylabel(result["metric"])
    ax2.set_title(f"equal time ({result['lr_scale']} lr scaling, warm-up {result['warmup_fraction']:.0%} of the steps)",
                  fontsize=9)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _write(result: dict, workdir: Path, cfg, best: dict | None, log) -> None:
    trials_lib.write_report(workdir, "batch_size", result, chart, log)
    r = result["replicas"]
    gpu = any(c.get("peak_device_mb") is not None for c in result["curve"])
    log("[tune] batch  examples/sec  step ms  peak RSS MB" + ("  peak GPU MB" if gpu else "") + "  status")
    for c in result["curve"]:
        eps = f"{c['examples_per_sec']:>12,.0f}" if c["examples_per_sec"] else f"{'-':>12}"
        step = f"{c['step_ms']:>8.2f}" if c.get("step_ms") else f"{'-':>8}"
        device = (f"  {c['peak_device_mb']:>11,.0f}" if c.get("peak_device_mb") is not None else f"  {'-':>11}") if gpu else ""
        log(f"[tune] {c['batch_size']:>5}  {eps}  {step}  {c['peak_rss_mb'] or 0:>11,.0f}{device}  {c['status']}")
    log(f"[tune] batches are global: {_replicas_line(result['fastest'], r)} for the fastest")
    log(f"[tune] {result['recommendation']}")
    if best is not None:
        tuned = config_lib.load(result["config"], result["overrides"] + best["overrides"])
        config_lib.dump(tuned, workdir / "tuned.yaml")
        log("[tune] config diff: " + ", ".join(best["overrides"]))
    log(f"[tune] wrote {workdir / 'batch_size.json'}, {workdir / 'batch_size.png'}"
        + (f", {workdir / 'tuned.yaml'}" if best is not None else ""))


def main(fl) -> int:
    """`scripts/tune.py batch_size`: see `tfpipe.tune.cli`."""
    from tfpipe.tune import cli  # pylint: disable=import-outside-toplevel

    tune(fl.config, fl.workdir, fl.set, cli.settings(fl), cluster=cli.cluster(fl), min_batch=fl.min_batch,
         max_batch=fl.max_batch, memory_limit_mb=fl.memory_limit_mb, repeats=fl.repeats, knee_fraction=fl.knee, compare=fl.compare,
         budget_seconds=fl.budget_seconds, lr_scale=fl.lr_scale, warmup_fraction=fl.warmup_fraction,
         eval_split=fl.eval_split)
    return 0

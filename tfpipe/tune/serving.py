"""The serving tuner: batching parameters with the highest request rate whose p99 meets an SLO.

    python scripts/tune.py serving --model_dir RUN/export/mlp --slo_p99_ms 20 --workdir runs/tune-serving

For one setting of the batching knobs, the *sustainable rate* is the
highest Poisson arrival rate (open loop, as MLPerf's server scenario) at
which every request is answered correctly, none is refused, the answered
rate keeps up with the offered one (>= 90%), and the p99 latency stays
under the SLO. It is found by growing the rate from half the closed-loop
capacity (64 clients) by 1.5x until a probe fails, then bisecting twice.

The knobs are searched one at a time from TF Serving-like defaults
(coordinate search; each step keeps the best value of one knob):
`num_batch_threads`, then `max_batch_size`, then `batch_timeout_micros`.
A change is kept only when it beats the best rate so far by more than
`--serving_min_gain`, because on a shared machine rates wobble by several
percent. `max_enqueued_batches` does not change the sustainable rate (the
probes use a deep queue so it never refuses); it is then set so a full
queue drains within the SLO at the found rate: rows queued beyond that
would miss the SLO anyway, so they get a 503 at once.

The server runs in this process (TensorFlow and the model load once; each
setting gets a fresh batcher), the load generator in a separate one.
Results go to `WORKDIR/serving_tune.json`.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

SEARCH = (
    ("num_batch_threads", (1, 2)),
    ("max_batch_size", (8, 32, 64, 128)),
    ("batch_timeout_micros", (0, 500, 2000, 5000)),
)
START = {"max_batch_size": 64, "batch_timeout_micros": 1000, "num_batch_threads": 1}
PROBE_QUEUE_ROWS = 4096


def _say(msg: str) -> None:
    print(f"[tfpipe] {msg}", flush=True)


def probe(runner, url, bodies, expected, rate: float, slo_ms: float, seconds: float) -> dict:
    """One open-loop run at `rate`; adds `passed` and why not."""
    res = runner.open(url, bodies, expected, rate, max(int(rate * seconds), 50), max_seconds=seconds)
    p99 = res["latency_ms"]["p99"]
    problems = []
    if res["wrong"] or res["failed"] or res["lost"] or set(res["codes"]) - {"200"}:
        problems.append(f"not all answered 200 and correct ({res['codes']}, wrong {res['wrong']}, failed {res['failed']})")
    if p99 is None or p99 > slo_ms:
        problems.append(f"p99 {p99:.1f} ms > {slo_ms} ms" if p99 is not None else "no answers")
    if res["throughput"] < 0.9 * res["offered_rate"]:
        problems.append(f"answered {res['throughput']:.0f}/s of {res['offered_rate']:.0f}/s offered")
    return {"rate": rate, "p99_ms": p99, "answered_per_s": res["throughput"], "passed": not problems,
            "why": "; ".join(problems)}


def sustainable_rate(runner, url, bodies, expected, slo_ms: float, seconds: float) -> dict:
    """The highest probed rate that passed, with every probe."""
    cap = runner.closed(url, bodies, expected, 64, max(int(2000 * seconds), 200), max_seconds=seconds)["throughput"]
    probes = []

    def passes(rate):
        p = probe(runner, url, bodies, expected, rate, slo_ms, seconds)
        probes.append(p)
        return p["passed"]

    rate, lo, hi = max(cap * 0.5, 1.0), 0.0, None
    for _ in range(6):
        if passes(rate):
            lo = rate
            rate *= 1.5
        else:
            hi = rate
            break
    if lo == 0.0 and hi is not None:  # even half the capacity failed: come down
        for _ in range(3):
            rate = hi / 3
            if passes(rate):
                lo = rate
                break
            hi = rate
    for _ in range(2):
        if hi is None or lo == 0.0:
            break
        mid = (lo + hi) / 2
        if passes(mid):
            lo = mid
        else:
            hi = mid
    best = max((p for p in probes if p["passed"]), key=lambda p: p["rate"], default=None)
    return {"closed_loop_capacity": cap, "rate": lo, "p99_ms": best["p99_ms"] if best else None, "probes": probes}


def tune(servable, bodies, expected, slo_ms: float, seconds: float, min_gain: float, log=_say) -> dict:
    """Coordinate search over `SEARCH`; returns the best setting, its rate and every trial."""
    from tfpipe.serve import batching, loadgen, server  # pylint: disable=import-outside-toplevel

    trials = []
    with loadgen.Runner(processes=2) as runner:

        def measure(knobs: dict) -> dict:
            queue = math.ceil(PROBE_QUEUE_ROWS / knobs["max_batch_size"])
            opts = batching.BatchingOptions(max_enqueued_batches=queue, **knobs)
            with server.in_thread(servable, opts) as (url, _srv):
                runner.closed(url, bodies, expected, 4, 40, max_seconds=seconds)  # warm-up
                out = {"knobs": dict(knobs), **sustainable_rate(runner, url, bodies, expected, slo_ms, seconds)}
            trials.append(out)
            log(f"{knobs}: {out['rate']:.0f} requests/s within p99 {slo_ms} ms "
                f"(closed-loop capacity {out['closed_loop_capacity']:.0f}/s)")
            return out

        best = measure(dict(START))
        for knob, values in SEARCH:
            for value in values:
                if value == best["knobs"][knob]:
                    continue
                trial = measure({**best["knobs"], knob: value})
                if trial["rate"] > best["rate"] * (1 + min_gain):
                    best = trial
    knobs = dict(best["knobs"])
    # A full queue should drain within the SLO at the sustainable rate.
    knobs["max_enqueued_batches"] = max(1, math.floor(best["rate"] * slo_ms / 1000 / knobs["max_batch_size"]))
    return {"slo_p99_ms": slo_ms, "best": knobs, "rate": best["rate"], "p99_ms_at_rate": best["p99_ms"],
            "trials": trials}


def _examples(model_dir: str, config: str | None, limit: int = 256):
    """Raw test-split examples from the run's config (the export's `export/<name>` sits in the run directory)."""
    from tfpipe import config as config_lib  # pylint: disable=import-outside-toplevel
    from tfpipe.serve import export, servable as servable_lib  # pylint: disable=import-outside-toplevel

    path, _ = servable_lib.resolve(model_dir)
    run_config = Path(config) if config else path.parent.parent.parent / "config.yaml"
    if not run_config.exists():
        raise config_lib.ConfigError(f"--config: the run's config.yaml was not found at {run_config}; pass --config")
    return export.raw_examples(config_lib.load(run_config).data, "test", limit)


def main(fl) -> int:
    """`scripts/tune.py serving`: reads `model_dir`, `slo_p99_ms`, `workdir`, `serving_probe_seconds`,
    `serving_min_gain` (and optionally `config`) from the flags object; returns the exit status."""
    if not fl.model_dir or not fl.slo_p99_ms or fl.slo_p99_ms <= 0:
        print(f"error: serving: expected --model_dir and --slo_p99_ms > 0. Received: --model_dir {fl.model_dir!r} "
              f"--slo_p99_ms {fl.slo_p99_ms}", file=sys.stderr)
        return 2
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfpipe.serve import loadgen, servable as servable_lib  # pylint: disable=import-outside-toplevel

    try:
        sv = servable_lib.load(fl.model_dir)
    except servable_lib.ModelNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = _examples(fl.model_dir, fl.config)
    expected = sv.fn(**{k: tf.constant(v) for k, v in rows.items()})["predictions"].numpy()
    result = tune(sv, loadgen.request_bodies(rows), expected, fl.slo_p99_ms, fl.serving_probe_seconds,
                  fl.serving_min_gain)
    out = Path(fl.workdir) / "serving_tune.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    b = result["best"]
    _say(f"best for p99 <= {fl.slo_p99_ms} ms: {result['rate']:.0f} requests/s (p99 {result['p99_ms_at_rate'] or 0:.1f} "
         f"ms) with --max_batch_size {b['max_batch_size']} --batch_timeout_micros {b['batch_timeout_micros']} "
         f"--num_batch_threads {b['num_batch_threads']} --max_enqueued_batches {b['max_enqueued_batches']} -> {out}")
    return 0

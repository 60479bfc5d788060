"""The server's counters and histograms, rendered in Prometheus' text format.

Hand-written rather than `prometheus_client`: five metric families updated
only from the event loop's thread need no locks, no registry and no extra
dependency. Also keeps the last requests' phase timings for the report of
where a request's time goes (`GET /monitoring/report`).
"""

from __future__ import annotations

import collections

import numpy as np

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# A request's life, in order (timestamps taken by the handler and the batch thread).
PHASES = ("parse", "queue", "batch_wait", "model", "handoff", "serialize")
PHASE_HELP = {
    "parse": "body read, JSON decoded, inputs checked",
    "queue": "enqueued until a batch thread took it",
    "batch_wait": "taken until its batch closed (waiting for more rows)",
    "model": "the batch's one model call, split into rows",
    "handoff": "batch thread to the event loop resuming the handler",
    "serialize": "response JSON encoded",
}


class Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        i = 0
        while i < len(self.buckets) and value > self.buckets[i]:
            i += 1
        self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        out, cum = [], 0
        sep = "," if labels else ""
        for b, c in zip(self.buckets, self.counts):
            cum += c
            out.append(f'{name}_bucket{{{labels}{sep}le="{b}"}} {cum}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{suffix} {self.sum}", f"{name}_count{suffix} {self.count}"]
        return out


class ServerMetrics:
    """What /metrics shows; every method runs on the event loop's thread."""

    def __init__(self, keep_last: int = 20_000):
        self.requests = collections.Counter()  # (code,) -> count
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.phases = {p: Histogram(LATENCY_BUCKETS) for p in PHASES}
        self.recent = collections.deque(maxlen=keep_last)  # per-request phase seconds
        self.queue_rows = lambda: 0
        self.in_flight = 0
        self.timed = 0  # requests with phase timings so far (the window's marks for `report(since=...)`)

    def request(self, code: int, seconds: float | None = None, phases: tuple | None = None) -> None:
        self.requests[code] += 1
        if seconds is not None:
            self.latency.observe(seconds)
        if phases is not None:
            for p, v in zip(PHASES, phases):
                self.phases[p].observe(v)
            self.recent.append(phases)
            self.timed += 1

    def mark(self) -> tuple:
        """Where a window starts: pass it to `report(since=...)` at its end."""
        return self.timed, self.batch_size.count, self.batch_size.sum

    def text(self) -> str:
        lines = ["# HELP tfpipe_serve_requests_total Predict requests answered, by HTTP status.",
                 "# TYPE tfpipe_serve_requests_total counter"]
        lines += [f'tfpipe_serve_requests_total{{code="{c}"}} {n}' for c, n in sorted(self.requests.items())]
        lines += ["# HELP tfpipe_serve_request_latency_seconds Predict latency of answered requests (200s).",
                  "# TYPE tfpipe_serve_request_latency_seconds histogram"]
        lines += self.latency.lines("tfpipe_serve_request_latency_seconds")
        lines += ["# HELP tfpipe_serve_batch_size Rows per model call.", "# TYPE tfpipe_serve_batch_size histogram"]
        lines += self.batch_size.lines("tfpipe_serve_batch_size")
        lines += ["# HELP tfpipe_serve_phase_seconds Where a request's time goes: "
                  + "; ".join(f"{k}: {v}" for k, v in PHASE_HELP.items()) + ".",
                  "# TYPE tfpipe_serve_phase_seconds histogram"]
        for p in PHASES:
            lines += self.phases[p].lines("tfpipe_serve_phase_seconds", f'phase="{p}"')
        lines += ["# HELP tfpipe_serve_queue_rows Rows waiting for a batch thread.", "# TYPE tfpipe_serve_queue_rows gauge",
                  f"tfpipe_serve_queue_rows {self.queue_rows()}",
                  "# HELP tfpipe_serve_in_flight Predict requests being handled.", "# TYPE tfpipe_serve_in_flight gauge",
                  f"tfpipe_serve_in_flight {self.in_flight}"]
        return "\n".join(lines) + "\n"

    def report(self, since: tuple | None = None) -> dict:
        """Mean, p50 and p99 per phase (ms) over the last requests, and each phase's share of the total.

        With `since` (a `mark()`), only the requests answered after it (at
        most the last `keep_last`), e.g. those of a profile capture.
        """
        recent = list(self.recent)
        batches, rows = self.batch_size.count, self.batch_size.sum
        if since is not None:
            recent = recent[len(recent) - min(self.timed - since[0], len(recent)):]
            batches, rows = batches - since[1], rows - since[2]
        if not recent:
            return {"requests": 0, "phases": {}}
        a = np.asarray(recent) * 1000.0
        total = a.sum(axis=1)
        out = {"requests": len(a), "total_ms": _stats(total), "phases": {}}
        for i, p in enumerate(PHASES):
            out["phases"][p] = {**_stats(a[:, i]), "share": float(a[:, i].sum() / max(total.sum(), 1e-12)),
                                "what": PHASE_HELP[p]}
        if batches:
            out["mean_batch_size"] = rows / batches
            out["batches"] = batches
        return out


def _stats(v) -> dict:
    return {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))}


def summary(report: dict) -> str:
    """The report as lines of text: the largest phase first."""
    if not report.get("requests"):
        return "no requests answered yet"
    lines = [f"{report['requests']} requests, mean {report['total_ms']['mean']:.2f} ms, "
             f"p99 {report['total_ms']['p99']:.2f} ms, mean batch {report.get('mean_batch_size', 0):.1f} rows"]
    for p, s in sorted(report["phases"].items(), key=lambda kv: -kv[1]["share"]):
        lines.append(f"  {p:<10} {100 * s['share']:5.1f}%  mean {s['mean']:.3f} ms  p99 {s['p99']:.3f} ms  ({s['what']})")
    return "\n".join(lines)


def advice(report: dict, options) -> list[str]:
    """What to change, from where the requests' time went (`report`) under `options` (BatchingOptions).

    The largest phase names the limit: waiting for a batch thread (the model
    calls cannot keep up), waiting for a batch to fill, the model call itself,
    the event loop resuming handlers (the HTTP layer is CPU-bound), or the
    JSON work. Each line names the flag to try.
    """
    if not report.get("requests"):
        return []
    shares = {p: s["share"] for p, s in report["phases"].items()}
    top = max(shares, key=shares.get)
    mean_batch = report.get("mean_batch_size", 0.0)
    full = mean_batch >= 0.8 * options.max_batch_size
    if top == "queue":
        if options.max_batch_size == 1:
            return [f"--max_batch_size 64: requests wait {100 * shares[top]:.0f}% of their time for a model call "
                    "and every call serves one row; batching serves many rows per call"]
        if full:
            return [f"--max_batch_size {2 * options.max_batch_size}: batches are full (mean {mean_batch:.1f} of "
                    f"{options.max_batch_size} rows) and requests wait {100 * shares[top]:.0f}% of their time for a "
                    "batch thread; larger calls cost little more than small ones"]
        return [f"--num_batch_threads {options.num_batch_threads + 1}: requests wait {100 * shares[top]:.0f}% of "
                f"their time for a batch thread while batches are not full (mean {mean_batch:.1f} rows); another "
                "thread overlaps one call's Python with the next"]
    if top == "batch_wait":
        return [f"--batch_timeout_micros {options.batch_timeout_micros // 4}: requests spend "
                f"{100 * shares[top]:.0f}% of their time waiting for their batch to fill (mean {mean_batch:.1f} rows)"]
    if top == "model":
        return [f"the model call is {100 * shares[top]:.0f}% of a request's time: a smaller or quantized model, "
                "or more cores/accelerators (more server replicas behind a load balancer), are what helps"]
    if top == "handoff":
        return [f"resuming handlers after their batch is {100 * shares[top]:.0f}% of a request's time: the event "
                "loop is CPU-bound (HTTP and JSON for every request); run more server processes, or send several "
                "rows per request"]
    return [f"{top} is {100 * shares[top]:.0f}% of a request's time: send fewer, larger requests "
            "(several rows each, or the columnar \"inputs\" form)"]

"""Serving under concurrent load: tfpipe serve with batching, the same with --max_batch_size 1, and a naive
`model.predict` server, side by side on the digits MLP and the images CNN.

    python benchmarks/serving.py [--models mlp,cnn] [--rounds 3] [--workdir /tmp/tfpipe-serving-bench]

Trains two small models first (a few epochs of the digits MLP; a short run
of configs/images_cnn.yaml on a small generated image set), each exporting
its serving SavedModel (export.serving). Then, per model, the three servers
run at once as separate processes on 127.0.0.1 (idle ones cost nothing),
and one load-generator process (tfpipe/serve/loadgen.py) drives them in
turn — variants interleaved within each round, rounds repeated, medians
reported — so a load spike on this shared machine hits all of them:

- closed loop at 1, 4, 16, 64 and 256 clients;
- open loop, Poisson arrivals at fixed rates (`--rates`); rates far above
  a server's closed-loop capacity are not offered to it (noted as such).

Every answer is checked against the model's own prediction (the SavedModel
signature called directly). Also measured: the server process's CPU time
per answered request (from /proc), which a busy machine distorts less than
wall-clock throughput. Writes benchmarks/results/serving.json and
docs/serving_latency.png (p99 latency against throughput).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import results_file  # benchmarks/results_file.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONCURRENCY = (1, 4, 16, 64, 256)
VARIANTS = ("batching", "max_batch_size_1", "naive_predict")


# ---------------------------------------------------------------- models


def _train(workdir: Path, config: str, overrides: list[str]) -> None:
    if (workdir / "export").is_dir() and (workdir / "model.keras").exists():
        return
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(ROOT / config), "--workdir", str(workdir),
           "--set", "export.serving=true", "--set", "profile.enabled=false"]
    for o in overrides:
        cmd += ["--set", o]
    print("training:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)


def prepare(base: Path, which: list[str]) -> dict:
    """Trains (once; reused on rerun) the benchmark's models; name -> run directory."""
    runs = {}
    if "mlp" in which:
        runs["mlp"] = base / "mlp"
        _train(runs["mlp"], "configs/digits_mlp.yaml", ["train.epochs=10"])
    if "cnn" in which:
        data = base / "images"
        if not (data / "tfrecord" / "spec.json").exists():
            from tfpipe.data import workloads  # pylint: disable=import-outside-toplevel

            workloads.images(str(data), num_images=1500, log=None)
        rec = data / "tfrecord"
        runs["cnn"] = base / "cnn"
        _train(runs["cnn"], "configs/images_cnn.yaml", [
            f"data.files.train={rec}/train-*.tfrecord", f"data.files.test={rec}/test-*.tfrecord",
            f"data.tfrecord.spec_file={rec}/spec.json", "train.epochs=1", "train.steps_per_epoch=60"])
    return runs


# ---------------------------------------------------------------- servers


def _launch(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})


def _port(proc: subprocess.Popen, cmd: list[str]) -> int:
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            sys.exit(f"server failed to start: {' '.join(cmd)}")
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if m:
            return int(m.group(1))
    sys.exit(f"server did not start within 300 s: {' '.join(cmd)}")


def start_servers(run: Path, name: str) -> dict:
    serve = [sys.executable, str(ROOT / "scripts" / "serve.py"), "--model_dir", str(run / "export" / name),
             "--port", "0"]
    # Both tfpipe variants queue up to 256+ rows, so neither sheds load in
    # the closed-loop sweep (256 clients): they are compared on speed alone.
    cmds = {
        "batching": serve + ["--max_batch_size", "64", "--batch_timeout_micros", "1000", "--max_enqueued_batches", "8",
                             "--num_batch_threads", "1"],
        "max_batch_size_1": serve + ["--max_batch_size", "1", "--max_enqueued_batches", "512"],
        "naive_predict": [sys.executable, "-m", "tfpipe.serve.naive", "--workdir", str(run), "--port", "0"],
    }
    procs = {variant: _launch(cmd) for variant, cmd in cmds.items()}  # start up side by side
    return {variant: {"proc": proc, "url": f"http://127.0.0.1:{_port(proc, cmds[variant])}/v1/models/{name}:predict"}
            for variant, proc in procs.items()}


def stop_servers(servers: dict) -> None:
    for s in servers.values():
        s["proc"].send_signal(signal.SIGTERM)
    for s in servers.values():
        try:
            s["proc"].wait(60)
        except subprocess.TimeoutExpired:
            s["proc"].kill()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- measuring


def requests_for(variant: str, concurrency: int, scale: float) -> int:
    if variant == "naive_predict":
        # A few per client: at ~2-10 requests/s it still takes a minute at 256 clients.
        return int((concurrency + 16) * scale)
    return int(max(25 * concurrency, 600) * scale)


def measure(runner, server: dict, bodies, expected, point: dict, max_seconds: float) -> dict:
    pid = server["proc"].pid
    before = cpu_seconds(pid)
    if point["scenario"] == "closed":
        res = runner.closed(server["url"], bodies, expected, point["concurrency"], point["requests"],
                            max_seconds=max_seconds)
    else:
        res = runner.open(server["url"], bodies, expected, point["rate"], point["requests"], max_seconds=max_seconds)
    res["server_cpu_ms_per_request"] = 1000 * (cpu_seconds(pid) - before) / max(res["ok"], 1)
    res.pop("latencies_ms")  # the percentiles are kept; the samples would swell the JSON
    return res


def _median(runs: list[dict]) -> dict:
    keys = ("throughput", "server_cpu_ms_per_request")
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["latency_ms"] = {p: statistics.median(r["latency_ms"][p] for r in runs if r["latency_ms"][p] is not None)
                         if any(r["latency_ms"][p] is not None for r in runs) else None
                         for p in ("p50", "p90", "p99", "p99.9")}
    for k in ("sent", "ok", "wrong", "failed", "lost"):
        out[k] = sum(r[k] for r in runs)
    out["codes"] = {}
    for r in runs:
        for c, n in r["codes"].items():
            out["codes"][c] = out["codes"].get(c, 0) + n
    out["rounds"] = runs
    return out


def bench_model(name: str, run: Path, rounds: int, rates: list[float], scale: float, max_seconds: float,
                client_processes: int) -> dict:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfpipe import config as config_lib  # pylint: disable=import-outside-toplevel
    from tfpipe.serve import export, loadgen, servable  # pylint: disable=import-outside-toplevel

    cfg = config_lib.load(run / "config.yaml")
    served_name = export.model_name(cfg)
    rows = export.raw_examples(cfg.data, "test", 256)
    sv = servable.load(run / "export" / served_name)
    expected = sv.fn(**{k: tf.constant(v) for k, v in rows.items()})["predictions"].numpy()
    bodies = loadgen.request_bodies(rows)
    servers = start_servers(run, served_name)
    closed = {v: {c: [] for c in CONCURRENCY} for v in VARIANTS}
    opened = {v: {r: [] for r in rates} for v in VARIANTS}
    try:
        with loadgen.Runner(client_processes) as runner:
            for v in VARIANTS:  # warm-up: first calls trace and allocate
                measure(runner, servers[v], bodies, expected, {"scenario": "closed", "concurrency": 4, "requests": 20},
                        max_seconds)
            for r in range(rounds):
                for c in CONCURRENCY:
                    for v in VARIANTS:
                        point = {"scenario": "closed", "concurrency": c, "requests": requests_for(v, c, scale)}
                        res = measure(runner, servers[v], bodies, expected, point, max_seconds)
                        closed[v][c].append(res)
                        print(f"[{name} round {r + 1}] {v:<17} {c:>3} clients: {res['throughput']:8.1f} req/s  "
                              f"p99 {res['latency_ms']['p99'] or float('nan'):8.2f} ms  codes {res['codes']}  "
                              f"wrong {res['wrong']} failed {res['failed']}", flush=True)
                for rate in rates:
                    for v in VARIANTS:
                        cap = max(x["throughput"] for x in closed[v][64] + closed[v][256])
                        if rate > 3 * cap:
                            continue
                        point = {"scenario": "open", "rate": rate, "requests": int(rate * 4 * scale)}
                        res = measure(runner, servers[v], bodies, expected, point, max_seconds)
                        opened[v][rate].append(res)
                        print(f"[{name} round {r + 1}] {v:<17} Poisson {rate:>6.0f}/s: {res['throughput']:8.1f} req/s  "
                              f"p99 {res['latency_ms']['p99'] or float('nan'):8.2f} ms  codes {res['codes']}", flush=True)
    finally:
        stop_servers(servers)
    return {
        "closed": {v: {str(c): _median(runs) for c, runs in per.items()} for v, per in closed.items()},
        "open": {v: {str(r): (_median(runs) if runs else "not offered: above 3x the closed-loop capacity")
                     for r, runs in per.items()} for v, per in opened.items()},
    }


# ---------------------------------------------------------------- output


def chart(results: dict, out: Path) -> None:
    """p99 latency against throughput, one line per server, one panel per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    fig = Figure(figsize=(5.5 * len(results), 4.2))
    FigureCanvasAgg(fig)
    for i, (name, res) in enumerate(results.items()):
        ax = fig.add_subplot(1, len(results), i + 1)
        for v in VARIANTS:
            pts = [(res["closed"][v][str(c)]["throughput"], res["closed"][v][str(c)]["latency_ms"]["p99"], c)
                   for c in CONCURRENCY if res["closed"][v][str(c)]["latency_ms"]["p99"]]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=v)
            for x, y, c in pts:
                ax.annotate(str(c), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("throughput (requests/s, median of rounds)")
        ax.set_ylabel("p99 latency (ms)")
        ax.set_title(f"{name}: closed loop, labels = clients")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def table(results: dict) -> str:
    lines = []
    for name, res in results.items():
        lines.append(f"\n{name}: closed loop (median of rounds)\n")
        lines.append("| clients | server | req/s | p50 ms | p99 ms | p99.9 ms | server CPU ms/req | answers checked | wrong/lost |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for c in CONCURRENCY:
            for v in VARIANTS:
                r = res["closed"][v][str(c)]
                lat = r["latency_ms"]
                fmt = lambda x: f"{x:.1f}" if x is not None else "-"  # noqa: E731
                lines.append(f"| {c} | {v} | {r['throughput']:.0f} | {fmt(lat['p50'])} | {fmt(lat['p99'])} | "
                             f"{fmt(lat['p99.9'])} | {r['server_cpu_ms_per_request']:.2f} | {r['ok']} | "
                             f"{r['wrong']}/{r['lost'] + r['failed']} |")
        b, m, n = (res["closed"][v]["64"] for v in VARIANTS)
        lines.append(f"\nat 64 clients: batching / max_batch_size 1 = {b['throughput'] / m['throughput']:.1f}x, "
                     f"batching / naive = {b['throughput'] / n['throughput']:.1f}x throughput; p99 "
                     f"{b['latency_ms']['p99']:.1f} vs {m['latency_ms']['p99']:.1f} vs {n['latency_ms']['p99']:.1f} ms")
        lines.append(f"\n{name}: open loop, Poisson arrivals (median of rounds)\n")
        lines.append("| offered req/s | server | answered req/s | p50 ms | p99 ms | p99.9 ms | codes |")
        lines.append("|---|---|---|---|---|---|---|")
        for rate in next(iter(res["open"].values())):
            for v in VARIANTS:
                r = res["open"][v][rate]
                if isinstance(r, str):
                    lines.append(f"| {float(rate):.0f} | {v} | {r} | | | | |")
                    continue
                lat = r["latency_ms"]
                lines.append(f"| {float(rate):.0f} | {v} | {r['throughput']:.0f} | {lat['p50']:.1f} | {lat['p99']:.1f} | "
                             f"{lat['p99.9']:.1f} | {r['codes']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rates", default="100,400,1600", help="Poisson arrival rates (requests/s)")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every request count")
    p.add_argument("--max_seconds", type=float, default=15.0, help="per measurement: no requests sent after this")
    p.add_argument("--workdir", default="/tmp/tfpipe-serving-bench")
    p.add_argument("--client_processes", type=int, default=2,
                   help="load-generator processes (one Python client process cannot keep up with the batching server)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serving.json"))
    p.add_argument("--chart", default=str(ROOT / "docs" / "serving_latency.png"))
    args = p.parse_args()
    which = args.models.split(",")
    runs = prepare(Path(args.workdir), which)
    rates = [float(r) for r in args.rates.split(",")]
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    results = {}
    for name, run in runs.items():
        results[name] = bench_model(name, run, args.rounds, rates, args.scale, args.max_seconds, args.client_processes)
        # Written after each model too, so a cut-short run keeps what it measured.
        results_file.write(args.out, {"models": results, "loadavg_before": load_before, "cpus": os.cpu_count(),
                                      "partial": True})
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    text = table(results)
    print(text)
    chart(results, Path(args.chart))
    results_file.write(args.out, {"models": results, "loadavg_before": load_before, "loadavg_after": load_after,
                                  "cpus": os.cpu_count(), "table": text})


if __name__ == "__main__":
    main()

"""Training throughput when scaling out on localhost: workers and the tf.data service.

Runs the digits MLP config, one run per variant, one after the other:

- `single`: one process, default strategy, local input pipeline (reference).
- `mwms_1`, `mwms_2`: multi_worker_mirrored with 1 and 2 worker processes
  started by scripts/launch_local.py; same global batch, so 2 workers each
  compute half of every batch and all-reduce the gradients.
- `service_1`, `service_2`: one training process whose input pipeline runs
  on a tf.data service with 1 and 2 workers (scripts/data_service.py).

On one 2-core machine none of this can go faster: every process competes
for the same two cores and adds gRPC round trips, and the digits pipeline
is too cheap for offloading it to pay. The figures show the overhead of the
machinery, not a speedup; on real clusters the same code spreads the work
over machines.

    python benchmarks/scaling.py [--epochs 10]

Writes benchmarks/results/scaling.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "digits_mlp.yaml"
sys.path.insert(0, str(ROOT))

from tfpipe.distribute import launch  # noqa: E402  pylint: disable=wrong-import-position

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))


def train_cmd(workdir: str, epochs: int, *overrides: str) -> list[str]:
    cmd = [sys.executable, "scripts/train.py", "--config", str(CONFIG), "--workdir", workdir, "--set", f"train.epochs={epochs}"]
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def examples_per_sec(cmd: list[str], workdir: str) -> float:
    out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    # Written by the chief; excludes the first (tracing) loop call.
    return json.loads((Path(workdir) / "metrics.json").read_text())["examples_per_sec"]


def with_service(num_workers: int, run):
    """Runs `run(address)` against a dispatcher and `num_workers` workers."""
    port = launch.free_ports(1)[0]
    script = [sys.executable, "scripts/data_service.py"]
    procs = []
    try:
        for args in (["dispatcher", "--port", str(port)],) + tuple(
            ["worker", "--port", "0", "--dispatcher_address", f"127.0.0.1:{port}"] for _ in range(num_workers)
        ):
            proc = subprocess.Popen([*script, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            procs.append(proc)
            for line in iter(proc.stdout.readline, b""):  # wait until it serves
                if b"[data_service]" in line:
                    break
        return run(f"127.0.0.1:{port}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="tfpipe-scaling-") as tmp:

        def workdir(name):
            return os.path.join(tmp, name)

        results["single"] = examples_per_sec(train_cmd(workdir("single"), args.epochs), workdir("single"))
        for n in (1, 2):
            name = f"mwms_{n}"
            cmd = [sys.executable, "scripts/launch_local.py", "--num_workers", str(n), "--",
                   *train_cmd(workdir(name), args.epochs, "runtime.strategy=multi_worker_mirrored")]
            results[name] = examples_per_sec(cmd, workdir(name))
        for n in (1, 2):
            name = f"service_{n}"
            results[name] = with_service(
                n,
                lambda address, name=name: examples_per_sec(
                    train_cmd(workdir(name), args.epochs, f"data.service.address={address}"), workdir(name)
                ),
            )
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "epochs": args.epochs,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "examples_per_sec": results,
    }
    out = ROOT / "benchmarks" / "results" / "scaling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print("| variant | examples/sec | vs single |")
    print("|---|---|---|")
    for name, eps in results.items():
        print(f"| {name} | {eps:,.0f} | {eps / results['single']:.2f}x |")
    print(f"load average {record['load_average']}; written to {out}")


if __name__ == "__main__":
    start = time.time()
    main()
    print(f"{time.time() - start:.0f} s")

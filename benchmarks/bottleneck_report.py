"""The bottleneck report on one workload: the sequential pipeline vs tfpipe's tuned one.

    PYTHONPATH=. python benchmarks/bottleneck_report.py --config configs/images_cnn.yaml --data_root DIR

Trains the same model twice on the same files, once with the seed articles'
sequential recipe (config overrides: map and file reading one element at a
time, no prefetch, tf.data autotuning, injected prefetch and map-and-batch
fusion off) and once with the config as
shipped, each run profiled by tfpipe (`profile.*`). For each run it prints
and records the report's verdict and waiting share next to the always-on
`input_wait_fraction` measured over the same traced steps, and their
difference in percentage points. Writes benchmarks/results/bottleneck_report.json.

The config's relative data paths are resolved from --data_root (the directory
`scripts/make_workload.py images --out data/images` ran in).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

import results_file  # benchmarks/results_file.py

ROOT = Path(__file__).resolve().parent.parent
FLAGS = flags.FLAGS
flags.DEFINE_string("config", "configs/images_cnn.yaml", "Workload config.")
flags.DEFINE_string("data_root", ".", "Directory the config's relative data paths start from.")
flags.DEFINE_multi_string("set", [], "Overrides for both runs.")
flags.DEFINE_multi_string("set_sequential", [], "Extra overrides for the sequential run only (e.g. its preprocessing steps).")
flags.DEFINE_string("workdir", "/tmp/tfpipe-bottleneck", "Where the two runs go.")
flags.DEFINE_string("out", "benchmarks/results/bottleneck_report.json", "Results file.")

SEQUENTIAL = [
    "data.map.num_parallel_calls=1",
    "data.read.num_parallel_calls=1",
    "data.read.cycle_length=1",
    "data.prefetch=0",
    "data.options.autotune=false",
    "data.options.inject_prefetch=false",
    "data.options.map_and_batch_fusion=false",
]


def run(name, overrides):
    workdir = Path(FLAGS.workdir) / name
    # A fresh run each time: a leftover workdir would resume (and, with other
    # overrides, refuse to restore) instead of training and profiling anew.
    shutil.rmtree(workdir, ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(ROOT / FLAGS.config), "--workdir", str(workdir)]
    for item in [*FLAGS.set, *overrides]:
        cmd += ["--set", item]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.time()
    proc = subprocess.run(cmd, cwd=FLAGS.data_root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    report = json.loads((workdir / "report.json").read_text())
    metrics = json.loads((workdir / "metrics.json").read_text())
    summary = proc.stdout[proc.stdout.index("[tfpipe] profile report") :].split("[tfpipe] done")[0]
    print(f"--- {name}\n{summary}", flush=True)
    profile_share = report["input_wait_fraction_profile"]
    always_on = report["input_wait_fraction_always_on"]
    return {
        "overrides": overrides,
        "wall_seconds": round(time.time() - start, 1),
        "verdict": report["verdict"],
        "input_share_profile": profile_share,
        "input_share_plugin": report["shares"]["input"],
        "input_wait_fraction_always_on_same_steps": always_on,
        "difference_points": None if always_on is None else round(100 * abs(profile_share - always_on), 1),
        "input_wait_fraction_run": metrics.get("input_wait_fraction"),
        "examples_per_sec": metrics.get("examples_per_sec"),
        "step_time_ms": report["step_time_ms"]["mean"],
        "recommendations": [r["key"] for r in report["recommendations"]],
        "report": str(workdir / "report.json"),
        "chart": report.get("chart"),
    }


def main(argv):
    del argv
    results = {"sequential": run("sequential", [*SEQUENTIAL, *FLAGS.set_sequential]), "tuned": run("tuned", [])}
    print("\n| pipeline | verdict | waiting share (profile) | input_wait_fraction (always-on, same steps) | difference | examples/sec |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        always = r["input_wait_fraction_always_on_same_steps"]
        print(
            f"| {name} | {r['verdict']} | {r['input_share_profile']:.1%} | "
            f"{always:.1%} | {r['difference_points']} pts | {r['examples_per_sec'] or 0:,.0f} |"
        )
    results_file.write(ROOT / FLAGS.out, results)


if __name__ == "__main__":
    app.run(main)

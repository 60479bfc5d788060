"""The learning-rate range test's suggestion against a small grid, both trained for 20 epochs.

    python benchmarks/lr_finder.py [--config configs/digits_mlp.yaml] [--epochs 20] [--seeds 0,1]

1. `scripts/tune.py lr` on the config (`tfpipe.tune.lr.tune`, defaults:
   1e-6..1 over 300 steps) gives a suggested rate and a schedule.
2. The config trained for `--epochs` epochs (`scripts/train.py`, one
   process per run, profiler off) at every rate of `--grid`, at the
   suggestion with a constant rate, and at the suggestion with the
   suggested schedule (cosine with warm-up), once per seed
   (`runtime.seed`: weights, dropout and shuffling).
3. Test accuracy (metrics.json) per rate, mean over the seeds; the
   suggestion's gap to the grid's best.

Results: benchmarks/results/lr_finder.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import results_file  # benchmarks/results_file.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tfpipe.tune import lr  # noqa: E402  pylint: disable=wrong-import-position


def train(config, workdir, overrides) -> dict:
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--config", config, "--workdir", workdir]
    for o in overrides + ["profile.enabled=false"]:
        cmd += ["--set", o]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": ROOT}, timeout=1800)
    if out.returncode:
        sys.exit(f"training failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    with open(os.path.join(workdir, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "digits_mlp.yaml"))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--grid", default="1e-4,3e-4,1e-3,3e-3,1e-2,3e-2")
    p.add_argument("--workdir", default="/tmp/lr_finder")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "lr_finder.json"))
    args = p.parse_args()
    found = lr.tune(args.config, os.path.join(args.workdir, "range"))
    suggested = float(f"{found['suggested']:.3g}")
    seeds = [int(s) for s in args.seeds.split(",")]
    schedule = [f"{k}={json.dumps(v)}" for k, v in found["schedule"].items() if k != "optimizer.learning_rate"]
    cases = [(f"grid {g}", float(g), []) for g in args.grid.split(",")]
    cases += [("suggested, constant", suggested, []), ("suggested, cosine + warm-up", suggested, schedule)]
    rows = []
    for name, rate, extra in cases:
        accs = []
        for seed in seeds:
            wd = os.path.join(args.workdir, f"{name.replace(' ', '_').replace(',', '')}-seed{seed}")
            m = train(args.config, wd, [f"train.epochs={args.epochs}", f"optimizer.learning_rate={rate}",
                                        f"runtime.seed={seed}", *extra])
            accs.append(m["accuracy"])
            print(f"{name} lr {rate:g} seed {seed}: test accuracy {m['accuracy']:.4f}", flush=True)
        rows.append({"case": name, "learning_rate": rate, "overrides": extra, "accuracy": accs,
                     "mean_accuracy": statistics.mean(accs)})
    grid = [r for r in rows if r["case"].startswith("grid")]
    best = max(grid, key=lambda r: r["mean_accuracy"])
    summary = {"config": args.config, "epochs": args.epochs, "seeds": seeds, "range_test": {
        k: found[k] for k in ("min_loss_lr", "suggested", "steepest_lr", "stopped", "schedule")},
        "grid_best": best, "rows": rows,
        "gap_points": {r["case"]: round(100 * (best["mean_accuracy"] - r["mean_accuracy"]), 2)
                       for r in rows if not r["case"].startswith("grid")}}
    print(f"\nrange test: smoothed loss lowest at {found['min_loss_lr']:.3g}, suggested {suggested:g}\n")
    print("| rate | case | test accuracy (mean of seeds " + args.seeds + ") |\n|---|---|---|")
    for r in rows:
        print(f"| {r['learning_rate']:g} | {r['case']} | {r['mean_accuracy']:.4f} ({', '.join(f'{a:.4f}' for a in r['accuracy'])}) |")
    print(f"\ngrid best {best['learning_rate']:g}: {best['mean_accuracy']:.4f}; gaps (points): {summary['gap_points']}")
    results_file.write(args.out, summary)


if __name__ == "__main__":
    main()

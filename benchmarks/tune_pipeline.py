"""The pipeline tuner against tf.data's AUTOTUNE, side by side, and against the CPU ceiling.

    python benchmarks/tune_pipeline.py [--cases clicks_per_row,images_sequential,...] [--rounds 3]

For every case (a config):

1. `scripts/tune.py pipeline` on it (`tfpipe.tune.pipeline.tune`), workdir
   `--workdir/<case>` (rerunning resumes: finished trials are read back).
2. Interleaved rounds, one child process per measurement (the tuner's own
   trial runner, same windows): the tuned config, the same start config with
   every parallelism knob at AUTOTUNE (`AUTOTUNE` below), and the start as
   given. Medians over the rounds; ratios tuned / AUTOTUNE and tuned / start.
3. The tuned config's measured CPU ceiling (cores / CPU-seconds per example
   of the input alone + the model on one cached batch) and the share of it
   reached.

Misconfigured cases run with `--allow_result_changes` (fixing a one-file
interleave changes the read order, as AUTOTUNE's wider cycle does too);
shipped configs without it, unless `--allow_result_changes` is given. Results: benchmarks/results/tune_pipeline.json
and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import results_file  # benchmarks/results_file.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tfpipe.tune import pipeline, trials  # noqa: E402  pylint: disable=wrong-import-position

# name -> (config, misconfigured on purpose)
CASES = {
    "clicks_per_row": ("benchmarks/tune_configs/clicks_per_row.yaml", True),
    "images_sequential": ("benchmarks/tune_configs/images_sequential.yaml", True),
    "digits_dispatch": ("benchmarks/tune_configs/digits_dispatch.yaml", True),
    "images_cnn": ("configs/images_cnn.yaml", False),
    "clicks_widedeep": ("configs/clicks_widedeep.yaml", False),
    "digits_mlp": ("configs/digits_mlp.yaml", False),
    "digits_cnn": ("configs/digits_cnn.yaml", False),
}

# Every parallelism knob at AUTOTUNE, nothing else changed.
AUTOTUNE = ["data.map.num_parallel_calls=-1", "data.read.num_parallel_calls=-1", "data.read.cycle_length=-1",
            "data.prefetch=-1", "data.options.autotune=true"]


def _case(name, args, settings):
    config, misconfigured = CASES[name]
    work = os.path.join(args.workdir, name)
    result = pipeline.tune(config, work, settings=settings, repeats=args.repeats, max_trials=args.max_trials,
                           allow_result_changes=misconfigured or args.allow_result_changes,
                           profile=not args.no_profile)
    store = trials.Store(os.path.join(work, "trials.json"))
    runner = trials.Runner(config, work, store, settings=settings)
    tuned = [f"{k}={json.dumps(v)}" for k, v in result["kept"].items()]
    variants = {"tuned": tuned, "autotune": AUTOTUNE, "start": []}
    rates = {v: [] for v in variants}
    # Run indices from 100 on: separate from the tuner's own runs of the same overrides.
    for r in range(args.rounds):
        for variant, overrides in variants.items():
            rec = runner.run(overrides, index=100 + r, label=f"{name} {variant} round {r + 1}")
            if rec["status"] == "ok":
                rates[variant].append(rec["examples_per_sec"])
    med = {v: statistics.median(x) if x else None for v, x in rates.items()}
    ceiling = result["ceiling_tuned"].get("cpu_ceiling_examples_per_sec")
    start_ceiling = result["ceiling_start"].get("cpu_ceiling_examples_per_sec")
    return {
        "case": name, "config": config, "misconfigured": misconfigured,
        "kept": result["kept"], "trials": sum(1 for t in result["trials"] if t.get("ran")),
        "tuner_speedup": result["speedup"], "stopped": result["stopped"], "noise": result["noise"],
        "diagnosis": result["diagnosis"].get("cause"),
        "median_examples_per_sec": med, "rates": rates,
        "tuned_over_autotune": med["tuned"] / med["autotune"] if med["tuned"] and med["autotune"] else None,
        "tuned_over_start": med["tuned"] / med["start"] if med["tuned"] and med["start"] else None,
        "ceiling_start": result["ceiling_start"], "ceiling_tuned": result["ceiling_tuned"],
        "start_fraction_of_ceiling": med["start"] / start_ceiling if med["start"] and start_ceiling else None,
        "tuned_fraction_of_ceiling": med["tuned"] / ceiling if med["tuned"] and ceiling else None,
        "result_changing": result["result_changing"],
    }


def _ceiling_case(name, args, settings):
    """End-to-end training speed of a config as given against its measured CPU ceiling (no tuning)."""
    config, _ = CASES[name]
    work = os.path.join(args.workdir, name)
    runner = trials.Runner(config, work, trials.Store(os.path.join(work, "trials.json")), settings=settings)
    runs = [runner.run([], index=100 + r, label=f"{name} as given round {r + 1}") for r in range(args.rounds)]
    rates = [r["examples_per_sec"] for r in runs if r["status"] == "ok"]
    ceiling = runner.ceiling([])
    eps = statistics.median(rates) if rates else None
    ceil = ceiling.get("cpu_ceiling_examples_per_sec")
    return {"case": name, "config": config, "examples_per_sec": eps, "rates": rates, "ceiling": ceiling,
            "cpu_sec_per_example_training": statistics.median(r["cpu_sec_per_example"] for r in runs if r["status"] == "ok")
            if rates else None,
            "fraction_of_ceiling": eps / ceil if eps and ceil else None}


def _table(rows) -> str:
    head = ("| case | kept changes | start ex/s | AUTOTUNE ex/s | tuned ex/s | tuned/AUTOTUNE | tuned/start "
            "| CPU ceiling (tuned) | share of ceiling |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        m = r["median_examples_per_sec"]
        ceil = r["ceiling_tuned"].get("cpu_ceiling_examples_per_sec")
        kept = ", ".join(f"`{k}={v}`" for k, v in r["kept"].items()) or "none"

        def f(x, fmt="{:,.0f}"):
            return fmt.format(x) if x else "n/a"

        lines.append(f"| {r['case']} | {kept} | {f(m['start'])} | {f(m['autotune'])} | {f(m['tuned'])} "
                     f"| {f(r['tuned_over_autotune'], '{:.2f}x')} | {f(r['tuned_over_start'], '{:.2f}x')} "
                     f"| {f(ceil)} | {f(r['tuned_fraction_of_ceiling'], '{:.0%}')} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--workdir", default="/tmp/tfpipe-tune-bench")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max_trials", type=int, default=10)
    parser.add_argument("--warmup_seconds", type=float, default=3.0)
    parser.add_argument("--window_seconds", type=float, default=2.0)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--ceiling_cases", default="",
                        help="cases measured as given against their CPU ceiling, without tuning")
    parser.add_argument("--no_profile", action="store_true", help="skip the profiler diagnosis of each start")
    parser.add_argument("--allow_result_changes", action="store_true",
                        help="the shipped configs too may take changes that alter results (data.in_graph's order)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "tune_pipeline.json"))
    args = parser.parse_args()
    settings = trials.WindowSettings(args.warmup_seconds, args.window_seconds, args.windows, 900)
    rows = []
    for name in filter(None, args.ceiling_cases.split(",")):
        row = _ceiling_case(name, args, settings)
        rows.append(row)
        results_file.write(args.out, rows)
        c = row["ceiling"]
        print(f"{name}: {row['examples_per_sec']:,.0f} ex/s training as given; CPU ceiling "
              f"{c['cpu_ceiling_examples_per_sec']:,.0f} = {c['cores']} cores / ({1e6 * c['input_cpu_sec_per_example']:.0f} "
              f"+ {1e6 * c['model_cpu_sec_per_example']:.0f} CPU-us per example, input + model); "
              f"{row['fraction_of_ceiling']:.0%} of it", flush=True)
    for name in filter(None, args.cases.split(",")):
        if name not in CASES:
            sys.exit(f"--cases: expected names from {', '.join(CASES)}. Received: {name!r}")
        rows.append(_case(name, args, settings))
        # Written after every case, so a long run leaves what it finished.
        results_file.write(args.out, rows)
        print(_table([r for r in rows if "kept" in r]), flush=True)


if __name__ == "__main__":
    main()

"""Side-by-side input-pipeline benchmark: sequential recipe vs TF guide vs tfpipe.

    python benchmarks/input_pipeline.py [--images 3000 --rows 200000 --batches 120 --rounds 3]

One run, both workloads (generated here, deterministic), three pipelines over
the same files and the same per-example work (parse, decode/crop/flip/normalize
or hash/pack/normalize, built by tfpipe.data.preprocess):

  (a) sequential: the seed articles' recipe: read files one after another,
      `map` without parallelism, no interleave, no prefetch; tf.data's own
      autotuning and injected prefetch turned off so it really is sequential.
  (b) guide: the TensorFlow performance guide's best practice: parallel
      interleave, `map(num_parallel_calls=AUTOTUNE)`, `prefetch(AUTOTUNE)`,
      and `cache()` after the parse and the deterministic steps (it fits in
      memory here): images cache the parsed records before the random
      decode-and-crop, clicks cache finished examples.
  (c) tfpipe: `tfpipe.data.pipeline.build` from the workload's config, and
      the same with `data.cache: memory` (the guide's memory trade-off).

Each pipeline runs in its own subprocess so its peak resident memory (RSS)
is its own. tfpipe also runs on a workload 4x larger, to show its memory
stays bounded (no cache of the data set). Results go to
benchmarks/results/input_pipeline.json and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import sys
import time

import results_file  # benchmarks/results_file.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"images": "configs/images_cnn.yaml", "clicks": "configs/clicks_widedeep.yaml"}


def _overrides(workload: str, data_dir: str) -> list[str]:
    if workload == "images":
        rec = os.path.join(data_dir, "tfrecord")
        return [f"data.files.train={rec}/train-*.tfrecord", f"data.files.test={rec}/test-*.tfrecord",
                f"data.tfrecord.spec_file={rec}/spec.json"]
    return [f"data.files.train={data_dir}/train-*.csv", f"data.files.test={data_dir}/test-*.csv"]


# ---------------------------------------------------------------- one pipeline (child process)


def _pipeline(kind: str, cfg):
    """The dataset of pipeline `kind` (sequential, guide, tfpipe) for `cfg`'s training split."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfpipe.data import pipeline, preprocess, sources  # pylint: disable=import-outside-toplevel

    data = cfg.data
    if kind == "tfpipe":
        return pipeline.build(data, "train", cfg.train.batch_size, training=True)
    if kind == "tfpipe_cache":
        # The shipped config with the guide's memory trade-off: cache in RAM
        # (tfpipe caches after the deterministic steps, before the random ones).
        return pipeline.build(dataclasses.replace(data, cache="memory"), "train", cfg.train.batch_size, training=True)

    # The same per-example work for (a) and (b): parse one record, then the
    # config's steps (statistics resolved from the training split as tfpipe does).
    src = sources.load(data, "train")
    deterministic, random_steps = preprocess.split_at_first_random(pipeline.resolve_stats(data))

    def apply(ds, fns, parallel):
        # tfpipe's own step runner: runs of maps fused into one map call,
        # filters (drop_missing) as filters; parallel 1 is a plain map.
        map_cfg = dataclasses.replace(data.map, num_parallel_calls=parallel)
        return pipeline._apply(ds, fns, dataclasses.replace(data, map=map_cfg, deterministic=True), batched=False)  # pylint: disable=protected-access

    parse = [lambda record, _: src.parse(record)]
    files = sorted(src.files)
    if kind == "sequential":
        ds = tf.data.Dataset.from_tensor_slices(files).flat_map(src.reader)
        ds = ds.shuffle(data.shuffle.buffer_size, seed=0).repeat()
        # 1: a plain map, run in the consumer's call, every epoch.
        ds = apply(ds, parse + preprocess.build(deterministic + random_steps, training=True), 1)
        ds = ds.batch(cfg.train.batch_size, drop_remainder=True)
        opts = tf.data.Options()
        # Without these tf.data would add a prefetch, autotune buffers and fuse
        # the last map with the batch into MapAndBatch (which works ahead in
        # its own thread): the "sequential" baseline would not be sequential.
        opts.autotune.enabled = False
        opts.experimental_optimization.inject_prefetch = False
        opts.experimental_optimization.map_and_batch_fusion = False
        return ds.with_options(opts)

    # The guide: interleave files in parallel, parse and run the deterministic
    # steps in a parallel map, cache the result (it fits in memory here),
    # shuffle, repeat, the random steps in a parallel map, batch, prefetch;
    # AUTOTUNE everywhere.
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        src.reader, cycle_length=4, num_parallel_calls=tf.data.AUTOTUNE
    )
    ds = apply(ds, parse + preprocess.build(deterministic, training=True), -1)
    ds = ds.cache().shuffle(data.shuffle.buffer_size, seed=0).repeat()
    ds = apply(ds, preprocess.build(random_steps, training=True), -1)
    ds = ds.batch(cfg.train.batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def child(args) -> None:
    import tfpipe  # pylint: disable=import-outside-toplevel
    from tfpipe.data import benchmark  # pylint: disable=import-outside-toplevel

    cfg = tfpipe.load_config(os.path.join(ROOT, CONFIGS[args.workload]), overrides=_overrides(args.workload, args.data))
    rss_before = benchmark.peak_rss_mb()
    ds = _pipeline(args.kind, cfg)
    result = benchmark.measure(ds, args.batches, args.warmup)
    result.update(peak_rss_mb=benchmark.peak_rss_mb(), rss_after_import_mb=rss_before)
    results_file.hand_back(result)


# ---------------------------------------------------------------- driver


def _run_child(workload, kind, data_dir, batches, warmup) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--workload", workload, "--kind", kind,
           "--data", data_dir, "--batches", str(batches), "--warmup", str(warmup)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
               TF_CPP_MIN_LOG_LEVEL="2")
    return results_file.from_child(cmd, f"{workload}/{kind}", env=env, timeout=1200)


def _generate(workload: str, size: int, data_root: str) -> str:
    from tfpipe.data import workloads  # pylint: disable=import-outside-toplevel

    path = os.path.join(data_root, f"{workload}-{size}")
    if os.path.exists(os.path.join(path, "done")):
        return path
    if workload == "images":
        workloads.images(path, num_images=size, num_shards=8, test_fraction=0.05, log=None)
    else:
        workloads.clicks(path, rows=size, num_files=8, test_fraction=0.05, log=None)
    open(os.path.join(path, "done"), "w").close()
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=3000, help="images in the workload (4x for the memory check)")
    p.add_argument("--rows", type=int, default=200_000, help="click-log rows (4x for the memory check)")
    p.add_argument("--batches", type=int, default=120, help="batches timed per pipeline")
    p.add_argument("--warmup", type=int, default=15, help="batches dropped before timing")
    p.add_argument("--rounds", type=int, default=3, help="runs per pipeline; the median is reported")
    p.add_argument("--data_root", default="/tmp/tfpipe-bench-data", help="where workloads are generated (reused)")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "input_pipeline.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0

    sys.path.insert(0, ROOT)
    started = time.time()
    sizes = {"images": args.images, "clicks": args.rows}
    results = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "command": "python benchmarks/input_pipeline.py " + " ".join(argv or sys.argv[1:]),
               "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0], "batches": args.batches,
               "rounds": args.rounds, "warmup": args.warmup, "workloads": {}}
    for workload, size in sizes.items():
        small = _generate(workload, size, args.data_root)
        large = _generate(workload, 4 * size, args.data_root)
        # Enough batches that tfpipe passes over the whole 4x data set at least once.
        batch = 64 if workload == "images" else 512
        big_batches = max(args.batches, (4 * size) // batch + 1)
        row = {"examples": size}
        kinds = ["sequential", "guide", "tfpipe", "tfpipe_cache"]
        samples = {k: [] for k in kinds}
        for r in range(args.rounds):
            # Rotate the order each round: a neighbour's load spike then hits
            # a different pipeline each time instead of always the same one.
            for kind in kinds[r % len(kinds):] + kinds[: r % len(kinds)]:
                sample = _run_child(workload, kind, small, args.batches, args.warmup)
                samples[kind].append(sample)
                print(f"{workload:7s} {kind:10s} round {r + 1}: {sample['examples_per_sec']:>10.0f} ex/s  "
                      f"peak RSS {sample['peak_rss_mb']:.0f} MiB", flush=True)
        for kind in kinds:
            runs = samples[kind]
            row[kind] = {
                "examples_per_sec": statistics.median(s["examples_per_sec"] for s in runs),
                "peak_rss_mb": max(s["peak_rss_mb"] for s in runs),
                "rss_after_import_mb": runs[0]["rss_after_import_mb"],
                "samples": runs,
            }
        for kind in ("tfpipe", "guide", "tfpipe_cache"):
            # The guide's cache grows with the data set; tfpipe's configs do not cache.
            big = _run_child(workload, kind, large, big_batches, args.warmup)
            big.update(examples_in_workload=4 * size, batches=big_batches)
            row[f"{kind}_4x"] = big
            print(f"{workload:7s} {kind} 4x  {big['examples_per_sec']:>10.0f} ex/s  "
                  f"peak RSS {big['peak_rss_mb']:.0f} MiB", flush=True)
        row["c_over_a"] = round(row["tfpipe"]["examples_per_sec"] / row["sequential"]["examples_per_sec"], 2)
        row["c_over_b"] = round(row["tfpipe"]["examples_per_sec"] / row["guide"]["examples_per_sec"], 2)
        row["c_cache_over_b"] = round(row["tfpipe_cache"]["examples_per_sec"] / row["guide"]["examples_per_sec"], 2)
        row["rss_growth_4x"] = round(row["tfpipe_4x"]["peak_rss_mb"] / row["tfpipe"]["peak_rss_mb"], 2)
        row["guide_rss_growth_4x"] = round(row["guide_4x"]["peak_rss_mb"] / row["guide"]["peak_rss_mb"], 2)
        results["workloads"][workload] = row
    results["seconds"] = round(time.time() - started, 1)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)

    print(f"\nmedian of {args.rounds} rounds; load average at start {results['load_average_at_start']:.1f}")
    print("\n| workload | (a) sequential ex/s | (b) guide ex/s | (c) tfpipe ex/s | tfpipe + cache ex/s | c/a | c/b "
          "| tfpipe + cache / b | peak RSS a / b / c / c+cache MiB | peak RSS at 4x data: b / c / c+cache MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for w, r in results["workloads"].items():
        print(f"| {w} ({r['examples']:,}) | {r['sequential']['examples_per_sec']:,.0f} | {r['guide']['examples_per_sec']:,.0f} "
              f"| {r['tfpipe']['examples_per_sec']:,.0f} | {r['tfpipe_cache']['examples_per_sec']:,.0f} "
              f"| {r['c_over_a']:.2f} | {r['c_over_b']:.2f} | {r['c_cache_over_b']:.2f} "
              f"| {r['sequential']['peak_rss_mb']:.0f} / {r['guide']['peak_rss_mb']:.0f} / {r['tfpipe']['peak_rss_mb']:.0f} "
              f"/ {r['tfpipe_cache']['peak_rss_mb']:.0f} "
              f"| {r['guide_4x']['peak_rss_mb']:.0f} / {r['tfpipe_4x']['peak_rss_mb']:.0f} "
              f"/ {r['tfpipe_cache_4x']['peak_rss_mb']:.0f} |")
    print(f"\n{results['seconds']:.0f}s; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

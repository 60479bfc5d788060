"""What the in-graph data checks cost: input throughput with them (check: quick) vs without (check: off).

    python benchmarks/data_checks.py [--rounds 7] [--batches 40]

For each shipped config, builds the training pipeline twice, once with
`data.check: quick` (label range after parse, NaN/inf on the finished
batch: `tfpipe/data/guards.py`) and once with `data.check: off` (neither),
and alternates the two in one process (on, off, off, on, ...): each round
makes a fresh iterator, drops `--warmup` batches and times `--batches`.
Input alone, no model: the sharpest view of the checks' cost (in training
the model's time dilutes it). The images and clicks configs read small
generated copies of their workloads (a temporary directory). Reports the
median examples/sec per variant and the ratio checked/unchecked, and the
same for CPU-seconds per example of the process (all tf.data threads;
steadier than wall time on a busy host; the warm-up batches are in it
and prorated). Then
times how long a mid-run decode error takes to name its file
(`locate_cost`). Writes JSON to benchmarks/results/data_checks.json.
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from absl import app, flags

import results_file  # benchmarks/results_file.py

FLAGS = flags.FLAGS
flags.DEFINE_multi_string(
    "config",
    ["configs/digits_mlp.yaml", "configs/digits_cnn.yaml", "configs/images_cnn.yaml", "configs/clicks_widedeep.yaml"],
    "Configs to measure.",
)
flags.DEFINE_integer("rounds", 7, "Timed chunks per variant.")
flags.DEFINE_integer("batches", 40, "Batches timed per chunk.")
flags.DEFINE_integer("warmup", 5, "Batches dropped per chunk (fresh iterator each chunk).")
flags.DEFINE_integer("images", 1000, "Images in the generated images workload.")
flags.DEFINE_integer("rows", 100_000, "Rows in the generated clicks workload.")
flags.DEFINE_string("out", "benchmarks/results/data_checks.json", "Where to write the results.")


def _workload_overrides(config: str, tmp: str) -> list:
    from tfpipe.data import workloads  # pylint: disable=import-outside-toplevel

    if "images" in config:
        out = os.path.join(tmp, "images")
        if not os.path.isdir(out):
            workloads.images(out, num_images=FLAGS.images, num_shards=8, log=None)
        rec = os.path.join(out, "tfrecord")
        return [f"data.files.train={rec}/train-*.tfrecord", f"data.files.test={rec}/test-*.tfrecord",
                f"data.tfrecord.spec_file={rec}/spec.json"]
    if "clicks" in config:
        out = os.path.join(tmp, "clicks")
        if not os.path.isdir(out):
            workloads.clicks(out, rows=FLAGS.rows, num_files=8, log=None)
        return [f"data.files.train={out}/train-*.csv", f"data.files.test={out}/test-*.csv"]
    return []


def measure(config: str, tmp: str) -> dict:
    import tfpipe  # pylint: disable=import-outside-toplevel
    from tfpipe.data import benchmark, pipeline  # pylint: disable=import-outside-toplevel

    common = _workload_overrides(config, tmp)
    cfgs = {name: tfpipe.load_config(config, overrides=[*common, f"data.check={check}"])
            for name, check in (("checked", "quick"), ("unchecked", "off"))}
    batch = cfgs["checked"].train.batch_size
    datasets = {name: pipeline.build(cfg.data, "train", batch) for name, cfg in cfgs.items()}
    samples = {name: [] for name in cfgs}
    cpu = {name: [] for name in cfgs}
    for r in range(FLAGS.rounds):
        for name in ("checked", "unchecked") if r % 2 == 0 else ("unchecked", "checked"):
            # CPU-seconds of this process (every tf.data thread) per example as
            # well as wall time: on a shared, busy host the CPU time of the
            # work is far steadier than its wall time.
            start = time.process_time()
            m = benchmark.measure(datasets[name], FLAGS.batches, FLAGS.warmup)
            samples[name].append(m["examples_per_sec"])
            cpu[name].append(round((time.process_time() - start) / (m["examples"] * (1 + FLAGS.warmup / FLAGS.batches)) * 1e6, 2))
    med = {name: statistics.median(v) for name, v in samples.items()}
    med_cpu = {name: statistics.median(v) for name, v in cpu.items()}
    return {"config": config, "batch_size": batch, "samples": samples, "cpu_us_per_example": cpu,
            "median_examples_per_sec": med, "median_cpu_us_per_example": med_cpu,
            "ratio_checked_over_unchecked": round(med["checked"] / med["unchecked"], 3),
            "cpu_ratio_unchecked_over_checked": round(med_cpu["unchecked"] / med_cpu["checked"], 3)}


def locate_cost(tmp: str) -> dict:
    """Seconds from a mid-run decode error to the DataError naming the file, on the images folder.

    The happy path pays nothing for this (no op is added to the pipeline);
    a failing run pays one search. Timed with TF's own error (its "size N"
    lets the search decode only files of that size first) and with the
    size removed (the full check of the split).
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tfpipe  # pylint: disable=import-outside-toplevel
    from tfpipe.data import check, pipeline  # pylint: disable=import-outside-toplevel

    _workload_overrides("images", tmp)
    train = os.path.join(tmp, "images", "folder", "train")
    victim = sorted(Path(train).glob("*/*.jpg"))[-1]
    victim.write_bytes(victim.read_bytes()[:300])
    cfg = tfpipe.load_config(None, overrides=[
        "data.source=image_folder", f"data.files.train={train}", "data.check=off", "data.cache=",
        'data.map.steps=[{"op": "decode_crop_jpeg", "size": 28, "ratio": 8}]'])
    try:
        for _ in pipeline.build(cfg.data, "train", 64, training=False):
            pass
        raise RuntimeError("the broken file did not fail the pipeline")
    except tf.errors.InvalidArgumentError as e:
        error = e
    out = {"images": len(list(Path(train).glob("*/*.jpg")))}
    for name, err in (("with_size_hint", error),
                      ("full_scan", tf.errors.InvalidArgumentError(None, None, error.message.replace("size 300", "")))):
        start = time.perf_counter()
        explained = check.explain(err, cfg.data, log=lambda _: None)
        out[name + "_seconds"] = round(time.perf_counter() - start, 2)
        assert str(victim) in str(explained), explained
    return out


def main(argv):
    del argv
    results = []
    with tempfile.TemporaryDirectory(prefix="tfpipe-checks-") as tmp:
        for config in FLAGS.config:
            result = measure(config, tmp)
            med = result["median_examples_per_sec"]
            cpu = result["median_cpu_us_per_example"]
            print(f"{config}: checked {med['checked']:.0f} ex/s, unchecked {med['unchecked']:.0f} ex/s, "
                  f"ratio {result['ratio_checked_over_unchecked']:.3f}; CPU {cpu['checked']:.1f} vs "
                  f"{cpu['unchecked']:.1f} us/example, ratio {result['cpu_ratio_unchecked_over_checked']:.3f}",
                  flush=True)
            results.append(result)
        located = locate_cost(tmp)
        print(f"mid-run error to the file's name, {located['images']} images: {located['with_size_hint_seconds']} s "
              f"(TF's size hint), {located['full_scan_seconds']} s (full scan)", flush=True)
    results_file.write(ROOT / FLAGS.out, {"pipelines": results, "locate": located})


if __name__ == "__main__":
    app.run(main)

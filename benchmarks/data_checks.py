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
median examples/sec per variant and the ratio checked/unchecked. Writes
JSON to benchmarks/results/data_checks.json.
"""

import os
import statistics
import sys
import tempfile
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
    for r in range(FLAGS.rounds):
        for name in ("checked", "unchecked") if r % 2 == 0 else ("unchecked", "checked"):
            samples[name].append(benchmark.measure(datasets[name], FLAGS.batches, FLAGS.warmup)["examples_per_sec"])
    med = {name: statistics.median(v) for name, v in samples.items()}
    return {"config": config, "batch_size": batch, "samples": samples, "median_examples_per_sec": med,
            "ratio_checked_over_unchecked": round(med["checked"] / med["unchecked"], 3)}


def main(argv):
    del argv
    results = []
    with tempfile.TemporaryDirectory(prefix="tfpipe-checks-") as tmp:
        for config in FLAGS.config:
            result = measure(config, tmp)
            med = result["median_examples_per_sec"]
            print(f"{config}: checked {med['checked']:.0f} ex/s, unchecked {med['unchecked']:.0f} ex/s, "
                  f"ratio {result['ratio_checked_over_unchecked']:.3f}", flush=True)
            results.append(result)
    results_file.write(ROOT / FLAGS.out, results)


if __name__ == "__main__":
    app.run(main)

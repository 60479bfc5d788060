"""Generates a benchmark workload on disk, deterministic from --seed.

    tfpipe make_workload images --out data/images [--num_images 10000]
    tfpipe make_workload clicks --out data/clicks [--rows 1000000 --num_files 8]
    tfpipe make_workload breast_cancer --out data/breast_cancer   # CSV, string labels, missing cells
    tfpipe make_workload diabetes --out data/diabetes             # CSV, regression target
    tfpipe make_workload colours --out data/colours               # image folder, mixed formats/modes/sizes
"""

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output directory.", required=True)
flags.DEFINE_integer("seed", 0, "Seed of every generated value.")
flags.DEFINE_integer("num_images", 10_000, "images: total images (train + test).")
flags.DEFINE_integer("size", 256, "images: side of the square JPEGs.")
flags.DEFINE_integer("num_shards", 8, "images: TFRecord shards of the training split.")
flags.DEFINE_integer("rows", 1_000_000, "clicks: total rows (train + test).")
flags.DEFINE_integer("num_files", 8, "clicks: training CSV files.")
flags.DEFINE_float("test_fraction", 0.1, "Share of the examples in the test split.")


def main(argv):
    names = ("images", "clicks", "breast_cancer", "diabetes", "colours")
    if len(argv) != 2 or argv[1] not in names:
        raise app.UsageError(f"expected one workload name: {', '.join(names)}")
    from tfpipe.data import samples, workloads  # pylint: disable=import-outside-toplevel

    if argv[1] in ("breast_cancer", "diabetes"):
        info = getattr(samples, argv[1])(FLAGS.out, seed=FLAGS.seed)
    elif argv[1] == "colours":
        info = samples.colours(FLAGS.out, seed=FLAGS.seed)
    elif argv[1] == "images":
        info = workloads.images(FLAGS.out, FLAGS.num_images, FLAGS.size, FLAGS.seed, FLAGS.num_shards, FLAGS.test_fraction)
    else:
        info = workloads.clicks(FLAGS.out, FLAGS.rows, FLAGS.num_files, FLAGS.seed, FLAGS.test_fraction)
    print(f"{argv[1]} workload in {FLAGS.out}: {info}")
    return 0


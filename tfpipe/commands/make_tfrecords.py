"""Converts an image folder, CSV files or an .npz file into sharded TFRecords + spec.json.

    tfpipe make_tfrecords --input data/images/folder/train --kind image_folder --out data/rec --num_shards 8
    tfpipe make_tfrecords --input "data/clicks/train-*.csv" --kind csv --out data/clicks_rec --split train
    tfpipe make_tfrecords --input arrays.npz --kind npz --out data/npz_rec

Point a config at the result with data.source: tfrecord,
data.files.train: "<out>/train-*.tfrecord", data.tfrecord.spec_file: <out>/spec.json.
"""

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "Image folder root, CSV glob, or .npz file.", required=True)
flags.DEFINE_enum("kind", None, ["image_folder", "csv", "npz"], "What --input is.", required=True)
flags.DEFINE_string("out", None, "Output directory for shards and spec.json.", required=True)
flags.DEFINE_integer("num_shards", 8, "Number of TFRecord files.")
flags.DEFINE_string("split", "train", "Split name used in the shard file names.")
flags.DEFINE_string("label_column", "label", "csv: the label column.")
flags.DEFINE_integer("seed", 0, "image_folder: order in which images are dealt to shards.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from tfpipe.data import tfrecords  # pylint: disable=import-outside-toplevel

    if FLAGS.kind == "image_folder":
        spec = tfrecords.from_image_folder(FLAGS.input, FLAGS.out, FLAGS.num_shards, FLAGS.split, FLAGS.seed)
    elif FLAGS.kind == "csv":
        spec = tfrecords.from_csv(FLAGS.input, FLAGS.out, FLAGS.num_shards, FLAGS.split, FLAGS.label_column)
    else:
        spec = tfrecords.from_npz(FLAGS.input, FLAGS.out, FLAGS.num_shards, FLAGS.split)
    print(f"wrote {FLAGS.num_shards} {FLAGS.split} shards to {FLAGS.out}; spec: {spec}")
    return 0


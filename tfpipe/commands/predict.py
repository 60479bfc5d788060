"""Writes a finished run's predictions on a split or on other files to CSV or JSON.

    tfpipe predict --workdir runs/mlp --output preds.csv [--split test | --file 'data/new/*.csv'] [--format csv|json]

One row per example, in file order: index, label (when the data has one),
class_id and a probability per class (p0, p1, ...); regression: prediction.
Exit codes: 0 done, 2 no finished run, no such split, files that match nothing.
"""

import sys

from absl import flags

from tfpipe import commands

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A finished run: config.yaml and model.keras.", required=True)
flags.DEFINE_string("output", None, "Where to write: a .csv or .json file.", required=True)
flags.DEFINE_string("split", "test", "train, validation or test.")
flags.DEFINE_string("file", None, "Files in the run's data format (comma-separated globs) instead of --split.")
flags.DEFINE_enum("format", None, ["csv", "json"], "Default: from the --output suffix.")
flags.DEFINE_integer("batch_size", 0, "0 = the run's train.batch_size.")


def main(argv):
    commands.start(argv)
    from tfpipe.data.check import DataError  # pylint: disable=import-outside-toplevel
    from tfpipe.train import evaluate  # pylint: disable=import-outside-toplevel

    try:
        result = evaluate.predict(FLAGS.workdir, FLAGS.output, FLAGS.split, FLAGS.file, FLAGS.batch_size, FLAGS.format)
    except (evaluate.RunError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[tfpipe] wrote {result['examples']} predictions -> {result['output']}", flush=True)
    return 0

"""Evaluates a finished run on a split or on other files: its loss and train.metrics.

    tfpipe evaluate --workdir runs/mlp [--split test | --file 'data/new/*.csv'] [--output metrics.json]

Prints one JSON object (loss, the run's metrics, examples); `--output` also
writes it to a file. Exit codes: 0 done, 2 no finished run, no such split,
files that match nothing or have no labels.
"""

import json
import sys

from absl import flags

from tfpipe import commands

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A finished run: config.yaml and model.keras.", required=True)
flags.DEFINE_string("split", "test", "train, validation or test.")
flags.DEFINE_string("file", None, "Files in the run's data format (comma-separated globs) instead of --split.")
flags.DEFINE_integer("batch_size", 0, "0 = the run's train.batch_size.")
flags.DEFINE_string("output", None, "Also write the metrics to this JSON file.")


def main(argv):
    commands.start(argv)
    from tfpipe.data.check import DataError  # pylint: disable=import-outside-toplevel
    from tfpipe.train import evaluate  # pylint: disable=import-outside-toplevel

    try:
        result = evaluate.metrics(FLAGS.workdir, FLAGS.split, FLAGS.file, FLAGS.batch_size)
    except (evaluate.RunError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    print(text)
    if FLAGS.output:
        with open(FLAGS.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0

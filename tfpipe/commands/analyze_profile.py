"""Writes the bottleneck report for an existing profile directory.

    tfpipe analyze_profile --logdir runs/x/logs [--out DIR] [--steps_per_marker N]

Works on any TensorBoard profile directory (`<logdir>/plugins/profile/<run>/*.xplane.pb`),
also ones written by other programs; the newest run is read. Writes report.json and
report.png (next to the trace unless --out is given) and prints a summary.
"""

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("logdir", None, "Log directory, profile run directory or .xplane.pb file.", required=True)
flags.DEFINE_string("out", None, "Where report.json and report.png go; default the profile run directory.")
flags.DEFINE_integer(
    "steps_per_marker", None, "Training steps per step marker; default: inferred from the markers' step numbers."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from tfpipe.profile import report  # pylint: disable=import-outside-toplevel

    try:
        result = report.analyze(FLAGS.logdir, out_dir=FLAGS.out, steps_per_marker=FLAGS.steps_per_marker)
    except report.ProfileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary(result))
    print(f"[tfpipe] wrote {result['report_json']}")
    return 0 if result["verdict"] != "unknown" else 1


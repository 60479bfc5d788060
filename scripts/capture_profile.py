"""Captures a profile on demand from a running job's profiler server.

    python scripts/capture_profile.py --address 127.0.0.1:PORT --duration_ms 2000 --logdir DIR [--analyze]

The job must run a profiler server: in tfpipe, `--set profile.server_port=PORT`.
The trace lands in DIR/plugins/profile/<run>/, where TensorBoard (`--logdir DIR`)
and scripts/analyze_profile.py find it; --analyze also writes the report.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("address", None, "host:port of the job's profiler server.", required=True)
flags.DEFINE_integer("duration_ms", 2000, "How long to trace.", lower_bound=1)
flags.DEFINE_string("logdir", None, "TensorBoard log directory to write the trace under.", required=True)
flags.DEFINE_integer("attempts", 3, "Tracing attempts when a trace comes back empty.", lower_bound=1)
flags.DEFINE_bool("analyze", False, "Also write report.json and report.png next to the trace.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfpipe import report  # pylint: disable=import-outside-toplevel

    os.makedirs(FLAGS.logdir, exist_ok=True)
    # The client wants a grpc:// address; accept a bare host:port as the flag says.
    address = FLAGS.address if "://" in FLAGS.address else f"grpc://{FLAGS.address}"
    try:
        tf.profiler.experimental.client.trace(
            address, FLAGS.logdir, FLAGS.duration_ms, num_tracing_attempts=FLAGS.attempts
        )
    except Exception as e:  # pylint: disable=broad-except
        print(f"error: no profile captured from {FLAGS.address}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    try:
        run_dir = report.find_run_dir(FLAGS.logdir)
    except report.ProfileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"[tfpipe] captured {FLAGS.duration_ms} ms from {FLAGS.address} -> {run_dir}")
    if FLAGS.analyze:
        result = report.analyze(run_dir)
        print(report.summary(result))
    return 0


if __name__ == "__main__":
    app.run(main)

"""Captures a profile on demand from a running job.

    python scripts/capture_profile.py --address 127.0.0.1:PORT --duration_ms 2000 --logdir DIR [--analyze]

The job must run a capture server: in tfpipe, `--set profile.server_port=PORT`
(tfpipe's own endpoint on `profile.server_host`, 127.0.0.1 by default), or
any TensorFlow program's profiler server (`tf.profiler.experimental.server.start`,
which tfpipe starts with `profile.server_host: all`). `--protocol auto` asks
the address which of the two it is. The trace lands in
DIR/plugins/profile/<run>/, where TensorBoard (`--logdir DIR`) and
scripts/analyze_profile.py find it; --analyze also writes the report.
"""

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("address", None, "host:port of the job's capture or profiler server.", required=True)
flags.DEFINE_integer("duration_ms", 2000, "How long to trace.", lower_bound=1)
flags.DEFINE_string("logdir", None, "TensorBoard log directory to write the trace under.", required=True)
flags.DEFINE_integer("attempts", 3, "Tracing attempts when a trace comes back empty (gRPC).", lower_bound=1)
flags.DEFINE_enum("protocol", "auto", ["auto", "tfpipe", "grpc"],
                  "tfpipe: the capture endpoint of a tfpipe job; grpc: TensorFlow's profiler server; "
                  "auto: tfpipe if the address answers as one, else grpc.")
flags.DEFINE_bool("analyze", False, "Also write report.json and report.png next to the trace.")


def _is_tfpipe(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/", timeout=5) as r:
            return json.load(r).get("tfpipe") == "capture"
    except Exception:  # pylint: disable=broad-except  # a gRPC server does not speak HTTP/1.1
        return False


def _capture_tfpipe(address: str, logdir: str, duration_ms: int) -> None:
    query = urllib.parse.urlencode({"duration_ms": duration_ms, "logdir": os.path.abspath(logdir)})
    request = urllib.request.Request(f"http://{address}/capture?{query}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=duration_ms / 1000 + 120) as r:
            json.load(r)
    except urllib.error.HTTPError as e:
        raise RuntimeError(json.loads(e.read() or b"{}").get("error", str(e))) from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfpipe.profile import report  # pylint: disable=import-outside-toplevel

    os.makedirs(FLAGS.logdir, exist_ok=True)
    bare = FLAGS.address.split("://", 1)[-1]
    protocol = FLAGS.protocol
    if protocol == "auto":
        protocol = "tfpipe" if _is_tfpipe(bare) else "grpc"
    try:
        if protocol == "tfpipe":
            _capture_tfpipe(bare, FLAGS.logdir, FLAGS.duration_ms)
        else:
            # The client wants a grpc:// address; accept a bare host:port as the flag says.
            tf.profiler.experimental.client.trace(
                f"grpc://{bare}", FLAGS.logdir, FLAGS.duration_ms, num_tracing_attempts=FLAGS.attempts
            )
    except Exception as e:  # pylint: disable=broad-except
        print(f"error: no profile captured from {FLAGS.address}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    try:
        run_dir = report.find_run_dir(FLAGS.logdir)
    except report.ProfileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"[tfpipe] captured {FLAGS.duration_ms} ms from {FLAGS.address} ({protocol}) -> {run_dir}")
    if FLAGS.analyze:
        result = report.analyze(run_dir)
        print(report.summary(result))
        if result.get("verdict") not in report.VERDICTS:
            print("error: the capture holds no measured steps (see the report above)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    app.run(main)

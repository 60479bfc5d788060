"""Captures a profile on demand from a running job.

    tfpipe capture_profile --address 127.0.0.1:PORT --duration_ms 2000 --logdir DIR [--analyze]

The job must run a capture server: in tfpipe, `--set profile.server_port=PORT`
(tfpipe's own endpoint on `profile.server_host`, 127.0.0.1 by default), or
any TensorFlow program's profiler server (`tf.profiler.experimental.server.start`,
which tfpipe starts with `profile.server_host: all`). `--protocol auto` asks
the address which of the two it is. The trace lands in
DIR/plugins/profile/<run>/, where TensorBoard (`--logdir DIR`) and
scripts/analyze_profile.py find it; --analyze also writes the report.

Against `tfpipe serve --profile_port PORT` the reply also says where the
requests answered during the capture spent their time (queue, batch wait,
model, hand-off, JSON) and what to change; --analyze adds the model call per
batch from the trace (each batch is a step marker) and writes serving.json.

TensorFlow is imported only after a tfpipe capture: its import takes
seconds, and a capture sent that late can miss a short burst of load.
"""

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

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


def _capture_tfpipe(address: str, logdir: str, duration_ms: int) -> dict:
    query = urllib.parse.urlencode({"duration_ms": duration_ms, "logdir": os.path.abspath(logdir)})
    request = urllib.request.Request(f"http://{address}/capture?{query}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=duration_ms / 1000 + 120) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        raise RuntimeError(json.loads(e.read() or b"{}").get("error", str(e))) from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    os.makedirs(FLAGS.logdir, exist_ok=True)
    bare = FLAGS.address.split("://", 1)[-1]
    protocol = FLAGS.protocol
    if protocol == "auto":
        protocol = "tfpipe" if _is_tfpipe(bare) else "grpc"
    reply = {}
    try:
        if protocol == "tfpipe":
            reply = _capture_tfpipe(bare, FLAGS.logdir, FLAGS.duration_ms)
        else:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel

            # The client wants a grpc:// address; accept a bare host:port as the flag says.
            tf.profiler.experimental.client.trace(
                f"grpc://{bare}", FLAGS.logdir, FLAGS.duration_ms, num_tracing_attempts=FLAGS.attempts
            )
    except Exception as e:  # pylint: disable=broad-except
        print(f"error: no profile captured from {FLAGS.address}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    from tfpipe.profile import report  # pylint: disable=import-outside-toplevel

    try:
        run_dir = report.find_run_dir(FLAGS.logdir)
    except report.ProfileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"[tfpipe] captured {FLAGS.duration_ms} ms from {FLAGS.address} ({protocol}) -> {run_dir}")
    if "serving" in reply:
        return _serving(reply["serving"], run_dir, report)
    if FLAGS.analyze:
        result = report.analyze(run_dir)
        print(report.summary(result))
        if result.get("verdict") not in report.VERDICTS:
            print("error: the capture holds no measured steps (see the report above)", file=sys.stderr)
            return 1
    return 0



def _serving(account: dict, run_dir, report) -> int:
    """A model server's capture: where its requests' time went, and (--analyze) its model calls in the trace."""
    from tfpipe.serve import metrics  # pylint: disable=import-outside-toplevel

    if not account.get("requests"):
        print("error: the server answered no requests during the capture: send load while capturing",
              file=sys.stderr)
        return 1
    print("[tfpipe] requests during the capture: " + metrics.summary(account).replace("\n", "\n[tfpipe] "))
    for line in account.get("advice", []):
        print(f"[tfpipe] try: {line}")
    if FLAGS.analyze:
        traced = report.analyze(run_dir)
        if traced.get("markers"):
            account["trace"] = {"batches": traced["markers"], "model_call_ms": traced["step_time_ms"]}
            t = traced["step_time_ms"]
            print(f"[tfpipe] trace: {traced['markers']} batches, model call {t['mean']:.3f} ms per batch "
                  f"(min {t['min']:.3f}, max {t['max']:.3f})")
        path = os.path.join(run_dir, "serving.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(account, f, indent=2)
        print(f"[tfpipe] serving report -> {path}")
    return 0

"""The baseline most people write first: a threaded standard-library HTTP server calling `model.predict`.

    python -m tfpipe.serve.naive --workdir RUN [--port 0]

Only for `benchmarks/serving.py`: it answers the same predict requests as
`tfpipe serve` (row format), running the config's preprocessing eagerly and
then `model.predict` on each request's rows, one request per thread, no
batching across requests. `model.predict` builds a data adapter and an
iterator per call (~76 ms a call measured here on the digits MLP), which is
what this server is for: showing that cost next to one compiled call per batch.
"""

from __future__ import annotations

import argparse
import http.server
import json
import sys
from pathlib import Path

import numpy as np


def main(argv) -> int:
    p = argparse.ArgumentParser(prog="tfpipe.serve.naive")
    p.add_argument("--workdir", required=True, help="a finished run: config.yaml and model.keras")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)

    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfpipe import config as config_lib  # pylint: disable=import-outside-toplevel
    from tfpipe.serve import export, servable  # pylint: disable=import-outside-toplevel

    cfg = config_lib.load(Path(args.workdir) / "config.yaml")
    model = keras.models.load_model(Path(args.workdir) / "model.keras", compile=False)
    raw = export.raw_spec(cfg.data)
    if len(raw) != 1:
        print("error: the naive baseline serves single-input models only", file=sys.stderr)
        return 2
    (name, spec), = raw.items()
    # The export's own steps and statistics: recomputing `normalize` statistics
    # here could differ (data.deterministic: false reads another sample).
    path, _ = servable.resolve(Path(args.workdir) / "export" / export.model_name(cfg))
    steps = json.loads((path / "assets.extra" / export.STEPS_FILE).read_text())
    prep = export.preprocessor(steps, raw)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the load generator expects

        def _reply(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # pylint: disable=invalid-name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            values = body["instances"]
            if spec.dtype == tf.string:
                x = tf.constant(np.array(servable._bytes(values, "instances"), dtype=object))  # pylint: disable=protected-access
            else:
                x = tf.constant(np.asarray(values, dtype=spec.dtype.as_numpy_dtype))
            y = model.predict(prep({name: x}), verbose=0)
            self._reply(200, {"predictions": y.tolist()})

        def log_message(self, format, *a):  # pylint: disable=redefined-builtin
            pass

    # A listen backlog for 256 clients (the class default is 5); otherwise
    # connects would be retried by the kernel and the baseline judged on that.
    server_cls = type("Server", (http.server.ThreadingHTTPServer,), {"request_queue_size": 1024})
    srv = server_cls((args.host, args.port), Handler)
    srv.daemon_threads = True
    print(f"[tfpipe] naive predict server on http://{args.host}:{srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

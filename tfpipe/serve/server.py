"""The batching model server: TensorFlow Serving's REST API on aiohttp.

    python scripts/serve.py --model_dir RUN/export/mlp [--port 8501] [--host 127.0.0.1] [--max_batch_size 64 ...]

Routes (TF Serving's, so its clients work unchanged):

    POST /v1/models/<name>[/versions/<v>]:predict   {"instances": [...]} or {"inputs": ...}
    GET  /v1/models/<name>[/versions/<v>]           model status
    GET  /v1/models/<name>[/versions/<v>]/metadata  signature_def
    GET  /metrics                                   Prometheus text format
    GET  /monitoring/report                         where a request's time goes (JSON)

Errors are `{"error": "<one line naming the field>"}`: 400 bad input, 404
unknown model, 413 body too large, 503 queue full or shutting down. SIGTERM
(or Ctrl-C) closes the listening socket, answers every request already
accepted, prints the time report and exits 0.

Requests are parsed with orjson on the event loop and queued for the
`Batcher` (tfpipe/serve/batching.py), whose threads make one model call
per batch; the event loop never calls TensorFlow.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time

import orjson
from aiohttp import web

from tfpipe.serve import batching, metrics as metrics_lib, servable as servable_lib

NUMPY = orjson.OPT_SERIALIZE_NUMPY


def new_event_loop():
    """uvloop's event loop when installed (libuv; it cuts the per-request cost of the HTTP layer), else asyncio's."""
    try:
        import uvloop  # pylint: disable=import-outside-toplevel
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": " ".join(str(message).split())}),
                        content_type="application/json")


def _json(payload, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload, option=NUMPY), content_type="application/json")


class ModelServer:
    """The aiohttp application around one servable and its batcher."""

    def __init__(self, servable, options: batching.BatchingOptions, max_rows: int = 1024,
                 max_request_bytes: int = 4 << 20):
        self.servable, self.options, self.max_rows = servable, options, max_rows
        self.max_request_bytes = max_request_bytes
        self.metrics = metrics_lib.ServerMetrics()
        self.batcher = None
        self.draining = False
        self.app = web.Application(client_max_size=max_request_bytes)
        model = "/v1/models/{name:[^/:]+}"
        version = model + "/versions/{version:[0-9]+}"
        for prefix in (model, version):
            self.app.router.add_post(prefix + ":predict", self.predict)
            self.app.router.add_get(prefix, self.status)
            self.app.router.add_get(prefix + "/metadata", self.metadata)
        self.app.router.add_get("/metrics", self.prometheus)
        self.app.router.add_get("/monitoring/report", self.report)
        self.app.on_startup.append(self._start)

    async def _start(self, _app) -> None:
        loop = asyncio.get_running_loop()
        self.batcher = batching.Batcher(self.servable.fn, self.options, loop, self.metrics.batch_size.observe)
        self.metrics.queue_rows = lambda: self.batcher.queued_rows

    def _check_model(self, request) -> web.Response | None:
        name, version = request.match_info["name"], request.match_info.get("version")
        if name != self.servable.name or (version is not None and int(version) != self.servable.version):
            wanted = f"Specific({name}, {version})" if version else f"Latest({name})"
            return _error(404, f"Servable not found for request: {wanted}; serving {self.servable.name} "
                               f"version {self.servable.version}")
        return None

    async def status(self, request):
        return self._check_model(request) or _json(self.servable.status())

    async def metadata(self, request):
        return self._check_model(request) or _json(self.servable.metadata())

    async def prometheus(self, _request):
        return web.Response(text=self.metrics.text(), content_type="text/plain", charset="utf-8",
                            headers={"X-Prometheus-Format": "0.0.4"})

    async def report(self, _request):
        return _json(self.metrics.report())

    async def predict(self, request):
        start = time.perf_counter()
        self.metrics.in_flight += 1
        try:
            response, phases = await self._predict(request, start)
        finally:
            self.metrics.in_flight -= 1
        end = time.perf_counter()
        if phases is not None:
            phases = phases + (end - start - sum(phases),)
        self.metrics.request(response.status, end - start if response.status == 200 else None, phases)
        return response

    async def _predict(self, request, start):
        if self.draining:
            return _error(503, "the server is shutting down"), None
        bad = self._check_model(request)
        if bad:
            return bad, None
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body: expected at most {self.max_request_bytes} bytes "
                               "(--max_request_bytes)"), None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return _error(400, f"request body: malformed JSON: {e}"), None
        try:
            inputs, rows, row_format = self.servable.decode(body, self.max_rows)
        except servable_lib.BadRequest as e:
            return _error(400, str(e)), None
        parsed = time.perf_counter()
        future = asyncio.get_running_loop().create_future()
        try:
            task = self.batcher.submit(inputs, rows, future)
        except batching.Overloaded as e:
            return _error(503, f"overloaded: {e}; retry later"), None
        except batching.Closed as e:
            return _error(503, str(e)), None
        try:
            outputs = await future
        except Exception as e:  # pylint: disable=broad-except  # a model error is the server's, not the client's
            return _error(500, f"model call failed: {type(e).__name__}: {e}"), None
        resumed = time.perf_counter()
        response = _json(_payload(outputs, row_format))
        phases = (parsed - start, task.taken - task.enqueued, task.closed - task.taken, task.done - task.closed,
                  resumed - task.done)
        return response, phases


def _payload(outputs: dict, row_format: bool) -> dict:
    """TF Serving's response shapes: one output is named by the format key alone."""
    if len(outputs) == 1:
        value = next(iter(outputs.values()))
        return {"predictions": value} if row_format else {"outputs": value}
    if row_format:
        n = len(next(iter(outputs.values())))
        return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(n)]}
    return {"outputs": outputs}


# ---------------------------------------------------------------- running


def warm_up(servable) -> None:
    """One call so the first request does not pay the function's first-run cost."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    feed = {}
    for name, spec in servable.inputs.items():
        if spec.dtype == tf.string:
            continue
        feed[name] = tf.constant(np.zeros([1, *[d or 1 for d in spec.shape[1:]]], spec.dtype.as_numpy_dtype))
    if len(feed) == len(servable.inputs):
        servable.fn(**feed)


async def run(server: ModelServer, host: str, port: int, drain_seconds: float = 30.0, profile_port: int = 0,
              on_listen=print, stop: asyncio.Event | None = None, bound: list | None = None) -> dict:
    """Serves until SIGTERM or SIGINT (or `stop` is set), then drains; returns the time report.

    `bound`, if given, receives the port actually bound (for port 0).
    """
    runner = web.AppRunner(server.app, access_log=None, handle_signals=False, shutdown_timeout=drain_seconds)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # pylint: disable=protected-access  # port 0 -> the real one
    if bound is not None:
        bound.append(port)
    if profile_port:
        from tfpipe.profile import capture_server  # pylint: disable=import-outside-toplevel

        capture_server.start(host, profile_port)
        capture_server.add_window("serving", _capture_window(server, asyncio.get_running_loop()))
    on_listen(f"[tfpipe] serving {server.servable.name} version {server.servable.version} on "
              f"http://{host}:{port} (max_batch_size {server.options.max_batch_size}, batch_timeout_micros "
              f"{server.options.batch_timeout_micros}, max_enqueued_batches {server.options.max_enqueued_batches}, "
              f"num_batch_threads {server.options.num_batch_threads})"
              + (f", profile capture on {host}:{profile_port}" if profile_port else ""))
    if stop is None:  # the main thread's server: signals stop it
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    in_flight = server.metrics.in_flight
    # cleanup() closes the listening socket first, then waits (up to
    # drain_seconds) for the handlers already running: accepted requests are
    # answered, new connections are refused.
    await runner.cleanup()
    server.draining = True
    server.batcher.close()
    report = server.metrics.report()
    on_listen(f"[tfpipe] stopped: drained {in_flight} request(s) in flight; "
              + metrics_lib.summary(report).replace("\n", "\n[tfpipe] "))
    return report


def _capture_window(server: ModelServer, loop):
    """A profile capture's account of the server: where the requests answered during it spent their time."""

    def on_loop(fn):  # the metrics belong to the event loop's thread
        async def call():
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(30)

    def begin():
        mark = on_loop(server.metrics.mark)

        def finish():
            report = on_loop(lambda: server.metrics.report(since=mark))
            report["advice"] = metrics_lib.advice(report, server.options)
            report["options"] = dataclasses.asdict(server.options)
            return report

        return finish

    return begin


@contextlib.contextmanager
def in_thread(servable, options: batching.BatchingOptions, host: str = "127.0.0.1", profile_port: int = 0, **limits):
    """Runs a server in a thread of this process (tests, the tuner); yields its predict URL.

    Saves reloading TensorFlow and the model for every batching setting; the
    clients must still run in another process (`loadgen.Runner`).
    """
    server = ModelServer(servable, options, **limits)
    ready, bound, box = threading.Event(), [], {}

    def main():
        loop = new_event_loop()
        box["loop"], box["stop"] = loop, asyncio.Event()
        try:
            loop.run_until_complete(run(server, host, 0, profile_port=profile_port, on_listen=lambda line: ready.set(),
                                        stop=box["stop"], bound=bound))
        finally:
            ready.set()
            loop.close()

    thread = threading.Thread(target=main, name="tfpipe-serve", daemon=True)
    thread.start()
    ready.wait(60)
    if not bound:
        raise RuntimeError("the in-thread server did not start")
    try:
        yield f"http://{host}:{bound[0]}/v1/models/{servable.name}:predict", server
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(60)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfpipe serve", description="Serve an export over TF Serving's REST API.")
    p.add_argument("--model_dir", required=True, help="export/<name> (serves the highest version) or a version dir")
    p.add_argument("--model_name", default=None, help="name in the URL; default the base directory's name")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 127.0.0.1 unless told otherwise")
    p.add_argument("--port", type=int, default=8501, help="0 picks a free port (printed at start)")
    d = batching.BatchingOptions()
    p.add_argument("--max_batch_size", type=int, default=d.max_batch_size, help="rows per model call; 1 = no batching")
    p.add_argument("--batch_timeout_micros", type=int, default=d.batch_timeout_micros,
                   help="how long a batch waits for more rows after its first request")
    p.add_argument("--max_enqueued_batches", type=int, default=d.max_enqueued_batches,
                   help="queue bound in full batches; beyond it requests get 503 at once")
    p.add_argument("--num_batch_threads", type=int, default=d.num_batch_threads, help="threads calling the model")
    p.add_argument("--max_rows_per_request", type=int, default=1024)
    p.add_argument("--max_request_bytes", type=int, default=4 << 20)
    p.add_argument("--drain_seconds", type=float, default=30.0, help="on SIGTERM, wait this long for requests in flight")
    p.add_argument("--profile_port", type=int, default=0,
                   help="also serve on-demand profile captures (scripts/capture_profile.py) on host:PORT")
    return p


def main(argv) -> int:
    """`tfpipe serve`: parses argv (without the program name) and serves until SIGTERM; returns the exit code."""
    args = parser().parse_args(argv)
    options = batching.BatchingOptions(args.max_batch_size, args.batch_timeout_micros, args.max_enqueued_batches,
                                       args.num_batch_threads)
    try:
        options.check()
        for name in ("max_rows_per_request", "max_request_bytes"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name}: expected an integer >= 1. Received: {getattr(args, name)}")
        servable = servable_lib.load(args.model_dir, args.model_name)
    except (ValueError, servable_lib.ModelNotFound, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    warm_up(servable)
    server = ModelServer(servable, options, args.max_rows_per_request, args.max_request_bytes)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(run(server, args.host, args.port, args.drain_seconds, args.profile_port,
                           on_listen=lambda line: print(line, flush=True)))
    except OSError as e:  # port taken, unknown host
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    sys.exit(main(sys.argv[1:]))

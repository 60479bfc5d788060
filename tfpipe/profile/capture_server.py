"""On-demand profile capture from a running job, on an address tfpipe chooses.

TensorFlow 2.21's profiler server (`tf.profiler.experimental.server.start`)
listens on `[::]:port`, every interface, and takes no host argument. So for
`profile.server_host` other than `all` tfpipe serves captures itself: a small
HTTP server, bound to that host (127.0.0.1 by default), runs in a daemon
thread of the training process. `scripts/capture_profile.py` asks it:

    POST /capture?duration_ms=2000&logdir=/abs/path   -> {"run_dir": "...", ...accounts}
    GET  /                                             -> {"tfpipe": "capture"}

and the server traces this process with `tf.profiler.experimental.start/stop`
for that long, writing under `logdir/plugins/profile/<run>/` like TensorFlow's
own server would. The logdir is a path on the training host: this is for a
person on that host, or on the other end of an SSH tunnel, not for a remote
TensorBoard's "Capture profile" button (that needs `server_host: all`).

A process may add its own account of the capture window
(`add_window`): the model server adds where its requests' time went, and
the reply carries it beside the run directory.

Only one trace can run in a process at a time; `lock` is shared with the
scheduled trace window (`tfpipe.profile.trace.Profiler`), and a capture asked for
while the window is open is refused with HTTP 409 rather than queued.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
import time
import urllib.parse

import tensorflow as tf

# One profiler session per process: held by whoever is tracing.
lock = threading.Lock()

MAX_DURATION_MS = 600_000

# name -> begin(): called as a capture starts; returns finish() -> a JSON-able dict for the reply.
_windows = {}


def add_window(name: str, begin) -> None:
    """Adds `begin()`'s account of every capture window to the capture's reply, under `name`."""
    _windows[name] = begin


class Busy(RuntimeError):
    """Another trace (the scheduled window or a capture) holds the profiler."""


def run_dirs(logdir) -> set[str]:
    """The profile runs under `logdir/plugins/profile/`, where TensorBoard looks."""
    root = os.path.join(logdir, "plugins", "profile")
    return {os.path.join(root, d) for d in os.listdir(root)} if os.path.isdir(root) else set()


def capture(logdir: str, duration_ms: int) -> tuple[str, dict]:
    """Traces this process for `duration_ms` into `logdir`; returns the new run directory and the windows' accounts.

    Raises:
        Busy: another trace is running in this process.
        RuntimeError: TensorFlow's profiler wrote nothing.
    """
    if not lock.acquire(blocking=False):
        raise Busy("another trace is running in this process (the scheduled window or a capture)")
    try:
        os.makedirs(logdir, exist_ok=True)
        before = run_dirs(logdir)
        tf.profiler.experimental.start(logdir)
        try:
            finish = {name: begin() for name, begin in _windows.items()}
            time.sleep(duration_ms / 1000)
            accounts = {name: f() for name, f in finish.items()}
        finally:
            tf.profiler.experimental.stop()
    finally:
        lock.release()
    new = run_dirs(logdir) - before
    if not new:
        raise RuntimeError(f"the profiler wrote no run under {logdir}/plugins/profile")
    return max(new, key=os.path.getmtime), accounts


class _Handler(http.server.BaseHTTPRequestHandler):
    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # pylint: disable=invalid-name
        self._reply(200, {"tfpipe": "capture", "pid": os.getpid()})

    def do_POST(self):  # pylint: disable=invalid-name
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path != "/capture":
            self._reply(404, {"error": f"unknown path {url.path!r}; expected /capture"})
            return
        try:
            duration_ms = int(query.get("duration_ms", ["2000"])[0])
            logdir = query["logdir"][0]
        except (KeyError, ValueError):
            self._reply(400, {"error": "expected ?duration_ms=<int>&logdir=<absolute path>"})
            return
        if not os.path.isabs(logdir) or not 0 < duration_ms <= MAX_DURATION_MS:
            self._reply(400, {"error": f"expected an absolute logdir and 0 < duration_ms <= {MAX_DURATION_MS}, "
                                       f"got logdir={logdir!r} duration_ms={duration_ms}"})
            return
        try:
            run_dir, accounts = capture(logdir, duration_ms)
        except Busy as e:
            self._reply(409, {"error": str(e)})
            return
        except Exception as e:  # pylint: disable=broad-except
            self._reply(500, {"error": f"{type(e).__name__}: {e}"})
            return
        self._reply(200, {"run_dir": run_dir, **accounts})

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass  # requests are not training output


def start(host: str, port: int) -> http.server.ThreadingHTTPServer:
    """Serves captures on `host:port` from a daemon thread.

    Raises:
        OSError: the address cannot be bound (port in use, unknown host).
    """
    cls = http.server.ThreadingHTTPServer
    if ":" in host:  # an IPv6 address such as ::1
        cls = type("ThreadingHTTPServer6", (cls,), {"address_family": socket.AF_INET6})
    server = cls((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="tfpipe-capture-server", daemon=True).start()
    return server

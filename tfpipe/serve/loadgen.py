"""A load generator for TF Serving-style predict endpoints, checking every answer.

Two scenarios, both with bounded request counts (and a time cap):

- closed loop: `concurrency` clients, each sending its next request as soon
  as the previous answer arrives (throughput at a fixed number of users);
- open loop: Poisson arrivals at a fixed rate (MLPerf's server scenario):
  a request is sent at its arrival time whether or not earlier ones are
  answered, and its latency counts from that time, so a stalled server
  cannot hide its queue (no coordinated omission).

Every 200 answer is compared with the model's own prediction for the row it
sent (`expected`), so a lost, swapped or wrong answer is counted, not
timed. Latency percentiles come from the exact sorted samples.

This module imports no TensorFlow: `Runner` starts it in a separate process
(`spawn`) so the client does not share the server's interpreter — on 2 cores
a client in the server's process would starve it.

Example:

```python
with loadgen.Runner() as runner:
    stats = runner.closed("http://127.0.0.1:8501/v1/models/mlp:predict", bodies, expected, 64, 2000)
```
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import multiprocessing
import random
import time
import urllib.parse

import numpy as np
import orjson

PERCENTILES = (50, 90, 99, 99.9)


class _Tally:
    def __init__(self, expected, atol):
        self.expected, self.atol = expected, atol
        self.latencies: list[float] = []
        self.codes: dict[int, int] = {}
        self.wrong = 0
        self.failed = 0  # no HTTP answer at all (connection refused, reset)
        self.first_error = ""

    def fail(self, e: Exception) -> None:
        self.failed += 1
        if not self.first_error:
            self.first_error = f"{type(e).__name__}: {e}"

    def check(self, answers) -> None:
        for a in answers:
            self.answer(*a)

    def answer(self, status: int, body: bytes, row: int, seconds: float) -> None:
        self.codes[status] = self.codes.get(status, 0) + 1
        if status != 200:
            if not self.first_error:
                self.first_error = f"{status}: {body[:200].decode(errors='replace')}"
            return
        got = np.asarray(orjson.loads(body)["predictions"], dtype=np.float64).ravel()
        want = self.expected[row].ravel()
        if got.shape != want.shape or not np.allclose(got, want, atol=self.atol, rtol=0):
            self.wrong += 1
            return
        self.latencies.append(seconds)

    def result(self, sent: int, wall: float, **extra) -> dict:
        lat = np.sort(np.asarray(self.latencies)) * 1000.0
        pct = {f"p{p:g}": float(np.percentile(lat, p)) if len(lat) else None for p in PERCENTILES}
        return {
            "sent": sent, "ok": len(self.latencies), "codes": {str(k): v for k, v in sorted(self.codes.items())},
            "wrong": self.wrong, "failed": self.failed, "lost": sent - sum(self.codes.values()) - self.failed,
            "seconds": wall, "throughput": len(self.latencies) / wall if wall else 0.0,
            "latency_ms": {**pct, "mean": float(lat.mean()) if len(lat) else None,
                           "max": float(lat[-1]) if len(lat) else None},
            "first_error": self.first_error, "latencies_ms": lat.tolist(), **extra,
        }


class _Connections:
    """Keep-alive HTTP/1.1 connections to one server, speaking just enough of the protocol.

    A hand-rolled client rather than aiohttp's: per request it is one write
    and two reads on a raw stream, a fraction of aiohttp's client CPU, so on
    a 2-core machine the load generator leaves the cores to the server.
    Answers are stored raw and checked after the clock stops.
    """

    def __init__(self, url: str, limit: int):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = parsed.hostname, parsed.port or 80, parsed.path
        self.limit, self.opened = limit, 0
        self.idle: asyncio.LifoQueue = asyncio.LifoQueue()

    def request(self, body: bytes) -> bytes:
        head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        return head.encode() + body

    async def acquire(self):
        if not self.idle.empty() or self.opened >= self.limit:
            return await self.idle.get()
        self.opened += 1
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError:
            self.opened -= 1
            raise

    def release(self, conn) -> None:
        self.idle.put_nowait(conn)

    def drop(self, conn) -> None:
        self.opened -= 1
        conn[1].close()

    async def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait()[1].close()

    @staticmethod
    async def post(conn, data: bytes) -> tuple[int, bytes, bool]:
        reader, writer = conn
        writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        i = lower.find(b"content-length:")
        n = int(head[i + 15:head.index(b"\r\n", i)]) if i >= 0 else 0
        body = await reader.readexactly(n)
        return status, body, b"connection: close" in lower


async def _send(pool, data, row, answers, tally, t0):
    try:
        conn = await pool.acquire()
    except OSError as e:
        tally.fail(e)
        return
    try:
        status, body, close = await pool.post(conn, data)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
        pool.drop(conn)
        tally.fail(e)
        return
    answers.append((status, body, row, time.perf_counter() - t0))
    if close:
        pool.drop(conn)
    else:
        pool.release(conn)


async def _closed(url, bodies, expected, concurrency, requests, max_seconds, atol):
    tally, answers = _Tally(expected, atol), []
    pool = _Connections(url, concurrency)
    data = [pool.request(b) for b in bodies]
    counter = iter(range(requests))
    sent = 0
    start = time.perf_counter()
    stop_at = start + max_seconds

    async def client():
        nonlocal sent
        for i in counter:
            if time.perf_counter() > stop_at:
                return
            sent += 1
            row = i % len(bodies)
            await _send(pool, data[row], row, answers, tally, time.perf_counter())

    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    await pool.close()
    tally.check(answers)
    return tally.result(sent, wall, scenario="closed", concurrency=concurrency)


async def _open(url, bodies, expected, rate, requests, max_seconds, atol, seed, max_connections):
    tally, answers = _Tally(expected, atol), []
    pool = _Connections(url, max_connections)
    data = [pool.request(b) for b in bodies]
    rng = random.Random(seed)
    tasks = []
    start = time.perf_counter()
    t = start
    for i in range(requests):
        t += rng.expovariate(rate)
        if t - start > max_seconds:
            break
        delay = t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        row = i % len(bodies)
        # Latency counts from the scheduled arrival, not from when the
        # client got round to sending (which may be later under load).
        tasks.append(asyncio.create_task(_send(pool, data[row], row, answers, tally, t)))
    offered_seconds = time.perf_counter() - start
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    await pool.close()
    tally.check(answers)
    out = tally.result(len(tasks), wall, scenario="open", rate=rate)
    out["offered_rate"] = len(tasks) / offered_seconds if offered_seconds else 0.0
    # Open loop: the rate achieved is what was answered over the arrival window.
    out["throughput"] = out["ok"] / max(offered_seconds, 1e-9)
    return out


def _run(coro):
    try:
        import uvloop  # pylint: disable=import-outside-toplevel  # a cheaper client leaves more CPU to the server

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def closed_loop(url, bodies, expected, concurrency, requests, max_seconds=30.0, atol=1e-4) -> dict:
    """`concurrency` clients until `requests` are sent (or `max_seconds` pass); stats of the answers.

    Args:
        url: the predict URL.
        bodies: request bodies (bytes), one per row of `expected`; sent in turn.
        expected: the model's own prediction per body; answers must match to `atol`.
        concurrency: clients, each with its own keep-alive connection.
        requests: requests in all; none are sent after `max_seconds`.

    Returns:
        dict: sent, ok, codes, wrong, failed (no answer), lost, throughput
        (ok per second), latency_ms (p50, p90, p99, p99.9, mean, max).
    """
    return _run(_closed(url, bodies, np.asarray(expected), concurrency, requests, max_seconds, atol))


def open_loop(url, bodies, expected, rate, requests, max_seconds=30.0, atol=1e-4, seed=0,
              max_connections=512) -> dict:
    """Poisson arrivals at `rate` per second, `requests` of them (or `max_seconds` of arrivals); as `closed_loop`."""
    return _run(_open(url, bodies, np.asarray(expected), rate, requests, max_seconds, atol, seed, max_connections))


def merge(parts: list[dict]) -> dict:
    """One result from the results of several load-generator processes run at the same time."""
    if len(parts) == 1:
        return parts[0]
    lat = np.sort(np.concatenate([np.asarray(p["latencies_ms"]) for p in parts]))
    out = dict(parts[0])
    for k in ("sent", "ok", "wrong", "failed", "lost"):
        out[k] = sum(p[k] for p in parts)
    codes: dict = {}
    for p in parts:
        for c, n in p["codes"].items():
            codes[c] = codes.get(c, 0) + n
    out["codes"] = codes
    out["seconds"] = max(p["seconds"] for p in parts)
    out["throughput"] = sum(p["throughput"] for p in parts)
    if "offered_rate" in out:
        out["offered_rate"] = sum(p["offered_rate"] for p in parts)
        out["rate"] = sum(p["rate"] for p in parts)
    if "concurrency" in out:
        out["concurrency"] = sum(p["concurrency"] for p in parts)
    out["first_error"] = next((p["first_error"] for p in parts if p["first_error"]), "")
    out["latencies_ms"] = lat.tolist()
    out["latency_ms"] = {**{f"p{p:g}": float(np.percentile(lat, p)) if len(lat) else None for p in PERCENTILES},
                         "mean": float(lat.mean()) if len(lat) else None, "max": float(lat[-1]) if len(lat) else None}
    return out


def _split(total: int, k: int) -> list[int]:
    return [total // k + (1 if i < total % k else 0) for i in range(k)]


class Runner:
    """Runs the load generator in `processes` separate processes, reused across calls.

    Each call splits the clients (closed loop) or the arrival rate (open
    loop: independent Poisson streams add up to a Poisson stream) across
    the processes and merges their answers. More than one process lets the
    client keep up with a batching server when one Python process cannot.
    """

    def __init__(self, processes: int = 1):
        self.processes = processes

    def __enter__(self):
        self.pool = concurrent.futures.ProcessPoolExecutor(self.processes,
                                                           mp_context=multiprocessing.get_context("spawn"))
        return self

    def __exit__(self, *exc):
        self.pool.shutdown()

    def closed(self, url, bodies, expected, concurrency, requests, **kwargs) -> dict:
        k = max(1, min(self.processes, concurrency))
        jobs = [self.pool.submit(closed_loop, url, bodies, expected, c, r, **kwargs)
                for c, r in zip(_split(concurrency, k), _split(requests, k))]
        return merge([j.result() for j in jobs])

    def open(self, url, bodies, expected, rate, requests, **kwargs) -> dict:
        k, seed = self.processes, kwargs.pop("seed", 0)
        jobs = [self.pool.submit(open_loop, url, bodies, expected, rate / k, r, seed=seed + i, **kwargs)
                for i, r in enumerate(_split(requests, k))]
        return merge([j.result() for j in jobs])


def _jsonable(v):
    if isinstance(v, bytes):  # TF Serving's encoding of binary strings
        return {"b64": base64.b64encode(v).decode()}
    if isinstance(v, np.ndarray) and v.dtype == object:
        return [_jsonable(x) for x in v]
    return v


def request_bodies(rows: dict) -> list[bytes]:
    """One row-format body per example: `rows` maps input name -> array of per-example values."""
    names = list(rows)
    n = len(rows[names[0]])
    opt = orjson.OPT_SERIALIZE_NUMPY
    if len(names) == 1:
        return [orjson.dumps({"instances": [_jsonable(rows[names[0]][i])]}, option=opt) for i in range(n)]
    return [orjson.dumps({"instances": [{k: _jsonable(rows[k][i]) for k in names}]}, option=opt) for i in range(n)]

"""Runs one training command as a cluster of local processes.

On a real cluster each machine gets its own `TF_CONFIG` from the job
scheduler. `launch_local` does the same on one machine: it picks free
127.0.0.1 ports, starts the command once per task with that task's
`TF_CONFIG`, prefixes each output line with the task (`[worker 1] ...`),
and treats the processes as one job: if any of them fails, the others are
killed and the job fails.

Example:

```python
from tfpipe.distribute import launch
code = launch.launch_local(["python", "scripts/train.py", "--config", "c.yaml"], num_workers=2)
```
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

# Seconds a process gets to exit after SIGTERM before it is killed.
_GRACE_SECONDS = 10


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1.

    All sockets stay bound until every port is picked, so the n are distinct;
    another program could still take one before the task binds it.
    """
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cluster_spec(num_workers: int, num_ps: int = 0) -> dict:
    """A TF_CONFIG cluster on localhost.

    Without ps tasks: `num_workers` workers, worker 0 acting as chief
    (multi_worker_mirrored). With ps tasks: one chief (the coordinator),
    `num_workers` workers and `num_ps` parameter servers (parameter_server).
    """
    if num_workers < 1 or num_ps < 0:
        raise ValueError(f"expected num_workers >= 1 and num_ps >= 0, got {num_workers} and {num_ps}")
    jobs = {"worker": num_workers}
    if num_ps:
        jobs = {"chief": 1, "worker": num_workers, "ps": num_ps}
    ports = iter(free_ports(sum(jobs.values())))
    return {job: [f"127.0.0.1:{next(ports)}" for _ in range(n)] for job, n in jobs.items()}


def _die_with_parent() -> None:
    """In a task's process before it starts: SIGTERM it when the launcher dies.

    A launcher killed outright (SIGKILL, a test's timeout) cannot stop its
    tasks; without this they lived on, blocked in collectives, holding cores.
    Linux only (prctl PR_SET_PDEATHSIG); elsewhere nothing changes.
    """
    try:
        import ctypes  # pylint: disable=import-outside-toplevel

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stream(proc: subprocess.Popen, prefix: str, out) -> None:
    for line in iter(proc.stdout.readline, b""):
        out.write(f"{prefix} {line.decode('utf-8', 'replace').rstrip()}\n")
        out.flush()


def _stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + _GRACE_SECONDS
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch_local(command: list[str], num_workers: int, num_ps: int = 0, out=None) -> int:
    """Runs `command` once per task of a localhost cluster; returns the job's exit code.

    The job succeeds when every training process (all workers; with ps tasks,
    the chief) exits with 0; then any parameter-server and worker servers,
    which never exit on their own, are stopped. The first process to exit
    with an error fails the job: the others are stopped and its code returned.

    Args:
        command: the program and its arguments, e.g. `python scripts/train.py ...`.
        num_workers: worker processes.
        num_ps: parameter-server processes; > 0 adds a chief (the coordinator).
        out: where prefixed output goes (default sys.stdout).

    Returns:
        0, or the exit code of the first process that failed.
    """
    if not command:
        raise ValueError("expected a command to run after --, e.g. -- python scripts/train.py --config ...")
    out = out or sys.stdout
    cluster = cluster_spec(num_workers, num_ps)
    tasks = [(job, i) for job, addrs in cluster.items() for i in range(len(addrs))]
    # With a coordinator only the chief trains; the servers run until stopped.
    trainers = {("chief", 0)} if num_ps else {("worker", i) for i in range(num_workers)}
    procs, threads = {}, []
    out.write(f"[launch] cluster {json.dumps(cluster)}\n")
    for job, i in tasks:
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": job, "index": i}}))
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)
        procs[(job, i)] = proc
        t = threading.Thread(target=_stream, args=(proc, f"[{job} {i}]", out), daemon=True)
        t.start()
        threads.append(t)

    def forward(signum, _frame):
        out.write(f"[launch] signal {signum}: stopping all tasks\n")
        _stop(list(procs.values()))
        sys.exit(128 + signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = 0
        while True:
            failed = [(t, p.returncode) for t, p in procs.items() if p.poll() not in (None, 0)]
            if failed:
                (job, i), code = failed[0]
                out.write(f"[launch] {job} {i} exited with code {code}: stopping the other tasks\n")
                break
            if all(procs[t].poll() == 0 for t in trainers):
                break
            time.sleep(0.2)
        _stop(list(procs.values()))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for t in threads:
        t.join(timeout=5)
    # A signal's negative return code becomes a conventional shell code.
    code = 128 - code if code < 0 else code
    out.write(f"[launch] job {'succeeded' if code == 0 else f'failed with exit code {code}'}\n")
    return code

"""Multi-process training on localhost: multi_worker_mirrored through
scripts/launch_local.py, a dying worker, the restart, and parameter_server."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tfpipe.distribute import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [sys.executable, "scripts/train.py", "--config", "configs/digits_mlp.yaml"]
LAUNCH = [sys.executable, "scripts/launch_local.py"]


def run(cmd, timeout=300):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def done_lines(output):
    """{task prefix: (accuracy, weights digest)} from each process's final line."""
    found = re.findall(r"\[(\w+ \d)\] \[tfpipe\] done: test accuracy ([\d.]+) .* weights (\w+)", output)
    return {task: (float(acc), digest) for task, acc, digest in found}


def test_launch_local_fails_as_a_whole_and_prefixes_output():
    # Worker 1 fails at once; worker 0 would sleep for 10 minutes unless stopped.
    prog = (
        "import json, os, sys, time; i = json.loads(os.environ['TF_CONFIG'])['task']['index']; "
        "print('hello from', i, flush=True); time.sleep(1); sys.exit(7) if i == 1 else time.sleep(600)"
    )
    start = time.monotonic()
    out = run([*LAUNCH, "--num_workers", "2", "--", sys.executable, "-c", prog], timeout=60)
    assert time.monotonic() - start < 30
    assert out.returncode == 7, out.stdout
    assert "[worker 0] hello from 0" in out.stdout and "[worker 1] hello from 1" in out.stdout
    assert "[launch] worker 1 exited with code 7: stopping the other tasks" in out.stdout


def test_cluster_spec_uses_distinct_free_loopback_ports():
    spec = launch.cluster_spec(2, num_ps=1)
    addresses = spec["chief"] + spec["worker"] + spec["ps"]
    assert len(set(addresses)) == 4 and all(a.startswith("127.0.0.1:") for a in addresses)
    assert list(launch.cluster_spec(3)) == ["worker"]


@pytest.mark.slow
def test_two_workers_match_one_worker(tmp_path):
    # 10 of the default job's 50 epochs: a step all-reduces between two
    # processes on two cores, and the full job took 5 minutes on a busy host.
    # The learning rate raised so 10 epochs reach ~0.95. The two workers read
    # their own shards (another order than the single run's), so the two
    # accuracies agree to 2 points here, not to the bit (measured 1.4 apart).
    short = ["--set", "train.epochs=10", "--set", "optimizer.learning_rate=0.01"]
    multi = run([*LAUNCH, "--num_workers", "2", "--", *TRAIN, "--workdir", str(tmp_path / "multi"), *short,
                 "--set", "runtime.strategy=multi_worker_mirrored"])
    assert multi.returncode == 0, multi.stdout[-3000:]
    single = run([*TRAIN, "--workdir", str(tmp_path / "single"), *short])
    assert single.returncode == 0, single.stderr[-3000:]

    workers = done_lines(multi.stdout)
    assert set(workers) == {"worker 0", "worker 1"}
    # Synchronous all-reduce: both workers end with bit-identical weights.
    assert workers["worker 0"][1] == workers["worker 1"][1]
    # Only the chief wrote into the workdir.
    chief_metrics = json.loads((tmp_path / "multi" / "metrics.json").read_text())
    assert chief_metrics["weights_sha256"].startswith(workers["worker 0"][1])
    assert "(not the chief: outputs discarded)" in multi.stdout
    assert sorted(p.name for p in (tmp_path / "multi").iterdir()) == [
        "checkpoints", "config.yaml", "history.json", "logs", "metrics.json", "model.keras", "report.json",
        "report.png"]
    single_acc = json.loads((tmp_path / "single" / "metrics.json").read_text())["accuracy"]
    assert min(chief_metrics["accuracy"], single_acc) > 0.9, (chief_metrics["accuracy"], single_acc)
    assert abs(chief_metrics["accuracy"] - single_acc) <= 0.02, (chief_metrics["accuracy"], single_acc)


def _start_two_workers(tmp_path, workdir, wait_for):
    """Two multi_worker_mirrored processes on localhost, each logging to a file;
    returns once worker 1 has printed `wait_for`."""
    cluster = launch.cluster_spec(2)
    cmd = [*TRAIN, "--workdir", workdir, "--set", "runtime.strategy=multi_worker_mirrored", "--set", "train.epochs=30",
           "--set", "profile.enabled=false"]  # the profiled two-worker run is test_two_workers_match_one_worker
    procs, logs = [], []
    for i in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        logs.append(tmp_path / f"worker{i}.log")
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(logs[i], "w"), stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 180
    while wait_for not in logs[1].read_text():
        if time.monotonic() > deadline or procs[1].poll() is not None:
            _stop(procs)
            pytest.fail(logs[1].read_text()[-2000:])
        time.sleep(0.2)
    return cmd, procs, logs


def _stop(procs):
    for p in procs:
        p.kill()
        p.wait()


def _resume_both_from(cmd, step):
    """Relaunches the job for 5 epochs: both workers resume from ckpt-`step` and end identical."""
    again = run([*LAUNCH, "--num_workers", "2", "--", *cmd, "--set", "train.epochs=5"])
    assert again.returncode == 0, again.stdout[-3000:]
    for w in ("worker 0", "worker 1"):
        assert re.search(rf"\[{w}\] \[tfpipe\] resuming from .*/checkpoints/ckpt-{step} at step {step}", again.stdout)
    workers = done_lines(again.stdout)
    assert workers["worker 0"][1] == workers["worker 1"][1]


@pytest.mark.slow
def test_dead_worker_stops_the_others_and_the_job_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    cmd, procs, logs = _start_two_workers(tmp_path, workdir, "epoch 4/30")
    try:
        procs[1].kill()
        killed = time.monotonic()
        # Bounded: the survivor's pending all-reduce fails instead of waiting forever.
        code = procs[0].wait(timeout=90)
        waited = time.monotonic() - killed
    finally:
        _stop(procs)
    survivor = logs[0].read_text()
    assert code == 5, survivor[-3000:]
    assert "error: worker:0: lost contact with another task of the cluster" in survivor
    assert "restart the whole job; it resumes from the chief's last checkpoint" in survivor
    print(f"survivor exited {waited:.1f} s after the kill")

    saved = sorted(int(n.split("-")[1].split(".")[0]) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.endswith(".index"))
    assert saved, "the chief saved no checkpoint before the kill"
    _resume_both_from(cmd, saved[-1])


@pytest.mark.slow
def test_sigterm_to_one_worker_stops_every_worker_at_the_same_step(tmp_path):
    # A preempted VM signals one worker; saving is collective, so all workers
    # must agree on the step at which they save and stop.
    workdir = str(tmp_path / "run")
    cmd, procs, logs = _start_two_workers(tmp_path, workdir, "epoch 3/30")
    try:
        procs[1].send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        _stop(procs)
    texts = [log.read_text() for log in logs]
    assert codes == [143, 143], [t[-2000:] for t in texts]
    stops = [re.search(r"preempted \(SIGTERM\): stopped at step (\d+)", t) for t in texts]
    assert all(stops), [t[-2000:] for t in texts]
    step = int(stops[0].group(1))
    assert int(stops[1].group(1)) == step and 80 <= step < 30 * 40
    assert os.path.exists(os.path.join(workdir, "checkpoints", f"ckpt-{step}.index"))
    _resume_both_from(cmd, step)


@pytest.mark.slow
def test_parameter_server_trains_asynchronously(tmp_path):
    out = run([*LAUNCH, "--num_workers", "2", "--num_ps", "1", "--", *TRAIN, "--workdir", str(tmp_path),
               "--set", "runtime.strategy=parameter_server", "--set", "train.epochs=3", "--set", "train.steps_per_loop=10",
               "--set", "optimizer.learning_rate=0.01"])
    assert out.returncode == 0, out.stdout[-3000:]
    assert "[ps 0] [tfpipe] parameter_server: ps:0 serving" in out.stdout
    assert "[worker 1] [tfpipe] parameter_server: worker:1 serving" in out.stdout
    assert "2 worker(s) updating 1 ps asynchronously" in out.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 3 * 40
    assert metrics["accuracy"] > 0.6, metrics  # chance is 0.1
    assert "[launch] job succeeded" in out.stdout

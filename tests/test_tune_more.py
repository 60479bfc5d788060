"""The batch-size, learning-rate and sweep tuners: real trials in child processes, tiny configs."""

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from test_profiling import TensorBoard
from tfpipe import config as config_lib
from tfpipe.tune import sweep

ROOT = Path(__file__).parents[1]
SCRIPT = str(ROOT / "scripts" / "tune.py")
FAST = ["--warmup_seconds", "0.2", "--window_seconds", "0.3", "--windows", "1", "--repeats", "1"]

# Wide examples (16,384 floats, 64 KB each) through a tiny model: memory grows
# with the batch (the batches tf.data holds) while a step stays cheap.
WIDE = """
data:
  source: synthetic
  synthetic: {num_examples: 320, num_classes: 4, features: {x: {shape: [16384]}}}
  split: {validation: 0.2, seed: 0}
model: {name: mlp, params: {hidden_units: [8], dropout: 0.0}}
optimizer: {name: sgd, learning_rate: 0.01}
train: {batch_size: 32, epochs: 2, steps_per_loop: 4}
runtime: {strategy: mirrored, logical_cpus: 2, inter_op_threads: 1, intra_op_threads: 1}
"""


def tune(*args, timeout=600):
    proc = subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc


@pytest.mark.slow
def test_batch_size_curve_stops_at_the_memory_limit_and_compares_at_equal_time(tmp_path):
    config = tmp_path / "wide.yaml"
    config.write_text(WIDE)
    work = tmp_path / "tune"
    # Peak RSS on this machine: about 950-1,030 MB at batch 1024, 1,090-1,200
    # at 2048, 1,350 at 4096, and each doubling past that adds ~0.5-1 GB of
    # held batches: a limit of 1,600 MB stops the curve at 4096 or 8192, with
    # room for another machine's larger TensorFlow start-up at 1024.
    args = ["batch_size", "--config", config, "--workdir", work, "--min_batch", 1024, "--max_batch", 16384,
            "--memory_limit_mb", 1600, "--compare", 1, "--budget_seconds", 1, *FAST]
    proc = tune(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((work / "batch_size.json").read_text())
    curve = {c["batch_size"]: c for c in result["curve"]}
    assert result["replicas"] == 2 and curve[1024]["per_replica"] == 512
    assert curve[1024]["status"] == "ok" and curve[1024]["examples_per_sec"] > 0 and curve[1024]["peak_rss_mb"] > 0
    # No GPU on this machine: device memory is not measured, and says so by None.
    assert all(c["peak_device_mb"] is None for c in curve.values())
    # The first size over the limit is the limit, reported, and nothing larger was tried.
    assert result["limit"] == max(curve) and curve[result["limit"]]["status"] == "oom", result["curve"]
    assert "out of memory" in curve[result["limit"]]["error"]
    assert all(c["status"] == "ok" for b, c in curve.items() if b < result["limit"])
    assert result["fastest"] in curve and result["knee"] in curve
    ran = [e for e in result["equal_time"] if e["status"] == "ok"]
    assert ran and all(e["steps"] > 0 and "accuracy" in e["validation"] for e in ran)
    # The rate scaled linearly with the batch from the config's 32, and a warm-up.
    e = ran[0]
    assert f"optimizer.learning_rate={0.01 * e['batch_size'] / 32:.6g}" in e["overrides"]
    # Warm-up over 10% of the steps its measured rate makes in the 1 s budget, counted in steps.
    rate = curve[e["batch_size"]]["examples_per_sec"]
    assert "optimizer.schedule.unit=steps" in e["overrides"]
    assert f"optimizer.schedule.warmup={max(1, math.ceil(0.1 * rate / e['batch_size']))}" in e["overrides"]
    assert result["best_at_equal_time"] in [x["batch_size"] for x in ran]
    assert "fastest: batch" in result["recommendation"]
    assert (work / "batch_size.png").read_bytes()[:4] == b"\x89PNG"
    assert config_lib.load(work / "tuned.yaml").train.batch_size == result["best_at_equal_time"]
    assert "per replica x 2 replicas" in proc.stdout and "is the limit" in proc.stdout
    # Resumed: every trial read back from the store.
    again = tune(*args)  # the same settings: the same trials
    assert again.returncode == 0
    runs = [line for line in again.stdout.splitlines() if " run 1: " in line]
    assert runs and all("done before" in line for line in runs), again.stdout


def test_lr_range_test_stops_on_divergence_and_suggests_a_rate_below_the_minimum(tmp_path):
    work = tmp_path / "lr"
    # Plain SGD up to a rate of 1,000: the loss blows up, the test stops early.
    proc = tune("lr", "--config", ROOT / "configs" / "digits_mlp.yaml", "--workdir", work, "--lr_steps", 80,
                "--lr_min", 1e-4, "--lr_max", 1e3, "--set", "model.params={hidden_units: [16], dropout: 0.0}",
                "--set", "optimizer.name=sgd", "--set", "train.epochs=20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((work / "lr.json").read_text())
    assert len(result["points"]) < 80 and ("diverged" in result["stopped"] or "not finite" in result["stopped"])
    assert result["suggested"] == pytest.approx(result["min_loss_lr"] / 10)
    assert 1e-4 <= result["suggested"] < result["min_loss_lr"]
    assert result["min_smoothed_loss"] < result["points"][0]["smoothed"]  # the loss did fall before it rose
    tuned = config_lib.load(work / "tuned.yaml")
    assert tuned.optimizer.learning_rate == pytest.approx(result["suggested"], rel=1e-2)
    assert tuned.optimizer.schedule.name == "cosine" and tuned.optimizer.schedule.warmup == 1
    assert (work / "lr.png").read_bytes()[:4] == b"\x89PNG"
    assert "suggested optimizer.learning_rate" in proc.stdout


# A tiny model on the digits: the cluster's start-up, not training, is the cost.
TINY = ["--set", "model.params={hidden_units: [16], dropout: 0.0}", "--set", "train.steps_per_loop=4"]


def _cluster(launcher_output: str) -> dict:
    """Tasks per job of the cluster a launcher started (its first line)."""
    line = next(line for line in launcher_output.splitlines() if line.startswith("[launch] cluster "))
    return {job: len(addrs) for job, addrs in json.loads(line[len("[launch] cluster "):]).items()}


@pytest.mark.slow
def test_batch_size_trials_train_as_a_multi_worker_cluster(tmp_path):
    work = tmp_path / "bs"
    proc = tune("batch_size", "--config", ROOT / "configs" / "digits_mlp.yaml", "--workdir", work, *TINY,
                "--set", "runtime.strategy=multi_worker_mirrored", "--num_workers", 2, "--min_batch", 32,
                "--max_batch", 32, "--compare", 1, "--budget_seconds", 1, *FAST)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((work / "batch_size.json").read_text())
    # Two workers of one replica each: a global batch of 32 is 16 per replica.
    assert result["replicas"] == 2 and result["curve"][0]["per_replica"] == 16
    assert result["curve"][0]["status"] == "ok" and result["curve"][0]["examples_per_sec"] > 0
    ran = [e for e in result["equal_time"] if e["status"] == "ok"]
    assert ran and ran[0]["steps"] > 0 and "accuracy" in ran[0]["validation"]
    # Each trial ran as a cluster of two workers, and both finished (they agreed on every call).
    logs = [p.read_text() for p in (work / "trials").glob("*/stderr.txt")]
    assert len(logs) == 2 and all(_cluster(t) == {"worker": 2} and "job succeeded" in t for t in logs), logs[:1]


@pytest.mark.slow
def test_lr_range_test_runs_under_parameter_servers(tmp_path):
    work = tmp_path / "lr"
    proc = tune("lr", "--config", ROOT / "configs" / "digits_mlp.yaml", "--workdir", work, *TINY,
                "--set", "runtime.strategy=parameter_server", "--num_workers", 1, "--num_ps", 1,
                "--lr_steps", 30, "--lr_min", 1e-4, "--lr_max", 10)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((work / "lr.json").read_text())
    assert len(result["points"]) >= 12 and result["suggested"] > 0
    (log,) = [p.read_text() for p in (work / "trials").glob("*/stderr.txt")]
    assert _cluster(log) == {"chief": 1, "worker": 1, "ps": 1} and "job succeeded" in log, log[-2000:]
    assert "[ps 0] [tfpipe] parameter_server: ps:0 serving" in log
    # The pipeline tuner measures one process: refused in one line.
    proc = tune("pipeline", "--config", ROOT / "configs" / "digits_mlp.yaml", "--workdir", tmp_path / "p",
                "--set", "runtime.strategy=parameter_server", timeout=120)
    assert proc.returncode == 2 and "tunes the input of one process" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_search_space_mistakes_are_one_line_naming_the_key(tmp_path):
    space = tmp_path / "space.yaml"
    cases = [({"optimizer.learning_rate": {"log_uniform": [0, 1]}}, "optimizer.learning_rate: log_uniform: expected"),
             ({"train.batch_size": {"choice": []}}, "train.batch_size: choice: expected a non-empty list"),
             ({"train.batch_size": {"between": [1, 2]}}, "train.batch_size: expected one of"),
             ({"train.no_such_key": {"choice": [1]}}, "no_such_key")]
    for raw, message in cases:
        space.write_text(yaml.safe_dump(raw))
        with pytest.raises(config_lib.ConfigError, match=message):
            sweep.check_space(ROOT / "configs" / "digits_mlp.yaml", [], sweep.load_space(space))
    grid = sweep.grid({"a": ("log_uniform", [1e-4, 1e-2]), "b": ("int", [1, 5]), "c": ("choice", [{"x": 1}, 2])}, 3)
    assert grid == {"a": [1e-4, 1e-3, 1e-2], "b": [1, 3, 5], "c": ['{"x": 1}', 2]}
    # The command line says so in one line, exit 2, before any trial.
    proc = tune("sweep", "--config", ROOT / "configs" / "digits_mlp.yaml", "--workdir", tmp_path / "w",
                "--space", space, timeout=120)
    assert proc.returncode == 2 and "no_such_key" in proc.stderr and "Traceback" not in proc.stderr


def _post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_sweep_prunes_resumes_after_a_kill_and_fills_the_hparams_dashboard(tmp_path):
    space = tmp_path / "space.yaml"
    # Two rates far apart: the tiny one is still near chance after 2 epochs
    # and the median pruner stops it once a good trial has finished.
    space.write_text("optimizer.learning_rate: {choice: [0.02, 0.00001]}\nmodel.params.dropout: {choice: [0.0, 0.1, 0.2]}\n")
    work = tmp_path / "sweep"
    args = ["sweep", "--config", ROOT / "configs" / "digits_mlp.yaml", "--workdir", work, "--space", space,
            "--sampler", "grid", "--trials", 5, "--parallel", 1, "--prune_startup_trials", 1,
            "--prune_warmup_epochs", 1, "--set", "train.epochs=3", "--set", "model.params.hidden_units=[16]"]
    # Killed (SIGKILL, sweep and its trial) once two trials have finished.
    proc = subprocess.Popen([sys.executable, SCRIPT, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    first = []
    try:
        for line in proc.stdout:
            first.append(line)
            if line.startswith("[sweep] trial 1 ("):
                time.sleep(2)  # trial 2 has started
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert any(line.startswith("[sweep] trial 1 (") for line in first), first
    done_before = {n: (work / "trials" / str(n) / "run" / "history.json").stat().st_mtime_ns for n in (0, 1)}

    again = tune(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 finished trial(s) kept, 3 to run" in again.stdout, again.stdout
    assert "left running by a killed sweep" in again.stdout
    result = json.loads((work / "sweep.json").read_text())
    # Trials 0 and 1 were not run again; three more were, the interrupted one is failed.
    assert all(n not in result["ran_this_session"] for n in done_before) and len(result["ran_this_session"]) == 3
    assert {n: (work / "trials" / str(n) / "run" / "history.json").stat().st_mtime_ns for n in done_before} == done_before
    counts = result["counts"]
    assert counts["COMPLETE"] + counts["PRUNED"] == 5 and counts["FAIL"] == 1, counts
    pruned = [t for t in result["trials"] if t["state"] == "PRUNED"]
    assert pruned and all(t["epochs"] < 3 and t["params"]["optimizer.learning_rate"] == 0.00001 for t in pruned)
    best = result["best"]
    assert best["params"]["optimizer.learning_rate"] == 0.02 and best["value"] > 0.5
    assert config_lib.load(work / "tuned.yaml").optimizer.learning_rate == 0.02
    assert (work / "sweep.png").read_bytes()[:4] == b"\x89PNG"

    # TensorBoard's HParams plugin lists every finished trial, with its values and metric.
    tb = TensorBoard(work / "hparams")
    try:
        experiment = _post(tb.port, "/data/plugin/hparams/experiment", {"experimentName": ""})
        names = {h["name"] for h in experiment["hparamInfos"]}
        assert names == {"optimizer.learning_rate", "model.params.dropout", "trial_state"}
        assert [m["name"]["tag"] for m in experiment["metricInfos"]] == ["val_accuracy"]
        groups = _post(tb.port, "/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
        sessions = {g["name"]: g for g in groups["sessionGroups"]}
        finished = {f"trial-{t['number']}": t for t in result["trials"] if t["state"] in ("COMPLETE", "PRUNED")}
        assert set(sessions) == set(finished)
        for name, t in finished.items():
            assert sessions[name]["hparams"]["trial_state"] == t["state"]
            assert sessions[name]["hparams"]["optimizer.learning_rate"] == pytest.approx(t["params"]["optimizer.learning_rate"])
            assert sessions[name]["metricValues"][0]["value"] == pytest.approx(t["curve"][-1])
    finally:
        tb.close()


@pytest.mark.slow
def test_two_sweeps_sharing_one_study_split_its_trials(tmp_path):
    """Two hosts' sweeps (here two processes) on one storage URL: one study, no trial run twice."""
    space = tmp_path / "space.yaml"
    space.write_text("optimizer.learning_rate: {log_uniform: [0.001, 0.1]}\n")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = []
    for host in ("a", "b"):
        args = ["sweep", "--config", ROOT / "configs" / "digits_mlp.yaml", "--workdir", tmp_path / host,
                "--space", space, "--storage", url, "--study", "shared", "--sampler", "random", "--trials", 4,
                "--parallel", 1, "--set", "train.epochs=1", *TINY]
        procs.append(subprocess.Popen([sys.executable, SCRIPT, *map(str, args)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}))
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    results = [json.loads((tmp_path / h / "sweep.json").read_text()) for h in ("a", "b")]
    ran = [set(r["ran_this_session"]) for r in results]
    # Both worked, neither ran a trial the other did, and the study stopped at
    # 4 finished trials, or one past it when the last two ended together.
    assert ran[0] and ran[1] and not ran[0] & ran[1], ran
    numbers = sorted(ran[0] | ran[1])
    assert numbers == list(range(len(numbers))) and len(numbers) in (4, 5), numbers
    import optuna  # pylint: disable=import-outside-toplevel

    trials = optuna.load_study(study_name="shared", storage=url).trials
    assert [t.number for t in trials] == numbers and all(t.state.name == "COMPLETE" for t in trials)
    # Different draws: the two sessions' samplers were seeded apart.
    rates = [t.params["optimizer.learning_rate"] for t in trials]
    assert len(set(rates)) == len(rates), rates
    # Each host's outputs cover the study as it stood when that host ended,
    # trials run on either host included.
    for r, mine, other in ((results[0], ran[0], ran[1]), (results[1], ran[1], ran[0])):
        listed = {t["number"] for t in r["trials"]}
        assert mine <= listed and listed & other, (listed, mine, other)
        assert r["best"] is not None


def test_a_second_host_creating_the_same_study_tables_retries():
    """Two sweeps started together on a new database race to create its tables."""
    from tfpipe.tune import sweep as sweep_lib  # pylint: disable=import-outside-toplevel

    calls = []

    class Storages:
        @staticmethod
        def RDBStorage(url):  # pylint: disable=invalid-name
            calls.append(url)
            if len(calls) == 1:
                raise RuntimeError("(sqlite3.OperationalError) table studies already exists")
            if len(calls) == 2:
                raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: alembic_version.version_num")
            return "storage"

    fake = type("Optuna", (), {"storages": Storages})
    assert sweep_lib._open_storage(fake, "sqlite:///x.db") == "storage" and len(calls) == 3
    calls.clear()

    class Broken(Storages):
        @staticmethod
        def RDBStorage(url):  # pylint: disable=invalid-name
            raise RuntimeError("no such driver")

    with pytest.raises(RuntimeError, match="no such driver"):
        sweep_lib._open_storage(type("Optuna", (), {"storages": Broken}), "nope://")

"""Serving: the export against the trained model, and a real server answering real clients on 127.0.0.1.

The servers run in a thread of this process (TensorFlow is loaded once);
the clients run in a separate process (`loadgen.Runner`), except for the
SIGTERM case, where the server is a subprocess that gets the signal.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfpipe
from tfpipe import models
from tfpipe.data import pipeline, sources, workloads
from tfpipe.serve import batching, export, loadgen, server, servable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """A short digits-MLP run whose Export phase also writes the serving export (export.serving)."""
    workdir = tmp_path_factory.mktemp("mlp")
    cfg = tfpipe.load_config(os.path.join(ROOT, "configs", "digits_mlp.yaml"), overrides=[
        "train.epochs=1", "train.steps_per_epoch=10", "profile.enabled=false", "export.serving=true"])
    tfpipe.train(cfg, workdir)
    return workdir, cfg


@pytest.fixture(scope="module")
def mlp(mlp_run):
    workdir, cfg = mlp_run
    sv = servable.load(workdir / "export" / "mlp")
    x = np.stack([f.numpy() for f, _ in sources.load(cfg.data, "test").examples])
    expected = sv.fn(inputs=tf.constant(x))["predictions"].numpy()
    return sv, x, expected


@pytest.fixture(scope="module")
def runner():
    with loadgen.Runner() as r:
        yield r


def _model_on_test_split(model, cfg):
    preds = []
    for features, _ in pipeline.build(cfg.data, "test", 64, training=False):
        preds.append(model(features, training=False).numpy())
    return np.concatenate(preds)


def test_export_equals_trained_model_on_test_split_digits(mlp_run):
    workdir, cfg = mlp_run
    assert (workdir / "export" / "mlp" / "1" / "saved_model.pb").exists()
    model = keras.models.load_model(workdir / "model.keras", compile=False)
    served = tf.saved_model.load(str(workdir / "export" / "mlp" / "1")).signatures["serving_default"]
    raw = np.stack([f.numpy() for f, _ in sources.load(cfg.data, "test").examples])  # pixels 0..16, unscaled
    got = served(inputs=tf.constant(raw))["predictions"].numpy()
    np.testing.assert_allclose(got, _model_on_test_split(model, cfg), atol=1e-6)


def test_export_equals_trained_model_on_test_split_jpeg_bytes(tmp_path):
    # Encoded bytes in; crop (centre at eval), flip (off at eval) and normalize
    # (training-split statistics) inside the graph.
    workloads.images(str(tmp_path / "img"), num_images=40, size=64, num_shards=4, test_fraction=0.25, log=None)
    rec = tmp_path / "img" / "tfrecord"
    cfg = tfpipe.load_config(None, overrides=[
        "data.source=tfrecord", f"data.files.train={rec}/train-*.tfrecord", f"data.files.test={rec}/test-*.tfrecord",
        f"data.tfrecord.spec_file={rec}/spec.json", "data.cache=''", "data.check=off",
        "data.map.steps=[{op: decode_crop_jpeg, size: 28, ratio: 2}, {op: random_flip}, {op: normalize}]",
        "model.name=cnn", "model.params={filters: [8], dense_units: 8}"])
    model = models.build("cnn", (28, 28, 3), 10, {"filters": [8], "dense_units": 8})
    path = export.export(model, cfg, tmp_path / "export" / "cnn")
    served = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert list(served.structured_input_signature[1]) == ["image"]
    raw = np.array([f.numpy() for f, _ in sources.load(cfg.data, "test").dataset], dtype=object)
    got = served(image=tf.constant(raw))["predictions"].numpy()
    np.testing.assert_allclose(got, _model_on_test_split(model, cfg), atol=1e-5)


def test_correct_predictions_under_64_concurrent_clients(mlp, runner):
    sv, x, expected = mlp
    bodies = loadgen.request_bodies({"inputs": x})
    with server.in_thread(sv, batching.BatchingOptions(max_batch_size=32, batch_timeout_micros=2000)) as (url, srv):
        res = runner.closed(url, bodies, expected, concurrency=64, requests=640, max_seconds=120)
        metrics = urllib.request.urlopen(url.replace(f"/v1/models/{sv.name}:predict", "/metrics")).read().decode()
    assert (res["ok"], res["wrong"], res["failed"], res["lost"]) == (640, 0, 0, 0), res
    # Batched: fewer model calls than requests.
    assert srv.metrics.batch_size.count < 640
    assert 'tfpipe_serve_requests_total{code="200"} 640' in metrics
    assert "tfpipe_serve_batch_size_bucket" in metrics and 'phase="model"' in metrics


def _post(url, body: bytes):
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_bad_input_gets_400_naming_the_field(mlp):
    sv, x, _ = mlp
    row = x[0].tolist()
    cases = {
        b'{"instances": [[1, 2': (400, "malformed JSON"),
        b'[1, 2]': (400, "request body"),
        b'{"rows": [[1]]}': (400, "'instances'"),
        json.dumps({"instances": [[1.0, 2.0]]}).encode(): (400, "instances: expected shape [-1, 64]. Received: [1, 2]"),
        json.dumps({"instances": [["a"] * 64]}).encode(): (400, "instances: expected float32 values"),
        json.dumps({"instances": [row, row[:10]]}).encode(): (400, "ragged"),
        json.dumps({"inputs": {"pixels": [row]}}).encode(): (400, "expected inputs inputs. Received: pixels"),
        json.dumps({"instances": [row] * 5}).encode(): (400, "expected 1 to 4 rows per request. Received: 5"),
        json.dumps({"signature_name": "other", "instances": [row]}).encode(): (400, "signature_name"),
        json.dumps({"instances": [row] * 40}).encode(): (413, "at most 2000 bytes"),
    }
    with server.in_thread(sv, batching.BatchingOptions(), max_rows=4, max_request_bytes=2000) as (url, _srv):
        for body, (status, words) in cases.items():
            code, reply = _post(url, body)
            assert code == status and words in reply["error"] and "\n" not in reply["error"], (body[:60], reply)
        assert _post(url.replace("/mlp:", "/half:"), b"{}")[0] == 404
        base = url.replace(":predict", "")
        assert json.load(urllib.request.urlopen(base))["model_version_status"][0]["state"] == "AVAILABLE"
        meta = json.load(urllib.request.urlopen(base + "/metadata"))
        sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert sig["inputs"]["inputs"]["dtype"] == "DT_FLOAT"
        # The same server still answers good requests, in both formats.
        code, reply = _post(url, json.dumps({"inputs": [row]}).encode())
        assert code == 200 and len(reply["outputs"][0]) == 10


def test_overload_gets_503_and_the_server_stays_healthy(mlp, runner):
    sv, x, expected = mlp
    bodies = loadgen.request_bodies({"inputs": x})
    # Room for one waiting row: 256 clients at once must overflow it.
    opts = batching.BatchingOptions(max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=1)
    with server.in_thread(sv, opts) as (url, srv):
        burst = runner.closed(url, bodies, expected, concurrency=256, requests=1024, max_seconds=120)
        after = runner.closed(url, bodies, expected, concurrency=1, requests=50, max_seconds=60)
    assert burst["codes"].get("503", 0) > 0 and burst["ok"] > 0, burst
    assert burst["ok"] + burst["codes"]["503"] == 1024 and burst["wrong"] == burst["failed"] == 0, burst
    assert "queue full" in burst["first_error"]
    assert (after["ok"], after["wrong"]) == (50, 0), after
    assert srv.metrics.requests[503] == burst["codes"]["503"]


@pytest.mark.slow
def test_sigterm_drains_accepted_requests(mlp_run, mlp):
    workdir, _ = mlp_run
    sv, x, expected = mlp
    # Batches wait 3 s for more rows: the requests are still in flight when SIGTERM comes.
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "scripts", "serve.py"), "--model_dir", str(workdir / "export" / "mlp"),
         "--port", "0", "--batch_timeout_micros", "3000000", "--max_batch_size", "64"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.time() + 180
        while "serving" not in line and time.time() < deadline:
            line = proc.stdout.readline() or line
            assert proc.poll() is None, proc.stderr.read()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        url = f"http://127.0.0.1:{port}/v1/models/mlp:predict"
        results = {}
        clients = threading.Thread(target=lambda: results.update(loadgen.closed_loop(
            url, loadgen.request_bodies({"inputs": x[:20]}), expected[:20], concurrency=20, requests=20,
            max_seconds=60)))
        clients.start()
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        while "tfpipe_serve_in_flight 20" not in urllib.request.urlopen(metrics_url).read().decode():
            assert time.time() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(ConnectionRefusedError):  # no longer accepting
            socket.create_connection(("127.0.0.1", port), timeout=5)
        clients.join(120)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert (results["ok"], results["wrong"], results["failed"], results["lost"]) == (20, 0, 0, 0), results
    assert "drained 20 request(s)" in out


def test_tune_serving_needs_model_dir_and_slo(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "tune.py"), "serving", "--workdir", str(tmp_path),
                          "--slo_p99_ms", "20"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--model_dir is required" in out.stderr and "Traceback" not in out.stderr


def test_capture_profile_against_a_server_says_where_requests_spend_time(mlp, runner, tmp_path):
    sv, x, expected = mlp
    with socket.socket() as s:  # a free port for the capture endpoint
        s.bind(("127.0.0.1", 0))
        profile_port = s.getsockname()[1]
    with server.in_thread(sv, batching.BatchingOptions(), profile_port=profile_port) as (url, srv):
        load = {}
        clients = threading.Thread(target=lambda: load.update(runner.closed(
            url, loadgen.request_bodies({"inputs": x}), expected, concurrency=16, requests=6000, max_seconds=60)))
        clients.start()
        while srv.metrics.timed == 0 and clients.is_alive():
            time.sleep(0.05)
        out = subprocess.run(
            [sys.executable, os.path.join(ROOT, "scripts", "capture_profile.py"), "--address",
             f"127.0.0.1:{profile_port}", "--protocol", "tfpipe", "--duration_ms", "1000", "--logdir", str(tmp_path),
             "--analyze"], capture_output=True, text=True, timeout=300)
        clients.join(120)
    assert out.returncode == 0, out.stderr
    assert load["wrong"] == load["failed"] == 0, load
    assert "requests during the capture:" in out.stdout and "[tfpipe] try:" in out.stdout, out.stdout
    path = re.search(r"serving report -> (\S+)", out.stdout).group(1)
    with open(path, encoding="utf-8") as f:
        account = json.load(f)
    assert 0 < account["requests"] <= load["ok"]
    assert set(account["phases"]) == {"parse", "queue", "batch_wait", "model", "handoff", "serialize"}
    assert abs(sum(p["share"] for p in account["phases"].values()) - 1) < 1e-6
    # The trace holds the batches' model calls as step markers.
    assert account["trace"]["batches"] > 0 and account["trace"]["model_call_ms"]["mean"] > 0

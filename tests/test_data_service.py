"""The tf.data service on localhost: a dispatcher and two workers started
with scripts/data_service.py, the pipeline's service stage, and training
through it."""

import os
import subprocess
import sys
import time

import pytest
import tensorflow as tf

import tfpipe
from tfpipe import config as config_lib
from tfpipe.distribute import launch
from tfpipe.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = [sys.executable, "scripts/data_service.py"]


def _start(args, log):
    proc = subprocess.Popen([*SCRIPT, *args], cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "[data_service]" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)
    return proc


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """host:port of a dispatcher with two registered workers."""
    tmp = tmp_path_factory.mktemp("data_service")
    port = launch.free_ports(1)[0]
    address = f"127.0.0.1:{port}"
    procs = [_start(["dispatcher", "--port", str(port)], tmp / "dispatcher.log")]
    try:
        for i in range(2):
            procs.append(_start(["worker", "--port", "0", "--dispatcher_address", address], tmp / f"worker{i}.log"))
        yield address
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)


def _service_cfg(address, mode="parallel_epochs", job=""):
    return config_lib.load(
        None, [f"data.service.address={address}", f"data.service.processing_mode={mode}", f"data.service.job_name={job}"]
    ).data.service


def test_parallel_epochs_runs_the_pipeline_on_both_workers(service):
    ds = pipeline._on_data_service(tf.data.Dataset.range(20), _service_cfg(service))  # pylint: disable=protected-access
    # Each of the two service workers produces the whole (finite) data set.
    assert sorted(int(x) for x in ds) == sorted(list(range(20)) * 2)


def test_distributed_epoch_hands_out_each_example_once(service):
    ds = pipeline._on_data_service(tf.data.Dataset.range(20), _service_cfg(service, "distributed_epoch"))  # pylint: disable=protected-access
    assert sorted(int(x) for x in ds) == list(range(20))


def test_no_address_leaves_the_pipeline_local():
    ds = tf.data.Dataset.range(3)
    assert pipeline._on_data_service(ds, _service_cfg("")) is ds  # pylint: disable=protected-access


def test_bad_processing_mode_is_a_config_error():
    with pytest.raises(tfpipe.ConfigError, match=r"data.service.processing_mode: expected one of parallel_epochs, distributed_epoch"):
        _service_cfg("127.0.0.1:1", "distributed")


def test_script_requires_a_role_and_a_dispatcher_for_workers():
    for args, message in ((["boss"], "expected one role"), (["worker"], "--dispatcher_address host:port is required")):
        out = subprocess.run([*SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode != 0 and message in out.stderr + out.stdout


@pytest.mark.slow
def test_training_through_the_service(service, tmp_path):
    cfg = tfpipe.load_config(
        "configs/digits_mlp.yaml",
        overrides=[
            "train.epochs=3",
            "optimizer.learning_rate=0.01",
            f"data.service.address={service}",
            "data.service.processing_mode=distributed_epoch",
            "data.service.job_name=digits",
        ],
    )
    train_ds = pipeline.build(cfg.data, "train", 32, training=True)
    # The training input really is read from the service.
    graph = train_ds._as_serialized_graph().numpy()  # pylint: disable=protected-access
    assert b"DataServiceDataset" in graph
    metrics = tfpipe.train(cfg, tmp_path)
    assert metrics["steps"] == 3 * 40
    assert metrics["accuracy"] > 0.8, metrics  # chance is 0.1


def test_service_input_cannot_be_checkpointed_as_an_iterator(tmp_path):
    cfg = tfpipe.load_config(
        "configs/digits_mlp.yaml", overrides=["data.service.address=127.0.0.1:1", "checkpoint.input=iterator"]
    )
    with pytest.raises(ValueError, match="checkpoint.input: 'iterator' cannot be saved when data.service.address is set"):
        tfpipe.train(cfg, tmp_path)

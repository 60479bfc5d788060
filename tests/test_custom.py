"""Bring-your-own pieces that need no training: config by name, import paths,
data arguments, the per-epoch line, and matplotlib left alone."""

import io
import os
import re
import sys
import types
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import tensorflow as tf

import tfpipe
from tfpipe.data import memory
from tfpipe.profile import report
from tfpipe.train import progress


def test_shipped_config_loads_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tfpipe.load_config("digits_mlp").model.params["hidden_units"] == [64, 32]
    with pytest.raises(tfpipe.ConfigError, match=r"^nope: no such config file, and not a shipped config \(expected one of .*digits_mlp"):
        tfpipe.load_config("nope")


def test_import_paths_resolve_from_the_working_directory_or_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mynets.py").write_text("def build(input_shape, num_classes, width=4):\n    return None\n"
                                        "def prep(x, y):\n    return x, y\n")
    cfg = tfpipe.load_config(overrides=["model.name=mynets:build", "model.params={width: 8}",
                                        "data.map.steps=[{op: 'mynets:prep'}]"])
    assert cfg.model.name == "mynets:build"
    with pytest.raises(tfpipe.ConfigError) as e:
        tfpipe.load_config(overrides=["model.name=nosuch.nets:build"])
    assert str(e.value) == ("<defaults>: model.name: cannot import 'nosuch.nets' for 'nosuch.nets:build': "
                            "ModuleNotFoundError: No module named 'nosuch'")
    with pytest.raises(tfpipe.ConfigError, match=r"model.params .*unexpected keyword argument 'depth'"):
        tfpipe.load_config(overrides=["model.name=mynets:build", "model.params={depth: 2}"])
    with pytest.raises(tfpipe.ConfigError, match=r"data.map.steps\[0\].op: module 'mynets' has no attribute 'nope'"):
        tfpipe.load_config(overrides=["data.map.steps=[{op: 'mynets:nope'}]"])


def test_data_arguments_become_sources_or_one_line_errors():
    cfg = tfpipe.load_config().data
    x, y = np.zeros((100, 3), np.float32), np.arange(100) % 4
    splits = memory.convert((x, y), cfg)
    assert {k: v.num_examples for k, v in splits.items()} == {"train": 70, "validation": 10, "test": 20}
    assert splits["train"].num_classes == 4
    ds = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: b >= 0)  # unknown length: counted
    assert memory.convert({"train": ds}, cfg)["train"].num_examples == 100
    with pytest.raises(memory.DataArgumentError, match=r"^data\['train'\]: expected a Dataset of single examples"):
        memory.convert({"train": ds.batch(8)}, cfg)
    with pytest.raises(memory.DataArgumentError, match=r"^data\['test'\]: 100 feature rows but 99 labels"):
        memory.convert({"train": (x, y), "test": (x, y[:99])}, cfg)
    with pytest.raises(memory.DataArgumentError, match=r"^data: a dict must have the keys train, validation"):
        memory.convert({"x": x, "y": y}, cfg)
    with pytest.raises(memory.DataArgumentError, match=r"needs train.steps_per_epoch > 0"):
        memory.convert({"train": ds.repeat()}, cfg)


def test_dataframe_label_column_from_config():
    import pandas as pd  # pylint: disable=import-outside-toplevel
    cfg = tfpipe.load_config().data
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["u", "v", "w"], "label": [0, 1, 1]})
    source = memory.convert({"train": df}, cfg)["train"]
    features, label = next(iter(source.examples))
    assert sorted(features) == ["a", "b"] and features["b"].dtype == tf.string and int(label) == 0
    with pytest.raises(memory.DataArgumentError, match=r"has no column 'label' \(columns: a, b\); set data.csv.label_column"):
        memory.convert({"train": df.drop(columns="label")}, cfg)


def test_dataframe_trains_a_built_in_model_once_its_columns_are_joined(tmp_path):
    import pandas as pd  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=320), "b": rng.normal(size=320)})
    df["label"] = (df.a + df.b > 0).astype(int)
    base = ["train.epochs=3", "profile.enabled=false"]
    # The columns arrive as a dict; the MLP wants one tensor: the error names the step.
    with pytest.raises(tfpipe.ConfigError, match=r"model mlp expects one float tensor .* concat_columns"):
        tfpipe.train(tfpipe.load_config(overrides=[*base, "data.map.steps=[]"]), tmp_path / "a", data=df)
    cfg = tfpipe.load_config(overrides=[*base, "data.map.steps=[{op: concat_columns, columns: [a, b]}]"])
    assert tfpipe.train(cfg, tmp_path / "b", data=df)["accuracy"] > 0.8


def _screen(text):
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n") if line.rsplit("\r", 1)[-1].strip()]


@pytest.mark.parametrize("dynamic, shown", [(True, 19), (False, 50)])
def test_epoch_lines_fit_a_screen_on_terminals_and_all_go_to_logs(dynamic, shown):
    out = io.StringIO()
    line = progress.EpochLine(50, 40, stream=out)
    line.dynamic, line.every = dynamic, (3 if dynamic else 1)  # what a terminal gets for 50 epochs: 1, 3, 6, ..., 48, 8 (a note), 50
    assert progress.EpochLine(50, 40).every in (1, 3)
    for epoch in range(50):
        line.start(epoch)
        line.waiting(0, {}, "compiling the training loop")
        line.update(20, {"loss": 1.0}, 0.5)
        if epoch == 7:
            line.note("profiler calls 20.0 s, not counted")
        line.end({"loss": 1.0, "val_loss": 1.1}, 0.5)
    screen = _screen(out.getvalue())
    assert len(screen) == shown, screen
    assert screen[-1].startswith("[tfpipe] epoch 50/50 40/40")
    assert any("epoch 8/50" in s and "profiler calls 20.0 s, not counted" in s for s in screen)
    assert ("compiling" in out.getvalue()) == dynamic


def test_report_chart_leaves_the_matplotlib_backend_alone(tmp_path):
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # stands in for a notebook's inline backend
    try:
        per_step = [{"first_step": 0, "marker": 0, "input_ms": 1.0, "host_compute_ms": 2.0, "device_compute_ms": 0.0,
                     "other_ms": 0.1}]
        report._chart(per_step, 1, "t", tmp_path / "c.png")  # pylint: disable=protected-access
        assert matplotlib.get_backend() == "svg" and os.path.getsize(tmp_path / "c.png") > 0
        # With the input split into waiting and hand-over, as analyze writes it.
        split = [{**per_step[0], "wait_ms": 0.2, "handover_ms": 0.8}]
        report._chart(split, 1, "t", tmp_path / "d.png")  # pylint: disable=protected-access
        assert os.path.getsize(tmp_path / "d.png") > 0
    finally:
        matplotlib.use(before)


def test_auto_loss_follows_the_label_shape_and_categorical_wants_one_hot():
    from tfpipe.train import custom  # pylint: disable=import-outside-toplevel

    cfg = tfpipe.load_config()
    assert cfg.model.loss == "auto"
    ids, one_hot = tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, 10], tf.float32)
    assert custom.resolve_loss(cfg, ids).model.loss == "sparse_categorical_crossentropy"
    assert custom.resolve_loss(cfg, one_hot).model.loss == "categorical_crossentropy"
    categorical = tfpipe.load_config(overrides=["model.loss=categorical_crossentropy"])
    with pytest.raises(tfpipe.ConfigError, match=r"^model.loss: categorical_crossentropy expects one-hot labels"):
        custom.resolve_loss(categorical, ids)


def test_own_keras_model_on_arrays_then_a_finished_workdir_is_not_trained_again(tmp_path, capsys):
    import keras  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 4)).astype("float32"), rng.integers(0, 3, 200)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    cfg = tfpipe.load_config(overrides=["train.epochs=2", "train.steps_per_epoch=3", "train.steps_per_loop=1",
                                        "profile.enabled=false"])
    result = tfpipe.train(cfg, tmp_path / "run", model=net, data=(x, y))
    assert result["steps"] == 6 and [h["epoch"] for h in result.history] == [1, 2]
    assert result.model.predict(x[:2], verbose=0).shape == (2, 3)
    assert set(result.model.evaluate(x, y, verbose=0, return_dict=True)) == {"loss", "accuracy"}
    capsys.readouterr()
    again = tfpipe.train(cfg, tmp_path / "run", model=net, data=(x, y), resume=True)
    assert "already holds a finished run (6 of 6 steps): nothing to train" in capsys.readouterr().out
    assert dict(again) == dict(result) and again["examples_per_sec"] is not None
    assert again.history == result.history


def test_subclassed_model_evaluates_and_its_finished_workdir_returns_it(tmp_path, capsys):
    import keras  # pylint: disable=import-outside-toplevel

    class Net(keras.Model):  # no get_config: Keras can neither clone nor load it by name
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(120, 4)).astype("float32"), rng.integers(0, 3, 120)
    cfg = tfpipe.load_config(overrides=["train.epochs=1", "train.steps_per_epoch=3", "profile.enabled=false",
                                        "data.map.steps=[]"])
    net = Net()
    first = tfpipe.train(cfg, tmp_path / "run", model=net, data={"train": (x, y), "test": (x, y)})
    scores = first.model.evaluate(x, y, verbose=0)
    capsys.readouterr()
    again = tfpipe.train(cfg, tmp_path / "run", model=net, data={"train": (x, y), "test": (x, y)}, resume=True)
    out = capsys.readouterr().out
    assert "nothing to train" in out and "resuming from" not in out
    assert "register_keras_serializable" in out  # why model.keras did not load here
    assert again.model.evaluate(x, y, verbose=0) == pytest.approx(scores)


def test_a_notebook_gets_a_fresh_workdir_unless_asked_to_resume(tmp_path, monkeypatch, capsys):
    from tfpipe.train import custom  # pylint: disable=import-outside-toplevel

    old = tmp_path / "run"
    (old / "checkpoints").mkdir(parents=True)
    (old / "checkpoints" / "checkpoint").write_text("")
    assert custom.choose_workdir(old, "mlp", None) == old  # a script resumes, as the command line does
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))  # imported is not enough
    assert custom.choose_workdir(old, "mlp", None) == old
    kernel_shell = types.SimpleNamespace(kernel=object())  # what IPython.get_ipython() is in a notebook
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel_shell))
    fresh = custom.choose_workdir(old, "mlp", None)
    assert fresh != old and fresh.name.startswith("run-") and not fresh.exists()
    assert f"{old} holds an earlier run; training afresh in {fresh}" in capsys.readouterr().out
    assert custom.choose_workdir(old, "mlp", True) == old
    monkeypatch.chdir(tmp_path)
    assert custom.choose_workdir(None, "mlp", None).parent == Path("runs")


def test_tensorflow_start_up_lines_are_filtered_unless_asked_for(tmp_path):
    import subprocess  # pylint: disable=import-outside-toplevel

    code = "import tfpipe, tensorflow as tf; tf.constant(1) + 1; print('ran')"
    cpp = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|All log messages before absl::InitializeLog", re.M)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFPIPE_TF_LOGS")}
    quiet = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=True)
    loud = subprocess.run([sys.executable, "-c", code], env={**env, "TFPIPE_TF_LOGS": "1"}, capture_output=True,
                          text=True, timeout=300, check=True)
    assert quiet.stdout == loud.stdout == "ran\n"
    assert not cpp.search(quiet.stderr), quiet.stderr
    assert cpp.search(loud.stderr), loud.stderr  # this CPU-only machine: cudart_stub, cuInit, CPU-feature banner

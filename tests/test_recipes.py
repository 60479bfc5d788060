"""Training recipes acting in tfpipe's own loop: schedules, decay, L2, clipping,
label smoothing, class weights, metrics, early stopping, under default and
mirrored, across resume; and evaluate/predict on the finished run.

Runs are tiny (digits, 10 steps per epoch, no profile), in-process.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import tfpipe
from tfpipe.profile import summaries
from tfpipe.train import evaluate, losses, schedules

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
SPE = 10  # steps per epoch in these tests


def config(name, *overrides, epochs=3, strategy="default"):
    # mirrored: two replicas on the two logical CPUs conftest.py makes.
    base = [f"train.epochs={epochs}", f"train.steps_per_epoch={SPE}", "train.steps_per_loop=5", "profile.enabled=false",
            f"runtime.strategy={strategy}"]
    return tfpipe.load_config(CONFIGS / f"{name}.yaml", overrides=base + list(overrides))


def kernel_norm(model):
    return math.sqrt(sum(float(np.sum(np.square(v))) for v in losses.kernels(model)))


def lr_scalars(workdir):
    return dict(summaries.read_scalars(Path(workdir) / "logs" / "train")["learning_rate"])


# ---------------------------------------------------------------- every recipe config loads


def test_every_recipe_config_loads_and_states_its_command():
    names = sorted(p.stem for p in CONFIGS.glob("recipe_*.yaml"))
    assert len(names) >= 10
    for name in names:
        text = (CONFIGS / f"{name}.yaml").read_text()
        assert f"python scripts/train.py --config configs/{name}.yaml" in text and "# Expect: " in text, name
        assert "EXPECT" not in text, name
        tfpipe.load_config(CONFIGS / f"{name}.yaml")


@pytest.mark.parametrize("override, message", [
    ("optimizer.schedule.name=cosin", "optimizer.schedule.name: expected one of constant, piecewise"),
    ("optimizer.schedule.values=[1.0]", "piecewise needs one more value than boundaries"),
    ("optimizer.schedule.boundaries=[5, 2]", "piecewise needs one more value"),
    ("train.metrics=[accuracy, f1]", "train.metrics: expected names from accuracy, top_k, auc"),
    ("train.metrics=[mae]", "mae is a regression metric"),
    ("train.class_weights=heavy", "train.class_weights: expected 'balanced', a list"),
    ("train.class_weights=[1, -2]", "weight of class 1: expected a number >= 0"),
    ("train.early_stopping.monitor=val_auc", "expected a validation metric, one of val_loss, val_accuracy"),
    ("optimizer.global_clipnorm=1.0", "set one of them, not both"),
])
def test_bad_recipe_keys_fail_at_load_with_one_line(override, message):
    extra = {"optimizer.schedule.values=[1.0]": ["optimizer.schedule.name=piecewise",
                                                "optimizer.schedule.boundaries=[5]"],
             "optimizer.schedule.boundaries=[5, 2]": ["optimizer.schedule.name=piecewise"],
             "train.early_stopping.monitor=val_auc": ["train.early_stopping.enabled=true"],
             "optimizer.global_clipnorm=1.0": ["optimizer.clipnorm=1.0"]}.get(override, [])
    with pytest.raises(tfpipe.ConfigError, match=message) as e:
        tfpipe.load_config(CONFIGS / "recipe_cosine.yaml", overrides=extra + [override])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("overrides, message", [
    (["train.early_stopping.enabled=true", "data.split.validation=0.0"],
     "train.early_stopping.monitor: needs a validation split, and this data has none"),
    (["train.class_weights=[1.0, 2.0]"], "train.class_weights: expected 10 weights \\(one per class\\), got 2"),
    (["train.class_weights={12: 2.0}"], "train.class_weights: class id 12 out of range for 10 classes"),
    (["train.metrics=[top_10]"], "train.metrics: top_10 needs more than 10 classes, got 10"),
])
def test_recipe_errors_found_when_the_data_is_known_are_config_errors(tmp_path, overrides, message):
    with pytest.raises(tfpipe.ConfigError, match=message):
        tfpipe.train(config("recipe_cosine", *overrides), tmp_path)


# ---------------------------------------------------------------- schedules


def test_schedule_rates_at_given_steps():
    def rates(steps, total=100, **keys):
        cfg = tfpipe.load_config(overrides=[f"optimizer.schedule.{k}={v}" for k, v in keys.items()])
        s = schedules.Schedule(0.1, cfg.optimizer.schedule, steps_per_epoch=10, total_steps=total)
        return [round(float(s(t)), 7) for t in steps]

    assert rates([0, 50, 99]) == [0.1, 0.1, 0.1]
    # Warm-up over 2 epochs = 20 steps: step t runs at (t+1)/20; cosine over the remaining 80.
    assert rates([0, 9, 19, 20, 60, 99], name="cosine", warmup=2) == pytest.approx(
        [0.005, 0.05, 0.1, 0.1, 0.05, 0.1 * 0.5 * (1 + math.cos(math.pi * 79 / 80))], abs=1e-7)
    assert rates([0, 49, 50, 99], name="cosine", unit="steps", length=50, alpha=0.1) == pytest.approx(
        [0.1, 0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * 49 / 50)), 0.01, 0.01], abs=1e-7)
    assert rates([0, 29, 30, 69, 70], name="piecewise", boundaries="[3, 7]", values="[1.0, 0.5, 0.1]") == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.01])
    assert rates([0, 9, 10, 25], name="step", every=1, decay_rate=0.5) == pytest.approx([0.1, 0.1, 0.05, 0.025])
    assert rates([0, 5, 10], name="exponential", every=1, decay_rate=0.5) == pytest.approx(
        [0.1, 0.1 * 0.5 ** 0.5, 0.05], rel=1e-6)


def test_cosine_rate_in_tensorboard_continues_across_resume(tmp_path, capsys):
    """TensorBoard's learning_rate is the scheduled one; a resumed run goes on along the same curve."""
    over = ["optimizer.schedule.warmup=1", "optimizer.schedule.length=3"]  # fixed length: independent of epochs
    tfpipe.train(config("recipe_cosine", *over, epochs=2), tmp_path)
    tfpipe.train(config("recipe_cosine", *over, epochs=4), tmp_path)
    assert "resuming from" in capsys.readouterr().out
    s = schedules.Schedule(0.003, config("recipe_cosine", *over).optimizer.schedule, SPE, 4 * SPE)
    # Recorded at each epoch's end: the rate of the next step (optimizer.iterations = step).
    got = lr_scalars(tmp_path)
    assert sorted(got) == [10, 20, 30, 40]
    for step, value in got.items():
        assert value == pytest.approx(float(s(step)), rel=1e-5), step
    assert got[10] == pytest.approx(0.003) and got[40] == pytest.approx(0.0, abs=1e-9)  # peak after warm-up, 0 at the end
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["learning_rate"] for h in history] == pytest.approx([got[k] for k in sorted(got)])


def test_plateau_lowers_the_rate_and_its_wait_survives_resume(tmp_path):
    # min_delta 10: no epoch after the first improves, so each epoch's end cuts the rate (patience 1).
    over = ["optimizer.schedule.patience=1", "optimizer.schedule.min_delta=10.0", "optimizer.schedule.decay_rate=0.1"]
    tfpipe.train(config("recipe_plateau", *over, epochs=2), tmp_path)
    assert lr_scalars(tmp_path) == pytest.approx({10: 0.003, 20: 0.0003})
    tfpipe.train(config("recipe_plateau", *over, epochs=3), tmp_path)  # resumed: the scale and best came back
    assert lr_scalars(tmp_path) == pytest.approx({10: 0.003, 20: 0.0003, 30: 0.00003})


# ---------------------------------------------------------------- regularization


FAST = ["model.params.dropout=0.0", "optimizer.learning_rate=0.01"]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The reference run the regularized ones are compared with (adam, lr 0.01, 3 x 10 steps, no dropout)."""
    return tfpipe.train(config("recipe_label_smoothing", "train.label_smoothing=0.0", *FAST), tmp_path_factory.mktemp("plain"))


def test_weight_decay_and_l2_shrink_the_weights(plain, tmp_path):
    decayed = tfpipe.train(config("recipe_weight_decay", "optimizer.weight_decay=2.0", *FAST), tmp_path / "wd")
    l2 = tfpipe.train(config("recipe_l2", "model.l2=0.01", *FAST), tmp_path / "l2")
    ref = kernel_norm(plain.model)
    # Decoupled decay: 30 steps of w *= (1 - 0.01 * 2) shrink by about 0.98 ** 30 = 0.55.
    assert kernel_norm(decayed.model) < 0.75 * ref, (kernel_norm(decayed.model), ref)
    assert kernel_norm(l2.model) < 0.95 * ref, (kernel_norm(l2.model), ref)


def test_label_smoothing_and_class_weights_change_what_is_learned(plain, tmp_path):
    smooth = tfpipe.train(config("recipe_label_smoothing", "train.label_smoothing=0.5", *FAST), tmp_path / "smooth")
    weighted = tfpipe.train(config("recipe_class_weights", "train.class_weights={0: 0.0}", *FAST), tmp_path / "weighted")
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data[:300] / 16).astype("float32")
    zeros = (digits.data[digits.target == 0] / 16).astype("float32")
    # Smoothed targets (0.55 for the label, 0.05 for the others): less confident top probabilities.
    top = lambda m: float(np.mean(np.max(m.predict(x, verbose=0), axis=1)))  # noqa: E731
    assert top(smooth.model) < 0.6 < top(plain.model), (top(smooth.model), top(plain.model))
    # Class 0 weighted 0: its examples teach nothing, so the model never learns to say 0.
    recall0 = lambda m: float(np.mean(np.argmax(m.predict(zeros, verbose=0), axis=1) == 0))  # noqa: E731
    assert recall0(weighted.model) < 0.1 < 0.7 < recall0(plain.model), (recall0(weighted.model), recall0(plain.model))


def test_balanced_class_weights_from_labels():
    ids = np.array([0, 0, 0, 1, 2, 2])
    assert losses.class_weights("balanced", 3, lambda: ids) == pytest.approx([6 / 9, 6 / 3, 6 / 6])
    assert losses.class_weights({1: 3.0}, 3) == [1.0, 3.0, 1.0]
    with pytest.raises(tfpipe.ConfigError, match="expected 3 weights"):
        losses.class_weights([1, 2], 3)
    with pytest.raises(tfpipe.ConfigError, match=r"class\(es\) \[3\] never occur"):
        losses.class_weights("balanced", 4, lambda: ids)


# ---------------------------------------------------------------- clipping


def _update_norm(workdir, cfg_overrides, strategy):
    """||w2 - w1|| of one SGD step at learning rate 1 (steps 1 -> 2, read from model.keras)."""
    over = ["optimizer.name=sgd", "optimizer.learning_rate=1.0", "model.params.dropout=0.0", *cfg_overrides]
    one = lambda epochs: config("recipe_clipping", "train.steps_per_epoch=1", *over, epochs=epochs, strategy=strategy)  # noqa: E731
    w1 = [v.numpy() for v in tfpipe.train(one(1), workdir).model.trainable_variables]
    w2 = [v.numpy() for v in tfpipe.train(one(2), workdir).model.trainable_variables]
    return [float(np.linalg.norm(b - a)) for a, b in zip(w1, w2)]


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_global_clipnorm_bounds_the_update_of_the_whole_batch(tmp_path, strategy):
    # Keras's own global_clipnorm under mirrored clips each replica's half and
    # then sums them: an update of norm ~2 x 0.01 here. tfpipe clips the sum.
    norms = _update_norm(tmp_path, ["optimizer.global_clipnorm=0.01"], strategy)
    assert math.sqrt(sum(n * n for n in norms)) == pytest.approx(0.01, rel=1e-3)


def test_clipnorm_bounds_each_variables_update_under_mirrored(tmp_path):
    norms = _update_norm(tmp_path, ["optimizer.global_clipnorm=0.0", "optimizer.clipnorm=0.001"], "mirrored")
    assert max(norms) == pytest.approx(0.001, rel=1e-3) and all(n <= 0.001 * 1.001 for n in norms)


def test_all_recipes_together_train_the_same_under_mirrored_as_under_default(tmp_path):
    """Two replicas (conftest's logical CPUs) see the same recipe as one: same weights, same metrics."""
    recipe = ["optimizer.name=adamw", "optimizer.weight_decay=0.5", "optimizer.global_clipnorm=0.5", "model.l2=0.001",
              "optimizer.schedule.warmup=0.5", "train.label_smoothing=0.1", "train.class_weights=balanced",
              "train.metrics=[accuracy, auc, precision]", "train.early_stopping.enabled=true", *FAST]
    runs = {s: tfpipe.train(config("recipe_cosine", *recipe, epochs=2, strategy=s), tmp_path / s)
            for s in ("default", "mirrored")}
    for a, b in zip(runs["default"].model.get_weights(), runs["mirrored"].model.get_weights()):
        np.testing.assert_allclose(a, b, atol=2e-5)
    for key in ("loss", "accuracy", "auc", "precision"):
        assert runs["default"][key] == pytest.approx(runs["mirrored"][key], abs=1e-4), key


# ---------------------------------------------------------------- metrics, early stopping, evaluate


@pytest.fixture(scope="module")
def breast_cancer(tmp_path_factory):
    """scikit-learn's breast cancer set (569 x 30, two classes) as an .npz."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    path = tmp_path_factory.mktemp("bc") / "bc.npz"
    np.savez(path, x=bunch.data.astype("float32"), y=bunch.target.astype("int64"))
    return path


def test_auc_precision_recall_of_a_binary_task_reach_metrics_json_and_tensorboard(tmp_path, breast_cancer):
    cfg = config("recipe_metrics", "data.source=npz", f"data.files.train={breast_cancer}",
                 "data.map.steps=[{op: normalize}]", "model.loss=auto", "train.metrics=[accuracy, auc, precision, recall]",
                 *FAST, epochs=4)
    metrics = tfpipe.train(cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["auc"] > 0.95 and saved["precision"] > 0.8 and saved["recall"] > 0.8, saved
    assert saved == metrics.metrics
    assert {"val_auc", "val_precision", "val_recall", "auc"} <= set(metrics.history[-1])
    val = summaries.read_scalars(tmp_path / "logs" / "validation")
    assert val["auc"][-1][1] == pytest.approx(metrics.history[-1]["val_auc"], rel=1e-6)
    # The same numbers from the finished workdir, and on the file itself.
    again = evaluate.metrics(tmp_path, "test")
    assert again["auc"] == pytest.approx(saved["auc"], rel=1e-6) and again["examples"] == 114
    whole = evaluate.metrics(tmp_path, files=str(breast_cancer))
    assert whole["examples"] == 569
    # And they are the numbers scikit-learn gives for the exported model's test predictions.
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    evaluate.predict(tmp_path, tmp_path / "test.json", "test")
    rows = json.loads((tmp_path / "test.json").read_text())["predictions"]
    labels, p1, ids = [r["label"] for r in rows], [r["probabilities"][1] for r in rows], [r["class_id"] for r in rows]
    assert saved["auc"] == pytest.approx(roc_auc_score(labels, p1), abs=0.01)  # Keras: 200 thresholds
    assert saved["precision"] == pytest.approx(precision_score(labels, ids), abs=1e-6)
    assert saved["recall"] == pytest.approx(recall_score(labels, ids), abs=1e-6)


def test_early_stopping_ends_early_exports_the_best_and_survives_resume(tmp_path, capsys):
    # min_delta 10: only the first epoch improves (from +inf), so with patience
    # 2 the run stops after epoch 3; a first run of 2 epochs leaves wait = 1 in
    # its checkpoint, so the resumed run stops after one more epoch.
    over = ["train.early_stopping.patience=2", "train.early_stopping.min_delta=10.0"]
    tfpipe.train(config("recipe_early_stopping", *over, epochs=2), tmp_path)
    result = tfpipe.train(config("recipe_early_stopping", *over, epochs=20), tmp_path)
    out = capsys.readouterr().out
    assert "early stopping: stopped after epoch 3 of 20" in out and "restored its weights" in out
    assert [h["epoch"] for h in result.history] == [1, 2, 3] and result["steps"] == 3 * SPE
    assert result["early_stopping"] == {"monitor": "val_loss", "best": pytest.approx(result.history[0]["val_loss"]),
                                        "best_epoch": 1, "stopped_epoch": 3, "epochs_run": 3, "restored_best": True}
    # model.keras holds epoch 1's weights: its validation loss is epoch 1's, not epoch 3's.
    val = evaluate.metrics(tmp_path, "validation")
    assert val["loss"] == pytest.approx(result.history[0]["val_loss"], rel=1e-5)
    assert abs(val["loss"] - result.history[2]["val_loss"]) > 1e-3
    # A stopped run is finished: running it again trains nothing.
    tfpipe.train(config("recipe_early_stopping", *over, epochs=20), tmp_path)
    assert "already holds a finished run" in capsys.readouterr().out


def test_a_run_resumed_with_early_stopping_newly_on_resumes(tmp_path, capsys):
    """Recipe state is optional in a checkpoint: switching a recipe on for the rest of a run works."""
    tfpipe.train(config("recipe_early_stopping", "train.early_stopping.enabled=false", epochs=1), tmp_path)
    result = tfpipe.train(config("recipe_early_stopping", epochs=2), tmp_path)
    assert "resuming from" in capsys.readouterr().out
    assert result["steps"] == 2 * SPE and result["early_stopping"]["best_epoch"] == 2


@pytest.mark.slow
def test_evaluate_and_predict_scripts_on_a_finished_run(tmp_path):
    """scripts/evaluate.py and scripts/predict.py as a user runs them (also `tfpipe evaluate`/`predict`)."""
    run = tmp_path / "run"
    tfpipe.train(config("recipe_metrics", epochs=2), run)

    def script(name, *args):
        return subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), *args], capture_output=True,
                              text=True, timeout=300)

    done = script("evaluate", "--workdir", str(run), "--split", "validation")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    history = json.loads((run / "history.json").read_text())
    assert shown["examples"] == 180 and shown["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-5)
    assert set(shown) >= {"accuracy", "top_3_accuracy", "auc", "precision", "recall"}

    done = script("predict", "--workdir", str(run), "--output", str(tmp_path / "p.csv"))
    assert done.returncode == 0, done.stderr
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "index,label,class_id," + ",".join(f"p{c}" for c in range(10)) and len(rows) == 1 + 359
    model = keras.models.load_model(run / "model.keras")
    probabilities = np.array([[float(v) for v in r.split(",")[3:]] for r in rows[1:]])
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert [int(r.split(",")[2]) for r in rows[1:]] == list(np.argmax(probabilities, axis=1))
    del model

    bad = script("predict", "--workdir", str(tmp_path / "nothing"), "--output", str(tmp_path / "p.json"))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"error: --workdir {tmp_path / 'nothing'}: expected a finished run holding config.yaml. Received: no such file"]

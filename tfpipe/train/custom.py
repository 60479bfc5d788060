"""Your own model and data in tfpipe's loop: what `tfpipe.train(cfg, model=..., data=...)` adds.

- `model=`: a `keras.Model`, or a builder called as
  `builder(input_shape, num_classes, **model.params)` (or `builder()`), in
  the strategy's scope. A finished model works under the default strategy;
  under `mirrored` and the others its variables must be created in the
  strategy's scope, so pass a builder there.
- `data=`: see `tfpipe.data.memory`; the config's `data.source` becomes
  `python` for the run.
- the workdir: `None` makes a fresh `runs/<name>-<time>`; in a notebook an
  existing run directory is not resumed unless `resume=True` (a cell run
  twice trains twice), elsewhere it is (as the command line does).
- a workdir whose run is finished is not trained again: the saved results
  come back, and the run says so.
- the exported `model.keras` is a compiled copy (the run's loss and
  accuracy), so `keras.models.load_model` gives a model ready for predict
  and evaluate; the same copy is the `Result`'s model.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import os
import sys
from pathlib import Path

from tfpipe import config as config_lib


def _say(msg: str) -> None:
    print(f"[tfpipe] {msg}", flush=True)


# ---------------------------------------------------------------- workdir


def in_notebook() -> bool:
    """True inside a Jupyter/IPython kernel (Colab included).

    Asked of the running IPython shell: a process that merely imported
    ipykernel (a notebook runner, say) is not a notebook.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and hasattr(shell, "kernel")


def run_name(cfg, model) -> str:
    """Names a fresh run directory: the model's name."""
    name = getattr(model, "name", None) or getattr(model, "__name__", None) or cfg.model.name
    return str(name).rpartition(":")[2].replace("<", "").replace(">", "") or "run"


def has_run(workdir: Path) -> bool:
    return (workdir / "checkpoints").is_dir() and any((workdir / "checkpoints").iterdir())


def choose_workdir(workdir, name: str, resume: bool | None) -> Path:
    """The run directory: given, or a fresh one; see the module docstring.

    Args:
        workdir: a path, or None for `runs/<name>-<time>`.
        name: names the fresh directory (the model's name).
        resume: True resumes an existing run, False never does (a fresh
            sibling directory instead), None resumes except in a notebook.
    """
    stamp = f"{datetime.datetime.now():%Y%m%d-%H%M%S}"
    if workdir is None:
        return _unique(Path("runs") / f"{name}-{stamp}")
    workdir = Path(workdir)
    if resume is None:
        resume = not in_notebook()
    if has_run(workdir) and not resume:
        fresh = _unique(workdir.with_name(f"{workdir.name}-{stamp}"))
        _say(f"{workdir} holds an earlier run; training afresh in {fresh} (resume=True continues the earlier run)")
        return fresh
    return workdir


def _unique(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


# ---------------------------------------------------------------- data


def with_data(cfg, data):
    """(cfg, splits): the config pointed at `data=` (source `python`) and its `Source`s; (cfg, None) without."""
    if data is None:
        return cfg, None
    from tfpipe.data import memory  # pylint: disable=import-outside-toplevel

    try:
        splits = memory.convert(data, cfg.data, cfg.train.steps_per_epoch)
    except memory.DataArgumentError as e:
        raise config_lib.ConfigError(str(e)) from None
    return config_lib.replace(cfg, data=dataclasses.replace(cfg.data, source="python", check="off")), splits


def resolve_loss(cfg, label_spec):
    """`cfg` with `model.loss: auto` decided from the label shape of a training batch.

    Class ids (shape [batch]) get sparse categorical cross-entropy, one-hot
    labels ([batch, classes]) categorical. Categorical cross-entropy asked for
    with class ids is a `ConfigError` here rather than a shape error inside
    `tf.function`.
    """
    loss, rank = cfg.model.loss, label_spec.shape.rank
    if loss == "auto":
        loss = "categorical_crossentropy" if rank is not None and rank >= 2 else "sparse_categorical_crossentropy"
        return config_lib.replace(cfg, model=dataclasses.replace(cfg.model, loss=loss))
    if loss == "categorical_crossentropy" and rank is not None and rank <= 1:
        raise config_lib.ConfigError(
            f"model.loss: categorical_crossentropy expects one-hot labels, got labels of shape {label_spec.shape} "
            "(class ids); add {op: one_hot, num_classes: N} to data.map.steps or use model.loss: auto"
        )
    return cfg


# ---------------------------------------------------------------- model


def build_model(model, cfg, features_spec, num_classes: int, strategy):
    """The model to train, created in the current (strategy) scope.

    Args:
        model: None (build `model.name` with `model.params`), a `keras.Model`,
            or a builder callable.
        features_spec: the training batches' feature `TypeSpec`(s).
    """
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfpipe import models  # pylint: disable=import-outside-toplevel

    input_shape = tf.nest.map_structure(lambda spec: spec.shape[1:], features_spec)
    if model is None:
        try:
            models.check_features(cfg.model.name, features_spec)
            return models.build(cfg.model.name, input_shape, num_classes, cfg.model.params)
        except (TypeError, ValueError) as e:  # features that do not fit, or a model.params value it cannot take
            msg = _one_line(e)
            where = "data.map.steps" if msg.startswith("model ") else f"model.params for {cfg.model.name!r}"
            raise config_lib.ConfigError(f"{where}: {msg}") from None
    if not isinstance(model, keras.Model):
        if not callable(model):
            raise config_lib.ConfigError(f"model: expected a keras.Model or a builder function, got {type(model).__name__}")
        model = _call_builder(model, input_shape, num_classes, cfg.model.params)
    if not model.built:
        # Variables must exist before the compiled step (and the checkpoint) sees the model.
        model(tf.nest.map_structure(lambda s: tf.zeros([1, *s.shape[1:]], s.dtype), features_spec))
    # Under the default strategy any variable will do; under the others each
    # must be a distributed variable created in scope (Keras wraps the TF one in `.value`).
    in_scope = strategy.extended.variable_created_in_scope
    outside = [v.path for v in model.variables if not in_scope(getattr(v, "value", v))] if tf.distribute.has_strategy() else []
    if outside:
        raise config_lib.ConfigError(
            f"model: its variables ({outside[0]}, ...) were created outside runtime.strategy's scope; "
            "pass a builder function (model=lambda input_shape, num_classes: ...) so tfpipe builds it there"
        )
    return model


def _call_builder(fn, input_shape, num_classes, params):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    name = getattr(fn, "__qualname__", repr(fn))
    if sig is not None and not sig.parameters:
        built = fn()
    else:
        try:
            built = fn(input_shape, num_classes, **params)
        except TypeError as e:
            raise config_lib.ConfigError(
                f"model: the builder {name} must take (input_shape, num_classes, **model.params) or nothing: {_one_line(e)}"
            ) from None
    import keras  # pylint: disable=import-outside-toplevel

    if not isinstance(built, keras.Model):
        raise config_lib.ConfigError(f"model: the builder {name} returned {type(built).__name__}, expected a keras.Model")
    return built


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


# ---------------------------------------------------------------- export


def export(model, cfg, strategy, path, features_spec=None):
    """Saves `compiled_copy(model, ...)` to `path` and returns it."""
    copy = compiled_copy(model, cfg, strategy, features_spec)
    copy.save(path)
    return copy


def compiled_copy(model, cfg, strategy, features_spec=None):
    """A compiled copy of `model`, ready for predict and evaluate.

    The copy (same weights) is compiled with the run's loss, its accuracy
    and a built optimizer of the configured kind, so `keras.models.load_model`
    gives a model ready for predict and evaluate, without warnings about
    optimizer variables. A copy, because compiling the trained model itself
    would attach an optimizer that its checkpoints do not hold (training the
    same model object again would then fail to restore). The optimizer's
    trained slots stay in the checkpoints. A model Keras cannot clone (a
    subclassed model without get_config) is wrapped in a functional model
    on `features_spec` inputs, and the wrapper compiled, so the returned
    model evaluates and the caller's object stays as it was (a rerun with it
    restores); loading the file later needs the class
    (`keras.saving.register_keras_serializable`).
    """
    import keras  # pylint: disable=import-outside-toplevel

    from tfpipe.train import metrics as metrics_lib  # pylint: disable=import-outside-toplevel

    def compiled(target, opt):
        target.compile(optimizer=opt, loss=cfg.model.loss, metrics=[metrics_lib.compile_metric(cfg.model.loss)])
        return target

    def fresh():
        return keras.optimizers.get(
            {"class_name": cfg.optimizer.name, "config": {"learning_rate": cfg.optimizer.learning_rate}}
        )

    from tfpipe.distribute import sharding  # pylint: disable=import-outside-toplevel

    if sharding.any_sharded(model):  # runtime.variable_partitioner: the copy gathers the shards
        # Its one-line ConfigError (a model Keras cannot clone) is the user's to see:
        # the fallback below would save the sharded variables as they are.
        copy = sharding.unsharded_copy(model)
        compiled(copy, fresh()).optimizer.build(copy.trainable_variables)
        return copy
    try:
        with strategy.scope():
            copy = keras.models.clone_model(model)
            copy.set_weights(model.get_weights())
            compiled(copy, fresh()).optimizer.build(copy.trainable_variables)
    except Exception:  # pylint: disable=broad-except  # not clonable: a subclassed model
        try:
            with strategy.scope():
                import tensorflow as tf  # pylint: disable=import-outside-toplevel

                inputs = tf.nest.map_structure(lambda spec: keras.Input(spec.shape[1:], dtype=spec.dtype), features_spec)
                copy = compiled(keras.Model(inputs, model(inputs)), fresh())
        except Exception as e:  # pylint: disable=broad-except  # the weights are what matter
            _say(f"warning: model.keras is saved uncompiled ({type(e).__name__}: {_one_line(e)})")
            copy = model
    return copy


# ---------------------------------------------------------------- finished runs


def finished(workdir: Path, total_steps: int, restored=None):
    """The saved results of a run that is done (its model from model.keras, else `restored()`); says so."""
    from tfpipe.train import result as result_lib  # pylint: disable=import-outside-toplevel

    metrics = json.loads((workdir / "metrics.json").read_text(encoding="utf-8"))
    _say(
        f"{workdir} already holds a finished run ({metrics.get('steps', total_steps)} of {total_steps} steps): "
        "nothing to train; returning its saved results. Use a new workdir (or raise train.epochs) to train more"
    )
    result = result_lib.Result.load(workdir)
    if result.model is None and restored is not None:
        result.model = restored()
    return result

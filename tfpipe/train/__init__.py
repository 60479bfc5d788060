"""Training: the loop, its input, checkpoints, faults and optimizers.

`tfpipe.train` is both this package and the function that trains:
`tfpipe.train(cfg, workdir, model=..., data=...)` calls `tfpipe.train.loop.run`. A package named
`train` beside a function named `train` would otherwise replace the function
as soon as any `tfpipe.train.*` module is imported, so the package itself is
made callable (a module subclass with `__call__`, allowed since Python 3.5).

TensorFlow is imported on the first call rather than with the package, so
that a config error is reported before TensorFlow's start-up lines.

- `loop.py`: `run(cfg, workdir)`, Setup -> Input -> Model -> Restore -> Loop
  -> Evaluate -> Export -> Report.
- `inputs.py`: the training input and its saved position.
- `checkpoints.py`: atomic checkpoints, `keep`, fallback to an older one.
- `faults.py`: non-finite guard, SIGTERM, exit codes.
- `optimizers.py`: optimizers by name, fused Adam.
- `recipes.py`, `schedules.py`, `losses.py`, `metrics.py`, `stopping.py`:
  training recipes (checks at load; learning-rate schedules and plateau;
  label smoothing, class weights, L2; `train.metrics`; early stopping).
- `evaluate.py`: metrics and predictions of a finished run.
- `custom.py`: your own model and data, the workdir choice, finished runs.
- `result.py`: the `Result` a run returns (metrics, history, model, report).
- `progress.py`: the one line per epoch.
"""

import sys
import types


def run(cfg=None, workdir=None, *, model=None, data=None, resume=None):
    """Trains, evaluates and exports; returns a `tfpipe.train.result.Result`.

    Args:
        cfg: a `tfpipe.Config`; None is `tfpipe.load_config()`, the defaults.
        workdir: the run directory; None makes a fresh `runs/<name>-<time>`.
            An existing run there is resumed (a finished one is not trained
            again), except in a notebook, where a fresh sibling directory is
            used unless `resume=True`.
        model: a `keras.Model`, or a builder `fn(input_shape, num_classes,
            **model.params)` (or `fn()`); None builds `model.name`.
        data: per split, a `tf.data.Dataset` of `(features, label)`
            examples, arrays `(x, y)` or a pandas DataFrame:
            `{"train": ..., "validation": ..., "test": ...}`, or one value
            cut by `data.split`. See `tfpipe.data.memory`.
        resume: True resumes an existing run in `workdir`, False never does;
            None: see `workdir`.

    Returns:
        A `Result`: `result["accuracy"]` and the other metrics, `.history`,
        `.model`, `.workdir`, `.report`; in a notebook it displays itself.

    Raises:
        tfpipe.ConfigError: a config, model or data argument that cannot run.

    Example:

    ```python
    import numpy as np, keras, tfpipe
    x, y = np.random.rand(500, 8).astype("float32"), np.random.randint(0, 3, 500)
    net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    result = tfpipe.train(tfpipe.load_config(overrides=["train.epochs=2"]), model=net, data=(x, y))
    result.model.predict(x[:4])
    ```
    """
    import contextlib  # pylint: disable=import-outside-toplevel

    from tfpipe import config as config_lib  # pylint: disable=import-outside-toplevel
    from tfpipe.train import custom, loop  # pylint: disable=import-outside-toplevel

    cfg = config_lib.load() if cfg is None else cfg
    workdir = custom.choose_workdir(workdir, custom.run_name(cfg, model), resume)
    cfg, splits = custom.with_data(cfg, data)
    if splits is None:
        return loop.run(cfg, workdir, model=model)
    from tfpipe.data import memory  # pylint: disable=import-outside-toplevel

    with memory.provide(splits) if splits else contextlib.nullcontext():
        return loop.run(cfg, workdir, model=model)


class _CallablePackage(types.ModuleType):
    def __call__(self, cfg=None, workdir=None, **kwargs):
        """`tfpipe.train(cfg, workdir, model=..., data=..., resume=...)`: see `tfpipe.train.run`."""
        return run(cfg, workdir, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage

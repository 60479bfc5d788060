"""Training: the loop, its input, checkpoints, faults and optimizers.

`tfpipe.train` is both this package and the function that trains:
`tfpipe.train(cfg, workdir)` calls `tfpipe.train.loop.run`. A package named
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
"""

import sys
import types


def run(cfg, workdir, **kwargs):
    """Trains, evaluates and exports; see `tfpipe.train.loop.run`."""
    from tfpipe.train import loop  # pylint: disable=import-outside-toplevel

    return loop.run(cfg, workdir, **kwargs)


class _CallablePackage(types.ModuleType):
    def __call__(self, cfg, workdir, **kwargs):
        """`tfpipe.train(cfg, workdir)`: trains, evaluates and exports; see `tfpipe.train.loop.run`."""
        return run(cfg, workdir, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage

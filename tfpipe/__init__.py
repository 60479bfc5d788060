"""tfpipe: config-driven tf.data pipelines and Keras training under tf.distribute.

```python
import tfpipe
cfg = tfpipe.load_config("digits_mlp", overrides=["train.epochs=5"])
result = tfpipe.train(cfg, "runs/quick")   # result["accuracy"], result.history, result.model
```

Importing tfpipe does not import TensorFlow (loading a config or training
does), and it quiets TensorFlow's start-up logging (`tfpipe/logs.py`;
`TFPIPE_TF_LOGS=1` brings it back).
"""

from tfpipe import logs

logs.install()  # before anything imports TensorFlow

from tfpipe import train  # noqa: E402  # a callable package: tfpipe.train(cfg, workdir)
from tfpipe.config import Config, ConfigError  # noqa: E402
from tfpipe.config import load as load_config  # noqa: E402

__all__ = ["Config", "ConfigError", "Result", "load_config", "train"]

# Modules that lived at the top of tfpipe before the one-package-per-concern
# layout: `from tfpipe import summaries` keeps working (imported on first use).
_MOVED = {
    "summaries": "tfpipe.profile.summaries",
    "report": "tfpipe.profile.report",
    "profiling": "tfpipe.profile.trace",
    "capture_server": "tfpipe.profile.capture_server",
    "benchmark": "tfpipe.data.benchmark",
    "tfrecords": "tfpipe.data.tfrecords",
    "workloads": "tfpipe.data.workloads",
    "sources": "tfpipe.data.sources",
    "pipeline": "tfpipe.data.pipeline",
    "preprocess": "tfpipe.data.preprocess",
    "launch": "tfpipe.distribute.launch",
    "checkpointing": "tfpipe.train.checkpoints",
    "faults": "tfpipe.train.faults",
    "train_input": "tfpipe.train.inputs",
    "trainer": "tfpipe.train.loop",
    "optimizers": "tfpipe.train.optimizers",
}


def __getattr__(name):
    if name == "Result":
        from tfpipe.train.result import Result  # pylint: disable=import-outside-toplevel

        return Result
    if name in _MOVED:
        import importlib  # pylint: disable=import-outside-toplevel

        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'tfpipe' has no attribute {name!r}")
__version__ = "0.1.0"

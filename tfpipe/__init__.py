"""tfpipe: config-driven tf.data pipelines and Keras training under tf.distribute.

```python
import tfpipe
cfg = tfpipe.load_config("configs/digits_mlp.yaml", overrides=["train.epochs=5"])
metrics = tfpipe.train(cfg, "runs/quick")
```
"""

from tfpipe.config import Config, ConfigError
from tfpipe.config import load as load_config

__all__ = ["Config", "ConfigError", "load_config", "train"]
__version__ = "0.1.0"


def train(cfg: Config, workdir) -> dict:
    """Trains, evaluates and exports; see `tfpipe.trainer.run`.

    TensorFlow is imported here rather than with the package, so that a
    config error is reported before TensorFlow's start-up lines.
    """
    from tfpipe.trainer import run  # pylint: disable=import-outside-toplevel

    return run(cfg, workdir)

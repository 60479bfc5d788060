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

__all__ = ["Config", "ConfigError", "load_config", "train"]
__version__ = "0.1.0"

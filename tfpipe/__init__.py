"""tfpipe: config-driven tf.data pipelines and Keras training under tf.distribute.

```python
import tfpipe
cfg = tfpipe.load_config("configs/digits_mlp.yaml", overrides=["train.epochs=5"])
metrics = tfpipe.train(cfg, "runs/quick")
```

Importing tfpipe does not import TensorFlow: that happens on the first
`tfpipe.train(...)`, so a config error is reported before TensorFlow starts.
"""

from tfpipe import train  # a callable package: tfpipe.train(cfg, workdir)
from tfpipe.config import Config, ConfigError
from tfpipe.config import load as load_config

__all__ = ["Config", "ConfigError", "load_config", "train"]
__version__ = "0.1.0"

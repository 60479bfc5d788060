"""Tunes a config by measuring it: short real training windows, one child process per trial.

    python scripts/tune.py pipeline --config configs/images_cnn.yaml --workdir runs/tune [--set ...]

Modes are listed in `tfpipe/tune/cli.py` (`MODES`). Rerunning with the same
--workdir resumes: finished trials are read back, not repeated.
Exit codes: 0 done, 2 config error or bad command line.
"""

import os
import sys

# Before TensorFlow loads (in the trials' child processes too): hide its INFO lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app

from tfpipe.tune import cli

if __name__ == "__main__":
    app.run(lambda argv: sys.exit(cli.main(argv)))

"""Trains a model from a YAML config.

    tfpipe train --config configs/digits_mlp.yaml [--workdir DIR] [--set train.epochs=5 ...]

Config errors end the run with one line naming the key and what was expected;
bad data with one line naming the file and record (TFPIPE_TRACEBACK=1 shows
the TensorFlow error behind it).
Exit codes: 0 done, 2 config or data error, 3 non-finite loss (train.on_nonfinite:
stop), 4 no checkpoint in the workdir can be restored, 5 lost contact with
another task of a multi-worker cluster (restart the whole job), 143 preempted
by SIGTERM after saving a checkpoint (rerun to continue).
"""

import datetime
import os
import sys

from absl import flags

from tfpipe import commands

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "YAML config file, or the name of a shipped config (digits_mlp).", required=True)
flags.DEFINE_string("workdir", None, "Run directory; default runs/<config name>-<time>. Reusing one resumes it.")
flags.DEFINE_multi_string("set", [], "Override a config key: --set train.epochs=5 (repeatable).")


def main(argv):
    commands.start(argv)
    import tfpipe  # pylint: disable=import-outside-toplevel

    try:
        cfg = tfpipe.load_config(FLAGS.config, overrides=FLAGS.set)
    except tfpipe.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    workdir = FLAGS.workdir or os.path.join(
        "runs", f"{os.path.splitext(os.path.basename(FLAGS.config))[0]}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    )
    from tfpipe.train import checkpoints  # pylint: disable=import-outside-toplevel
    from tfpipe.distribute import strategies  # pylint: disable=import-outside-toplevel
    from tfpipe.train import faults  # pylint: disable=import-outside-toplevel
    from tfpipe.data.check import DataError  # pylint: disable=import-outside-toplevel

    faults.handle_sigterm()
    try:
        tfpipe.train(cfg, workdir)
    except tfpipe.ConfigError as e:  # found once TensorFlow knows the devices (batch vs replicas, optimizer name)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        if os.environ.get("TFPIPE_TRACEBACK"):  # the TensorFlow error behind it, for a bug report
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except faults.Preempted as e:
        print(f"[tfpipe] {e}", flush=True)
        return faults.EXIT_PREEMPTED
    except faults.NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return faults.EXIT_NONFINITE
    except checkpoints.CheckpointError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 4
    except strategies.StrategyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except strategies.PEER_ERRORS as e:
        if not strategies.current_task().task_type:
            raise
        print(f"error: {strategies.peer_lost_message(e)}", file=sys.stderr)
        return faults.EXIT_PEER_LOST
    return 0


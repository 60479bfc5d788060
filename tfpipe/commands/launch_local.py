"""Runs a training command as a multi-process cluster on this machine.

    tfpipe launch_local --num_workers 2 -- tfpipe train \
        --config configs/digits_mlp.yaml --set runtime.strategy=multi_worker_mirrored

    tfpipe launch_local --num_workers 2 --num_ps 1 -- tfpipe train \
        --config configs/digits_mlp.yaml --set runtime.strategy=parameter_server

Each process gets its own TF_CONFIG on free 127.0.0.1 ports; output lines
carry a [worker i] prefix; if any process fails the rest are stopped and
the launcher exits with that process's code.
"""

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_workers", 2, "Worker processes.", lower_bound=1)
flags.DEFINE_integer("num_ps", 0, "Parameter-server processes (parameter_server strategy); adds a chief.", lower_bound=0)


def main(argv):
    from tfpipe.distribute import launch  # pylint: disable=import-outside-toplevel

    command = argv[1:]
    if not command:
        raise app.UsageError("expected the command after --, e.g. -- tfpipe train --config ...")
    return launch.launch_local(command, FLAGS.num_workers, FLAGS.num_ps)


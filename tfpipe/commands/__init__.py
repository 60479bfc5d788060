"""The command-line programs, one module each: absl flags and `main(argv)`.

`tfpipe <command> ...` (tfpipe/cli.py) and `scripts/<command>.py` both run
them; see `tfpipe.cli.COMMANDS`.
"""

from absl import app, flags, logging


def start(argv) -> None:
    """What every command does first: refuse stray arguments, quiet absl.

    TensorFlow's own INFO lines (one per checkpoint save) drown the progress
    output; `-v 0` / `--verbosity=0` brings them back.
    """
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)

"""Exports a finished run as a SavedModel for serving, in TensorFlow Serving's layout.

    python scripts/export.py --workdir RUN [--version N] [--name NAME]   # -> RUN/export/<name>/<version>/

The same as `tfpipe export ...`; the program lives in tfpipe/serve/export.py.
"""

import sys

from tfpipe import cli

if __name__ == "__main__":
    sys.exit(cli.main(["export", *sys.argv[1:]]))

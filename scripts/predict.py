"""Writes a finished run's predictions to CSV or JSON.

The same as `tfpipe predict ...`; the program lives in tfpipe/commands/predict.py.
"""

import sys

from tfpipe import cli

if __name__ == "__main__":
    sys.exit(cli.main(["predict", *sys.argv[1:]]))

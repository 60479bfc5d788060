"""Trains a model from a YAML config.

The same as `tfpipe train ...`; the program lives in tfpipe/commands/train.py.
"""

import sys

from tfpipe import cli

if __name__ == "__main__":
    sys.exit(cli.main(["train", *sys.argv[1:]]))

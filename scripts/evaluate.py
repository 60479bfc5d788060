"""Evaluates a finished run on a split or on other files.

The same as `tfpipe evaluate ...`; the program lives in tfpipe/commands/evaluate.py.
"""

import sys

from tfpipe import cli

if __name__ == "__main__":
    sys.exit(cli.main(["evaluate", *sys.argv[1:]]))

"""Measures a config's input pipeline alone (no model): end to end and per stage.

The same as `tfpipe benchmark_input ...`; the program lives in tfpipe/commands/benchmark_input.py.
"""

import sys

from tfpipe import cli

if __name__ == "__main__":
    sys.exit(cli.main(["benchmark_input", *sys.argv[1:]]))

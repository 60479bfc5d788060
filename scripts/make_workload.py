"""Generates a benchmark workload on disk, deterministic from --seed.

The same as `tfpipe make_workload ...`; the program lives in tfpipe/commands/make_workload.py.
"""

import sys

from tfpipe import cli

if __name__ == "__main__":
    sys.exit(cli.main(["make_workload", *sys.argv[1:]]))

"""Runs a training command as a multi-process cluster on this machine.

The same as `tfpipe launch_local ...`; the program lives in tfpipe/commands/launch_local.py.
"""

import sys

from tfpipe import cli

if __name__ == "__main__":
    sys.exit(cli.main(["launch_local", *sys.argv[1:]]))

"""Captures a profile on demand from a running job.

The same as `tfpipe capture_profile ...`; the program lives in tfpipe/commands/capture_profile.py.
"""

import sys

from tfpipe import cli

if __name__ == "__main__":
    sys.exit(cli.main(["capture_profile", *sys.argv[1:]]))

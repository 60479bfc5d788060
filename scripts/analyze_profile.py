"""Writes the bottleneck report for an existing profile directory.

The same as `tfpipe analyze_profile ...`; the program lives in tfpipe/commands/analyze_profile.py.
"""

import sys

from tfpipe import cli

if __name__ == "__main__":
    sys.exit(cli.main(["analyze_profile", *sys.argv[1:]]))

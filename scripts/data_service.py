"""Starts a tf.data service dispatcher or worker and blocks until killed.

The same as `tfpipe data_service ...`; the program lives in tfpipe/commands/data_service.py.
"""

import sys

from tfpipe import cli

if __name__ == "__main__":
    sys.exit(cli.main(["data_service", *sys.argv[1:]]))

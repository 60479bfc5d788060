"""Converts an image folder, CSV files or an .npz file into sharded TFRecords + spec.json.

The same as `tfpipe make_tfrecords ...`; the program lives in tfpipe/commands/make_tfrecords.py.
"""

import sys

from tfpipe import cli

if __name__ == "__main__":
    sys.exit(cli.main(["make_tfrecords", *sys.argv[1:]]))

"""Serves an export over TensorFlow Serving's REST API, with server-side batching.

    python scripts/serve.py --model_dir RUN/export/mlp [--port 8501] [--host 127.0.0.1] \
        [--max_batch_size 64 --batch_timeout_micros 1000 --max_enqueued_batches 16 --num_batch_threads 1]

    curl -d '{"instances": [[0, 1, ...]]}' http://127.0.0.1:8501/v1/models/mlp:predict

SIGTERM stops taking requests and answers the ones in flight. Options: --help.
The same as `tfpipe serve ...`; the program lives in tfpipe/serve/server.py.
"""

import sys

from tfpipe import cli

if __name__ == "__main__":
    sys.exit(cli.main(["serve", *sys.argv[1:]]))

"""Starts a tf.data service dispatcher or worker and blocks until killed.

    tfpipe data_service dispatcher --port 5050
    tfpipe data_service worker --port 5051 --dispatcher_address 127.0.0.1:5050

Training then sends its input pipeline there with
`--set data.service.address=127.0.0.1:5050`.
"""

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("port", 0, "Port to serve on; 0 picks a free one (printed at start).", lower_bound=0)
flags.DEFINE_string("host", "127.0.0.1", "Address workers advertise to the dispatcher and to clients.")
flags.DEFINE_string("dispatcher_address", None, "host:port of the dispatcher (workers only).")
flags.DEFINE_string("work_dir", None, "Dispatcher journal directory: lets a restarted dispatcher keep its jobs.")


def main(argv):
    if len(argv) != 2 or argv[1] not in ("dispatcher", "worker"):
        raise app.UsageError("expected one role: dispatcher or worker")
    from tfpipe.data import service  # pylint: disable=import-outside-toplevel

    if argv[1] == "dispatcher":
        server = service.start_dispatcher(FLAGS.port, work_dir=FLAGS.work_dir)
    else:
        if not FLAGS.dispatcher_address:
            raise app.UsageError("worker: --dispatcher_address host:port is required")
        server = service.start_worker(FLAGS.port, FLAGS.dispatcher_address, host=FLAGS.host)
    server.join()
    return 0


"""tf.data service servers: a dispatcher and the workers that run pipelines.

A training process whose config sets `data.service.address` sends its input
pipeline to the dispatcher (see `pipeline.build`); the dispatcher hands it to
its workers, which run it and stream batches back. These helpers start the
servers; `scripts/data_service.py` runs them as processes.

Example:

```python
dispatcher = start_dispatcher(5050)
worker = start_worker(0, "127.0.0.1:5050")
```
"""

from __future__ import annotations

import tensorflow as tf


def start_dispatcher(port: int = 0, work_dir: str | None = None):
    """Starts a dispatcher on `port` (0 picks one) and prints its address."""
    config = tf.data.experimental.service.DispatcherConfig(
        port=port,
        # With a journal directory a restarted dispatcher recovers its jobs.
        work_dir=work_dir,
        fault_tolerant_mode=bool(work_dir),
    )
    server = tf.data.experimental.service.DispatchServer(config)
    print(f"[data_service] dispatcher serving at {server.target}", flush=True)
    return server


def start_worker(port: int, dispatcher_address: str, host: str = "127.0.0.1"):
    """Starts a worker on `port` (0 picks one) that registers with the dispatcher."""
    dispatcher_address = dispatcher_address.split("://")[-1]
    server = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(
            dispatcher_address=dispatcher_address,
            port=port,
            # What the dispatcher tells clients to connect to; %port% is filled in.
            worker_address=f"{host}:%port%",
        )
    )
    print(f"[data_service] worker serving at {host}:{server._address.split(':')[-1]} for {dispatcher_address}", flush=True)
    return server

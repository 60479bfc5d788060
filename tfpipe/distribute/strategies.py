"""Strategies from a config string, the cluster they run on, and what they change.

`make_strategy(runtime_cfg)` is the only place a `tf.distribute.Strategy` is
constructed, by a plain dict from `runtime.strategy`:

- `default`: no distribution, whatever device TensorFlow picks.
- `one_device`: one named device (`runtime.device`: cpu or gpu).
- `mirrored`: synchronous replicas on this machine's GPUs, or on its logical
  CPUs (`runtime.logical_cpus: 2` splits the CPU so two real replicas run
  without GPUs: slower than one, but the same code path as on two GPUs).
- `multi_worker_mirrored`: synchronous replicas across processes; the
  cluster comes from `TF_CONFIG` (`scripts/launch_local.py` writes one per
  process on localhost).
- `parameter_server`: asynchronous updates: variables live on `ps` tasks,
  `worker` tasks run steps that the chief (the coordinator) schedules.
- `tpu`: a TPU found through `runtime.tpu`.

Where the hardware a config asks for is missing, construction fails at
start with a message naming what is missing.

The rest of the module is the arithmetic and bookkeeping every strategy
shares: global vs per-replica batch, learning-rate scaling with the
replica count, the mixed-precision policy, and who in a cluster writes
files (the chief) and who writes to a throwaway directory (everyone else).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl import logging

from tfpipe import config as config_lib


class StrategyError(RuntimeError):
    """A strategy that cannot run here, with what is missing and what to use instead."""


def configure_devices(runtime_cfg) -> None:
    """Sets TensorFlow's op thread pools and splits the CPU into `runtime.logical_cpus` logical devices.

    Must run before TensorFlow initialises its devices. If they are already
    initialised (a notebook that ran TF before, or a test process), an equal
    split is accepted and a different one is a clear error; thread counts
    that can no longer change only warn, since they change speed, not results.
    """
    _set_threads(runtime_cfg)
    n = runtime_cfg.logical_cpus
    if n <= 0:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != n:
            raise RuntimeError(
                f"runtime.logical_cpus: expected {n} logical CPU devices, but TensorFlow was "
                f"already initialised with {have} in this process; set runtime.logical_cpus "
                f"before anything else runs TensorFlow (or restart the notebook kernel)"
            ) from None


def _set_threads(runtime_cfg) -> None:
    wanted = {"inter": runtime_cfg.inter_op_threads, "intra": runtime_cfg.intra_op_threads}
    for kind, n in wanted.items():
        getter = getattr(tf.config.threading, f"get_{kind}_op_parallelism_threads")
        setter = getattr(tf.config.threading, f"set_{kind}_op_parallelism_threads")
        if n <= 0 or getter() == n:
            continue
        try:
            setter(n)
        except RuntimeError:
            logging.warning(
                "runtime.%s_op_threads=%d ignored: TensorFlow already started in this process with %d "
                "(0 = one per core); set it before anything else runs TensorFlow", kind, n, getter())


# ---------------------------------------------------------------- the cluster


@dataclasses.dataclass(frozen=True)
class Task:
    """This process's place in the cluster `TF_CONFIG` describes."""

    task_type: str  # "worker", "chief", "ps" or "" without TF_CONFIG
    task_id: int
    cluster: dict  # job name -> list of host:port

    @property
    def is_chief(self) -> bool:
        """The one process that writes checkpoints, summaries and the model."""
        if not self.task_type:
            return True
        if self.task_type == "chief":
            return True
        # Without a chief job, worker 0 plays the chief (TensorFlow's convention).
        return self.task_type == "worker" and self.task_id == 0 and "chief" not in self.cluster

    @property
    def name(self) -> str:
        return f"{self.task_type}:{self.task_id}" if self.task_type else "local"


def current_task() -> Task:
    """Reads `TF_CONFIG`; a clear error if it is not valid JSON or lacks its task."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return Task("", 0, {})
    try:
        tf_config = json.loads(raw)
        cluster = tf_config.get("cluster", {})
        task = tf_config.get("task", {})
        task_type, task_id = task.get("type", ""), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as e:
        raise StrategyError(
            f"TF_CONFIG: expected JSON {{'cluster': {{...}}, 'task': {{'type': ..., 'index': ...}}}}, "
            f"got {raw[:200]!r} ({e})"
        ) from None
    if task_type and (task_type not in cluster or task_id >= len(cluster[task_type])):
        raise StrategyError(
            f"TF_CONFIG: task {task_type}:{task_id} is not in the cluster {sorted(cluster)} "
            f"({ {k: len(v) for k, v in cluster.items()} })"
        )
    return Task(task_type, task_id, cluster)


def serve_parameter_server_task(runtime_cfg) -> bool:
    """Under `parameter_server`, runs this process's ps or worker server and blocks.

    In parameter-server training only the chief (coordinator) runs the
    training program; `ps` and `worker` tasks are plain TensorFlow servers
    that hold variables or run what the coordinator schedules on them.

    Returns:
        False when this process should go on to train (the chief, or any
        other strategy). Never returns for a ps or worker task.
    """
    if runtime_cfg.strategy != "parameter_server":
        return False
    task = current_task()
    if task.task_type not in ("ps", "worker"):
        return False
    server = tf.distribute.Server(
        tf.train.ClusterSpec(task.cluster),
        job_name=task.task_type,
        task_index=task.task_id,
        protocol="grpc",
        start=True,
    )
    print(f"[tfpipe] parameter_server: {task.name} serving at {server.target}", flush=True)
    server.join()
    return True  # not reached: join() returns only when the process is killed


# What a collective raises when a peer died (connection reset, heartbeats
# stopped, health check failed) or did not answer in time.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)


def peer_lost_message(error: Exception) -> str:
    """One paragraph for a worker whose peer died: what happened and what to do."""
    first = str(getattr(error, "message", error)).strip().splitlines()
    detail = next((line for line in first if "aborted" in line.lower() or "unhealthy" in line.lower()), first[0] if first else "")
    return (
        f"{current_task().name}: lost contact with another task of the cluster, so the "
        f"collective ops were aborted ({type(error).__name__}: {detail.strip()}). "
        "Synchronous training cannot continue without every worker: restart the whole job; "
        "it resumes from the chief's last checkpoint."
    )


# ---------------------------------------------------------------- strategies


def _gpus():
    return tf.config.list_physical_devices("GPU")


def _require_gpu(runtime_cfg):
    if runtime_cfg.device == "gpu" and not _gpus():
        raise StrategyError(
            f"runtime.device=gpu (strategy {runtime_cfg.strategy}): TensorFlow sees no GPU on this "
            f"machine (tf.config.list_physical_devices('GPU') is empty: no CUDA driver/device, or a "
            f"CPU-only TensorFlow build); use runtime.device=cpu or auto"
        )


def _replica_devices(runtime_cfg) -> list[str]:
    _require_gpu(runtime_cfg)
    if runtime_cfg.device != "cpu":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return [d.name for d in gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _default(runtime_cfg):
    _require_gpu(runtime_cfg)
    return tf.distribute.get_strategy()


def _one_device(runtime_cfg):
    return tf.distribute.OneDeviceStrategy(_replica_devices(runtime_cfg)[0])


_mirrored_made = 0


def _mirrored(runtime_cfg):
    # Each MirroredStrategy numbers its collective all-reduces from the same
    # keys, and TensorFlow remembers a key's tensor shape for the life of
    # the process. A second strategy in one process (a notebook training a
    # second model) then fails with "Shape mismatch in the collective
    # instance 100" (verified here; tensorflow/tensorflow#62790). TF's own
    # tests give each strategy its own key range through this class
    # attribute, which the strategy copies when it is built. tfpipe's ranges
    # start above TF's default (0), so they cannot meet a strategy the user
    # builds, and the attribute is put back so the user's strategies keep
    # TF's numbering. The attribute is private: without it a second
    # mirrored model in one process fails as before, loudly.
    global _mirrored_made  # pylint: disable=global-statement
    _mirrored_made += 1
    devices = _replica_devices(runtime_cfg)
    # Without GPUs MirroredStrategy() would pick only /cpu:0; name the
    # logical CPUs explicitly so each one becomes a replica.
    if not hasattr(tf.distribute.MirroredStrategy, "_collective_key_base"):
        return tf.distribute.MirroredStrategy(devices=devices)
    saved = tf.distribute.MirroredStrategy._collective_key_base  # pylint: disable=protected-access
    tf.distribute.MirroredStrategy._collective_key_base = 100_000 * _mirrored_made  # pylint: disable=protected-access
    try:
        return tf.distribute.MirroredStrategy(devices=devices)
    finally:
        tf.distribute.MirroredStrategy._collective_key_base = saved  # pylint: disable=protected-access


def _multi_worker_mirrored(runtime_cfg):
    _require_gpu(runtime_cfg)
    task = current_task()
    if task.task_type == "ps" or "ps" in task.cluster:
        raise StrategyError(
            "runtime.strategy=multi_worker_mirrored: TF_CONFIG has a 'ps' job, which only "
            "parameter_server uses; list only worker (and optionally chief) tasks"
        )
    # No extra timeout is needed for a dead peer: a killed worker resets its
    # connections (the survivors' collectives fail within seconds), and a hung
    # one stops the coordination service's heartbeats, which aborts all
    # collectives with UnavailableError (measured: 2 s and 7-9 s here).
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
    )


def _parameter_server(runtime_cfg):
    task = current_task()
    if not task.task_type or "ps" not in task.cluster or "worker" not in task.cluster:
        raise StrategyError(
            "runtime.strategy=parameter_server: needs TF_CONFIG with 'chief', 'worker' and 'ps' jobs "
            f"(got {sorted(task.cluster) or 'no TF_CONFIG'}); on one machine run "
            "scripts/launch_local.py --num_workers 2 --num_ps 1 -- python scripts/train.py ..."
        )
    if task.task_type != "chief":
        raise StrategyError(
            f"runtime.strategy=parameter_server: task {task.name} should serve, not train "
            "(serve_parameter_server_task runs it)"
        )
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    partitioner = variable_partitioner(runtime_cfg.variable_partitioner, len(task.cluster["ps"]))
    return tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)


def variable_partitioner(partition_cfg, num_ps: int):
    """The partitioner `runtime.variable_partitioner` names, None for `kind: none`.

    Variables created in the strategy's scope that the partitioner splits
    become `ShardedVariable`s, their shards spread over the ps tasks
    (tfpipe/distribute/sharding.py says what training does with them).
    """
    partitioners = tf.distribute.experimental.partitioners
    if partition_cfg.kind == "min_size":
        return partitioners.MinSizePartitioner(
            min_shard_bytes=partition_cfg.min_shard_bytes, max_shards=partition_cfg.max_shards or num_ps
        )
    if partition_cfg.kind == "fixed":
        return partitioners.FixedShardsPartitioner(num_shards=partition_cfg.num_shards or num_ps)
    return None


def _tpu(runtime_cfg):
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=runtime_cfg.tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        devices = sorted({d.device_type for d in tf.config.list_physical_devices()})
        raise StrategyError(
            f"runtime.strategy=tpu: no TPU reachable (runtime.tpu={runtime_cfg.tpu!r}: "
            f"{type(e).__name__}: {e}); this machine has {', '.join(devices)} only; "
            "use strategy mirrored or default here"
        ) from None
    return tf.distribute.TPUStrategy(resolver)


# Dispatch by plain dict: the names `runtime.strategy` may take.
STRATEGIES = {
    "default": _default,
    "one_device": _one_device,
    "mirrored": _mirrored,
    "multi_worker_mirrored": _multi_worker_mirrored,
    "parameter_server": _parameter_server,
    "tpu": _tpu,
}


def make_strategy(runtime_cfg) -> tf.distribute.Strategy:
    """The strategy named by `runtime.strategy`.

    Raises:
        StrategyError: the hardware or cluster the config asks for is not
            there (no GPU, no TPU, no TF_CONFIG for parameter_server).
    """
    name = runtime_cfg.strategy
    if name not in STRATEGIES:
        raise ValueError(f"runtime.strategy: expected one of {', '.join(STRATEGIES)}, got {name!r}")
    return STRATEGIES[name](runtime_cfg)


def is_parameter_server(strategy) -> bool:
    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


class PerWorkerInput:
    """parameter_server's training input: one pipeline on each worker.

    `ClusterCoordinator.create_per_worker_dataset` builds the dataset on
    every worker; a scheduled function receives that worker's iterator. The
    dataset function gets no worker index, so there is no sharding, and with
    a seeded shuffle every worker reads the same order. The iterators live on
    the workers and are not checkpointed: a resumed run starts its input over.
    """

    mode = "per-worker"
    trackables: dict = {}

    def __init__(self, coordinator, dataset_fn):
        # The coordinator traces dataset_fn as a tf.function. Without autograph:
        # building the pipeline is plain Python (counting a CSV source's lines
        # among it), and autograph's rewrite of that loop failed
        # ("NameError: name 'chunk' is not defined", clicks CSV, TF 2.21).
        # The pipeline's own map functions are traced by tf.data, autograph on.
        fn = tf.function(dataset_fn, autograph=False)
        self.iterator = iter(coordinator.create_per_worker_dataset(fn))

    def start(self, step: int, restored: str | None = None) -> None:  # pylint: disable=unused-argument
        """Nothing to position: see the class docstring."""


# ---------------------------------------------------------------- what a strategy changes


def learning_rate(base: float, runtime_cfg, strategy) -> float:
    """`optimizer.learning_rate` scaled by `runtime.lr_scaling` for this replica count.

    The global batch is `train.batch_size` whatever the replica count, so
    `linear` is meant for configs whose batch size was scaled with the
    replicas too (the Goyal et al. rule: k times the batch, k times the rate).
    """
    if runtime_cfg.lr_scaling == "linear":
        return base * strategy.num_replicas_in_sync
    return base


def check_batch(global_batch_size: int, strategy: tf.distribute.Strategy) -> None:
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise config_lib.ConfigError(
            f"train.batch_size: expected a multiple of the {replicas} replicas in sync, got {global_batch_size}"
        )


def describe(strategy: tf.distribute.Strategy, global_batch_size: int, runtime_cfg=None, lr=None) -> str:
    """One line with the effective values a run trains with."""
    replicas = strategy.num_replicas_in_sync
    task = current_task()
    name = type(strategy).__name__
    parts = [
        f"strategy {'default' if name == '_DefaultDistributionStrategy' else name}",
        f"{replicas} replica(s) in sync",
        f"global batch {global_batch_size}",
        f"per-replica batch {global_batch_size // replicas}",
    ]
    if is_parameter_server(strategy):
        parts[1] = f"{len(task.cluster.get('worker', []))} worker(s) updating {len(task.cluster.get('ps', []))} ps asynchronously"
        parts[3] = f"per-worker batch {global_batch_size}"
    if task.task_type:
        parts.insert(1, f"task {task.name} of {sum(len(v) for v in task.cluster.values())}")
    if runtime_cfg is not None:
        # Settings left at their defaults are not repeated: the line stays short.
        if lr is not None:
            scaled = f" (lr_scaling {runtime_cfg.lr_scaling})" if runtime_cfg.lr_scaling != "none" else ""
            parts.append(f"learning rate {lr:g}{scaled}")
        if runtime_cfg.mixed_precision != "none":
            parts.append(f"precision {runtime_cfg.mixed_precision}")
        if runtime_cfg.jit_compile:
            parts.append(f"jit_compile {runtime_cfg.jit_compile}")
    return ", ".join(parts)


@contextlib.contextmanager
def precision_policy(runtime_cfg):
    """Keras dtype policy `runtime.mixed_precision` while the model is built.

    Layers keep the policy they were built with, so the global policy is
    put back afterwards: a notebook's next model is not silently 16-bit.
    """
    import keras  # pylint: disable=import-outside-toplevel

    if runtime_cfg.mixed_precision == "none":
        yield
        return
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(runtime_cfg.mixed_precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def wrap_optimizer(optimizer, runtime_cfg):
    """Adds dynamic loss scaling for float16, whose small gradients underflow.

    bfloat16 has float32's exponent range and needs none.
    """
    if runtime_cfg.mixed_precision != "mixed_float16":
        return optimizer
    import keras  # pylint: disable=import-outside-toplevel

    return keras.optimizers.LossScaleOptimizer(optimizer)


def weights_digest(model) -> str:
    """SHA-256 of the model's weights, bit for bit (hex)."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- who writes files


def output_dir(workdir, task: Task | None = None):
    """Where this process writes checkpoints, summaries and the model.

    The chief writes to `workdir`. The other workers still have to run the
    same saving code (checkpoint saving under multi_worker_mirrored is a
    collective), but into a private temporary directory that `cleanup_output_dir`
    removes, so two processes never write the same files.
    """
    task = task or current_task()
    if task.is_chief:
        return workdir
    return tempfile.mkdtemp(prefix=f"tfpipe-{task.task_type}{task.task_id}-")


def cleanup_output_dir(path, workdir) -> None:
    if os.fspath(path) != os.fspath(workdir):
        shutil.rmtree(path, ignore_errors=True)


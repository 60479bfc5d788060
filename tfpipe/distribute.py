"""Strategies from a config string, and the device set-up they need.

`make_strategy(runtime_cfg)` is the only place a `tf.distribute.Strategy` is
constructed. On a machine without accelerators, `runtime.logical_cpus: 2`
splits the CPU into two logical devices so that `mirrored` runs two real
replicas: slower than one, but the same code path as on two GPUs.
"""

from __future__ import annotations

import tensorflow as tf
from absl import logging


def configure_devices(runtime_cfg) -> None:
    """Splits the CPU into `runtime.logical_cpus` logical devices.

    Must run before TensorFlow initialises its devices. If they are already
    initialised (a notebook that ran TF before, or a test process), an equal
    split is accepted and a different one is a clear error.
    """
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


def _replica_devices() -> list[str]:
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(runtime_cfg) -> tf.distribute.Strategy:
    """The strategy named by `runtime.strategy`."""
    name = runtime_cfg.strategy
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # Without GPUs MirroredStrategy() would pick only /cpu:0; name the
        # logical CPUs explicitly so each one becomes a replica.
        return tf.distribute.MirroredStrategy(devices=_replica_devices())
    raise ValueError(f"runtime.strategy: expected default or mirrored, got {name!r}")


def describe(strategy: tf.distribute.Strategy, global_batch_size: int) -> str:
    replicas = strategy.num_replicas_in_sync
    return (
        f"strategy {type(strategy).__name__}: {replicas} replica(s), global batch "
        f"{global_batch_size}, per-replica batch {global_batch_size // replicas}"
    )


def check_batch(global_batch_size: int, strategy: tf.distribute.Strategy) -> None:
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"train.batch_size: expected a multiple of the {replicas} replicas in sync, got {global_batch_size}"
        )
    logging.info(describe(strategy, global_batch_size))

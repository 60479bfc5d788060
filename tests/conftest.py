"""Shared test set-up: run against this checkout, with two logical CPUs.

The CPU is split into two logical devices before any test touches
TensorFlow, so the mirrored strategy runs two real replicas in-process.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Import tfpipe and models from this checkout, also in subprocesses.
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import tfpipe  # noqa: E402,F401  # first: its import hook keeps TensorFlow's start-up lines out of the test output
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

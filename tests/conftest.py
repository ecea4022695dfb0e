"""Test configuration shared by the whole suite.

The CPU is split into two logical devices before TensorFlow initializes, so
that tests can run `tf.distribute.MirroredStrategy` with two replicas.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)

# Shared test helpers (layer_harness.py, ...) live beside this file.
sys.path.insert(0, os.path.dirname(__file__))

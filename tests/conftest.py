"""Test configuration shared by the whole suite.

The CPU is split into two logical devices before TensorFlow initializes, so
that tests can run `tf.distribute.MirroredStrategy` with two replicas.
"""

import functools
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)

# Shared test helpers (layer_harness.py, ...) live beside this file.
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402  (after the logical devices are configured)

# -- CPU kernels that may be missing ---------------------------------------
#
# Some TensorFlow CPU kernels exist only in the oneDNN build path: without
# it (e.g. on CPUs without AVX-512, or with TF_ENABLE_ONEDNN_OPTS=0) the
# channels_first (NCHW) 1D/2D convolutions, depthwise convolutions and
# poolings raise `UnimplementedError`/`InvalidArgumentError`. Tests test
# what they can (config, weights, folding arithmetic) and skip only the
# execution, after trying the op once on a tiny input.

_KERNEL_CLASS = re.compile(
    r"^(Conv|DepthwiseConv|SeparableConv|MaxPooling|AveragePooling)"
    r"([123])D(Transpose)?$"
)


def _zeros(*shape):
    return np.zeros(shape, "float32")


def _run_channels_first(kind, rank):
    """Runs the keras op behind `kind` once on a 1-channel input."""
    x = _zeros(1, 1, *[3] * rank)
    kernel = _zeros(*[1] * rank, 1, 1)
    ops = keras.ops
    if kind == "Conv":
        ops.conv(x, kernel, data_format="channels_first")
    elif kind == "ConvTranspose":
        ops.conv_transpose(x, kernel, data_format="channels_first")
    elif kind == "DepthwiseConv":
        ops.depthwise_conv(x, kernel, data_format="channels_first")
    elif kind == "SeparableConv":
        ops.separable_conv(x, kernel, kernel, data_format="channels_first")
    elif kind == "MaxPooling":
        ops.max_pool(x, 1, data_format="channels_first")
    else:
        ops.average_pool(x, 1, data_format="channels_first")


@functools.cache
def missing_channels_first_kernel(kind, rank):
    """Why the channels_first `kind` op of spatial rank `rank` cannot run
    on this CPU (TensorFlow's message), or None if it runs. Tried once."""
    try:
        with tf.device("/CPU:0"):
            _run_channels_first(kind, rank)
    except tf.errors.OpError as error:
        message = re.sub(r"^\{\{[^}]*\}\}\s*", "", error.message)
        message = re.sub(r"\s*name:\s*$", "", message.splitlines()[0])
        return (
            f"no CPU kernel for a channels_first {kind}{rank}D here "
            f"(TensorFlow: {message.strip()})"
        )
    return None


def missing_cpu_kernels(model):
    """The reasons why some layer of `model` cannot run on this CPU."""
    reasons = []
    stack = [model]
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", ()) or ())
        if getattr(layer, "data_format", None) != "channels_first":
            continue
        for cls in type(layer).__mro__:
            match = _KERNEL_CLASS.match(cls.__name__)
            if match:
                kind = match[1] + (match[3] or "")
                reason = missing_channels_first_kernel(kind, int(match[2]))
                if reason and reason not in reasons:
                    reasons.append(reason)
                break
    return reasons


@pytest.fixture
def skip_unless_cpu_runs():
    """`skip_unless_cpu_runs(*models)` skips the rest of the test when a
    layer of one of the models needs a kernel this CPU lacks."""

    def check(*models):
        reasons = []
        for model in models:
            for reason in missing_cpu_kernels(model):
                if reason not in reasons:
                    reasons.append(reason)
        if reasons:
            pytest.skip("; ".join(reasons))

    return check

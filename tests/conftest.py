"""Test configuration shared by the whole suite.

The suite runs on the Keras backend of `KERAS_BACKEND` (TensorFlow by
default; `make test` runs it on TensorFlow, JAX and PyTorch). Several CPU
devices are made before the backend starts: TensorFlow's CPU is split into
two logical devices (for `tf.distribute.MirroredStrategy`), JAX is given
four host devices (for `keras.distribution`: a 2×2 mesh for
`ModelParallel`, `DataParallel` over 2 or 4).

Tests that only make sense on one backend carry
`@pytest.mark.backends("tensorflow", reason=...)`; on other backends they are
skipped with that reason. Tests whose outcome cannot depend on the backend
(argument parsing, files and reports, data pipelines that never call Keras,
lint) carry `@pytest.mark.backend_independent` and run once, on TensorFlow
(the backend `make test` runs first and in full): other backends deselect
them.
"""

import functools
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
if BACKEND == "jax":
    _flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in _flags:
        os.environ["XLA_FLAGS"] = (
            _flags + " --xla_force_host_platform_device_count=4"
        ).strip()
    # One XLA compilation cache for the whole run, shared by the xdist
    # workers (they inherit this process's environment): many tests compile
    # the same computation (the same small model's step, the same
    # initializer shape), which XLA then compiles once per run instead of
    # once per test and worker. Keyed by the computation, so it changes
    # compile time only. A directory given by the caller is kept.
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        import tempfile

        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
            prefix="keras-wc-jax-cache-"
        )
        os.environ["KERAS_WC_TEST_OWNS_JAX_CACHE"] = str(os.getpid())
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

if BACKEND == "tensorflow":
    import tensorflow as tf

    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )

if BACKEND == "torch":
    import torch

    # The tests compare outputs with numpy (`np.asarray(layer(x))`), which
    # PyTorch refuses for a tensor that requires grad: detach it for them.
    # (Arithmetic between a tensor and a numpy array then runs in numpy,
    # without gradients: the tests write it with keras.ops.)
    _torch_array = torch.Tensor.__array__

    def _detached_array(self, dtype=None, copy=None):
        return _torch_array(self.detach().cpu(), dtype)

    torch.Tensor.__array__ = _detached_array

# Shared test helpers (layer_harness.py, ...) live beside this file.
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402  (after the devices are configured)

assert keras.backend.backend() == BACKEND, (
    f"KERAS_BACKEND={BACKEND!r} but Keras runs {keras.backend.backend()!r}"
)


# The backend a backend-independent test runs on.
REFERENCE_BACKEND = "tensorflow"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "backends(*names, reason): runs only on these Keras backends",
    )
    config.addinivalue_line(
        "markers",
        "backend_independent: its outcome cannot depend on the Keras "
        f"backend; runs once, on {REFERENCE_BACKEND}",
    )


def pytest_unconfigure(config):
    # The process that made the run's JAX compilation cache removes it.
    if os.environ.get("KERAS_WC_TEST_OWNS_JAX_CACHE") == str(os.getpid()):
        import shutil

        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], True)


def pytest_collection_modifyitems(config, items):
    if BACKEND != REFERENCE_BACKEND:
        once = [i for i in items if i.get_closest_marker("backend_independent")]
        if once:
            config.hook.pytest_deselected(items=once)
            items[:] = [i for i in items if i not in once]
    for item in items:
        marker = item.get_closest_marker("backends")
        if marker is not None and BACKEND not in marker.args:
            reason = marker.kwargs.get("reason", "")
            item.add_marker(
                pytest.mark.skip(
                    reason=f"{' and '.join(marker.args)} only: {reason}"
                )
            )


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
    if BACKEND != "tensorflow":
        return None  # XLA (JAX) and PyTorch have every layout on the CPU
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


@pytest.fixture
def hide_package(monkeypatch):
    """`hide_package(name)`: keras_wc's dependency check
    (`keras_wc.dependencies.require`) then finds no package `name`."""
    import importlib.util

    real = importlib.util.find_spec

    def hide(name):
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda module, *a: None if module == name else real(module, *a),
        )

    return hide

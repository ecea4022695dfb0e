"""Devices and distribution: where a run computes and which process writes.

`setup_devices` splits the CPU into logical devices and turns on op
determinism (before TensorFlow's first op); `make_strategy` gives the
`tf.distribute` strategy of `--strategy`, or on JAX the
`keras.distribution` of `--distribution`; `is_chief` says whether this
process writes the outputs, and `output_dirs` where each process writes.
"""

import contextlib
import os
import re
import shutil
import tempfile

import tensorflow as tf

from train.config import ConfigError, parse_mesh


def setup_devices(config):
    """Splits the CPU into logical devices and turns on op determinism.

    Must run before TensorFlow creates its devices (before the first op).

    Raises:
        ConfigError: `--logical-cpus` asked after TensorFlow started with a
            different number of CPU devices.
    """
    if config.logical_cpus is not None and _backend() == "jax":
        _jax_host_devices(config.logical_cpus)
    elif config.logical_cpus is not None:
        cpu = tf.config.list_physical_devices("CPU")[0]
        wanted = [tf.config.LogicalDeviceConfiguration()] * config.logical_cpus
        current = tf.config.get_logical_device_configuration(cpu)
        if current is None or len(current) != config.logical_cpus:
            try:
                tf.config.set_logical_device_configuration(cpu, wanted)
            except RuntimeError as error:
                raise ConfigError(
                    "--logical-cpus must be set before TensorFlow starts; "
                    f"it already runs with {len(current or [1])} CPU "
                    "device(s)"
                ) from error
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()


def _backend():
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def _jax_host_devices(count):
    """JAX's CPU as `count` devices: XLA's flag, read when JAX's backend
    starts (its first computation)."""
    flag = f"--xla_force_host_platform_device_count={count}"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()
    import jax

    running = len(jax.devices("cpu"))
    if running != count:
        raise ConfigError(
            f"--logical-cpus {count} must be set before JAX starts; it "
            f"already runs with {running} CPU device(s)"
        )


def make_strategy(config):
    """The `tf.distribute` strategy of `config.strategy`, or on JAX the
    `keras.distribution` of `config.distribution`.

    - `default`: the default strategy (one device).
    - `mirrored`: `MirroredStrategy` over every GPU, or over every logical
      CPU device when there is no GPU (see `--logical-cpus`).
    - `multiworker`: `MultiWorkerMirroredStrategy`; the cluster and this
      process's task come from `TF_CONFIG`.
    - `--distribution data`: `keras.distribution.DataParallel` over the
      mesh's devices; `model`: a `ModelParallelPlan`.
    """
    if config.distribution != "none":
        return _keras_distribution(config)
    if config.strategy == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or (
            tf.config.list_logical_devices("CPU")
        )
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if config.strategy == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _keras_distribution(config):
    import keras

    devices = keras.distribution.list_devices()
    if config.mesh is not None:
        batch, model = parse_mesh(config.mesh)
    elif config.distribution == "model":
        batch, model = max(1, len(devices) // 2), min(2, len(devices))
    else:
        batch, model = len(devices), 1
    if batch * model > len(devices):
        raise ConfigError(
            f"the mesh {batch}x{model} needs {batch * model} devices; JAX "
            f"has {len(devices)} (more CPU devices: --logical-cpus N)"
        )
    if config.distribution == "data":
        if model != 1:
            raise ConfigError(
                f"--distribution data replicates the model: its mesh is "
                f"BATCHx1, got {config.mesh}"
            )
        return keras.distribution.DataParallel(devices=devices[:batch])
    return ModelParallelPlan(
        keras.distribution.DeviceMesh(
            (batch, model), ("batch", "model"), devices[: batch * model]
        )
    )


class ModelParallelPlan:
    """`--distribution model`: `keras.distribution.ModelParallel` over
    `mesh`, whose layout map shards the output axis of every `kernel` of the
    plain network (when the model axis divides it) on the mesh's "model"
    axis. The map is written for the plain network (`lay_out`), before
    `--method` reparameterizes it: keras_wc lays the raw variables out as
    their kernels."""

    def __init__(self, mesh):
        self.mesh = mesh
        self.distribution = None

    def lay_out(self, network):
        """Writes the layout map from `network`'s kernel variables."""
        import keras

        size = self.mesh.shape[self.mesh.axis_names.index("model")]
        layout_map = keras.distribution.LayoutMap(self.mesh)
        for variable in network.weights:
            if variable.name == "kernel" and variable.shape[-1] % size == 0:
                layout_map[re.escape(variable.path)] = (None,) * (
                    len(variable.shape) - 1
                ) + ("model",)
        self.distribution = keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch"
        )

    def scope(self):
        return self.distribution.scope()


def is_chief(strategy):
    """Whether this process writes the outputs (always, unless multi-worker:
    then the `chief` task, or worker 0 of a cluster without a chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    jobs = resolver.cluster_spec().as_dict()
    return (
        "chief" not in jobs
        and resolver.task_type == "worker"
        and resolver.task_id == 0
    )


def worker_id(strategy):
    """`"<task type>-<index>"` of this process, or `"local"`."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "local"
    return f"{resolver.task_type}-{resolver.task_id}"


@contextlib.contextmanager
def output_dirs(out, strategy):
    """`(directory, backup_root)` of this process: `out` twice for the
    chief (created by whoever writes there first). Another worker writes
    into a temporary directory, removed at the end, except for its backups,
    which stay in `out/.workers/<worker>/` so that a restarted cluster
    resumes every worker from the same epoch."""
    if is_chief(strategy):
        yield out, out
        return
    worker = worker_id(strategy)
    scratch = tempfile.mkdtemp(prefix=f"keras-wc-{worker}-")
    try:
        yield scratch, os.path.join(out, ".workers", worker)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

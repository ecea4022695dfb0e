"""Devices and distribution: where a run computes and which process writes.

`setup_devices` splits the CPU into logical devices and turns on op
determinism (before TensorFlow's first op); `make_strategy` gives the
`tf.distribute` strategy of `--strategy`; `is_chief` says whether this
process writes the outputs, and `output_dirs` where each process writes.
"""

import contextlib
import os
import shutil
import tempfile

import tensorflow as tf

from train.config import ConfigError


def setup_devices(config):
    """Splits the CPU into logical devices and turns on op determinism.

    Must run before TensorFlow creates its devices (before the first op).

    Raises:
        ConfigError: `--logical-cpus` asked after TensorFlow started with a
            different number of CPU devices.
    """
    if config.logical_cpus is not None:
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


def make_strategy(config):
    """The `tf.distribute` strategy of `config.strategy`.

    - `default`: the default strategy (one device).
    - `mirrored`: `MirroredStrategy` over every GPU, or over every logical
      CPU device when there is no GPU (see `--logical-cpus`).
    - `multiworker`: `MultiWorkerMirroredStrategy`; the cluster and this
      process's task come from `TF_CONFIG`.
    """
    if config.strategy == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or (
            tf.config.list_logical_devices("CPU")
        )
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if config.strategy == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


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

"""The experiment runner: everything `python -m train` does, importable.

`run(config)` trains `config.seeds` networks (seeds 0, 1, ...) and writes
into `config.out`:

    results.json           per-seed test accuracy, mean ± std, config, versions
    config.json            the resolved config
    seed-<k>/history.csv   per-epoch loss/accuracy (keras.callbacks.CSVLogger)
    seed-<k>/tensorboard/  TensorBoard logs
    seed-<k>/weights.json  weight percentiles per epoch (WeightDistribution)
    seed-<k>/weights.png   their plot (WC paper Fig. 3/4); scales.png for
                           learnable a, b
    seed-<k>/best.weights.h5, best.json   the best-on-validation weights

A run is resumable: each seed backs up its state after every epoch
(`keras.callbacks.BackupAndRestore` in `seed-<k>/backup/`) and seeds already
in `results.json` are skipped, so running the same command again after an
interruption finishes with the result an uninterrupted run would have had.
Everything random is tied to the seed: `keras.utils.set_random_seed`, TF op
determinism, the data pipeline's own seeds, the random state of dropout and
noise layers reset at every epoch from `(seed, epoch)`, and a resumed run
skips the data batches of the epochs already done.

The steps of one seed are functions of their own (`build_model`,
`with_weight_decay`, `apply_method`, `make_optimizer`, `compile_model`), so
that a test or a notebook can run them one at a time.
"""

import contextlib
import csv
import importlib.util
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import keras_wc
import models
from keras_wc import callbacks as wc_callbacks
from keras_wc import conversion, initialization
from keras_wc import optimizers as wc_optimizers
from train import data as data_lib
from train import presets, report, schedules
from train.config import NOT_AFFECTING_RESULTS, ConfigError

_NORMS = {"bn": "bn", "mobn": "mobn", "wn+mobn": "mobn"}
_KERNEL_REGULARIZERS = (
    "kernel_regularizer",
    "depthwise_regularizer",
    "pointwise_regularizer",
)
_OTHER_REGULARIZERS = (
    "bias_regularizer",
    "gamma_regularizer",
    "beta_regularizer",
)
_BACKUP_METADATA = "training_metadata.json"


# === Process set-up ===


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


def _worker_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "local"
    return f"{resolver.task_type}-{resolver.task_id}"


# === The steps of one seed ===


def load_data(config, seed):
    """The `train.data.DataBundle` of `config` for `seed`."""
    return data_lib.load(
        config.dataset,
        batch_size=config.batch_size,
        data_dir=config.data_dir,
        val_split=config.val_split,
        limit_train=config.limit_train,
        seed=seed,
        augment=config.augment,
        preprocess=config.preprocess,
    )


def build_model(config, bundle, *, build=models.build):
    """The network of `config` for `bundle`, ready to compile.

    `models.build` with the normalization `--method` selects, then weight
    decay (`with_weight_decay`), then the reparameterization and its
    initialization (`apply_method`).

    Args:
        config: a resolved `Config`.
        bundle: the `DataBundle` (input shape, classes, WN init images).
        build: the model builder, `models.build` (a test may pass a smaller
            stand-in with the same signature).
    """
    options = {}
    if config.method in _NORMS:
        options["norm"] = _NORMS[config.method]
    model = build(
        config.model,
        num_classes=bundle.num_classes,
        input_shape=tuple(bundle.input_shape),
        **options,
    )
    model = with_weight_decay(
        model, config.weight_decay, config.weight_decay_scope
    )
    return apply_method(model, config, bundle)


def with_weight_decay(model, weight_decay, scope="all"):
    """A copy of `model` (same weights) with PyTorch-style weight decay.

    `weight_decay` is PyTorch's (the papers' 1e-4, 5e-4), turned into the
    equal Keras penalty by `keras_wc.l2_from_pytorch` (`L2(wd/2)`) and set as
    the `kernel_regularizer` of every kernel layer (`depthwise_/pointwise_`
    for separable ones). `keras_wc.convert` carries it into the
    reparameterized layers, where it acts on `w = Ψ(v)` for fixed WC (WC
    paper Eq. 5), on `v` for learnable WC (never on `a`, `b`; §III-B), on
    `w = g·v/‖v‖` for WN.

    `scope="all"` also decays biases and the normalization layers' `gamma`
    and `beta`, as PyTorch's `SGD(model.parameters(), weight_decay=...)`
    did in the papers' code; `"kernels"` decays the kernels only.

    Args:
        model: a Sequential or Functional model.
        weight_decay: PyTorch's weight decay (>= 0); 0 returns `model`.
        scope: `"all"` or `"kernels"`.
    """
    regularizer = keras_wc.l2_from_pytorch(weight_decay)
    if regularizer is None:
        return model
    keys = _KERNEL_REGULARIZERS
    if scope == "all":
        keys += _OTHER_REGULARIZERS
    serialized = keras.regularizers.serialize(regularizer)

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        config = layer.get_config()
        for key in keys:
            if key in config:
                config[key] = serialized
        return type(layer).from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def apply_method(model, config, bundle):
    """Reparameterizes `model` as `config.method` says.

    - `wc`: `keras_wc.convert(method="wc", a, b, compander, learnable)`.
    - `pp`: `keras_wc.convert(method="pp", alpha)`.
    - `wn`, `wn+mobn`: `keras_wc.convert(method="wn", init_scale)`, then
      `keras_wc.initialize` on `bundle.init_batch(init_examples)` (the WN
      recipe's 500 training images).
    - `none`, `bn`, `mobn`: the model as built.
    """
    if config.method == "wc":
        return conversion.convert(
            model,
            "wc",
            a=config.a,
            b=config.b,
            compander=config.compander,
            learnable=False if config.learnable == "none" else config.learnable,
        )
    if config.method == "pp":
        return conversion.convert(model, "pp", alpha=config.alpha)
    if config.method in ("wn", "wn+mobn"):
        model = conversion.convert(model, "wn", init_scale=config.init_scale)
        count = min(config.init_examples, bundle.num_train)
        initialization.initialize(model, bundle.init_batch(count))
    return model


def steps_per_epoch(config, bundle):
    """`--steps-per-epoch`, else one pass over the training examples."""
    if config.steps_per_epoch:
        return config.steps_per_epoch
    return max(1, math.ceil(bundle.num_train / config.batch_size))


def make_optimizer(config, steps):
    """The optimizer of `config` with its learning-rate schedule.

    SGD is Keras's (`v ← μv − η·g; w ← w + v`), which equals PyTorch's form
    (`v ← μv + g; w ← w − η·v`) while η is constant.
    """
    learning_rate = schedules.get(
        config.schedule,
        config.lr,
        epochs=config.epochs,
        steps_per_epoch=steps,
        milestones=config.milestones,
        gamma=config.gamma,
    )
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=config.momentum)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    return wc_optimizers.ModifiedAdam(learning_rate)


def compile_model(model, config, optimizer):
    """Compiles with cross-entropy on logits and accuracy."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=config.jit,
        run_eagerly=config.run_eagerly,
    )
    return model


# === Callbacks of the runner ===


class EpochRandomState(keras.callbacks.Callback):
    """Resets the random state of every layer at each epoch from
    `(seed, epoch)`: dropout and noise masks then depend on the epoch only,
    so a resumed run draws what the uninterrupted run drew."""

    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        weights = {id(v) for v in self.model.weights}
        states = [
            v
            for v in self.model.variables
            if id(v) not in weights and tuple(v.shape) == (2,)
        ]
        values = np.random.SeedSequence([self.seed, epoch]).generate_state(
            len(states), dtype=np.uint32
        )
        for state, value in zip(states, values, strict=True):
            state.assign(np.array([value, 0], dtype=state.dtype))


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best validation accuracy.

    Saves them to `directory/best.weights.h5` with `best.json`
    (`{"epoch": ..., "val_accuracy": ...}`, epochs counted from 1), so that
    a resumed run keeps the best of the epochs it did not redo.
    """

    def __init__(self, directory, monitor="val_accuracy"):
        super().__init__()
        self.weights_path = os.path.join(directory, "best.weights.h5")
        self.info_path = os.path.join(directory, "best.json")
        self.monitor = monitor
        self.best = read_json(self.info_path)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        if self.best is None or value > self.best["val_accuracy"]:
            self.model.save_weights(self.weights_path, overwrite=True)
            self.best = {"epoch": epoch + 1, "val_accuracy": float(value)}
            write_json(self.info_path, self.best)


class _SaveEveryEpoch(keras.callbacks.Callback):
    def __init__(self, recorder, path):
        super().__init__()
        self.recorder = recorder
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        self.recorder.save(self.path)


# === One seed ===


def train_seed(
    config,
    seed,
    *,
    strategy,
    directory,
    backup_dir=None,
    chief=True,
    callbacks=(),
    build=models.build,
    log=print,
):
    """Trains and tests one network; returns its record for results.json.

    Args:
        config: a resolved `Config`.
        seed: the seed (an integer >= 0).
        strategy: the `tf.distribute` strategy.
        directory: the seed's directory (created).
        backup_dir: where `BackupAndRestore` keeps the state; default
            `directory/backup`.
        chief: whether this process writes logs and plots.
        callbacks: extra Keras callbacks, run after the runner's own (after
            the epoch's backup).
        build: the model builder (see `build_model`).
        log: where progress lines go.

    Returns:
        `{"seed", "test_acc", "test_loss", "best_val_acc", "best_epoch",
        "epochs", "resumed_from_epoch", "wall_time_s"}`.
    """
    start = time.time()
    os.makedirs(directory, exist_ok=True)
    backup_dir = backup_dir or os.path.join(directory, "backup")
    initial_epoch = backed_up_epoch(backup_dir)
    keras.utils.set_random_seed(seed)
    with _as_config_error():
        bundle = load_data(config, seed)
    steps = steps_per_epoch(config, bundle)
    policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        with strategy.scope(), _as_config_error():
            model = build_model(config, bundle, build=build)
            compile_model(model, config, make_optimizer(config, steps))
    finally:
        keras.config.set_dtype_policy(policy)

    tensorboard = chief and has_tensorboard()
    recorder = wc_callbacks.WeightDistribution(
        log_dir=os.path.join(directory, "tensorboard", "weights")
        if tensorboard
        else None
    )
    records_path = os.path.join(directory, "weights.json")
    if initial_epoch and os.path.exists(records_path):
        recorder.load(records_path)
    history_path = os.path.join(directory, "history.csv")
    _truncate_history(history_path, initial_epoch)
    if not initial_epoch:
        # Left by an attempt interrupted before its first backup.
        for name in ("best.json", "best.weights.h5"):
            if os.path.exists(os.path.join(directory, name)):
                os.remove(os.path.join(directory, name))
    best = BestWeights(directory)
    own = [EpochRandomState(seed), recorder, best]
    if config.schedule == "wn-linear" and config.optimizer != "sgd":
        own.append(schedules.Beta1Switch(config.epochs))
    if chief:
        own += [
            _SaveEveryEpoch(recorder, records_path),
            keras.callbacks.CSVLogger(history_path, append=True),
        ]
    if tensorboard:
        own.append(
            keras.callbacks.TensorBoard(
                os.path.join(directory, "tensorboard"), write_graph=False
            )
        )
    elif chief:
        log("notice: the tensorboard package is missing; no TensorBoard logs")
    own.append(keras.callbacks.BackupAndRestore(backup_dir))

    if initial_epoch:
        log(f"seed {seed}: resuming after epoch {initial_epoch}")
    # One endless stream, `steps` batches per epoch: epoch e reads batches
    # [e·steps, (e+1)·steps), so a resumed run skips exactly the batches the
    # interrupted one used.
    train_data = bundle.train.repeat().skip(initial_epoch * steps)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _multiworker_workarounds(model, bundle.train)
    model.fit(
        train_data,
        epochs=config.epochs,
        steps_per_epoch=steps,
        initial_epoch=initial_epoch,
        validation_data=bundle.val,
        callbacks=own + list(callbacks),
        shuffle=False,
        verbose=_verbosity(config, chief),
    )
    if best.best is not None:
        model.load_weights(best.weights_path)
    test_loss, test_acc = model.evaluate(bundle.test, verbose=0)
    if chief:
        _plot(recorder, directory)
    return {
        "seed": seed,
        "test_acc": float(test_acc),
        "test_loss": float(test_loss),
        "best_val_acc": best.best["val_accuracy"] if best.best else None,
        "best_epoch": best.best["epoch"] if best.best else None,
        "epochs": config.epochs,
        "num_train": bundle.num_train,
        "resumed_from_epoch": initial_epoch,
        "wall_time_s": round(time.time() - start, 2),
    }


def _multiworker_workarounds(model, dataset):
    """Lets Keras 3 `fit`/`evaluate` run under `MultiWorkerMirroredStrategy`.

    Two defects of Keras 3.15's TensorFlow trainer with this strategy
    (keras-team/keras#20585, open), worked around here and nowhere else:

    1. Before the first step, `fit` and `evaluate` build the metrics and the
       optimizer from a batch averaged over the replicas with
       `strategy.reduce`, which this strategy rejects for an `(x, y)`
       structure. The build only needs shapes and dtypes: this model is
       given one local batch instead.
    2. The per-replica logs of a step (scalars) are averaged with
       `strategy.reduce("MEAN", v, axis=0)`, which fails on a scalar. They
       are averaged over the replicas with `axis=None` instead.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    batch = next(iter(dataset))
    build = model._maybe_symbolic_build

    def build_from_local_batch(iterator=None, data_batch=None):
        return build(data_batch=batch if iterator is not None else data_batch)

    model._maybe_symbolic_build = build_from_local_batch

    current = tf_trainer.reduce_per_replica
    original = getattr(current, "__wrapped__", current)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy
        ):
            return keras.tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None)
                if isinstance(v, tf.distribute.DistributedValues)
                else v,
                values,
            )
        return original(values, strategy, reduction)

    reduce_per_replica.__wrapped__ = original
    tf_trainer.reduce_per_replica = reduce_per_replica


@contextlib.contextmanager
def _as_config_error():
    """Reports the argument errors of the data and model set-up (e.g. no
    prepared data, `a` too small for the initial weights) as `ConfigError`.
    """
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(str(error)) from error


def has_tensorboard():
    """Whether the `tensorboard` package (needed by `tf.summary`) is there."""
    return importlib.util.find_spec("tensorboard") is not None


def _plot(recorder, directory):
    if not recorder.layer_names:
        return
    recorder.plot(os.path.join(directory, "weights.png"))
    if recorder.scale_names:
        recorder.plot_scales(os.path.join(directory, "scales.png"))


def _verbosity(config, chief):
    if not chief:
        return 0
    if config.verbose != "auto":
        return int(config.verbose)
    return 1 if sys.stdout.isatty() else 2


def backed_up_epoch(backup_dir):
    """The epochs completed by the run backed up in `backup_dir` (0 if none).

    Read from `BackupAndRestore`'s metadata file, before `fit` restores the
    weights, because the data stream must be positioned before `fit`.
    """
    metadata = read_json(os.path.join(backup_dir, _BACKUP_METADATA))
    return int(metadata["epoch"]) if metadata else 0


def _truncate_history(path, initial_epoch):
    """Drops the CSV rows of epochs a resumed run will redo."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    if not initial_epoch:
        os.remove(path)
        return
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) < initial_epoch]
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows(kept)


# === A whole run ===


def run(config, *, callbacks=(), build=models.build, log=print):
    """Trains every seed of `config` and writes the outputs (module doc).

    Seeds already recorded in `OUT/results.json` are skipped; an interrupted
    seed resumes from its last completed epoch.

    Args:
        config: a resolved `Config` (`Config.resolve()`).
        callbacks: extra Keras callbacks for every seed.
        build: the model builder (see `build_model`).
        log: where progress lines go (chief only).

    Returns:
        The content of results.json.

    Raises:
        ConfigError: `OUT` holds results of a different configuration.
    """
    setup_devices(config)
    strategy = make_strategy(config)
    chief = is_chief(strategy)
    out = config.out or os.path.join("runs", config.run_name())
    with _output_dirs(out, chief, _worker_id(strategy)) as dirs:
        directory, backup_root = dirs
        results = _start_results(config, directory)
        write_json(os.path.join(directory, "config.json"), config.to_dict())
        # Written before training, so that an interrupted run in this
        # directory cannot be resumed with another configuration.
        write_json(os.path.join(directory, "results.json"), results)
        done = {record["seed"] for record in results["seeds"]}
        say = log if chief else (lambda message: None)
        for seed in range(config.seeds):
            if seed in done:
                say(f"seed {seed}: already done in {directory}, skipped")
                continue
            say(
                f"== {config.run_name()}: seed {seed + 1}/{config.seeds} "
                f"(model {config.model}, data {config.dataset}, method "
                f"{config.method}) -> {directory}"
            )
            record = train_seed(
                config,
                seed,
                strategy=strategy,
                directory=os.path.join(directory, f"seed-{seed}"),
                backup_dir=os.path.join(
                    backup_root, f"seed-{seed}", "backup"
                ),
                chief=chief,
                callbacks=callbacks,
                build=build,
                log=say,
            )
            say(
                f"seed {seed}: test accuracy {100 * record['test_acc']:.2f}% "
                f"(best val {_percent(record['best_val_acc'])} at epoch "
                f"{record['best_epoch']}, {record['wall_time_s']:.0f} s)"
            )
            results["seeds"].append(record)
            _summarize(results, config)
            write_json(os.path.join(directory, "results.json"), results)
        results["output_dir"] = os.path.abspath(out)
        return results


def _percent(value):
    return "–" if value is None else f"{100 * value:.2f}%"


@contextlib.contextmanager
def _output_dirs(out, chief, worker):
    """`(directory, backup_root)`: `out` twice for the chief. Another worker
    writes into a temporary directory, except for its backups, which stay
    in `out/.workers/<worker>/` so that a restarted cluster resumes every
    worker from the same epoch."""
    if chief:
        os.makedirs(out, exist_ok=True)
        yield out, out
        return
    scratch = tempfile.mkdtemp(prefix=f"keras-wc-{worker}-")
    try:
        yield scratch, os.path.join(out, ".workers", worker)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _start_results(config, directory):
    path = os.path.join(directory, "results.json")
    previous = read_json(path)
    current = _comparable(config.to_dict())
    if previous is not None:
        if _comparable(previous["config"]) != current:
            raise ConfigError(
                f"{directory} holds results of another configuration; "
                "pass a new --out (or the same flags to resume)"
            )
        previous["config"] = config.to_dict()
        return previous
    preset = presets.get(config.preset) if config.preset else None
    return {
        "name": config.run_name(),
        "preset": config.preset,
        "label": preset["label"] if preset else report.default_label(config),
        "paper": preset["paper"] if preset else None,
        "config": config.to_dict(),
        "seeds": [],
        "test_acc": None,
        "complete": False,
        "versions": versions(),
        "wall_time_s": 0.0,
    }


def _comparable(config_dict):
    return {
        k: v
        for k, v in config_dict.items()
        if k not in NOT_AFFECTING_RESULTS
    }


def _summarize(results, config):
    accs = [record["test_acc"] for record in results["seeds"]]
    results["test_acc"] = {
        "mean": float(np.mean(accs)),
        "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
        "n": len(accs),
    }
    results["complete"] = len(accs) >= config.seeds
    results["wall_time_s"] = round(
        sum(record["wall_time_s"] for record in results["seeds"]), 2
    )
    results["versions"] = versions()


def versions():
    """Versions of Python, TensorFlow, Keras, keras_wc, NumPy; the devices."""
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_wc": keras_wc.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "devices": [d.name for d in tf.config.list_logical_devices()],
    }


def read_json(path):
    """The JSON content of `path`, or `None` if it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


def write_json(path, content):
    """Writes `content` to `path` atomically (write, then rename)."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as file:
        json.dump(content, file, indent=2)
        file.write("\n")
    os.replace(temporary, path)

"""The Keras callbacks the runner gives `fit` for one seed.

`seed_callbacks` lists them in order; `EpochRandomState` and `BestWeights`
are the runner's own, the rest come from Keras and `keras_wc`.
"""

import dataclasses
import importlib.util
import os

import keras
import numpy as np

from keras_wc import callbacks as wc_callbacks
from train import schedules
from train.results import read_json, write_json

# The per-epoch losses and metrics (`keras.callbacks.CSVLogger`).
HISTORY_FILE = "history.csv"


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

    FILES = ("best.weights.h5", "best.json")

    def __init__(self, directory, monitor="val_accuracy"):
        super().__init__()
        self.weights_path, self.info_path = (
            os.path.join(directory, name) for name in self.FILES
        )
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


class _SaveRecords(keras.callbacks.Callback):
    """Saves a `WeightDistribution`'s records after every epoch."""

    def __init__(self, recorder, path):
        super().__init__()
        self.recorder = recorder
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        self.recorder.save(self.path)


@dataclasses.dataclass
class SeedCallbacks:
    """The callbacks of one seed (`callbacks`, in `fit`'s order), and the
    two whose state the runner reads after `fit`."""

    callbacks: list
    recorder: wc_callbacks.WeightDistribution
    best_weights: BestWeights


def seed_callbacks(
    config, seed, directory, backup_dir, *, initial_epoch, chief, log=print
):
    """The runner's callbacks of one seed, in order.

    `EpochRandomState`, `WeightDistribution` (records loaded back when
    resuming), `BestWeights`, `Beta1Switch` (WN recipe with Adam); on the
    chief, saving the weight records, `CSVLogger` (`history.csv`) and
    `TensorBoard` (when the package is there); last, `BackupAndRestore` in
    `backup_dir`, so that an epoch's backup follows everything it records.
    """
    tensorboard = chief and has_tensorboard()
    recorder = wc_callbacks.WeightDistribution(
        log_dir=os.path.join(directory, "tensorboard", "weights")
        if tensorboard
        else None
    )
    records_path = os.path.join(directory, "weights.json")
    if initial_epoch and os.path.exists(records_path):
        recorder.load(records_path)
    best = BestWeights(directory)
    own = [EpochRandomState(seed), recorder, best]
    if config.schedule == "wn-linear" and config.optimizer != "sgd":
        own.append(schedules.Beta1Switch(config.epochs))
    if chief:
        own += [
            _SaveRecords(recorder, records_path),
            keras.callbacks.CSVLogger(
                os.path.join(directory, HISTORY_FILE), append=True
            ),
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
    return SeedCallbacks(own, recorder, best)


def has_tensorboard():
    """Whether the `tensorboard` package (needed by `tf.summary`) is there."""
    return importlib.util.find_spec("tensorboard") is not None


def plot(recorder, directory):
    """`weights.png` (and `scales.png` for learnable WC) of `recorder`."""
    if not recorder.layer_names:
        return
    recorder.plot(os.path.join(directory, "weights.png"))
    if recorder.scale_names:
        recorder.plot_scales(os.path.join(directory, "scales.png"))

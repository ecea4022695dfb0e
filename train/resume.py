"""Resume bookkeeping of one seed: where an interrupted seed stopped, and the
files of the epochs it will redo.

`keras.callbacks.BackupAndRestore` restores the weights, the optimizer and
the epoch inside `fit`; what must happen before `fit` is here: reading the
epoch reached (the data stream is positioned from it) and dropping what the
interrupted attempt wrote after its last backup.
"""

import csv
import os

from train.callbacks import HISTORY_FILE, BestWeights
from train.results import read_json

# The file in which `BackupAndRestore` records the epochs it backed up.
_BACKUP_METADATA = "training_metadata.json"


def backed_up_epoch(backup_dir):
    """The epochs completed by the run backed up in `backup_dir` (0 if none).

    Read from `BackupAndRestore`'s metadata file, before `fit` restores the
    weights, because the data stream must be positioned before `fit`.
    """
    metadata = read_json(os.path.join(backup_dir, _BACKUP_METADATA))
    return int(metadata["epoch"]) if metadata else 0


def prepare(directory, initial_epoch):
    """Drops the outputs in the seed's `directory` that a run resumed after
    `initial_epoch` epochs (0: a fresh start) will write again: the rows of
    later epochs in `history.csv` and, on a fresh start, the best weights of
    an attempt interrupted before its first backup."""
    truncate_history(os.path.join(directory, HISTORY_FILE), initial_epoch)
    if not initial_epoch:
        for name in BestWeights.FILES:
            if os.path.exists(os.path.join(directory, name)):
                os.remove(os.path.join(directory, name))


def truncate_history(path, initial_epoch):
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

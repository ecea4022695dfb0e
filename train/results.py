"""The result files of a run: `results.json` and `config.json`.

`results.json` holds `label`, `preset`, `paper` (the published
`{"mean", "std"}` in %, or null), the resolved `config`, the per-seed
records `seeds` (`{"seed", "test_acc", ...}`), their summary `test_acc`
(`{"mean", "std", "n"}`, fractions; null before the first seed), likewise
`initial_test_acc` and `export_test_acc` when the seeds record them
(`--init-from`, `--export`), `complete`, `versions` and `wall_time_s`.
`start` begins or continues one, `summarize` updates it after a seed, `read`
checks one written earlier (`python -m train.report` reads them so), `save`
writes both files.
"""

import json
import numbers
import os
import platform

import numpy as np

from train import presets
from train.config import NOT_AFFECTING_RESULTS, ConfigError

FILE = "results.json"
CONFIG_FILE = "config.json"

_METHOD_LABELS = {
    "none": "",
    "wc": " + WC",
    "pp": " + PP",
    "wn": " + WN",
    "bn": " + BN",
    "mobn": " + MOBN",
    "wn+mobn": " + WN + MOBN",
}


def default_label(config):
    """The row name of a run without a preset, e.g. `"resnet18 + WC"`."""
    label = config.model + _METHOD_LABELS[config.method]
    if config.method == "wc":
        if config.compander != "arctan":
            label += f" ({config.compander})"
        if config.learnable != "none":
            label += f" (learnable, {config.learnable})"
    if config.init_from is not None:
        label += ", fine-tuned"
    return label


def start(config, directory=None):
    """The results of `config` so far: those in `directory/results.json`
    when there is one (a run resumed), else new ones. Reads only.

    Raises:
        ConfigError: that file is malformed or holds results of another
            configuration.
    """
    path = None if directory is None else os.path.join(directory, FILE)
    if path is not None and os.path.exists(path):
        previous = read(path)
        if _comparable(previous["config"]) != _comparable(config.to_dict()):
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
        "label": preset["label"] if preset else default_label(config),
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


def _summary(values):
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def summarize(results, config):
    """Updates `results` after a seed's record was appended to `seeds`:
    `test_acc`, and `initial_test_acc` / `export_test_acc` when the seeds
    have them (`--init-from`, `--export`)."""
    accs = [record["test_acc"] for record in results["seeds"]]
    results["test_acc"] = _summary(accs)
    for key in ("initial_test_acc", "export_test_acc"):
        values = [r[key] for r in results["seeds"] if key in r]
        if values:
            results[key] = _summary(values)
    results["complete"] = len(accs) >= config.seeds
    results["wall_time_s"] = round(
        sum(record.get("wall_time_s", 0.0) for record in results["seeds"]), 2
    )
    results["versions"] = versions()


def save(directory, config, results):
    """Writes `config.json` and `results.json` into `directory` (made)."""
    os.makedirs(directory, exist_ok=True)
    write_json(os.path.join(directory, CONFIG_FILE), config.to_dict())
    write_json(os.path.join(directory, FILE), results)


def versions():
    """Versions of Python, TensorFlow, Keras, keras_wc, NumPy; the devices."""
    # Imported here, so that reading results does not load TensorFlow.
    import keras
    import tensorflow as tf

    import keras_wc

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_wc": keras_wc.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "devices": [d.name for d in tf.config.list_logical_devices()],
    }


def read(path):
    """The content of the `results.json` at `path`, checked.

    Checks what a report and a resumed run use: an object with `label`
    (string), `config` (object with `dataset`, a string, and `seeds`, an
    integer), `seeds` (list of objects with an integer `seed` and a number
    `test_acc`), and, when present, `test_acc` and `paper` (null or objects
    with numbers `mean` and `std`).

    Raises:
        ConfigError: the file cannot be read, is not JSON or lacks one of
            these; the message names the file and the key.
    """
    try:
        with open(path) as file:
            content = json.load(file)
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from error
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"{path} is not valid JSON: {error}") from error
    check = _Checker(path)
    check.kind("the whole file", content, dict)
    check.key(content, "label", str)
    config = check.key(content, "config", dict)
    check.key(config, "dataset", str, prefix="config.")
    check.key(config, "seeds", int, prefix="config.")
    for index, record in enumerate(check.key(content, "seeds", list)):
        check.kind(f"'seeds[{index}]'", record, dict)
        check.key(record, "seed", int, prefix=f"seeds[{index}].")
        check.key(record, "test_acc", float, prefix=f"seeds[{index}].")
    for name in ("test_acc", "paper"):
        summary = check.key(content, name, (dict, None), required=False)
        if summary is not None:
            for key in ("mean", "std"):
                check.key(summary, key, float, prefix=f"{name}.")
    return content


class _Checker:
    """Checks the keys of a JSON object, naming `path` in the message."""

    _NAMES = {
        dict: "an object",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
        None: "null",
    }

    def __init__(self, path):
        self.path = path

    def key(self, mapping, key, kinds, *, prefix="", required=True):
        """`mapping[key]`, which must be one of `kinds` (None: absent)."""
        if key not in mapping:
            if required:
                raise ConfigError(f"{self.path}: missing key '{prefix}{key}'")
            return None
        return self.kind(f"'{prefix}{key}'", mapping[key], kinds)

    def kind(self, name, value, kinds):
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        for kind in kinds:
            if _is(value, kind):
                return value
        expected = " or ".join(self._NAMES[kind] for kind in kinds)
        shown = json.dumps(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        raise ConfigError(
            f"{self.path}: {name} must be {expected}, got {shown}"
        )


def _is(value, kind):
    if kind is None:
        return value is None
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, numbers.Real)
    return isinstance(value, kind)


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

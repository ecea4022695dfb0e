"""A table of bad inputs to the public entry points.

Every row makes one bad call and asserts that it raises the expected
exception, with a message naming the culprit argument and its value, and
that nothing changed: the files under the test's directory (also the
working directory, so that a relative or empty path lands there) and
whatever else the row snapshots (model variables, a recorder's records).

To add a row, append a `Case` to the list of its entry point (or add a
new list to `CASES`):

    Case(
        "entry/what-is-bad",                 # the test id
        lambda f: entry(f.wn_model, ...),    # the bad call, on fixtures `f`
        ValueError,                          # the exception type
        r"`arg` must be .* Received: arg=",  # re.search on the message
        snapshot=variables("wn_model"),      # what must not change
        setup=lambda f: ...,                 # optional: files to create
    )

`f` is a fresh `Fixtures` per row; its models and recorder are built on
first use (before the snapshot is taken). The snapshot of the files is
always taken; `snapshot=` adds more.
"""

import dataclasses
import functools
import os
import pathlib
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_wc
from keras_wc import callbacks, companders, optimizers, tree
from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm

NAN = float("nan")
INF = float("inf")


class Fixtures:
    """Fresh objects for one row, built on first use."""

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.cleanups = []

    @functools.cached_property
    def wn_model(self):
        """A built WN model: WN (no bias) + MOBN, then WN with a bias."""
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.Input((4,), name="x"),
                keras_wc.WNDense(6, use_bias=False, name="hidden"),
                MeanOnlyBatchNorm(name="mobn"),
                keras.layers.LeakyReLU(0.1),
                keras_wc.WNDense(3, name="logits"),
            ],
            name="wn_model",
        )

    @functools.cached_property
    def two_input_model(self):
        keras.utils.set_random_seed(0)
        left = keras.Input((3,), name="left")
        right = keras.Input((2,), name="right")
        merged = keras.layers.Concatenate()([left, right])
        outputs = keras_wc.WNDense(2, name="head")(merged)
        return keras.Model([left, right], outputs, name="two_inputs")

    @functools.cached_property
    def plain_model(self):
        """A built plain model to export."""
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [keras.Input((3,), name="x"), keras.layers.Dense(2, name="out")],
            name="plain",
        )

    @functools.cached_property
    def block(self):
        """A built plain transformer block (attention, op nodes, dense)."""
        keras.utils.set_random_seed(0)
        tokens = keras.Input((4, 6), name="tokens")
        h = keras.layers.MultiHeadAttention(2, 3, name="attention")(
            tokens, tokens
        )
        h = keras.ops.relu(h) * 2.0
        outputs = keras.layers.Dense(2, name="head")(h[:, 0])
        return keras.Model(tokens, outputs, name="block")

    @functools.cached_property
    def dense(self):
        """A built plain Dense layer whose kernel has |w| up to ~1."""
        layer = keras.layers.Dense(2, name="dense")
        layer.build((None, 3))
        layer.kernel.assign(np.linspace(-1, 1, 6).reshape(3, 2))
        return layer

    @functools.cached_property
    def recorder(self):
        """A WeightDistribution that recorded epoch 0 of `plain_model`."""
        recorder = callbacks.WeightDistribution()
        recorder.set_model(self.plain_model)
        recorder.record(0)
        return recorder

    def batch(self, samples=8, features=4, dtype="float32"):
        rng = np.random.default_rng(0)
        return rng.normal(size=(samples, features)).astype(dtype)

    def path(self, *parts):
        return os.fspath(self.root.joinpath(*parts))

    def file(self, *parts, content=b"keep me"):
        path = self.root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return os.fspath(path)

    def directory(self, *parts, files=()):
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        for name in files:
            (path / name).write_bytes(b"keep " + name.encode())
        return os.fspath(path)


# -- snapshots ---------------------------------------------------------------


def files(f):
    """Every entry under the root: kind, contents and modification time."""
    listing = {}
    for path in sorted(f.root.rglob("*")):
        stat = path.lstat()
        key = os.fspath(path.relative_to(f.root))
        if path.is_dir():
            listing[key] = ("dir", stat.st_mtime_ns)
        else:
            listing[key] = ("file", path.read_bytes(), stat.st_mtime_ns)
    return listing


def variables(name):
    """The values of a fixture model's variables (and whether it is built)."""

    def snapshot(f):
        model = getattr(f, name)
        return {
            "built": model.built,
            **{v.path: np.array(v) for v in model.variables},
        }

    return snapshot


def records(f):
    """A recorder's records."""
    return {
        "epochs": list(f.recorder.epochs),
        "percentiles": {
            k: [list(row) for row in v]
            for k, v in f.recorder.percentiles.items()
        },
        "scales": dict(f.recorder.scales),
    }


def nothing(f):
    return None


def structure(name):
    """A fixture model's (or layer's) layer classes and variables."""

    def snapshot(f):
        root = getattr(f, name)
        return {
            "classes": [type(node.layer).__name__ for node in tree.walk(root)]
            + [type(root).__name__],
            **{v.path: np.array(v) for v in root.variables},
        }

    return snapshot


def _assert_same(before, after, where="state"):
    if isinstance(before, dict):
        assert isinstance(after, dict), where
        assert sorted(before) == sorted(after), where
        for key in before:
            _assert_same(before[key], after[key], f"{where}[{key!r}]")
    elif isinstance(before, np.ndarray):
        np.testing.assert_array_equal(after, before, err_msg=where)
    else:
        assert after == before, where


# -- set-ups -----------------------------------------------------------------


def _existing_export(f):
    f.directory("out", "1", files=("saved_model.pb",))
    f.file("out", "1.keras")


def _read_only_directory(f):
    """`ro/` in which nothing can be created, or skips the row."""
    path = f.directory("ro")
    os.chmod(path, 0o555)
    f.cleanups.append(lambda: os.chmod(path, 0o755))
    if _writable(path) and shutil.which("chattr"):
        # Root ignores permission bits, not the immutable attribute.
        subprocess.run(["chattr", "+i", path], capture_output=True)
        f.cleanups.insert(
            0, lambda: subprocess.run(["chattr", "-i", path], check=False)
        )
    if _writable(path):
        pytest.skip("cannot make a directory read-only here")


def _writable(path):
    probe = os.path.join(path, ".probe")
    try:
        with open(probe, "x"):
            pass
    except OSError:
        return False
    os.remove(probe)
    return True


def _saved_records(f, content):
    return f.file("records.json", content=content)


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Fixtures], Any]
    error: type[BaseException]
    match: str
    snapshot: Callable[[Fixtures], Any] = nothing
    setup: Callable[[Fixtures], Any] | None = None


def calling(function, *args, **kwargs):
    """A row's `call` that ignores the fixtures: `function(*args, **kwargs)`."""
    return lambda f: function(*args, **kwargs)


def _init(f, data, model="wn_model", **kwargs):
    return keras_wc.initialize(getattr(f, model), data, **kwargs)


def _nan_at(f, index, value=NAN):
    x = f.batch()
    x[index] = value
    return x


def _dataset(f, x):
    return tf.data.Dataset.from_tensor_slices(x).batch(4)


WN = variables("wn_model")
TWO = variables("two_input_model")

INITIALIZE = [
    Case(
        "initialize/nan",
        lambda f: _init(f, _nan_at(f, (2, 1))),
        ValueError,
        r"`data` must be finite: .* 1 NaN .*Received: data \(shape \(8, 4\)",
        WN,
    ),
    Case(
        "initialize/inf",
        lambda f: _init(f, _nan_at(f, (0, 0), INF)),
        ValueError,
        r"`data` must be finite: .* 0 NaN and 1 infinite",
        WN,
    ),
    Case(
        "initialize/-inf-in-an-(x,y)-tuple",
        lambda f: _init(f, (_nan_at(f, (7, 3), -INF), np.zeros(8))),
        ValueError,
        r"`data` must be finite: .*1 infinite",
        WN,
    ),
    Case(
        "initialize/nan-in-a-dataset",
        lambda f: _init(f, _dataset(f, _nan_at(f, (1, 2)))),
        ValueError,
        r"`data` must be finite: .*1 NaN",
        WN,
    ),
    Case(
        "initialize/nan-in-a-generator",
        lambda f: _init(f, iter([_nan_at(f, (1, 2))]), num_samples=8),
        ValueError,
        r"`data` must be finite: .*1 NaN",
        WN,
    ),
    Case(
        "initialize/float32-overflow-of-the-statistics",
        lambda f: _init(f, f.batch() * 1e30),
        ValueError,
        r"`data` gives a non-finite pre-activation mean or variance in "
        r"layer 'hidden'.*Received: data with max \|value\| [0-9.]+e\+30",
        WN,
    ),
    Case(
        "initialize/strings",
        lambda f: _init(f, np.full((8, 4), "a")),
        TypeError,
        r"`data` must hold real numbers .*Received: data .*dtype <U1",
        WN,
    ),
    Case(
        "initialize/objects",
        lambda f: _init(f, np.full((8, 4), None, dtype=object)),
        TypeError,
        r"`data` must hold real numbers .*dtype object",
        WN,
    ),
    Case(
        "initialize/complex",
        lambda f: _init(f, f.batch().astype(complex)),
        TypeError,
        r"`data` must hold real numbers .*dtype complex128",
        WN,
    ),
    Case(
        "initialize/wrong-feature-size",
        lambda f: _init(f, f.batch(features=5)),
        ValueError,
        r"does not match the input shape \(None, 4\) .*Received: data "
        r"\(shape \(8, 5\)",
        WN,
    ),
    Case(
        "initialize/wrong-rank",
        lambda f: _init(f, f.batch()[:, :, None]),
        ValueError,
        r"input shape \(None, 4\) .*Received: data \(shape \(8, 4, 1\)",
        WN,
    ),
    Case(
        "initialize/empty-array",
        lambda f: _init(f, np.zeros((0, 4), "float32")),
        ValueError,
        r"at least 2 samples.*Received: 0 sample",
        WN,
    ),
    Case(
        "initialize/one-sample",
        lambda f: _init(f, f.batch(samples=1)),
        ValueError,
        r"at least 2 samples.*Received: 1 sample",
        WN,
    ),
    Case(
        "initialize/empty-iterator",
        lambda f: _init(f, iter([])),
        ValueError,
        r"`data` is empty",
        WN,
    ),
    Case(
        "initialize/none",
        lambda f: _init(f, None),
        TypeError,
        r"`data` must be an array .*Received: data of type NoneType",
        WN,
    ),
    Case(
        "initialize/dict-for-a-single-input",
        lambda f: _init(f, {"image": f.batch()}),
        ValueError,
        r"`data` must have the input names .*Received: data with keys "
        r"\['image'\]",
        WN,
    ),
    Case(
        "initialize/one-array-for-two-inputs",
        lambda f: _init(f, f.batch(features=3), model="two_input_model"),
        ValueError,
        r"`data` must hold 2 input array\(s\) .*Received: 1 array",
        TWO,
    ),
    Case(
        "initialize/two-inputs-of-different-batch-sizes",
        lambda f: _init(
            f,
            [f.batch(features=3), f.batch(samples=6, features=2)],
            model="two_input_model",
        ),
        ValueError,
        r"same number of samples\. Received: data with batch sizes \[6, 8\]",
        TWO,
    ),
    Case(
        "initialize/nan-in-the-second-input",
        lambda f: _init(
            f,
            [f.batch(features=3), _nan_at(f, (0, 0))[:, :2].copy()],
            model="two_input_model",
        ),
        ValueError,
        r"`data` must be finite: .*Received: data at \[1\]",
        TWO,
    ),
    Case(
        "initialize/num_samples-nan",
        lambda f: _init(f, f.batch(), num_samples=NAN),
        TypeError,
        r"`num_samples` must be a positive int or None\. "
        r"Received: num_samples=nan",
        WN,
    ),
    Case(
        "initialize/num_samples-inf",
        lambda f: _init(f, f.batch(), num_samples=INF),
        TypeError,
        r"Received: num_samples=inf",
        WN,
    ),
    Case(
        "initialize/num_samples-0",
        lambda f: _init(f, f.batch(), num_samples=0),
        ValueError,
        r"`num_samples` must be >= 1\. Received: num_samples=0",
        WN,
    ),
    Case(
        "initialize/num_samples-str",
        lambda f: _init(f, f.batch(), num_samples="8"),
        TypeError,
        r"Received: num_samples='8'",
        WN,
    ),
    Case(
        "initialize/num_samples-bool",
        lambda f: _init(f, f.batch(), num_samples=True),
        TypeError,
        r"Received: num_samples=True",
        WN,
    ),
    Case(
        "initialize/not-a-model",
        lambda f: keras_wc.initialize("model", f.batch()),
        TypeError,
        r"`model` must be a Keras model or layer\. Received: model='model'",
    ),
]


def _export(f, path, model="plain_model", **kwargs):
    return keras_wc.export(getattr(f, model), path, **kwargs)


EXPORT = [
    Case(
        "export/empty-path",
        lambda f: _export(f, ""),
        ValueError,
        r"`path` must be a non-empty path\. Received: path=''",
    ),
    Case(
        "export/dot",
        lambda f: _export(f, "."),
        ValueError,
        r"`path` must name the directory or file to create.*"
        r"Received: path='\.'",
    ),
    Case(
        "export/dot-dot",
        lambda f: _export(f, "out/.."),
        ValueError,
        r"Received: path='out/\.\.'",
    ),
    Case(
        "export/path-int",
        lambda f: _export(f, 3),
        TypeError,
        r"`path` must be a str or path-like\. Received: path=3",
    ),
    Case(
        "export/path-bytes",
        lambda f: _export(f, b"out/1"),
        TypeError,
        r"Received: path=b'out/1'",
    ),
    Case(
        "export/non-empty-saved-model-directory",
        lambda f: _export(f, "out/1"),
        FileExistsError,
        r"would replace the existing directory '.*out/1'.*overwrite=True"
        r".*Received: path='out/1'",
        setup=_existing_export,
    ),
    Case(
        "export/existing-keras-file",
        lambda f: _export(f, "out/2"),
        FileExistsError,
        r"existing file '.*out/2\.keras'.*Received: path='out/2'",
        setup=lambda f: f.file("out", "2.keras"),
    ),
    Case(
        "export/keras-path-is-a-directory-even-with-overwrite",
        lambda f: _export(f, "out/1", overwrite=True),
        IsADirectoryError,
        r"writes the file '.*out/1\.keras', which is a directory\. "
        r"Received: path='out/1'",
        setup=lambda f: f.directory("out", "1.keras", files=("x",)),
    ),
    Case(
        "export/saved-model-path-is-a-file",
        lambda f: _export(f, "model", overwrite=True),
        NotADirectoryError,
        r"SavedModel directory '.*model', which is a file\. "
        r"Received: path='model'",
        setup=lambda f: f.file("model"),
    ),
    Case(
        "export/onnx-path-is-a-directory",
        lambda f: _export(f, "model.onnx", format="onnx", overwrite=True),
        IsADirectoryError,
        r"'.*model\.onnx', which is a directory\. Received: path='model.onnx'",
        setup=lambda f: f.directory("model.onnx"),
    ),
    Case(
        "export/existing-onnx-file",
        lambda f: _export(f, "model.onnx", format="onnx"),
        FileExistsError,
        r"existing file '.*model\.onnx'.*Received: path='model\.onnx'",
        setup=lambda f: f.file("model.onnx"),
    ),
    Case(
        "export/parent-is-a-file",
        lambda f: _export(f, "notes.txt/1"),
        NotADirectoryError,
        r"`path` needs a directory at '.*notes\.txt', which is a file\. "
        r"Received: path='notes\.txt/1'",
        setup=lambda f: f.file("notes.txt"),
    ),
    Case(
        "export/parent-not-writable",
        lambda f: _export(f, "ro/new/1"),
        PermissionError,
        r"cannot write in the directory '.*ro'.*Received: path='ro/new/1'",
        setup=_read_only_directory,
    ),
    Case(
        "export/unknown-format",
        lambda f: _export(f, "out/1", format="tflite"),
        ValueError,
        r"`format` must be one of 'tf_saved_model', 'onnx', 'litert'\. "
        r"Received: format='tflite'",
    ),
    Case(
        "export/format-none",
        lambda f: _export(f, "out/1", format=None),
        ValueError,
        r"Received: format=None",
    ),
    Case(
        "export/overwrite-not-a-bool",
        lambda f: _export(f, "out/1", overwrite="yes"),
        TypeError,
        r"`overwrite` must be True or False\. Received: overwrite='yes'",
    ),
    Case(
        "export/not-a-model",
        lambda f: keras_wc.export("model", "out/1"),
        TypeError,
        r"expects a `keras.Model`\. Received: model='model'",
    ),
    Case(
        "export/unbuilt-model",
        lambda f: keras_wc.export(
            keras.Sequential([keras.layers.Dense(2)], name="unbuilt"),
            "out/1",
        ),
        ValueError,
        r"needs a built model.*Received: unbuilt model 'unbuilt'",
    ),
]


OPTIMIZERS = [
    Case(
        f"optimizers/{name}-{value}",
        calling(cls, **{name: value}),
        ValueError,
        rf"{cls.__name__}: `{name}` must be .*{wanted}\. "
        rf"Received: {name}={value}",
    )
    for cls, name, value, wanted in [
        (optimizers.ModifiedAdam, "learning_rate", NAN, ">= 0"),
        (optimizers.ModifiedAdam, "learning_rate", INF, ">= 0"),
        (optimizers.ModifiedAdam, "learning_rate", -0.1, ">= 0"),
        (optimizers.ModifiedAdam, "beta_1", 1.0, r"in \[0, 1\)"),
        (optimizers.ModifiedAdam, "beta_2", NAN, r"in \[0, 1\)"),
        (optimizers.ModifiedAdam, "epsilon", -1e-07, ">= 0"),
        (optimizers.ModifiedAdam, "weight_decay", NAN, "None or .* >= 0"),
        (optimizers.ModifiedAdam, "clipnorm", 0.0, "None or .* > 0"),
        (
            optimizers.modified(keras.optimizers.SGD),
            "momentum",
            NAN,
            r"in \[0, 1\]",
        ),
        (
            optimizers.modified(keras.optimizers.RMSprop),
            "rho",
            1.5,
            r"in \[0, 1\)",
        ),
    ]
] + [
    Case(
        "optimizers/modified-of-an-instance",
        lambda f: optimizers.modified(keras.optimizers.Adam()),
        TypeError,
        r"`optimizer_class` must be a keras\.optimizers\.Optimizer subclass"
        r"\. Received: <keras.*Adam object",
    ),
    Case(
        "optimizers/modified-of-a-name",
        lambda f: optimizers.modified("Adam"),
        TypeError,
        r"`optimizer_class` must be .*Received: 'Adam'",
    ),
]


def _recorder(**kwargs):
    return callbacks.WeightDistribution(**kwargs)


CALLBACKS = [
    Case(
        "callbacks/layers-empty",
        lambda f: _recorder(layers=[]),
        ValueError,
        r"`layers` must name at least one layer.*Received: layers=\[\]",
    ),
    Case(
        "callbacks/layers-a-dict",
        lambda f: _recorder(layers={"conv1": True}),
        TypeError,
        r"`layers` must be None, .*Received: layers=\{'conv1': True\}",
    ),
    Case(
        "callbacks/layers-not-names",
        lambda f: _recorder(layers=[1]),
        TypeError,
        r"Received: layers=\[1\]",
    ),
    Case(
        "callbacks/percentiles-a-number",
        lambda f: _recorder(percentiles=50),
        TypeError,
        r"`percentiles` must be a non-empty sequence.*Received: "
        r"percentiles=50",
    ),
    Case(
        "callbacks/percentiles-a-string",
        lambda f: _recorder(percentiles="50"),
        TypeError,
        r"Received: percentiles='50'",
    ),
    Case(
        "callbacks/percentiles-nan",
        lambda f: _recorder(percentiles=[50, NAN]),
        ValueError,
        r"numbers in \[0, 100\]\. Received: percentiles=\[50, nan\]",
    ),
    Case(
        "callbacks/percentiles-above-100",
        lambda f: _recorder(percentiles=(50, 101)),
        ValueError,
        r"Received: percentiles=\(50, 101\)",
    ),
    Case(
        "callbacks/log_dir-is-a-file",
        lambda f: _recorder(log_dir=f.path("notes.txt")),
        NotADirectoryError,
        r"`log_dir` needs a directory at '.*notes\.txt', which is a file\. "
        r"Received: log_dir='.*notes\.txt'",
        setup=lambda f: f.file("notes.txt"),
    ),
    Case(
        "callbacks/log_dir-below-a-file",
        lambda f: _recorder(log_dir="notes.txt/tb"),
        NotADirectoryError,
        r"Received: log_dir='notes\.txt/tb'",
        setup=lambda f: f.file("notes.txt"),
    ),
    Case(
        "callbacks/log_dir-empty",
        lambda f: _recorder(log_dir=""),
        ValueError,
        r"`log_dir` must be a non-empty path\. Received: log_dir=''",
    ),
    Case(
        "callbacks/log_dir-int",
        lambda f: _recorder(log_dir=3),
        TypeError,
        r"`log_dir` must be a str or path-like\. Received: log_dir=3",
    ),
    Case(
        "callbacks/save-to-a-directory",
        lambda f: f.recorder.save(f.path("records")),
        IsADirectoryError,
        r"`path` must be a file, not a directory\. "
        r"Received: path='.*records'",
        records,
        setup=lambda f: f.directory("records"),
    ),
    Case(
        "callbacks/save-to-a-missing-directory",
        lambda f: f.recorder.save("missing/records.json"),
        FileNotFoundError,
        r"must be in an existing directory.*"
        r"Received: path='missing/records\.json'",
        records,
    ),
    Case(
        "callbacks/save-empty-path",
        lambda f: f.recorder.save(""),
        ValueError,
        r"`path` must be a non-empty path\. Received: path=''",
        records,
    ),
    Case(
        "callbacks/load-a-missing-file",
        lambda f: f.recorder.load("missing.json"),
        FileNotFoundError,
        r"`path` must be an existing file\. Received: path='missing\.json'",
        records,
    ),
    Case(
        "callbacks/load-malformed-json",
        lambda f: f.recorder.load(f.path("records.json")),
        ValueError,
        r"`path` must be a JSON file written by `WeightDistribution.save` "
        r".*Received: path='.*records\.json'",
        records,
        setup=lambda f: _saved_records(f, b"{not json"),
    ),
    Case(
        "callbacks/load-records-without-scales",
        lambda f: f.recorder.load(f.path("records.json")),
        ValueError,
        r"lacks or has malformed \['scales'\]\. "
        r"Received: path='.*records\.json'",
        records,
        setup=lambda f: _saved_records(
            f,
            b'{"percentile_levels": [100, 93, 84, 69, 50, 31, 16, 7, 0], '
            b'"epochs": [0, 1], "percentiles": {}}',
        ),
    ),
    Case(
        "callbacks/plot-unknown-image-format",
        lambda f: f.recorder.plot("weights.xyz"),
        ValueError,
        r"`path` must end in one of \[.*'png'.*\].*"
        r"Received: path='weights\.xyz'",
        records,
    ),
    Case(
        "callbacks/plot-to-a-directory",
        lambda f: f.recorder.plot(f.path("plots")),
        IsADirectoryError,
        r"`path` must be a file.*Received: path='.*plots'",
        records,
        setup=lambda f: f.directory("plots"),
    ),
    Case(
        "callbacks/plot_scales-to-a-missing-directory",
        lambda f: f.recorder.plot_scales("missing/scales.png"),
        FileNotFoundError,
        r"Received: path='missing/scales\.png'",
        records,
    ),
]


def _unbuilt_mobn(axis):
    def setup(f):
        f.mobn = MeanOnlyBatchNorm(axis=axis, name="mobn")

    return setup


def _mobn_state(f):
    return {"built": f.mobn.built, "weights": len(f.mobn.weights)}


LAYERS = [
    Case(
        f"mean_only_batch_norm/{name}-{value!r}",
        calling(MeanOnlyBatchNorm, **{name: value}),
        error,
        rf"MeanOnlyBatchNorm '.*': `{name}` must be .*Received: "
        rf"{name}={pattern}",
    )
    for name, value, error, pattern in [
        ("momentum", NAN, ValueError, "nan"),
        ("momentum", INF, ValueError, "inf"),
        ("momentum", 1.0, ValueError, r"1\.0"),
        ("momentum", "0.9", TypeError, "'0.9'"),
        ("axis", "x", TypeError, "'x'"),
        ("axis", True, TypeError, "True"),
        ("center", 1, TypeError, "1"),
        ("beta_initializer", "nope", ValueError, "'nope'"),
        ("beta_regularizer", "l3", ValueError, "'l3'"),
        ("beta_constraint", 3, ValueError, "3"),
    ]
] + [
    Case(
        "mean_only_batch_norm/axis-out-of-range-at-build",
        lambda f: f.mobn.build((None, 4, 3)),
        ValueError,
        r"`axis` must be a channel axis of the input of rank 3.*"
        r"Received: axis=3",
        _mobn_state,
        setup=_unbuilt_mobn(3),
    ),
    Case(
        "mean_only_batch_norm/batch-axis-at-build",
        lambda f: f.mobn.build((None, 4, 3)),
        ValueError,
        r"not the batch axis\. Received: axis=-3",
        _mobn_state,
        setup=_unbuilt_mobn(-3),
    ),
]

OTHERS = (
    [
        Case(
            f"l2_from_pytorch/{value!r}",
            calling(keras_wc.l2_from_pytorch, value),
            error,
            rf"`weight_decay` must be .*Received: weight_decay={pattern}",
        )
        for value, error, pattern in [
            (NAN, ValueError, "nan"),
            (INF, ValueError, "inf"),
            (-1e-4, ValueError, r"-0\.0001"),
            ("1e-4", TypeError, "'1e-4'"),
            (None, TypeError, "None"),
        ]
    ]
    + [
        Case(
            f"companders/powerprop-alpha-{value!r}",
            calling(companders.Powerprop, value),
            error,
            rf"`alpha` must be .*Received: alpha={pattern}",
        )
        for value, error, pattern in [
            (NAN, ValueError, "nan"),
            (np.float32(INF), ValueError, "inf"),
            (0.5, ValueError, r"0\.5"),
            ("2", TypeError, "'2'"),
        ]
    ]
    + [
        Case(
            "companders/get-an-empty-config",
            lambda f: companders.get({}),
            TypeError,
            r"`compander` must be a name, .*Received: compander=\{\}",
        ),
        Case(
            "companders/get-a-config-with-nan",
            lambda f: companders.get(
                keras.saving.serialize_keras_object(companders.Powerprop(3.0))
                | {"config": {"alpha": NAN}}
            ),
            ValueError,
            r"`compander` must be a serialized compander config \(`alpha` must "
            r"be a finite number >= 1.*Received: compander=",
        ),
        Case(
            "companders/get-an-unknown-name",
            lambda f: companders.get("tanh"),
            ValueError,
            r"Unknown compander 'tanh'\. Valid names: arctan, arsinh",
        ),
    ]
)

BLOCK = structure("block")


def _convert(f, *args, **kwargs):
    return keras_wc.convert(f.block, *args, **kwargs)


CONVERT = [
    Case(
        f"convert/{label}",
        lambda f, args=args, kwargs=kwargs: _convert(f, *args, **kwargs),
        error,
        pattern,
        BLOCK,
    )
    for label, args, kwargs, error, pattern in [
        (
            "method-unknown",
            ("ww",),
            {},
            ValueError,
            r"Unknown method 'ww'\. .*Received: method='ww'",
        ),
        ("method-none", (None,), {}, ValueError, r"Received: method=None"),
        (
            "a-nan",
            ("wc",),
            {"a": NAN},
            ValueError,
            r"`a` must be a finite number > 0\. Received: a=nan",
        ),
        ("b-inf", ("wc",), {"b": INF}, ValueError, r"Received: b=inf"),
        ("a-string", ("wc",), {"a": "1"}, TypeError, r"Received: a='1'"),
        (
            "learnable-maybe",
            ("wc",),
            {"learnable": "maybe"},
            ValueError,
            r"`learnable` must be .*Received: learnable='maybe'",
        ),
        (
            "learnable-int",
            ("wc",),
            {"learnable": 2},
            ValueError,
            r"Received: learnable=2",
        ),
        (
            "compander-3",
            ("wc",),
            {"compander": 3},
            TypeError,
            r"Received: compander=3",
        ),
        (
            "alpha-nan",
            ("pp",),
            {"alpha": NAN},
            ValueError,
            r"`alpha` must be a finite number >= 1\. Received: alpha=nan",
        ),
        (
            "init-scale-0",
            ("wn",),
            {"init_scale": 0},
            ValueError,
            r"Received: init_scale=0",
        ),
        (
            "option-of-another-method",
            ("wn",),
            {"a": 1.0},
            ValueError,
            r"Unknown option\(s\) \['a'\] for method 'wn'",
        ),
        (
            "layers-unknown-name",
            ("wc",),
            {"layers": "nope"},
            ValueError,
            r"`layers` names \['nope'\] match no layer of model 'block'",
        ),
        (
            "layers-bad-type",
            ("wc",),
            {"layers": 3},
            TypeError,
            r"Received: layers=3",
        ),
        (
            "inplace-yes",
            ("wc",),
            {"inplace": "yes"},
            TypeError,
            r"`inplace` must be True or False\. Received: inplace='yes'",
        ),
        (
            "a-too-small-in-place",
            ("wc",),
            {"a": 0.01, "inplace": True},
            ValueError,
            r"with a=0\.01, .*The smallest `a` that works",
        ),
        (
            "a-too-small-in-place-inner-layers",
            ("wc",),
            {"a": 0.01, "inplace": True, "layers": "attention"},
            ValueError,
            r"'attention/query' \(max \|w\| = ",
        ),
    ]
] + [
    Case(
        "convert/not-a-model",
        lambda f: keras_wc.convert(f.dense),
        TypeError,
        r"expects a `keras.Model`\. Received: model=.* of type Dense",
    ),
    Case(
        "convert/unbuilt-model",
        calling(keras_wc.convert, keras.Sequential([keras.layers.Dense(2)])),
        ValueError,
        r"needs a built model\. .*Received: unbuilt model",
    ),
]

FOLD = [
    Case(
        "fold/not-a-model",
        calling(keras_wc.fold, "model.keras"),
        TypeError,
        r"`keras_wc.fold` expects a `keras.Model`\. Received: "
        r"model='model.keras'",
    ),
    Case(
        "fold/inplace-1",
        lambda f: keras_wc.fold(f.block, inplace=1),
        TypeError,
        r"Received: inplace=1",
        BLOCK,
    ),
    Case(
        "fold/unbuilt-model",
        calling(keras_wc.fold, keras.Sequential([keras.layers.Dense(2)])),
        ValueError,
        r"needs a built model",
    ),
    Case(
        "fold/subclass-of-a-keras-wc-layer",
        lambda f: keras_wc.fold(_with_custom_wc_layer(), inplace=True),
        ValueError,
        r"derive from keras_wc classes it cannot fold: 'mine' \(MyWCDense\)",
    ),
]


class MyWCDense(keras_wc.WCDense):
    """A user's subclass of a keras_wc layer (may hold other state)."""


def _with_custom_wc_layer():
    inputs = keras.Input((3,))
    return keras.Model(inputs, MyWCDense(2, name="mine")(inputs))


DENSE = structure("dense")

REPARAMETERIZED_LAYERS = [
    Case(
        f"layers/{cls.__name__}-{label}",
        calling(cls, 2, **kwargs),
        error,
        pattern,
    )
    for cls, label, kwargs, error, pattern in [
        (
            keras_wc.WCDense,
            "a-nan",
            {"a": NAN},
            ValueError,
            r"WCDense '.*': `a` must be a finite number > 0\. Received: a=nan",
        ),
        (
            keras_wc.WCConv2D,
            "b-inf",
            {"kernel_size": 3, "b": INF},
            ValueError,
            r"WCConv2D '.*': .*Received: b=inf",
        ),
        (
            keras_wc.WCDense,
            "learnable-maybe",
            {"learnable": "maybe"},
            ValueError,
            r"Received: learnable='maybe'",
        ),
        (
            keras_wc.WCDense,
            "coarse-without-shared",
            {"learnable": "coarse"},
            ValueError,
            r"learnable='coarse', shared=None",
        ),
        (
            keras_wc.WCDense,
            "shared-not-a-compander",
            {"shared": "coarse"},
            TypeError,
            r"Received: shared='coarse'",
        ),
        (
            keras_wc.WCLSTM,
            "a-zero",
            {"a": 0.0},
            ValueError,
            r"WCLSTMCell '.*': .*Received: a=0\.0",
        ),
        (
            keras_wc.WNDense,
            "init-scale-nan",
            {"init_scale": NAN},
            ValueError,
            r"WNDense '.*': .*Received: init_scale=nan",
        ),
        (
            keras_wc.WNDense,
            "data-init-yes",
            {"data_init": "yes"},
            TypeError,
            r"Received: data_init='yes'",
        ),
        (
            keras_wc.WNDense,
            "log-scale-1",
            {"log_scale": 1},
            TypeError,
            r"Received: log_scale=1",
        ),
        (
            keras_wc.WNDense,
            "constraint-it-cannot-honour",
            {"kernel_constraint": keras.constraints.MaxNorm(axis=1)},
            ValueError,
            r"cannot be honoured exactly .*Received: constraint=",
        ),
        (
            keras_wc.WNGRU,
            "data-init",
            {"data_init": True},
            ValueError,
            r"recurrent layers have no data-dependent init .*"
            r"Received: data_init=True",
        ),
        (
            keras_wc.WNLSTMCell,
            "init-scale-string",
            {"init_scale": "1"},
            TypeError,
            r"Received: init_scale='1'",
        ),
    ]
] + [
    Case(
        "layers/adopt-another-class",
        lambda f: keras_wc.WCConv2D.adopt(f.dense),
        TypeError,
        r"WCConv2D.adopt expects a `Conv2D` \(exactly that class\)\. "
        r"Received: layer 'dense' of type Dense",
        DENSE,
    ),
    Case(
        "layers/adopt-out-of-range",
        lambda f: keras_wc.WCDense.adopt(f.dense, a=0.1),
        ValueError,
        r"Layer 'dense': the kernel has max \|w\| = 1, outside the range "
        r"of Arctan\(\) with a=0\.1",
        DENSE,
    ),
    Case(
        "layers/adopt-a-bad-option",
        lambda f: keras_wc.WNDense.adopt(f.dense, init_scale=-1.0),
        ValueError,
        r"Received: init_scale=-1\.0",
        DENSE,
    ),
    Case(
        "layers/weight-normalization-of-a-flatten",
        calling(keras_wc.WeightNormalization, keras.layers.Flatten()),
        TypeError,
        r"supports the Keras layers Dense.*Received: layer '.*' of type "
        r"Flatten",
    ),
]

CASES = (
    INITIALIZE
    + EXPORT
    + OPTIMIZERS
    + CALLBACKS
    + LAYERS
    + OTHERS
    + CONVERT
    + FOLD
    + REPARAMETERIZED_LAYERS
)


def test_the_table_covers_every_entry_point():
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)
    kinds = {case.id.split("/")[0] for case in CASES}
    assert kinds >= {
        "initialize",
        "export",
        "optimizers",
        "callbacks",
        "mean_only_batch_norm",
        "l2_from_pytorch",
        "companders",
        "convert",
        "fold",
        "layers",
    }


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_raises_and_changes_nothing(case, tmp_path, monkeypatch):
    root = tmp_path / "work"
    root.mkdir()
    monkeypatch.chdir(root)
    f = Fixtures(root)
    try:
        if case.setup is not None:
            case.setup(f)
        before = (files(f), case.snapshot(f))
        with pytest.raises(case.error) as raised:
            case.call(f)
        message = str(raised.value)
        assert raised.match(case.match), message
        after = (files(f), case.snapshot(f))
        _assert_same(before[0], after[0], "files")
        _assert_same(before[1], after[1], "snapshot")
    finally:
        for cleanup in f.cleanups:
            cleanup()


def test_the_values_next_to_the_bad_ones_are_accepted(tmp_path):
    """The checks refuse no good value: NumPy numbers, the ends of the
    ranges, an empty export directory, a log_dir that does not exist yet."""
    assert keras_wc.l2_from_pytorch(np.float32(1e-4)).l2 == pytest.approx(5e-5)
    assert keras_wc.l2_from_pytorch(0) is None
    assert companders.Powerprop(np.float64(1.0)).alpha == 1.0
    assert companders.get(
        keras.saving.serialize_keras_object(companders.Powerprop(3.0))
    ) == companders.Powerprop(3.0)
    assert MeanOnlyBatchNorm(momentum=np.float32(0.0)).momentum == 0.0
    assert optimizers.ModifiedAdam(learning_rate=0.0, beta_1=0.0).built is False
    callbacks.WeightDistribution(
        layers=("out",), percentiles=(0, 100), log_dir=tmp_path / "a" / "b"
    )
    (tmp_path / "empty").mkdir()
    f = Fixtures(tmp_path)
    keras_wc.export(f.plain_model, tmp_path / "empty")
    keras_wc.export(f.plain_model, tmp_path / "new" / "parents" / "1")
    x = f.batch()
    assert keras_wc.initialize(f.wn_model, (x > 0).astype(bool)) == [
        "hidden",
        "logits",
    ]

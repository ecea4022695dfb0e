"""Tests for `keras_wc.export.export`: convert → train → fold → export."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import architectures
import keras
import numpy as np
import pytest

from keras_wc import exporting as export_lib
from keras_wc.conversion import convert

# Every architecture is exported once and every method on two or more of
# them: a folded model is plain Keras whatever the method, and the
# method-by-architecture matrix of convert and fold is in test_folding.
EXPORTED = {
    "sequential": "wc",
    "functional": "pp",
    "nested": "wn",
    "shared": "wc",
    "multi_io": "pp",
    "sequence_volume": "wc",
    "mean_only": "wn",
}

_SERVE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class NoKerasWC(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "keras_wc":
                raise ImportError("keras_wc must not be needed")

    sys.meta_path.insert(0, NoKerasWC())
    import numpy as np
    import tensorflow as tf

    report = {}
    for path in json.loads(sys.argv[1]):
        data = np.load(path + ".npz")
        serve = tf.saved_model.load(path).signatures["serving_default"]
        inputs = serve.structured_input_signature[1]
        errors = []
        for batch in (1, 7):
            feed = {name: tf.constant(data[f"{batch}/in/{name}"])
                    for name in inputs}
            outputs = serve(**feed)
            for name, value in outputs.items():
                expected = data[f"{batch}/out/{name}"]
                errors.append(
                    float(np.max(np.abs(value.numpy() - expected))
                          / np.max(np.abs(expected)))
                )
        report[path] = {
            "inputs": sorted(inputs),
            "outputs": sorted(outputs),
            "error": max(errors),
        }
    assert "keras_wc" not in sys.modules
    print(json.dumps(report))
    """
)


def _expected(folded, batch):
    inputs = architectures.sample_inputs(folded, batch, seed=batch)
    named = architectures.named_inputs(folded, inputs)
    outputs = folded(inputs, training=False)
    if isinstance(outputs, dict):
        names = list(outputs)
        values = list(outputs.values())
    else:
        values = keras.tree.flatten(outputs)
        names = (
            [folded.layers[-1].name]
            if isinstance(folded, keras.Sequential)
            else list(folded.output_names)
        )
    arrays = {f"{batch}/in/{k}": v for k, v in named.items()}
    for name, value in zip(names, values, strict=True):
        arrays[f"{batch}/out/{name}"] = keras.ops.convert_to_numpy(value)
    return arrays, sorted(names)


def test_exported_models_serve_without_keras_wc(tmp_path):
    paths = {}
    for name, method in EXPORTED.items():
        _, converted, _ = architectures.converted_and_trained(name, method)
        path = os.fspath(tmp_path / name / "1")
        folded = export_lib.export(converted, path)
        arrays, output_names = _expected(folded, 1)
        more, _ = _expected(folded, 7)
        np.savez(path + ".npz", **arrays, **more)
        input_names = sorted(x.name for x in converted.inputs)
        paths[path] = (input_names, output_names)
    result = subprocess.run(
        [sys.executable, "-c", _SERVE_SCRIPT, json.dumps(list(paths))],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for path, (input_names, output_names) in paths.items():
        assert report[path]["inputs"] == input_names, path
        assert report[path]["outputs"] == output_names, path
        assert report[path]["error"] < 1e-6, (path, report[path])


def test_export_writes_the_folded_keras_model_beside_it(tmp_path):
    _, converted, inputs = architectures.converted_and_trained("multi_io", "wc")
    path = tmp_path / "classifier" / "1"
    folded = export_lib.export(converted, path)
    assert os.path.isdir(path)
    reloaded = keras.saving.load_model(tmp_path / "classifier" / "1.keras")
    assert architectures.graph_signature(reloaded) == (
        architectures.graph_signature(folded)
    )
    for a, b in zip(
        architectures.predict(reloaded, inputs),
        architectures.predict(folded, inputs),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_serving_outputs_are_named_after_the_output_layers(tmp_path):
    import tensorflow as tf

    _, converted, inputs = architectures.converted_and_trained(
        "sequential", "pp"
    )
    export_lib.export(converted, tmp_path / "1")
    serve = tf.saved_model.load(tmp_path / "1").signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["image"]
    assert list(serve.structured_outputs) == ["logits"]
    assert serve.structured_input_signature[1]["image"].shape.as_list() == [
        None,
        8,
        8,
        3,
    ]


def test_unnamed_inputs_take_the_input_layer_name(tmp_path):
    import tensorflow as tf

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs))
    export_lib.export(model, tmp_path / "1")
    serve = tf.saved_model.load(tmp_path / "1").signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == [model.layers[0].name]


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "path, expected",
    [
        ("serving/model/1", "serving/model/1.keras"),
        ("serving/model/1/", "serving/model/1.keras"),
        ("out/model.onnx", "out/model.keras"),
        ("out/model.v2", "out/model.v2.keras"),
    ],
)
def test_keras_path(path, expected):
    assert export_lib.keras_path(path) == expected


_HAS_ONNX = all(
    importlib.util.find_spec(name) for name in ("tf2onnx", "onnxruntime")
)


@pytest.mark.skipif(
    not _HAS_ONNX, reason="ONNX export needs `pip install tf2onnx onnxruntime`"
)
@pytest.mark.parametrize(
    "name, method", [("multi_io", "wc"), ("functional", "wn")]
)
def test_onnx_export_runs_in_onnxruntime(tmp_path, name, method):
    import onnxruntime

    _, converted, _ = architectures.converted_and_trained(name, method)
    path = os.fspath(tmp_path / "model.onnx")
    folded = export_lib.export(converted, path, format="onnx")
    assert os.path.exists(tmp_path / "model.keras")
    session = onnxruntime.InferenceSession(path)
    assert sorted(i.name for i in session.get_inputs()) == sorted(
        x.name for x in folded.inputs
    )
    for batch in (1, 7):
        inputs = architectures.sample_inputs(folded, batch, seed=batch)
        feed = architectures.named_inputs(folded, inputs)
        actual = session.run(None, feed)
        expected = architectures.predict(folded, inputs)
        assert architectures.max_relative_difference(expected, actual) < 1e-5


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "module, extra, format, path",
    [
        ("tensorflow", "tensorflow", "tf_saved_model", "serving/1"),
        ("tensorflow", "onnx", "onnx", "model.onnx"),
        ("tf2onnx", "onnx", "onnx", "model.onnx"),
    ],
)
def test_a_missing_package_raises_naming_the_extra_before_writing(
    tmp_path, hide_package, module, extra, format, path
):
    hide_package(module)
    model = architectures.build("sequential")
    message = rf"needs the `{module}` package.*'keras-wc\[{extra}\]'"
    with pytest.raises(ImportError, match=message):
        export_lib.export(model, tmp_path / path, format=format)
    assert os.listdir(tmp_path) == []


@pytest.mark.backend_independent
def test_unknown_format_raises():
    model = architectures.build("sequential")
    with pytest.raises(
        ValueError, match=r"`format` must be one of 'tf_saved_model', 'onnx'"
    ):
        export_lib.export(model, "unused", format="tflite")


def test_a_subclassed_model_never_called_raises(tmp_path):
    class Model(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Model()
    model.build((None, 3))  # built, but no call gave the serving signature
    with pytest.raises(ValueError, match=r"call it on a batch of inputs"):
        export_lib.export(model, tmp_path / "serve" / "1")
    assert not (tmp_path / "serve").exists()


@pytest.mark.slow
def test_applications_export_serves_the_same_outputs(tmp_path):
    import tensorflow as tf

    plain = architectures.build("mobilenet_v2")
    converted = convert(plain, "wc")
    path = tmp_path / "1"
    folded = export_lib.export(converted, path)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    for batch in (1, 7):
        inputs = architectures.sample_inputs(folded, batch, seed=batch)
        (actual,) = serve(**architectures.named_inputs(folded, inputs)).values()
        expected = architectures.predict(converted, inputs)
        assert (
            architectures.max_relative_difference(expected, [actual.numpy()])
            < 1e-5
        )


def _listing(root):
    """Every entry under `root` with its contents and modification time."""
    entries = {}
    for path in sorted(root.rglob("*")):
        key = os.fspath(path.relative_to(root))
        stat = path.stat()
        content = None if path.is_dir() else path.read_bytes()
        entries[key] = (content, stat.st_mtime_ns)
    return entries


def _plain(units=2, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((3,), name="x"), keras.layers.Dense(units, name="out")]
    )


def _served_units(path):
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]
    return int(serve(x=tf.zeros((1, 3)))["out"].shape[-1])


@pytest.mark.backend_independent
def test_an_existing_export_is_replaced_only_with_overwrite(tmp_path):
    path = tmp_path / "serving" / "1"
    export_lib.export(_plain(units=2), path)
    before = _listing(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_lib.export(_plain(units=4), path)
    assert _listing(tmp_path) == before
    export_lib.export(_plain(units=4), path, overwrite=True)
    assert _served_units(path) == 4
    reloaded = keras.saving.load_model(tmp_path / "serving" / "1.keras")
    assert reloaded.output_shape == (None, 4)
    # Nothing is left beside it: no staging directory, no old artifacts.
    assert sorted(os.listdir(tmp_path / "serving")) == ["1", "1.keras"]


@pytest.mark.backend_independent
def test_an_empty_directory_is_a_free_target(tmp_path):
    (tmp_path / "1").mkdir()
    export_lib.export(_plain(), tmp_path / "1")
    assert _served_units(tmp_path / "1") == 2
    assert sorted(os.listdir(tmp_path)) == ["1", "1.keras"]


def _fail_on_save(monkeypatch):
    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", fail)


@pytest.mark.backend_independent
def test_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    """The SavedModel is written first: a failure writing the .keras file
    used to leave it behind, half an export."""
    _fail_on_save(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        export_lib.export(_plain(), tmp_path / "new" / "parents" / "1")
    assert os.listdir(tmp_path) == []


@pytest.mark.backend_independent
def test_a_failed_overwrite_keeps_the_old_export(tmp_path, monkeypatch):
    path = tmp_path / "1"
    export_lib.export(_plain(units=2), path)
    before = _listing(tmp_path)
    _fail_on_save(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        export_lib.export(_plain(units=4), path, overwrite=True)
    assert _listing(tmp_path) == before
    assert _served_units(path) == 2


@pytest.mark.backend_independent
def test_a_failed_rename_is_rolled_back(tmp_path, monkeypatch):
    """The second artifact fails to move into place after the first one
    did: the first is moved back and the old export restored."""
    path = tmp_path / "1"
    export_lib.export(_plain(units=2), path)
    before = _listing(tmp_path)
    real = os.rename

    def rename(source, target):
        if source.endswith("model.keras"):  # the new .keras file
            raise OSError("rename failed")
        real(source, target)

    monkeypatch.setattr(export_lib.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        export_lib.export(_plain(units=4), path, overwrite=True)
    assert _listing(tmp_path) == before
    assert _served_units(path) == 2


@pytest.mark.backend_independent
def test_a_failed_roll_back_keeps_the_old_export_and_says_where(
    tmp_path, monkeypatch
):
    path = tmp_path / "1"
    export_lib.export(_plain(units=2), path)
    old = (path / "saved_model.pb").read_bytes()
    real = os.rename

    def rename(source, target):
        if source.endswith("model.keras") or source.endswith("old-0"):
            raise OSError("rename failed")
        real(source, target)

    monkeypatch.setattr(export_lib.os, "rename", rename)
    with pytest.raises(OSError, match="previous artifacts are in") as raised:
        export_lib.export(_plain(units=4), path, overwrite=True)
    (staging,) = [p for p in tmp_path.iterdir() if "export-" in p.name]
    assert os.fspath(staging) in str(raised.value)
    assert (staging / "old-0" / "saved_model.pb").read_bytes() == old

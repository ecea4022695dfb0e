"""keras_wc.callbacks.WeightDistribution: numerics, learnable a/b, I/O."""

import json
import os

import keras
import keras_hub
import numpy as np
import pytest

import keras_wc
from bench import reach
from keras_wc import callbacks, tree
from keras_wc.layers.wc_base import SharedCompander

PAPER = (100, 93, 84, 69, 50, 31, 16, 7, 0)


def _model(**wc):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras_wc.WCConv2D(4, 3, name="conv", **wc),
            keras.layers.Flatten(),
            keras.layers.Dense(3, name="head"),
        ]
    )


def _data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6, 6, 2)).astype("float32")
    return x, rng.integers(0, 3, n).astype("int32")


def _fit(model, recorder, epochs=2):
    model.compile(
        keras.optimizers.SGD(0.5),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = _data()
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0,
              callbacks=[recorder])


def test_percentiles_match_numpy_on_effective_weights():
    model = _model(a=1.0, b=0.6)
    recorder = callbacks.WeightDistribution()
    _fit(model, recorder)
    assert recorder.epochs == [0, 1, 2]
    assert recorder.layer_names == ["conv", "head"]
    conv = model.get_layer("conv")
    w = np.asarray(conv.a * np.arctan(np.asarray(conv.v) / conv.b))
    np.testing.assert_allclose(
        recorder.percentiles["conv"][-1], np.percentile(w, PAPER), rtol=1e-5,
        atol=1e-6,
    )
    head = np.asarray(model.get_layer("head").kernel)
    np.testing.assert_allclose(
        recorder.percentiles["head"][-1], np.percentile(head, PAPER),
        rtol=1e-6,
    )
    # max first, min last, as the lines of the paper's figures
    row = recorder.percentiles["conv"][-1]
    assert row[0] == pytest.approx(w.max()) and row[-1] == pytest.approx(
        w.min()
    )


def test_epoch_zero_is_recorded_before_any_update():
    model = _model(a=1.0, b=0.6)
    before = np.percentile(np.asarray(model.get_layer("conv").kernel), PAPER)
    recorder = callbacks.WeightDistribution(layers=["conv"])
    _fit(model, recorder, epochs=1)
    np.testing.assert_allclose(recorder.percentiles["conv"][0], before,
                               rtol=1e-6)
    assert recorder.percentiles["conv"][0] != recorder.percentiles["conv"][1]


def test_learnable_fine_and_coarse_scales_are_recorded():
    model = _model(a=0.5, b=1.0, learnable=True)
    recorder = callbacks.WeightDistribution()
    _fit(model, recorder)
    conv = model.get_layer("conv")
    assert recorder.scale_names == ["conv"]
    assert recorder.scales["conv"]["a"][0] == pytest.approx(0.5)
    assert recorder.scales["conv"]["b"][-1] == pytest.approx(float(conv.b))
    assert recorder.scales["conv"]["a"][-1] != pytest.approx(0.5)

    shared = SharedCompander(a=0.5, b=1.0)
    coarse = _model(shared=shared)
    recorder = callbacks.WeightDistribution()
    _fit(coarse, recorder, epochs=1)
    assert recorder.scales["conv"]["b"][-1] == pytest.approx(float(shared.b))


def test_save_load_and_resume_truncates_later_epochs(tmp_path):
    model = _model(a=1.0, b=0.6)
    recorder = callbacks.WeightDistribution(percentiles=(100, 50, 0))
    _fit(model, recorder, epochs=3)
    path = tmp_path / "w.json"
    recorder.save(path)
    content = json.loads(path.read_text())
    assert content["epochs"] == [0, 1, 2, 3]
    assert content["percentile_levels"] == [100, 50, 0]

    again = callbacks.WeightDistribution(percentiles=(100, 50, 0))
    again.load(path)
    again.set_model(model)
    again.on_epoch_begin(1)  # fit resumed with initial_epoch=1
    assert again.epochs == [0, 1]
    assert again.percentiles["conv"][0] == recorder.percentiles["conv"][0]
    with pytest.raises(ValueError, match="holds percentiles"):
        callbacks.WeightDistribution().load(path)


def test_plots_are_png_files(tmp_path):
    model = _model(a=0.5, b=1.0, learnable=True)
    recorder = callbacks.WeightDistribution()
    _fit(model, recorder)
    recorder.plot(tmp_path / "w.png", layer="head")
    recorder.plot_scales(tmp_path / "s.png")
    for name in ("w.png", "s.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plain_keras_model_and_nested_models_are_walked():
    inner = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5, name="inner_dense")],
        name="inner",
    )
    model = keras.Sequential([keras.Input((4,)), inner,
                              keras.layers.Dense(2, name="out")])
    recorder = callbacks.WeightDistribution()
    recorder.set_model(model)
    recorder.record(0)
    assert recorder.layer_names == ["inner_dense", "out"]


# The kernels of one keras-hub TransformerEncoder, below the backbone.
ENCODER_KERNELS = (
    "self_attention_layer/query",
    "self_attention_layer/key",
    "self_attention_layer/value",
    "self_attention_layer/attention_output",
    "feedforward_intermediate_dense",
    "feedforward_output_dense",
)


def _bert_classifier():
    """A tiny BertTextClassifier: 2 encoder layers of 6 kernels, the pooler
    and the logits, 14 kernels."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        **reach.TINY_TEXT, name="bert_backbone"
    )
    return keras_hub.models.BertTextClassifier(
        backbone, num_classes=2, preprocessor=None, name="classifier"
    )


def _recorded_by_path(model, **kwargs):
    """{tree path: last recorded percentiles} of a recorder on `model`."""
    recorder = callbacks.WeightDistribution(percentiles=(100, 50, 0), **kwargs)
    recorder.set_model(model)
    recorder.record(0)
    paths = {}
    for key, series in recorder.percentiles.items():
        [path] = [
            node.path
            for node in tree.walk(model)
            if key in (node.path, node.layer.name)
        ]
        paths[path] = series[-1]
    assert len(paths) == len(recorder.layer_names)
    return recorder, paths


def test_every_kernel_of_a_keras_hub_classifier_is_recorded():
    """Recorded were only the pooler and the logits: the walk over
    `Model.layers` did not enter the encoder layers."""
    plain = _bert_classifier()
    converted, report = keras_wc.convert(plain, return_report=True)
    expected = [
        f"bert_backbone/transformer_layer_{i}/{kernel}"
        for i in range(2)
        for kernel in ENCODER_KERNELS
    ] + ["bert_backbone/pooled_dense", "logits"]
    assert [e.path for e in report.converted] == expected
    assert report.converted_kernels == len(expected) == 14

    recorder, recorded = _recorded_by_path(converted)
    assert list(recorded) == expected
    # Names the encoder layers share are keyed by path, the others by name.
    assert recorder.layer_names == expected[:-2] + ["pooled_dense", "logits"]
    _, baseline = _recorded_by_path(plain)
    assert list(baseline) == expected
    for path in expected:
        [layer] = tree.at_path(plain, path)
        kernel = np.asarray(layer.kernel)
        np.testing.assert_allclose(
            baseline[path], np.percentile(kernel, (100, 50, 0)), rtol=1e-6
        )
        # convert keeps the function: Ψ(Ψ⁻¹(w)) = w up to round-off.
        np.testing.assert_allclose(
            recorded[path], baseline[path], rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize(
    "layers",
    [
        "transformer_layer_1",
        "bert_backbone/transformer_layer_0/self_attention_layer/query",
        keras.layers.EinsumDense,
        [keras.layers.MultiHeadAttention, "logits"],
        lambda layer: layer.name.startswith("feedforward"),
    ],
    ids=["name", "path", "class", "list", "predicate"],
)
def test_layers_selects_as_convert_does(layers):
    plain = _bert_classifier()
    _, report = keras_wc.convert(plain, layers=layers, return_report=True)
    assert report.converted
    _, recorded = _recorded_by_path(plain, layers=layers)
    assert list(recorded) == [e.path for e in report.converted]


def test_recurrent_and_wrapped_layers_are_recorded_for_their_cells():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 4))
    h = keras.layers.Bidirectional(
        keras.layers.LSTM(3, return_sequences=True, name="lstm"), name="bi"
    )(inputs)
    h = keras.layers.TimeDistributed(
        keras.layers.Dense(2, name="proj"), name="per_step"
    )(h)
    h = keras.layers.RNN(keras.layers.GRUCell(2, name="cell"), name="rnn")(h)
    plain = keras.Model(inputs, keras.layers.Dense(2, name="head")(h))
    converted = keras_wc.convert(plain, learnable=True)
    layers = ["forward_lstm", "backward_lstm", "proj", "cell", "head"]
    expected = [
        "forward_lstm",
        "forward_lstm/recurrent_kernel",
        "backward_lstm",
        "backward_lstm/recurrent_kernel",
        "proj",
        "cell",
        "cell/recurrent_kernel",
        "head",
    ]
    for model in (plain, converted):
        recorder = callbacks.WeightDistribution(percentiles=(100, 0))
        recorder.set_model(model)
        recorder.record(0)
        assert recorder.layer_names == expected
    assert recorder.scale_names == layers
    cell = converted.get_layer("bi").forward_layer.cell
    np.testing.assert_allclose(
        recorder.percentiles["forward_lstm/recurrent_kernel"][0],
        np.percentile(np.asarray(cell.recurrent_kernel), (100, 0)),
        rtol=1e-6,
    )


def test_a_plain_layer_with_lora_records_its_merged_kernel():
    """Its `kernel` is a tensor (the kernel plus the adapters' product), not
    a variable: it was not recorded."""
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="d")]
    )
    layer = model.get_layer("d")
    layer.enable_lora(2)
    layer.lora_kernel_b.assign(np.ones((2, 3), "float32"))
    recorder = callbacks.WeightDistribution(percentiles=(100, 0))
    recorder.set_model(model)
    recorder.record(0)
    np.testing.assert_allclose(
        recorder.percentiles["d"][0],
        np.percentile(np.asarray(layer.kernel), (100, 0)),
        rtol=1e-6,
    )


def test_tensorboard_scalars_are_written(tmp_path):
    pytest.importorskip("tensorboard")
    model = _model(a=1.0, b=0.6)
    recorder = callbacks.WeightDistribution(log_dir=str(tmp_path / "tb"))
    _fit(model, recorder, epochs=1)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"layers": 3}, TypeError, "`layers` must be None"),
        ({"percentiles": ()}, ValueError, "`percentiles` must be"),
        ({"percentiles": (50, 101)}, ValueError, "in \\[0, 100\\]"),
        ({"layers": []}, ValueError, "`layers` must name at least one"),
        ({"percentiles": 50}, TypeError, "Received: percentiles=50"),
        ({"percentiles": [np.float64(50), np.nan]}, ValueError, "nan"),
        ({"log_dir": ""}, ValueError, "`log_dir` must be a non-empty path"),
    ],
)
def test_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        callbacks.WeightDistribution(**kwargs)


def test_unknown_layer_and_plot_errors(tmp_path):
    recorder = callbacks.WeightDistribution(layers=["nope"])
    recorder.set_model(_model())
    with pytest.raises(ValueError, match="name no kernel layer"):
        recorder.record(0)
    empty = callbacks.WeightDistribution()
    with pytest.raises(ValueError, match="Nothing recorded"):
        empty.plot(tmp_path / "x.png")
    empty.set_model(_model())
    empty.record(0)
    with pytest.raises(ValueError, match="`layer` must be one of"):
        empty.plot(tmp_path / "x.png", layer="nope")
    with pytest.raises(ValueError, match="No learnable a, b"):
        empty.plot_scales(tmp_path / "x.png")


@pytest.mark.parametrize(
    "module, extra, use",
    [
        (
            "tensorflow",
            "tensorflow",
            lambda tmp: callbacks.WeightDistribution(log_dir=tmp / "tb"),
        ),
        (
            "matplotlib",
            "plot",
            lambda tmp: callbacks.WeightDistribution().plot(tmp / "w.png"),
        ),
    ],
    ids=["log_dir", "plot"],
)
def test_a_missing_package_raises_naming_the_extra(
    tmp_path, hide_package, module, extra, use
):
    hide_package(module)
    with pytest.raises(ImportError, match=rf"'keras-wc\[{extra}\]'"):
        use(tmp_path)
    assert os.listdir(tmp_path) == []


def test_a_log_dir_that_is_a_file_raises_before_training(tmp_path):
    """It used to fail in the first epoch, inside `fit`."""
    (tmp_path / "tb").write_text("a file")
    with pytest.raises(NotADirectoryError, match="`log_dir` needs a dir"):
        callbacks.WeightDistribution(log_dir=tmp_path / "tb")


def test_numpy_percentiles_are_plain_numbers_in_the_records(tmp_path):
    recorder = callbacks.WeightDistribution(
        percentiles=np.array([100, 50, 0])
    )
    assert recorder.percentile_levels == (100, 50, 0)
    assert all(type(q) is int for q in recorder.percentile_levels)


def _recorded():
    recorder = callbacks.WeightDistribution(percentiles=(100, 50, 0))
    recorder.set_model(_model())
    recorder.record(0)
    recorder.record(1)
    return recorder


def test_save_replaces_the_file_atomically(tmp_path, monkeypatch):
    recorder = _recorded()
    path = tmp_path / "w.json"
    path.write_text("previous")
    recorder.save(path)
    assert json.loads(path.read_text())["epochs"] == [0, 1]
    assert os.listdir(tmp_path) == ["w.json"]
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()

    def fail(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(callbacks.os, "replace", fail)
    recorder.record(2)
    with pytest.raises(OSError, match="disk full"):
        recorder.save(path)
    assert json.loads(path.read_text())["epochs"] == [0, 1]
    assert os.listdir(tmp_path) == ["w.json"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "must be a JSON file"),
        ('{"percentile_levels": [100, 50, 0], "epochs": [0]}', "'scales'"),
        ("[1, 2]", "lacks or has malformed"),
    ],
)
def test_a_malformed_file_leaves_the_records_as_they_were(
    tmp_path, content, match
):
    """A file without "scales" used to replace the epochs and percentiles
    before failing with KeyError."""
    recorder = _recorded()
    before = recorder.to_dict()
    path = tmp_path / "w.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as raised:
        recorder.load(path)
    assert str(path) in str(raised.value)
    assert recorder.to_dict() == before


def test_plots_take_the_format_from_the_extension(tmp_path):
    recorder = _recorded()
    recorder.plot(tmp_path / "w.svg")
    assert b"<svg" in (tmp_path / "w.svg").read_bytes()[:500]
    with pytest.raises(ValueError, match="`path` must end in one of"):
        recorder.plot(tmp_path / "w.docx")
    assert os.listdir(tmp_path) == ["w.svg"]

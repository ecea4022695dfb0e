"""The fine-tuning recipe at a tiny size: baseline → convert (a="auto")
→ fine-tune with AdamW → fold and export (`--init-from`, `--export`)."""

import json

import keras
import numpy as np
import pytest

import keras_wc
import models
from keras_wc import optimizers
from train import assembly, cli, run
from train.config import Config

_TINY = [
    "--model", "small_cnn", "--dataset", "digits", "--limit-train", "200",
    "--batch-size", "50", "--seeds", "2", "--verbose", "0",
]
# digits' test set: one prediction is 1/599 of the accuracy.
_ONE_IMAGE = 1.5 / 599


def _results(path):
    with open(path / "results.json") as file:
        return json.load(file)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune") / "base"
    assert cli.main(_TINY + ["--epochs", "2", "--out", str(out)]) == 0
    return out


def test_wc_fine_tuning_recipe(baseline, tmp_path):
    out = tmp_path / "wc"
    argv = _TINY + [
        "--init-from", str(baseline / "seed-{seed}" / "best.weights.h5"),
        "--method", "wc", "--a", "auto", "--b", "auto",
        "--optimizer", "modified-adamw", "--lr", "1e-3",
        "--weight-decay", "0.01", "--schedule", "constant", "--epochs", "1",
        "--export", "--out", str(out),
    ]
    assert cli.main(argv) == 0
    tuned, base = _results(out), _results(baseline)
    assert tuned["label"] == "small_cnn + WC, fine-tuned"
    assert tuned["config"]["a"] == tuned["config"]["b"] == "auto"
    for before, after in zip(base["seeds"], tuned["seeds"], strict=True):
        # convert keeps the function: the start is each seed's baseline.
        assert after["initial_test_acc"] == pytest.approx(
            before["test_acc"], abs=_ONE_IMAGE
        )
        # The folded export predicts what the trained WC model predicts.
        assert after["export_test_acc"] == pytest.approx(
            after["test_acc"], abs=_ONE_IMAGE
        )
    for key in ("initial_test_acc", "export_test_acc"):
        assert tuned[key]["n"] == 2
    exported = keras.saving.load_model(
        out / "seed-0" / "export.keras", compile=False
    )
    assert not any(
        type(layer).__module__.startswith("keras_wc")
        for layer in exported._flatten_layers()
    )
    assert (out / "seed-0" / "export" / "saved_model.pb").exists()


def test_fine_tuning_from_a_keras_file_with_plain_adamw(baseline, tmp_path):
    model = models.build("small_cnn", num_classes=10, input_shape=(8, 8, 1))
    model.load_weights(baseline / "seed-0" / "best.weights.h5")
    path = tmp_path / "trained.keras"
    model.save(path)
    out = tmp_path / "plain"
    argv = _TINY + [
        "--init-from", str(path), "--seeds", "1", "--optimizer", "adamw",
        "--lr", "1e-3", "--weight-decay", "0.05", "--schedule", "constant",
        "--epochs", "1", "--out", str(out),
    ]
    assert cli.main(argv) == 0
    tuned = _results(out)
    assert tuned["seeds"][0]["initial_test_acc"] == pytest.approx(
        _results(baseline)["seeds"][0]["test_acc"], abs=_ONE_IMAGE
    )
    assert "export_test_acc" not in tuned["seeds"][0]


def _config(**changes):
    settings = dict(model="small_cnn", dataset="digits", limit_train=200)
    return Config(**{**settings, **changes}).resolve()


def _bundle():
    from train import data

    return data.load("digits", batch_size=50, limit_train=200, seed=0)


def test_adamw_decays_through_the_optimizer_not_a_regularizer():
    """With adamw/modified-adamw, --weight-decay is the optimizer's own
    decay: no L2 penalty in the loss, a, b and WN directions left out, and
    with --weight-decay-scope kernels the biases and BN gamma/beta too."""
    bundle = _bundle()
    config = _config(
        method="wc", a="auto", b="auto", learnable="fine",
        optimizer="modified-adamw", weight_decay=0.01,
        weight_decay_scope="kernels",
    )
    model = assembly.build_model(config, bundle)
    assert not any(
        getattr(layer, "kernel_regularizer", None)
        for layer in model._flatten_layers()
    )
    optimizer = assembly.make_optimizer(config, 4, model=model)
    assert isinstance(optimizer, optimizers.ModifiedAdamW)
    assert optimizer.weight_decay == 0.01
    optimizer.build(model.trainable_variables)
    decayed = {
        v.name for v in model.trainable_variables
        if keras.optimizers.Optimizer._use_weight_decay(optimizer, v)
    }
    assert decayed == {"v"}
    # The same model with SGD gets the papers' L2 penalty instead.
    sgd = _config(method="wc", a="auto", b="auto", weight_decay=0.01)
    assert any(
        getattr(layer, "kernel_regularizer", None)
        for layer in assembly.build_model(sgd, bundle)._flatten_layers()
    )


def test_auto_scales_per_layer():
    """`--a auto`: each WC layer's a from its own kernel, max|w| at half
    the bound (4·max|w|/π for arctan); `--b auto`: b = a."""
    config = _config(method="wc", a="auto", b="auto")
    model = assembly.build_model(config, _bundle())
    layers = [
        layer for layer in model._flatten_layers()
        if isinstance(layer, keras_wc.WCDense | keras_wc.WCConv2D)
    ]
    assert len({layer.a for layer in layers}) == len(layers) > 1
    for layer in layers:
        largest = float(np.max(np.abs(np.asarray(layer.kernel))))
        assert layer.a == pytest.approx(4 * largest / np.pi, rel=1e-5)
        assert layer.b == pytest.approx(layer.a)


def test_resumed_fine_tuning_keeps_initial_accuracy(baseline, tmp_path):
    """An interrupted fine-tuning run resumes like any run; the record's
    initial accuracy is that of the checkpoint, not of the backup."""
    config = _config(
        init_from=str(baseline / "seed-{seed}" / "best.weights.h5"),
        method="wc", a="auto", b="auto", optimizer="modified-adamw",
        lr=1e-3, weight_decay=0.01, schedule="constant", epochs=2,
        batch_size=50, seeds=1, verbose="0", out=str(tmp_path / "r"),
    )

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run.run(config, callbacks=[Stop()], log=lambda message: None)
    record = run.run(config, log=lambda message: None)["seeds"][0]
    assert record["resumed_from_epoch"] == 1
    assert record["initial_test_acc"] == pytest.approx(
        _results(baseline)["seeds"][0]["test_acc"], abs=_ONE_IMAGE
    )

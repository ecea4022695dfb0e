"""What a user does right after `pip install keras-wc`.

tests/test_packaging.py runs this in a fresh venv that holds only the
wheel, Keras and one backend: layers, convert, train, fold, save and load
run; each feature that needs an extra either runs (its package is there)
or raises at once naming the extra, before it writes anything. Prints a
JSON report on its last line.

Then the README's runnable examples (given as a JSON list of code blocks),
each in a directory of its own: "ok", or the ImportError naming the extra
a line of it needs.

Usage: `python installed_usage.py WORK_DIRECTORY [README_BLOCKS.json]`
"""

import json
import os
import sys

import keras
import numpy as np

import keras_wc


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _features(model, images, expected, work):
    """Per feature that needs an extra: "ok", or the ImportError's message
    (with nothing written)."""
    recorder = keras_wc.callbacks.WeightDistribution()
    recorder.set_model(model)
    recorder.record(0)
    calls = {
        "export": lambda: keras_wc.export(model, os.path.join(work, "sm")),
        "export_onnx": lambda: keras_wc.export(
            model, os.path.join(work, "model.onnx"), format="onnx"
        ),
        "log_dir": lambda: keras_wc.callbacks.WeightDistribution(
            log_dir=os.path.join(work, "tb")
        ),
        "plot": lambda: recorder.plot(os.path.join(work, "w.png")),
    }
    results = {}
    for name, call in calls.items():
        before = set(os.listdir(work))
        try:
            call()
            results[name] = "ok"
        except ImportError as error:
            assert set(os.listdir(work)) == before, name
            results[name] = str(error)
    if results["export"] == "ok":
        import tensorflow as tf

        serve = tf.saved_model.load(os.path.join(work, "sm"))
        outputs = serve.signatures["serving_default"](image=images)
        _close(outputs["logits"], expected)
    return results


def _readme_examples(blocks_file, work):
    """Per README block: "ok", or the ImportError's message."""
    with open(blocks_file) as f:
        blocks = json.load(f)
    results = []
    for i, block in enumerate(blocks):
        directory = os.path.join(work, f"readme-{i}")
        os.makedirs(directory)
        os.chdir(directory)
        try:
            exec(compile(block, f"README block {i}", "exec"), {})
            results.append("ok")
        except ImportError as error:
            results.append(str(error))
        finally:
            os.chdir(work)
    return results


def main(work, blocks_file=None):
    rng = np.random.default_rng(0)
    images = rng.random((16, 8, 8, 1), dtype="float32")
    labels = np.arange(16) % 3

    # A plain model converted (the same function), trained, saved, loaded,
    # exported and folded (plain Keras again). Each model is left alone
    # once a copy of it ran: on JAX, copies share the original's buffers.
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    expected = model.predict(images, verbose=0)
    wc_model = keras_wc.convert(model, "wc", a=1.0, b=1.0)
    _close(wc_model.predict(images, verbose=0), expected)
    wc_model.compile(
        optimizer=keras_wc.optimizers.ModifiedAdam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    wc_model.fit(images, labels, epochs=2, verbose=0)
    trained = wc_model.predict(images, verbose=0)
    wc_model.save(os.path.join(work, "wc.keras"))
    restored = keras.saving.load_model(os.path.join(work, "wc.keras"))
    _close(restored.predict(images, verbose=0), trained)
    features = _features(wc_model, images, trained, work)
    folded = keras_wc.fold(wc_model)
    _close(folded.predict(images, verbose=0), trained)

    # A layer of its own, and WN with its data-dependent init.
    layer = keras_wc.WCDense(5, a=1.0, b=0.6)
    layer.build((None, 4))
    wn = keras.Sequential(
        [
            keras.Input((4,)),
            keras_wc.WeightNormalization(keras.layers.Dense(5), data_init=True),
        ]
    )
    batch = rng.random((32, 4), dtype="float32")
    keras_wc.initialize(wn, batch)
    initialized = keras.ops.convert_to_numpy(wn(batch))

    report = {
        "backend": keras.backend.backend(),
        "keras_wc": os.path.dirname(keras_wc.__file__),
        "version": keras_wc.__version__,
        "kernels": keras_wc.native.available(),
        "why": keras_wc.native.why_unavailable(),
        "layer_kernel_shape": list(layer.kernel.shape),
        # Salimans & Kingma §3: the init batch's outputs have mean 0, std 1.
        "wn_init_error": float(
            max(
                np.abs(initialized.mean(0)).max(),
                np.abs(initialized.std(0) - 1).max(),
            )
        ),
        "features": features,
        "tensorflow_imported": "tensorflow" in sys.modules,
    }
    if blocks_file is not None:
        report["readme"] = _readme_examples(blocks_file, work)
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])

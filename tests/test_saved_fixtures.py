"""`.keras` files saved by an older keras_wc (`tests/fixtures/saved`, see
its README) load on every backend and compute what they computed when
saved: restructuring keras_wc must not break what users saved."""

import glob
import json
import os
import zipfile

import keras
import numpy as np
import pytest

import keras_wc

SAVED = os.path.join(os.path.dirname(__file__), "fixtures", "saved")
FILES = sorted(glob.glob(os.path.join(SAVED, "*.keras")))
STEMS = [os.path.basename(f)[: -len(".keras")] for f in FILES]


def _registered_names(path):
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    names = set()

    def walk(node):
        if isinstance(node, dict):
            if str(node.get("registered_name", "")).startswith("keras_wc>"):
                names.add(node["registered_name"].split(">")[1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return names


def test_the_fixtures_cover_every_public_layer_class():
    saved = set().union(*(_registered_names(f) for f in FILES))
    public = {
        name
        for name in keras_wc.__all__
        if isinstance(getattr(keras_wc, name), type)
        and issubclass(getattr(keras_wc, name), keras.layers.Layer)
    }
    # ConvLSTM layers are newer than the fixtures.
    public -= {n for n in public if "ConvLSTM" in n}
    assert public <= saved, sorted(public - saved)


@pytest.mark.parametrize("stem", STEMS)
def test_a_model_saved_by_an_older_keras_wc_loads_and_computes_the_same(
    stem,
):
    model = keras.saving.load_model(os.path.join(SAVED, stem + ".keras"))
    data = np.load(os.path.join(SAVED, stem + ".npz"))
    np.testing.assert_allclose(
        np.asarray(model.predict(data["x"], verbose=0)),
        data["y"],
        rtol=1e-4,
        atol=1e-5,
    )
    for layer in model.layers:
        if type(layer).__module__.startswith("keras_wc"):
            assert getattr(keras_wc, type(layer).__name__) is type(layer)

"""Scaling out with `keras.distribution` (JAX, 4 forced CPU devices): a
layout map written for the plain model lays out the reparameterized one.

Every raw variable standing for a kernel gets the layout the kernel has or
would have (WN's gain that of the kernel's output-unit axes, the scalars
replicated) whatever the way the layer came to be; a tiny Gemma trains
under `ModelParallel` with keras-hub's own layout map exactly as on one
device; WN's data init and the mean-only batch norm use the global batch;
`.keras` files move between the mesh and one device; `fold` gives back
plainly laid-out kernels.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_wc
from keras_wc import tree
from keras_wc.layers.reparameterized import ReparameterizedLayer
from keras_wc.layers.wn_base import unit_axes

pytestmark = pytest.mark.backends(
    "jax", reason="keras.distribution lays out variables on JAX only"
)

# (method, convert options)
METHODS = {
    "wc": {"a": 2.0, "b": 0.8},
    "wc-fine": {"a": 2.0, "b": 0.8, "learnable": "fine"},
    "pp": {},
    "wn": {},
}


def _convert_method(name):
    return "wc" if name.startswith("wc") else name


def _mesh():
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) >= 4, devices  # conftest forces 4 CPU devices
    return keras.distribution.DeviceMesh(
        (2, 2), ("batch", "model"), devices[:4]
    )


def _spec(variable):
    """The variable's partition spec, one entry per axis."""
    spec = tuple(getattr(variable.value.sharding, "spec", ()))
    return spec + (None,) * (len(variable.shape) - len(spec))


def _specs(model):
    return {v.path: _spec(v) for v in model.weights}


def _one_device():
    cpu = keras.distribution.list_devices("cpu")[:1]
    return keras.distribution.DataParallel(devices=cpu)


def _expected_raw_specs(plain_specs, model):
    """The spec each raw variable of `model` must have, from the plain
    model's kernel specs: `v` the kernel's, WN's `g` the kernel's on its
    output-unit axes, the scalars none. Layers are matched by name: a
    loaded model's paths lack the model's name, as the plain model's do
    when loaded."""
    kernels = {
        path.split("/")[-2]: spec
        for path, spec in plain_specs.items()
        if path.endswith("/kernel")
    }
    expected = {}
    for node in tree.walk(model):
        layer = node.layer
        if not isinstance(layer, ReparameterizedLayer):
            continue
        kernel = kernels[layer.name]
        for variable in layer.weights:
            if variable.name == "v":
                expected[variable.path] = kernel
            elif variable.name == "g":
                units = unit_axes(layer, "kernel", len(kernel))
                expected[variable.path] = tuple(kernel[a] for a in units)
            elif variable.name in ("a", "b", "initialized"):
                expected[variable.path] = ()
    return expected


# -- a user's layout map, every way a layer comes to be ---------------------


def _user_map(mesh):
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*dense.*kernel"] = (None, "model")
    layout_map[".*conv.*kernel"] = (None, None, "model")
    return layout_map


def _plain(name="seq"):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6, 4)),
            keras.layers.Conv1D(8, 3, name="conv_a"),
            keras.layers.Flatten(),
            keras.layers.Dense(8, name="dense_a"),
            keras.layers.Dense(4, name="dense_b"),
        ],
        name=name,
    )


def _native(method):
    keras.utils.set_random_seed(0)
    if method == "wn":
        conv, dense = keras_wc.WNConv1D, keras_wc.WNDense
        options = {"data_init": False}
    else:
        conv, dense = keras_wc.WCConv1D, keras_wc.WCDense
        options = dict(METHODS[method])
        options.pop("learnable", None)
        if method == "wc-fine":
            options["learnable"] = True
        if method == "pp":
            options = {"compander": "powerprop"}
    return keras.Sequential(
        [
            keras.Input((6, 4)),
            conv(8, 3, name="conv_a", **options),
            keras.layers.Flatten(),
            dense(8, name="dense_a", **options),
            dense(4, name="dense_b", **options),
        ],
        name="seq",
    )


def _convert(model, method, **kwargs):
    return keras_wc.convert(
        model, _convert_method(method), **kwargs, **METHODS[method]
    )


@pytest.mark.parametrize(
    "way",
    [
        "native",
        "convert_in_place",
        "convert_copy",
        "converted_outside_then_used",
        "loaded_in_scope",
    ],
)
@pytest.mark.parametrize("method", list(METHODS))
def test_raw_variables_take_the_layout_of_their_kernel(way, method, tmp_path):
    distribution = keras.distribution.ModelParallel(
        layout_map=_user_map(_mesh()), batch_dim_name="batch"
    )
    with distribution.scope():
        plain = _plain()
    plain_specs = _specs(plain)
    assert plain_specs["seq/dense_a/kernel"] == (None, "model")
    if way == "converted_outside_then_used":
        model = _convert(plain, method, inplace=True)
    else:
        with distribution.scope():
            if way == "native":
                model = _native(method)
            elif way == "convert_in_place":
                model = _convert(_plain(), method, inplace=True)
            elif way == "convert_copy":
                model = _convert(_plain(), method)
            else:
                saved = _convert(_plain(), method)
                path = os.fspath(tmp_path / "m.keras")
                saved.save(path)
                model = keras.saving.load_model(path)
    expected = _expected_raw_specs(plain_specs, model)
    # Every kernel of the plain model stands behind a raw `v`.
    assert sorted(p.split("/")[-2] for p in expected if p.endswith("/v")) == (
        sorted(p.split("/")[-2] for p in plain_specs if p.endswith("kernel"))
    )
    got = _specs(model)
    for path, spec in expected.items():
        assert got[path][: len(spec)] == spec and not any(
            got[path][len(spec) :]
        ), (path, got[path], spec)
    with distribution.scope():
        x = np.random.default_rng(0).normal(size=(4, 6, 4)).astype("float32")
        np.testing.assert_allclose(
            model.predict(x, verbose=0),
            keras_wc.fold(model).predict(x, verbose=0),
            rtol=1e-5,
            atol=1e-6,
        )


def test_a_copy_keeps_the_variable_paths_of_the_original():
    plain = _plain()
    for method in METHODS:
        copy = _convert(plain, method)
        paths = {
            v.path.rpartition("/")[0]
            for v in copy.weights
            if v.path.endswith("/v")
        }
        assert paths == {
            v.path.rpartition("/")[0]
            for v in plain.weights
            if v.path.endswith("/kernel")
        }


# -- keras-hub: a tiny Gemma under ModelParallel -----------------------------


def _gemma_task():
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=64,
        num_layers=2,
        num_query_heads=4,
        num_key_value_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        head_dim=4,
    )
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)


def _gemma_data():
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(0, 64, (4, 8)).astype("int32"),
        "padding_mask": np.ones((4, 8), "int32"),
    }
    return x, rng.integers(0, 64, (4, 8)).astype("int32")


def _gemma_run(distribution, method, optimizer):
    with distribution.scope():
        task = _gemma_task()
        plain_specs = _specs(task)
        keras_wc.convert(
            task, _convert_method(method), inplace=True, **METHODS[method]
        )
        task.compile(
            optimizer=optimizer(1e-2),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        x, y = _gemma_data()
        history = task.fit(x, y, batch_size=4, epochs=3, verbose=0)
    return task, history.history["loss"], plain_specs


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_gemma_trains_under_model_parallel_as_on_one_device(method, tmp_path):
    import keras_hub

    optimizer = (
        keras_wc.optimizers.ModifiedAdam
        if method == "wc"
        else keras.optimizers.Adam
    )
    mesh = _mesh()
    layout_map = keras_hub.models.GemmaBackbone.get_layout_map(mesh)
    distribution = keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch"
    )
    task, losses, plain_specs = _gemma_run(distribution, method, optimizer)
    assert sum(
        1 for p, s in plain_specs.items() if p.endswith("kernel") and any(s)
    ) == 14
    expected = _expected_raw_specs(plain_specs, task)
    got = _specs(task)
    sharded = [p for p, s in expected.items() if any(s)]
    assert len([p for p in sharded if p.endswith("/v")]) == 14
    for path, spec in expected.items():
        assert got[path] == spec or (
            got[path][: len(spec)] == spec and not any(got[path][len(spec) :])
        ), (path, got[path], spec)

    # The same run on one device: the same losses and variables.
    alone, alone_losses, _ = _gemma_run(_one_device(), method, optimizer)
    np.testing.assert_allclose(losses, alone_losses, rtol=1e-5, atol=1e-5)
    for a, b in zip(task.weights, alone.weights, strict=True):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5, err_msg=a.path
        )

    # `.keras`: saved from the mesh, loaded on one device, and back.
    x, _ = _gemma_data()
    expected_logits = np.asarray(task.predict(x, verbose=0))
    task.save(tmp_path / "sharded.keras")
    with _one_device().scope():
        loaded = keras.saving.load_model(tmp_path / "sharded.keras")
        np.testing.assert_allclose(
            loaded.predict(x, verbose=0), expected_logits, rtol=1e-5, atol=1e-5
        )
        loaded.save(tmp_path / "alone.keras")
    with distribution.scope():
        back = keras.saving.load_model(tmp_path / "alone.keras")
    assert _specs(back) == got
    np.testing.assert_allclose(
        back.predict(x, verbose=0), expected_logits, rtol=1e-5, atol=1e-5
    )

    # fold: plain kernels, laid out as the plain model's.
    with distribution.scope():
        keras_wc.fold(task, inplace=True)
    assert {p: s for p, s in _specs(task).items() if p.endswith("kernel")} == {
        p: s for p, s in plain_specs.items() if p.endswith("kernel")
    }
    np.testing.assert_allclose(
        task.predict(x, verbose=0), expected_logits, rtol=1e-5, atol=1e-5
    )


# -- statistics over the global batch ----------------------------------------


def _wn_mobn_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras_wc.WNDense(8, use_bias=False, name="dense_a"),
            keras_wc.MeanOnlyBatchNorm(name="mobn"),
            keras_wc.WNDense(4, name="dense_b"),
        ]
    )


def test_data_init_and_mean_only_batch_norm_use_the_global_batch():
    mesh = _mesh()
    distribution = keras.distribution.ModelParallel(
        layout_map=_user_map(mesh), batch_dim_name="batch"
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6)).astype("float32") * np.arange(1, 7)
    y = rng.normal(size=(8, 4)).astype("float32")
    results = []
    for scope in (distribution.scope, _one_device().scope):
        with scope():
            model = _wn_mobn_model()
            keras_wc.initialize(model, x)
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
            model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        results.append([(v.name, np.asarray(v)) for v in model.weights])
    for (name, a), (_, b) in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)


def test_data_parallel_on_four_devices_equals_one_device():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 4)).astype("float32")
    y = rng.normal(size=(8, 4)).astype("float32")
    results = []
    devices = keras.distribution.list_devices("cpu")[:4]
    for distribution in (
        keras.distribution.DataParallel(devices=devices),
        _one_device(),
    ):
        with distribution.scope():
            model = _convert(_plain(), "wc-fine")
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
            model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        results.append([np.asarray(v) for v in model.weights])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)



# -- two processes -----------------------------------------------------------

# One JAX process of two (one CPU device each, collectives over loopback
# with gloo), training its half of the batch under DataParallel.
_WORKER = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    process, port = int(sys.argv[1]), sys.argv[2]
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=2,
        process_id=process,
    )
    import keras
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from test_distribution import _two_process_model, _two_process_data

    keras.distribution.set_distribution(
        keras.distribution.DataParallel(
            devices=jax.devices(), auto_shard_dataset=False
        )
    )
    model = _two_process_model()
    x, y = _two_process_data()
    half = slice(4 * process, 4 * process + 4)
    history = model.fit(
        x[half], y[half], batch_size=4, epochs=2, verbose=0, shuffle=False
    )
    print(json.dumps({
        "devices": len(jax.devices()),
        "loss": history.history["loss"],
        "weights": [np.asarray(v).tolist() for v in model.weights],
    }))
    """
)


def _two_process_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras_wc.WCDense(6, a=2.0, b=1.0, learnable=True),
            keras_wc.WNDense(2, data_init=False),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def _two_process_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    return x, rng.normal(size=(8, 2)).astype("float32")


@pytest.mark.slow
def test_two_processes_train_as_one_device():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    here = os.path.dirname(os.path.abspath(__file__))
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(i), port, here],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    with _one_device().scope():
        model = _two_process_model()
        x, y = _two_process_data()
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    for result in results:
        assert result["devices"] == 2
        np.testing.assert_allclose(
            result["loss"], history.history["loss"], rtol=1e-5
        )
        for got, variable in zip(result["weights"], model.weights, strict=True):
            np.testing.assert_allclose(
                np.asarray(got, variable.dtype),
                np.asarray(variable),
                rtol=1e-5,
                atol=1e-6,
                err_msg=variable.path,
            )

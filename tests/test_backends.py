"""Across backends: a `.keras` file saved on one Keras backend loads on the
others with identical raw variables and outputs; every backend keeps raw
variables float32 under mixed precision.

Each backend runs in its own process (`KERAS_BACKEND` is per process).
"""

import fcntl
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from layer_harness import check_fit_step

import keras_wc

BACKENDS = ("tensorflow", "jax", "torch")

# Builds, randomizes, saves (or loads and compares) the models of every
# method in a child process of the given backend.
_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    import keras_wc

    mode, directories = sys.argv[1], sys.argv[2:]
    L = keras.layers

    def build(name):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6, 4), name="x")
        if name == "wc":
            h = keras_wc.WCConv1D(5, 3, a=1.0, b=0.6)(inputs)
        elif name == "wc-fine":
            h = keras_wc.WCConv1D(5, 3, a=1.0, b=0.6, learnable=True)(inputs)
        elif name == "wc-coarse":
            shared = keras_wc.SharedCompander(a=1.0, b=0.8)
            h = keras_wc.WCConv1D(5, 3, shared=shared)(inputs)
            h = keras_wc.WCDense(5, shared=shared)(h)
        elif name == "pp":
            h = keras_wc.WCConv1D(5, 3, compander="powerprop")(inputs)
        elif name == "wn+mobn":
            h = keras_wc.WNConv1D(5, 3, use_bias=False)(inputs)
            h = keras_wc.MeanOnlyBatchNorm()(h)
        else:  # recurrent
            h = L.Bidirectional(keras_wc.WCLSTM(3, a=1.0,
                                                return_sequences=True))(inputs)
            h = keras_wc.WNGRU(4, return_sequences=True)(h)
        outputs = L.Dense(2)(L.GlobalAveragePooling1D()(h))
        return keras.Model(inputs, outputs, name=name)

    NAMES = ["wc", "wc-fine", "wc-coarse", "pp", "wn+mobn", "recurrent"]
    x = np.random.default_rng(1).standard_normal((3, 6, 4)).astype("f4")
    for directory, name in [(d, n) for d in directories for n in NAMES]:
        path = f"{directory}/{name}.keras"
        if mode == "save":
            model = build(name)
            rng = np.random.default_rng(2)
            for v in model.weights:
                if "float" in str(v.dtype):
                    leaf = v.path.split("/")[-1]
                    value = (rng.uniform(0.5, 1.5, v.shape)
                             if leaf in ("a", "b", "g")
                             else 0.1 * rng.standard_normal(v.shape))
                    v.assign(value.astype(v.dtype))
                else:
                    v.assign(np.ones(v.shape, v.dtype))
            model.save(path)
            np.savez(path + ".npz", y=keras.ops.convert_to_numpy(model(x)),
                     **{f"w{i}": keras.ops.convert_to_numpy(v)
                        for i, v in enumerate(model.weights)})
        else:
            model = keras.saving.load_model(path)
            saved = np.load(path + ".npz")
            for i, v in enumerate(model.weights):
                np.testing.assert_array_equal(
                    keras.ops.convert_to_numpy(v), saved[f"w{i}"], v.path)
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(model(x)), saved["y"],
                rtol=1e-5, atol=1e-6, err_msg=name)
    print(json.dumps({"backend": keras.backend.backend(), "ok": NAMES}))
    """
)


def _run(backend, mode, *directories):
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode, *map(os.fspath, directories)],
        env={
            **os.environ,
            "KERAS_BACKEND": backend,
            "TF_CPP_MIN_LOG_LEVEL": "3",
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    return report


@pytest.fixture(scope="session")
def saved_on_every_backend(tmp_path_factory):
    """{backend: directory of the files saved on it}, saved once for all
    xdist workers (one child process per backend)."""
    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent
    with open(shared / "saved_on_every_backend.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        directories = {b: shared / f"saved-on-{b}" for b in BACKENDS}
        for backend, directory in directories.items():
            if not (directory / "done").exists():
                directory.mkdir(exist_ok=True)
                _run(backend, "save", directory)
                (directory / "done").touch()
    return directories


@pytest.mark.slow
@pytest.mark.backends(
    "tensorflow", reason="drives every backend in subprocesses, once"
)
@pytest.mark.parametrize("target", BACKENDS)
def test_a_keras_file_loads_on_every_backend(target, saved_on_every_backend):
    # The files saved on each other backend, loaded on `target` (in one
    # child process).
    _run(
        target,
        "load",
        *(d for b, d in saved_on_every_backend.items() if b != target),
    )


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize(
    "layer",
    [
        lambda: keras_wc.WCDense(4, a=1.0, b=0.6, learnable=True),
        lambda: keras_wc.WNConv1D(4, 3, data_init=False),
        lambda: keras_wc.WCLSTM(4, a=1.0),
    ],
    ids=["wc-fine-dense", "wn-conv", "wc-lstm"],
)
def test_mixed_precision_keeps_raw_variables_float32(policy, layer):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        built = layer()
        y = built(np.ones((2, 5, 3), "float32"))
        assert keras.backend.standardize_dtype(y.dtype) == policy[6:]
        for variable in built.weights:
            if "float" in str(variable.dtype):
                assert variable.dtype == "float32", variable.path
        assert np.all(
            np.isfinite(
                keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))
            )
        )
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.backends(
    "torch", reason="torch.compile (the harness fits eagerly on PyTorch)"
)
@pytest.mark.parametrize(
    "layer, shape",
    [
        (lambda: keras_wc.WCDense(4, a=1.0, b=0.6, learnable=True), (2, 3)),
        (lambda: keras_wc.WCConv2D(3, 3, compander="powerprop"), (2, 5, 5, 2)),
        (lambda: keras_wc.WNConv1D(3, 3, data_init=False), (2, 6, 2)),
        (lambda: keras_wc.WCLSTM(3, a=1.0), (2, 4, 2)),
    ],
    ids=["wc-fine-dense", "pp-conv2d", "wn-conv1d", "wc-lstm"],
)
def test_torch_compile_trains_each_method(layer, shape):
    inputs = keras.Input(shape[1:])
    model = keras.Model(inputs, layer()(inputs))
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    check_fit_step(model, x, jit_compile=True)

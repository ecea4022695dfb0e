"""The runner: schedules, weight decay, outputs, resume, distribution."""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

import keras_wc
import models
from train import assembly, devices, run, schedules
from train.config import Config, ConfigError, parse_mesh
from train.results import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _tiny(tmp_path, name="run", **changes):
    settings = dict(
        model="small_cnn",
        dataset="digits",
        method="wc",
        a=1.0,
        b=0.6,
        lr=0.05,
        milestones=[2],
        weight_decay=5e-4,
        epochs=3,
        batch_size=64,
        limit_train=256,
        out=str(tmp_path / name),
        verbose="0",
    )
    settings.update(changes)
    return Config(**settings).resolve()


def _with_dropout(name, **kwargs):
    # Dropout makes the resume test depend on the random state too.
    return models.build(name, dropout=0.3, **kwargs)


# === Schedules ===


def test_step_decay_matches_pytorch_multisteplr():
    schedule = schedules.StepDecay(0.1, (60, 120, 160), 0.2, steps_per_epoch=3)
    for epoch in (0, 59, 60, 119, 120, 159, 160, 199):
        expected = 0.1 * 0.2 ** sum(epoch >= m for m in (60, 120, 160))
        for step in (3 * epoch, 3 * epoch + 2):
            assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)


def test_linear_decay_is_the_wn_recipe():
    schedule = schedules.LinearDecay(0.003, epochs=200, steps_per_epoch=2)
    for epoch in (0, 50, 100, 101, 150, 199):
        expected = 0.003 * min(2 - epoch / 100, 1)
        assert float(schedule(2 * epoch + 1)) == pytest.approx(expected)


def test_schedule_round_trip_and_errors():
    schedule = schedules.StepDecay(0.1, (2, 4), 0.1, steps_per_epoch=5)
    again = schedules.StepDecay.from_config(schedule.get_config())
    assert float(again(20)) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="`milestones` must be strictly"):
        schedules.StepDecay(0.1, (4, 2), 0.1, steps_per_epoch=1)
    with pytest.raises(ValueError, match="`steps_per_epoch` must be"):
        schedules.LinearDecay(0.1, 10, steps_per_epoch=0)
    with pytest.raises(ValueError, match="`schedule` must be one of"):
        schedules.get("cosine", 0.1, epochs=1, steps_per_epoch=1)
    assert schedules.get("constant", 0.1, epochs=1, steps_per_epoch=1) == 0.1


def test_beta1_switch_sets_beta1_at_half_and_retraces():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.1), "mse")
    switch = schedules.Beta1Switch(epochs=4)
    history = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            history.append(self.model.optimizer.beta_1)

    x = np.ones((4, 2), "float32")
    model.fit(x, x[:, :1], epochs=4, verbose=0, callbacks=[switch, Spy()])
    assert history == [0.9, 0.9, 0.5, 0.5]


# === Weight decay ===


def _plain():
    keras.utils.set_random_seed(0)
    return models.build("small_cnn", input_shape=(8, 8, 1))


def test_weight_decay_on_kernels_biases_and_bn_like_pytorch():
    model = _plain()
    decayed = assembly.with_weight_decay(model, 5e-4)
    for old, new in zip(model.weights, decayed.weights, strict=True):
        np.testing.assert_array_equal(old, new)
    regularized = {
        (layer.name, key): getattr(layer, key).l2
        for layer in decayed.layers
        for key in ("kernel_regularizer", "bias_regularizer",
                    "gamma_regularizer", "beta_regularizer")
        if getattr(layer, key, None) is not None
    }
    assert regularized[("block1_conv", "kernel_regularizer")] == 2.5e-4
    assert regularized[("predictions", "bias_regularizer")] == 2.5e-4
    assert regularized[("block1_bn", "gamma_regularizer")] == 2.5e-4
    kernels = assembly.with_weight_decay(model, 5e-4, scope="kernels")
    assert kernels.get_layer("predictions").bias_regularizer is None
    assert kernels.get_layer("block1_bn").gamma_regularizer is None
    assert assembly.with_weight_decay(model, 0.0) is model


def test_weight_decay_loss_equals_pytorch_penalty_on_effective_weights():
    config = _tiny(Path("/unused"), weight_decay_scope="kernels")
    model = assembly.with_weight_decay(_plain(), 1e-4, scope="kernels")
    wc = assembly.apply_method(model, config, bundle=None)
    x = np.zeros((1, 8, 8, 1), "float32")
    wc(x)  # fixed WC adds its penalty on the forward pass's Ψ(v)
    # PyTorch's weight decay wd is the loss (wd/2)·Σ‖w‖², w = Ψ(v) (Eq. 5).
    expected = sum(
        0.5 * 1e-4 * float(np.sum(np.square(np.asarray(layer.kernel))))
        for layer in wc.layers
        if isinstance(layer, keras_wc.WCConv2D | keras_wc.WCDense)
    )
    assert float(sum(wc.losses)) == pytest.approx(expected, rel=1e-5)

    learnable = assembly.apply_method(
        model, config.replace(learnable="fine", a=0.6, b=1.0), bundle=None
    )
    learnable(x)
    on_v = sum(
        0.5 * 1e-4 * float(np.sum(np.square(np.asarray(layer.v))))
        for layer in learnable.layers
        if hasattr(layer, "v")
    )
    assert float(sum(learnable.losses)) == pytest.approx(on_v, rel=1e-5)


# === A whole run: outputs ===


def test_run_writes_results_config_history_and_plots(tmp_path):
    config = _tiny(tmp_path, seeds=2, epochs=2, learnable="fine", a=0.6,
                   b=1.0)
    results = run.run(config, log=lambda message: None)
    out = tmp_path / "run"
    saved = json.loads((out / "results.json").read_text())
    assert saved["complete"] is True
    assert [r["seed"] for r in saved["seeds"]] == [0, 1]
    accs = [r["test_acc"] for r in saved["seeds"]]
    assert saved["test_acc"]["mean"] == pytest.approx(np.mean(accs))
    assert saved["test_acc"]["std"] == pytest.approx(np.std(accs, ddof=1))
    assert saved["config"] == json.loads((out / "config.json").read_text())
    assert saved["config"]["learnable"] == "fine"
    assert set(saved["versions"]) >= {"python", "tensorflow", "keras",
                                      "keras_wc"}
    assert saved["wall_time_s"] > 0
    record = saved["seeds"][0]
    assert 0 <= record["test_acc"] <= 1 and 1 <= record["best_epoch"] <= 2
    assert record["best_val_acc"] > 0 and record["num_train"] == 256
    assert results["test_acc"] == saved["test_acc"]

    seed = out / "seed-0"
    with open(seed / "history.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert {"accuracy", "loss", "val_accuracy", "val_loss"} <= set(rows[0])
    weights = json.loads((seed / "weights.json").read_text())
    assert weights["epochs"] == [0, 1, 2]
    assert len(weights["scales"]["block1_conv"]["a"]) == 3
    for png in ("weights.png", "scales.png"):
        assert (seed / png).read_bytes()[:4] == b"\x89PNG"
    assert (seed / "best.weights.h5").exists()
    assert not (seed / "backup").exists()
    assert list((seed / "tensorboard").rglob("events.out.tfevents.*"))


def test_a_different_config_in_the_same_out_is_refused(tmp_path):
    run.run(_tiny(tmp_path, epochs=1, limit_train=64), log=lambda m: None)
    with pytest.raises(ConfigError, match="another configuration"):
        run.run(_tiny(tmp_path, epochs=2, limit_train=64))


def test_tfds_dataset_path_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    config = _tiny(
        tmp_path, dataset="cifar10", limit_train=16, batch_size=8,
        epochs=1, steps_per_epoch=1,
    )
    with tfds.testing.mock_data(num_examples=40):
        results = run.run(
            config,
            build=lambda name, **kw: models.build(name, **kw),
            log=lambda m: None,
        )
    assert results["seeds"][0]["num_train"] == 16


# === Resume ===


class _Interrupt(Exception):
    pass


class _StopAfter(keras.callbacks.Callback):
    """Stands for a kill after `epoch` ended (its backup is written)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Interrupt()


def _weights(path):
    with h5py.File(path) as file:
        arrays = []
        file.visititems(
            lambda name, item: arrays.append((name, item[()]))
            if isinstance(item, h5py.Dataset)
            else None
        )
    return arrays


@pytest.mark.slow
@pytest.mark.backends(
    "tensorflow", reason="bit-identical resume rests on TF op determinism"
)
def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    quiet = {"log": lambda message: None, "build": _with_dropout}
    whole = run.run(_tiny(tmp_path, "whole", seeds=2), **quiet)

    config = _tiny(tmp_path, "cut", seeds=2)
    with pytest.raises(_Interrupt):
        run.run(config, callbacks=[_StopAfter(1)], **quiet)
    cut = tmp_path / "cut"
    assert json.loads((cut / "results.json").read_text())["seeds"] == []
    messages = []
    resumed = run.run(config, log=messages.append, build=_with_dropout)
    assert "seed 0: resuming after epoch 2" in messages

    # Interrupt the second seed: the first is not trained again.
    (cut / "results.json").unlink()
    for name in os.listdir(cut / "seed-1"):
        os.remove(cut / "seed-1" / name) if name != "tensorboard" else None
    results = json.loads(json.dumps(resumed))
    results["seeds"] = results["seeds"][:1]
    write_json(cut / "results.json", results)
    with pytest.raises(_Interrupt):
        run.run(config, callbacks=[_StopAfter(0)], **quiet)
    messages = []
    resumed = run.run(config, log=messages.append, build=_with_dropout)
    assert any("seed 0: already done" in m for m in messages)
    assert "seed 1: resuming after epoch 1" in messages

    for a, b in zip(whole["seeds"], resumed["seeds"], strict=True):
        assert a["test_acc"] == b["test_acc"]
        assert a["best_val_acc"] == b["best_val_acc"]
    for seed in ("seed-0", "seed-1"):
        for (name, x), (_, y) in zip(
            _weights(tmp_path / "whole" / seed / "best.weights.h5"),
            _weights(cut / seed / "best.weights.h5"),
            strict=True,
        ):
            np.testing.assert_array_equal(x, y, err_msg=name)
        assert (tmp_path / "whole" / seed / "history.csv").read_text() == (
            cut / seed / "history.csv"
        ).read_text()
        assert json.loads(
            (tmp_path / "whole" / seed / "weights.json").read_text()
        ) == json.loads((cut / seed / "weights.json").read_text())


# === Distribution ===


@pytest.mark.backends("tensorflow", reason="tf.distribute.MirroredStrategy")
def test_mirrored_on_two_logical_cpus(tmp_path):
    config = _tiny(tmp_path, strategy="mirrored", epochs=1, limit_train=64)
    assert devices.make_strategy(config).num_replicas_in_sync == 2
    results = run.run(config, log=lambda m: None)
    assert results["complete"] and results["seeds"][0]["test_acc"] > 0


@pytest.mark.slow
@pytest.mark.backends("jax", reason="keras.distribution (JAX)")
def test_jax_distributions_give_the_one_device_run(tmp_path):
    wn = {"model": "mlp", "method": "wn", "a": None, "b": None}
    config = _tiny(tmp_path, epochs=1, limit_train=128, **wn)
    alone = run.run(config, log=lambda m: None)["seeds"][0]
    for distribution, mesh, devices_used in (
        ("data", None, 4),
        ("model", "2x2", 4),
    ):
        given = _tiny(
            tmp_path,
            name=distribution,
            epochs=1,
            limit_train=128,
            distribution=distribution,
            mesh=mesh,
            **wn,
        )
        strategy = devices.make_strategy(given)
        if distribution == "data":
            assert len(strategy.device_mesh.devices.flat) == devices_used
        results = run.run(given, log=lambda m: None)
        assert results["config"]["distribution"] == distribution
        seed = results["seeds"][0]
        for key in ("test_acc", "test_loss", "best_val_acc"):
            assert seed[key] == pytest.approx(alone[key], rel=1e-4), key


def test_distribution_flags_are_checked():
    with pytest.raises(ConfigError, match="--mesh must be BATCHxMODEL"):
        parse_mesh("2by2")
    with pytest.raises(ConfigError, match="--mesh applies to"):
        Config(mesh="2x2").resolve()
    if keras.backend.backend() != "jax":
        with pytest.raises(ConfigError, match="on JAX only"):
            Config(distribution="data").resolve()


_PATCH_CHECK = """
import keras, numpy as np, tensorflow as tf
from keras.src.backend.tensorflow import trainer
from train import multiworker

strategy = tf.distribute.MultiWorkerMirroredStrategy()  # one local worker
with strategy.scope():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
x = np.ones((8, 2), "float32")
data = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(4)
original = trainer.reduce_per_replica
with multiworker.patched(model, tf.distribute.get_strategy(), data):
    assert trainer.reduce_per_replica is original
    assert "_maybe_symbolic_build" not in vars(model)
with multiworker.patched(model, strategy, data):
    assert trainer.reduce_per_replica is not original
    assert "_maybe_symbolic_build" in vars(model)
    model.fit(data, epochs=1, verbose=0)
    model.evaluate(data, verbose=0)
assert trainer.reduce_per_replica is original
assert "_maybe_symbolic_build" not in vars(model)
print("restored")
"""


@pytest.mark.backends(
    "tensorflow", reason="tf.distribute.MultiWorkerMirroredStrategy"
)
def test_multiworker_workaround_applies_only_inside_and_is_restored():
    environment = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-c", _PATCH_CHECK], cwd=ROOT, capture_output=True,
        text=True, timeout=300,
        env={**environment, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["restored"]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _cli(args, env=None, timeout=300):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "train", *args],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )


_SMOKE = ["--model", "small_cnn", "--dataset", "digits", "--method", "wc",
          "--a", "1", "--b", "0.6", "--epochs", "1", "--limit-train", "128",
          "--batch-size", "32", "--verbose", "2"]


@pytest.mark.slow
@pytest.mark.backends("tensorflow", reason="tf.distribute.MirroredStrategy")
def test_mirrored_cli_with_logical_cpus(tmp_path):
    process = _cli(_SMOKE + ["--strategy", "mirrored", "--logical-cpus", "2",
                             "--out", str(tmp_path)])
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["strategy"] == "mirrored"
    assert sum("CPU" in d for d in results["versions"]["devices"]) == 2


@pytest.mark.slow
@pytest.mark.backends(
    "tensorflow", reason="tf.distribute.MultiWorkerMirroredStrategy"
)
def test_multiworker_two_processes_on_localhost(tmp_path):
    ports = _free_ports(2)
    workers = [f"127.0.0.1:{port}" for port in ports]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers},
                     "task": {"type": "worker", "index": index}}
        processes.append(
            _cli(_SMOKE + ["--strategy", "multiworker",
                           "--out", str(tmp_path / "out")],
                 env={"TF_CONFIG": json.dumps(tf_config)})
        )
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    tables = [
        [line for line in stdout.splitlines() if line.startswith("| small")]
        for stdout, _ in outputs
    ]
    assert tables[0] == tables[1] and len(tables[0]) == 1
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["complete"]
    assert f"{100 * results['test_acc']['mean']:.2f}%" in tables[0][0]
    # Only the chief wrote outputs; the other worker kept just its backups.
    assert sorted(os.listdir(tmp_path / "out")) == [
        ".workers", "config.json", "results.json", "seed-0",
    ]

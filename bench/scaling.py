"""Scaling out on JAX: the training step and the per-device memory of the
variables under `keras.distribution`, WC/PP/WN against plain Keras on the
same mesh, side by side in one process (interleaved medians).

* A small Gemma (keras-hub `GemmaCausalLM` built from a config) under
  `ModelParallel` with keras-hub's own `GemmaBackbone.get_layout_map` on a
  2×2 ("batch", "model") mesh, converted in place inside the scope.
* A dense MLP (1024-2048-2048-10) under `DataParallel` on 4 devices.

Per-device memory: the bytes of the shards of every model variable held by
each device (the largest over the devices): a raw variable replicated where
plain Keras shards its kernel would show here.

    KERAS_BACKEND=jax python -m bench.scaling           # ~5 min on 2 cores
    KERAS_BACKEND=jax python -m bench.scaling --quick   # a smoke run

Four CPU devices are made from the host CPU (XLA's flag, set here before
JAX starts).
"""

import argparse
import os
import sys

_FLAG = "--xla_force_host_platform_device_count=4"
if "xla_force_host_platform_device_count" not in os.environ.get(
    "XLA_FLAGS", ""
):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_wc  # noqa: E402
from bench import machine, output  # noqa: E402
from bench.speed import dense_heavy, interleaved  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
# variant -> keras_wc.convert arguments (None: plain Keras).
VARIANTS = {
    "plain": None,
    "wc": ("wc", {"a": "auto", "b": "auto"}),
    "wc-fine": ("wc", {"a": "auto", "b": "auto", "learnable": "fine"}),
    "pp": ("pp", {}),
    "wn": ("wn", {}),
}


def _mesh():
    devices = keras.distribution.list_devices("cpu")[:4]
    return keras.distribution.DeviceMesh(
        (2, 2), ("batch", "model"), devices
    )


def gemma(quick):
    import keras_hub

    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=256 if quick else 2048,
        num_layers=1 if quick else 2,
        num_query_heads=4,
        num_key_value_heads=2,
        hidden_dim=32 if quick else 256,
        intermediate_dim=64 if quick else 1024,
        head_dim=8 if quick else 64,
    )
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)


def _gemma_batch(quick):
    rng = np.random.default_rng(0)
    vocab, length = (256, 16) if quick else (2048, 64)
    x = {
        "token_ids": rng.integers(0, vocab, (8, length)).astype("int32"),
        "padding_mask": np.ones((8, length), "int32"),
    }
    return x, rng.integers(0, vocab, (8, length)).astype("int32")


def _dense_batch(quick):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 64 if quick else 1024)).astype("float32")
    return x, rng.integers(0, 10, 8).astype("int32")


def _build(make, variant, distribution):
    with distribution.scope():
        keras.utils.set_random_seed(0)
        model = make()
        if VARIANTS[variant] is not None:
            method, options = VARIANTS[variant]
            keras_wc.convert(model, method, inplace=True, **options)
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    return model


def device_bytes(model):
    """The largest number of bytes of model variables one device holds."""
    held = {}
    for variable in model.weights:
        for shard in variable.value.addressable_shards:
            held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
    return max(held.values())


def _row(make, batch, distribution, rounds, calls):
    models = {v: _build(make, v, distribution) for v in VARIANTS}
    x, y = batch
    steps = {v: m.train_on_batch for v, m in models.items()}
    with distribution.scope():
        times = interleaved(steps, (x, y), rounds, calls)
    memory = {v: device_bytes(m) for v, m in models.items()}
    return {
        v: {
            "seconds": times[v],
            "ratio": times[v] / times["plain"],
            "device_bytes": memory[v],
            "memory_ratio": memory[v] / memory["plain"],
        }
        for v in VARIANTS
    }


GEMMA = "Gemma, ModelParallel 2x2 (keras-hub layout map)"
DENSE = "dense MLP, DataParallel 4"


def run(quick, rounds, rows=(GEMMA, DENSE)):
    rounds = rounds or (2 if quick else 9)
    calls = 1 if quick else 5
    result = {
        "machine": machine.describe(),
        "backend": keras.backend.backend(),
        "quick": quick,
        "rounds": rounds,
        "rows": {},
    }
    if GEMMA in rows:
        import keras_hub

        model_parallel = keras.distribution.ModelParallel(
            layout_map=keras_hub.models.GemmaBackbone.get_layout_map(_mesh()),
            batch_dim_name="batch",
        )
        result["rows"][GEMMA] = _row(
            lambda: gemma(quick),
            _gemma_batch(quick),
            model_parallel,
            rounds,
            calls,
        )
    if DENSE in rows:
        data_parallel = keras.distribution.DataParallel(
            devices=keras.distribution.list_devices("cpu")[:4]
        )
        result["rows"][DENSE] = _row(
            lambda: dense_heavy(input_dim=64 if quick else 1024),
            _dense_batch(quick),
            data_parallel,
            rounds,
            calls,
        )
    return result


def to_markdown(result):
    lines = [
        "# Scaling out (JAX, keras.distribution)",
        "",
        f"Machine: {machine.line(result['machine'])}; 4 CPU devices made "
        f"from the host CPU; {result['rounds']} interleaved rounds, medians. "
        "Step: `train_on_batch`, SGD with momentum, batch 8; memory: the "
        "largest bytes of model variables on one device.",
        "",
        "| model | variant | step / plain | memory per device / plain |",
        "|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        for variant, cell in row.items():
            lines.append(
                f"| {name} | {variant} | {cell['ratio']:.2f} | "
                f"{cell['memory_ratio']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--rounds", type=int, help="interleaved rounds")
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=("gemma", "dense"),
        default=("gemma", "dense"),
        help="the models timed (default: both)",
    )
    parser.add_argument(
        "--out", default=RESULTS, help=f"output folder (default: {RESULTS})"
    )
    args = parser.parse_args(argv)
    if keras.backend.backend() != "jax":
        print("bench.scaling needs KERAS_BACKEND=jax", file=sys.stderr)
        return 2
    rows = [{"gemma": GEMMA, "dense": DENSE}[r] for r in args.rows]
    result = run(args.quick, args.rounds, rows)
    name = "scaling" + ("-quick" if args.quick else "")
    output.write(args.out, name, result, to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

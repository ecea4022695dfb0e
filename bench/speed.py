"""Speed and memory of keras_wc against plain Keras, measured side by side.

Every number is a ratio to the plain Keras model measured in the same
process, interleaved round by round (plain, variant 1, variant 2, ...,
plain, ...), as the median over rounds of the mean step time of a round.
Absolute times on a shared 2-core machine are noise; ratios measured this
way are not.

    python -m bench.speed                   # full run, writes bench/results/
    python -m bench.speed --quick           # tiny sizes, a smoke run
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_wc  # noqa: E402
import models  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")

# name -> (convert method or None, convert options, model norm)
VARIANTS = {
    "plain": (None, {}, "bn"),
    "wc": ("wc", {"a": 1.0, "b": 0.6}, "bn"),
    "wc-fine": ("wc", {"a": 1.0, "b": 0.6, "learnable": "fine"}, "bn"),
    "wc-coarse": ("wc", {"a": 1.0, "b": 0.6, "learnable": "coarse"}, "bn"),
    "pp": ("pp", {"alpha": 2.0}, "bn"),
    "wn": ("wn", {}, "bn"),
    "wn+mobn": ("wn", {}, "mobn"),
}


def dense_heavy(num_classes=10, input_dim=1024, width=2048, norm="bn"):
    """An MLP whose cost is dominated by its 6.3M dense weights."""
    inputs = keras.Input((input_dim,))
    h = inputs
    for i in range(2):
        h = keras.layers.Dense(width, use_bias=norm != "mobn",
                               name=f"dense_{i}")(h)
        if norm == "mobn":
            h = keras_wc.MeanOnlyBatchNorm(name=f"mobn_{i}")(h)
        h = keras.layers.ReLU(name=f"relu_{i}")(h)
    outputs = keras.layers.Dense(num_classes, name="head")(h)
    return keras.Model(inputs, outputs, name="dense_heavy")


def build(arch, variant, quick):
    method, options, norm = VARIANTS[variant]
    if arch == "resnet18":
        shape = (16, 16, 3) if quick else (32, 32, 3)
        model = models.build("resnet18", num_classes=10, input_shape=shape,
                             norm=norm)
    else:
        model = dense_heavy(width=256 if quick else 2048, norm=norm)
    regularizer = keras_wc.l2_from_pytorch(1e-4)
    for layer in _leaves(model):
        if hasattr(layer, "kernel_regularizer"):
            layer.kernel_regularizer = regularizer
    if method is not None:
        model = keras_wc.convert(model, method, **options)
    return model


def _leaves(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaves(layer)
        else:
            yield layer


def train_step_fn(model, optimizer, jit):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=jit)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
            if model.losses:
                loss = loss + tf.add_n(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return step


def interleaved(functions, args, rounds, calls):
    """Median over rounds of the mean call time of each function."""
    for fn in functions.values():  # trace, compile, warm up
        for _ in range(2):
            np.asarray(fn(*args))
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            start = time.perf_counter()
            for _ in range(calls):
                out = fn(*args)
            np.asarray(out)
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def _batch(arch, batch, quick, seed=0):
    rng = np.random.default_rng(seed)
    if arch == "resnet18":
        shape = (batch, 16, 16, 3) if quick else (batch, 32, 32, 3)
    else:
        shape = (batch, 1024)
    x = rng.standard_normal(shape).astype("float32")
    return x, rng.integers(0, 10, batch).astype("int32")


def training_ratios(arch, batch, jit, quick, rounds, calls):
    x, y = _batch(arch, batch, quick)
    steps = {}
    for variant in VARIANTS:
        model = build(arch, variant, quick)
        if variant.startswith("wn"):
            keras_wc.initialize(model, x)
        steps[variant] = train_step_fn(
            model, keras.optimizers.SGD(0.01, momentum=0.9), jit
        )
    times = interleaved(steps, (x, y), rounds, calls)
    return _ratios(times)


def optimizer_ratio(quick, rounds, calls):
    x, y = _batch("dense", 32, quick)
    steps = {}
    for name, optimizer in (("adam", keras.optimizers.Adam(1e-3)),
                            ("modified-adam",
                             keras_wc.optimizers.ModifiedAdam(1e-3))):
        steps[name] = train_step_fn(build("dense", "wc", quick), optimizer,
                                    jit=False)
    times = interleaved(steps, (x, y), rounds, calls)
    return _ratios(times, base="adam")


def inference_ratio(arch, batch, quick, rounds, calls):
    x, _ = _batch(arch, batch, quick)
    plain = build(arch, "plain", quick)
    trained = build(arch, "wc", quick)
    folded = keras_wc.fold(trained)
    functions = {
        name: tf.function(lambda x, m=m: m(x, training=False))
        for name, m in (("plain", plain), ("folded-wc", folded))
    }
    times = interleaved(functions, (x,), rounds, calls)
    return _ratios(times)


def data_init_ratio(arch, batch, quick, rounds):
    x, _ = _batch(arch, batch, quick)
    init, forward = [], []
    for _ in range(rounds):
        model = build(arch, "wn", quick)
        np.asarray(model(x[:2], training=False))  # build and warm up
        start = time.perf_counter()
        np.asarray(model(x, training=False))
        forward.append(time.perf_counter() - start)
        start = time.perf_counter()
        keras_wc.initialize(model, x)
        init.append(time.perf_counter() - start)
    return {
        "forward_s": statistics.median(forward),
        "initialize_s": statistics.median(init),
        "ratio": statistics.median(init) / statistics.median(forward),
    }


def surgery_seconds(rounds):
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3),
                                        classes=10)
    convert, fold = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        converted = keras_wc.convert(model, "wc")
        convert.append(time.perf_counter() - start)
        start = time.perf_counter()
        keras_wc.fold(converted)
        fold.append(time.perf_counter() - start)
    return {"convert_s": statistics.median(convert),
            "fold_s": statistics.median(fold)}


def peak_memory_ratios(arch, batch, quick):
    """Peak RSS of a training run per variant, each in its own process."""
    peaks = {}
    for variant in VARIANTS:
        out = subprocess.run(
            [sys.executable, "-m", "bench.speed", "--memory-child", arch,
             variant, str(batch)] + (["--quick"] if quick else []),
            capture_output=True, text=True, check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        peaks[variant] = float(out.stdout.strip().splitlines()[-1])
    return {name: {"bytes": peak, "ratio": peak / peaks["plain"]}
            for name, peak in peaks.items()}


def _memory_child(arch, variant, batch, quick):
    x, y = _batch(arch, batch, quick)
    model = build(arch, variant, quick)
    if variant.startswith("wn"):
        keras_wc.initialize(model, x)
    step = train_step_fn(model, keras.optimizers.SGD(0.01, momentum=0.9),
                         jit=False)
    for _ in range(3):
        np.asarray(step(x, y))
    print(_peak_rss_bytes())


def _peak_rss_bytes():
    # VmHWM is this process's own high-water mark: `ru_maxrss` would carry
    # the parent's peak across fork + exec on Linux.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _ratios(times, base="plain"):
    return {name: {"seconds": t, "ratio": t / times[base]}
            for name, t in times.items()}


TARGETS = {
    "wc/pp at batch 128 (resnet18)": 1.02,
    "wc/pp at batch 8 (dense-heavy)": 1.15,
    "wn": 1.05,
    "data init / forward": 1.2,
    "convert, fold (resnet50)": 2.0,
}


def run(quick=False, rounds=None, calls=None, skip_memory=False):
    rounds = rounds or (2 if quick else 7)
    calls = calls or (1 if quick else 3)
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "keras_wc": keras_wc.__version__},
        "quick": quick,
        "training": {},
    }
    configs = [("resnet18", 8 if quick else 128), ("dense", 8), ("dense", 32)]
    for arch, batch in configs:
        for jit in (False, True):
            key = f"{arch} batch {batch} jit {'on' if jit else 'off'}"
            print(f"[training] {key}", flush=True)
            result["training"][key] = training_ratios(
                arch, batch, jit, quick, rounds,
                1 if arch == "resnet18" else calls * 5,
            )
    print("[optimizer] modified-adam vs adam", flush=True)
    result["optimizer"] = optimizer_ratio(quick, rounds, calls * 5)
    print("[inference] folded vs plain", flush=True)
    result["inference"] = {
        f"{arch} batch {batch}": inference_ratio(arch, batch, quick, rounds,
                                                 calls * 3)
        for arch, batch in configs[:2]
    }
    print("[data init] initialize vs one forward", flush=True)
    result["data_init"] = {
        f"{arch} batch {batch}": data_init_ratio(arch, batch, quick, rounds)
        for arch, batch in (("resnet18", 100 if not quick else 8),
                            ("dense", 500))
    }
    print("[surgery] convert and fold on ResNet-50", flush=True)
    result["surgery"] = surgery_seconds(1 if quick else 3)
    if not skip_memory:
        print("[memory] peak RSS per variant", flush=True)
        result["memory"] = {
            f"{arch} batch {batch}": peak_memory_ratios(arch, batch, quick)
            for arch, batch in configs[:2]
        }
    return result


def to_markdown(result):
    variants = list(VARIANTS)
    lines = [
        "| training step (ratio to plain Keras) | "
        + " | ".join(variants[1:]) + " |",
        "|---" * len(variants) + "|",
    ]
    for key, row in result["training"].items():
        plain_ms = row["plain"]["seconds"] * 1e3
        lines.append(
            f"| {key} (plain {plain_ms:.1f} ms) | "
            + " | ".join(f"{row[v]['ratio']:.2f}" for v in variants[1:])
            + " |"
        )
    opt = result["optimizer"]["modified-adam"]["ratio"]
    lines += ["", f"ModifiedAdam / Adam step (dense-heavy WC, batch 32): "
              f"{opt:.2f}", ""]
    lines += ["| inference | folded WC / plain |", "|---|---|"]
    for key, row in result["inference"].items():
        lines.append(f"| {key} | {row['folded-wc']['ratio']:.2f} |")
    lines += ["", "| WN data init | initialize (s) | one forward (s) | ratio |",
              "|---|---|---|---|"]
    for key, row in result["data_init"].items():
        lines.append(f"| {key} | {row['initialize_s']:.3f} | "
                     f"{row['forward_s']:.3f} | {row['ratio']:.2f} |")
    surgery = result["surgery"]
    lines += ["", f"ResNet-50: `convert` {surgery['convert_s']:.2f} s, "
              f"`fold` {surgery['fold_s']:.2f} s"]
    if "memory" in result:
        lines += ["", "| peak memory (ratio to plain) | "
                  + " | ".join(variants[1:]) + " |",
                  "|---" * len(variants) + "|"]
        for key, row in result["memory"].items():
            plain_mb = row["plain"]["bytes"] / 2**20
            lines.append(f"| {key} (plain {plain_mb:.0f} MiB) | " + " | ".join(
                f"{row[v]['ratio']:.2f}" for v in variants[1:]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and 2 rounds: a smoke run")
    parser.add_argument("--rounds", type=int, help="interleaved rounds")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--out", default=RESULTS,
                        help=f"output folder (default: {RESULTS})")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        arch, variant, batch = args.memory_child
        _memory_child(arch, variant, int(batch), args.quick)
        return 0
    result = run(args.quick, args.rounds, skip_memory=args.skip_memory)
    os.makedirs(args.out, exist_ok=True)
    name = "speed-quick" if args.quick else "speed"
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    table = to_markdown(result)
    with open(os.path.join(args.out, f"{name}.md"), "w") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

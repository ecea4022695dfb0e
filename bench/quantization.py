"""Does WC make a network easier to quantize? A study on real offline data.

WC bounds every weight by `a·π/2` and compresses the large ones
(`w = a·arctan(v/b)`), so a trained WC network's weights may sit in a
narrower range than the baseline's, which is what per-channel int8/int4
quantization divides into levels. Measured: the test accuracy of the
baseline, WC (fixed a, b), WN and PP networks, in float32 and after
`model.quantize("int8")` and `"int4"` of the folded model, and the drop,
mean ± std over seeds.

The network is the `mlp` of `models/` (784-256-10 on Fashion-MNIST,
64-256-10 on digits): Keras quantizes `Dense` layers, not convolutions, so
every kernel of it is quantized. Trained with SGD + momentum, weight decay
5e-4, best-on-validation weights: Fashion-MNIST with 10,000 training
images (full 10,000-image test set), scikit-learn's digits (599 test).

    python -m bench.quantization            # 3 seeds, both datasets
    python -m bench.quantization --seeds 2 --datasets digits --epochs 3

Writes `bench/results/quantization.{json,md}`; the runs go to
`runs/quantization/` (resumable).
"""

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_wc  # noqa: E402
from bench import machine, output  # noqa: E402
from bench import study as regularization  # noqa: E402
from train import assembly  # noqa: E402
from train import run as train_run  # noqa: E402
from train.config import Config  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
DATASETS = {
    "fashion_mnist": {
        "dataset": "fashion_mnist",
        "limit_train": 10000,
        "epochs": 15,
        "milestones": [11],
    },
    "digits": regularization.DATASETS["digits"],
}
# The regularization study's SGD recipe (bench/study.py), on the mlp.
COMMON = {**regularization.COMMON, "model": "mlp"}
VARIANTS = {
    "baseline": {"method": "none"},
    "wc": {"method": "wc", "a": 0.8, "b": 0.75},
    "wn": {"method": "wn"},
    "pp": {"method": "pp", "alpha": 2.0},
}
MODES = ("float32", "int8", "int4")


def _config(out, seeds, settings):
    return Config(
        **{**COMMON, **settings, "seeds": seeds, "out": out}
    ).resolve()


def _accuracies(config, seed, directory):
    """Test accuracy of one trained seed: float32 (folded), int8, int4."""
    bundle = assembly.load_data(config, seed)
    keras.utils.set_random_seed(seed)
    model = assembly.build_model(config, bundle)
    model.load_weights(os.path.join(directory, "best.weights.h5"))
    batches = [(np.asarray(a), np.asarray(b)) for a, b in bundle.test]
    x = np.concatenate([a for a, _ in batches])
    y = np.concatenate([b for _, b in batches])
    result = {}
    for mode in MODES:
        folded = keras_wc.fold(model)
        if mode != "float32":
            folded.quantize(mode)
        logits = folded.predict(x, verbose=0, batch_size=512)
        result[mode] = 100 * float(np.mean(np.argmax(logits, -1) == y))
    return result


def _summary(values):
    return {
        "values": values,
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def study(datasets, seeds, epochs=None, root="runs/quantization"):
    report = {
        "machine": machine.describe(),
        "backend": keras.backend.backend(),
        "settings": {**COMMON, "seeds": seeds},
        "datasets": {},
    }
    for name in datasets:
        data = dict(DATASETS[name])
        if epochs:
            data["epochs"] = epochs
            data["milestones"] = [max(1, int(epochs * 0.75))]
        rows = {}
        for variant, changes in VARIANTS.items():
            out = os.path.join(root, name, variant)
            config = _config(out, seeds, {**data, **changes})
            train_run.run(config, log=lambda message: None)
            per_seed = [
                _accuracies(config, seed, os.path.join(out, f"seed-{seed}"))
                for seed in range(seeds)
            ]
            rows[variant] = {
                mode: _summary([s[mode] for s in per_seed]) for mode in MODES
            }
            for mode in MODES[1:]:
                rows[variant][f"{mode} drop"] = _summary(
                    [s["float32"] - s[mode] for s in per_seed]
                )
            print(
                f"[{name}] {variant}: "
                + ", ".join(
                    f"{m} {rows[variant][m]['mean']:.2f}" for m in MODES
                ),
                flush=True,
            )
        report["datasets"][name] = {"data": data, "variants": rows}
    return report


def _cell(summary):
    return f"{summary['mean']:.2f} ± {summary['std']:.2f}"


def to_markdown(report):
    settings = report["settings"]
    lines = [
        "# Quantizing the folded network: baseline vs WC, WN, PP",
        "",
        f"Machine: {machine.line(report['machine'])}; backend "
        f"{report['backend']}. The `mlp` network, SGD + momentum, weight "
        f"decay {settings['weight_decay']}, {settings['seeds']} seeds; "
        "test accuracy (%) of the folded model in float32 and after "
        '`quantize("int8")` / `quantize("int4")` (per-channel), and the '
        "drop (float32 − quantized, points), mean ± std over seeds.",
        "",
    ]
    for name, block in report["datasets"].items():
        data = block["data"]
        limit = data["limit_train"] or "all"
        lines += [
            f"## {name} ({limit} training images, {data['epochs']} epochs)",
            "",
            "| variant | float32 | int8 | int4 | int8 drop | int4 drop |",
            "|---|---|---|---|---|---|",
        ]
        for variant, row in block["variants"].items():
            lines.append(
                f"| {variant} | {_cell(row['float32'])} | "
                f"{_cell(row['int8'])} | {_cell(row['int4'])} | "
                f"{_cell(row['int8 drop'])} | {_cell(row['int4 drop'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS)
    )
    parser.add_argument(
        "--epochs", type=int, help="override the epochs (smoke runs)"
    )
    parser.add_argument("--root", default="runs/quantization")
    parser.add_argument(
        "--out", default=RESULTS, help=f"output folder (default: {RESULTS})"
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be a positive integer, got {args.seeds}")
    report = study(args.datasets, args.seeds, args.epochs, args.root)
    output.write(args.out, "quantization", report, to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

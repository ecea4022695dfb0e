"""A regularization study on real offline data, in the small-data regime.

Fashion-MNIST with 2,000 training images (evaluated on the full 10,000-image
test set) and scikit-learn's digits (1,078 training images, 599 test), the
small CNN of `models/`, SGD with momentum and PyTorch-style weight decay
5e-4, best-on-validation weights evaluated on test. Compared: the baseline,
WC with fixed (a, b) picked on seed 0 by a grid search on *validation*
accuracy (as the paper, §IV-A.1, but on validation, not test), learnable WC
("fine", init a=0.6, b=1.0: the paper's best init, Table VI, was
a=0.5, b=1.0, which cannot represent the first conv's initial weights
here), WN (on the BN network, as the WC paper's "+WN" rows), WN +
mean-only BN, and powerpropagation (α = 2), each over the same seeds.

    python -m bench.study       # both datasets, 5 seeds (≈1 h on 2 cores)
    python -m bench.study --seeds 2 --epochs 3 --datasets digits  # smoke

Writes `bench/results/study.json`, `study.md` and the weight-distribution
plots of the first convolution (baseline vs WC, seed 0), and prints the
table. The runs themselves go to `runs/study/` (resumable: re-running the
command skips finished runs).
"""

import argparse
import os
import shutil
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import output  # noqa: E402
from train import run as train_run  # noqa: E402
from train.config import Config  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
# a = 0.5 cannot represent the He-uniform init of a 3×3 conv on 1 channel
# (|w| up to √(6/9) = 0.82 > 0.5·π/2 = 0.79): the grid starts at a = 0.6.
GRID_A = (0.6, 0.8, 1.0)
GRID_B = (0.5, 0.75, 1.0)

DATASETS = {
    "fashion_mnist": {
        "dataset": "fashion_mnist",
        "limit_train": 2000,
        "epochs": 20,
        "milestones": [15],
    },
    "digits": {
        "dataset": "digits",
        "limit_train": None,
        "epochs": 30,
        "milestones": [22],
    },
}
COMMON = {
    "model": "small_cnn",
    "val_split": 0.1,
    "batch_size": 128,
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "schedule": "step",
    "gamma": 0.1,
    "weight_decay": 5e-4,
    "verbose": "0",
}
# name -> config changes; "wc" gets the (a, b) of the grid search.
VARIANTS = {
    "baseline": {"method": "none"},
    "wc": {"method": "wc"},
    "wc-fine": {"method": "wc", "learnable": "fine", "a": 0.6, "b": 1.0},
    "wn": {"method": "wn"},
    "wn+mobn": {"method": "wn+mobn"},
    "pp": {"method": "pp", "alpha": 2.0},
}


def _run(out, seeds, **settings):
    config = Config(**{**COMMON, **settings, "seeds": seeds, "out": out})
    return train_run.run(config.resolve(), log=lambda message: None)


def grid_search(root, data):
    """(a, b) with the best validation accuracy on seed 0, and the grid."""
    grid = {}
    for a in GRID_A:
        for b in GRID_B:
            result = _run(
                os.path.join(root, f"grid-a{a}-b{b}"), 1, **data,
                method="wc", a=a, b=b,
            )
            grid[f"a={a}, b={b}"] = result["seeds"][0]["best_val_acc"]
            print(f"  grid a={a} b={b}: val {100 * grid[f'a={a}, b={b}']:.2f}%",
                  flush=True)
    best = max(grid, key=grid.get)
    a, b = (float(p.split("=")[1]) for p in best.split(", "))
    return (a, b), grid


def study(datasets, seeds, epochs=None, root="runs/study"):
    report = {"settings": {**COMMON, "seeds": seeds}, "datasets": {}}
    for name in datasets:
        data = dict(DATASETS[name])
        if epochs:
            data["epochs"] = epochs
            data["milestones"] = [max(1, int(epochs * 0.75))]
        start = time.time()
        print(f"[{name}] grid search for WC on seed 0", flush=True)
        (a, b), grid = grid_search(os.path.join(root, name), data)
        rows = {}
        for variant, changes in VARIANTS.items():
            settings = {**data, **changes}
            if variant == "wc":
                settings.update(a=a, b=b)
            result = _run(os.path.join(root, name, variant), seeds, **settings)
            accs = [100 * s["test_acc"] for s in result["seeds"]]
            rows[variant] = {
                "test_acc": accs,
                "mean": statistics.mean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "dir": result["output_dir"],
            }
            print(f"  {variant}: {rows[variant]['mean']:.2f} ± "
                  f"{rows[variant]['std']:.2f}", flush=True)
        report["datasets"][name] = {
            "data": data,
            "wc_grid_val_acc": grid,
            "wc_ab": [a, b],
            "variants": rows,
            "wall_time_s": time.time() - start,
        }
    return report


def to_markdown(report):
    lines = []
    for name, block in report["datasets"].items():
        data = block["data"]
        a, b = block["wc_ab"]
        limit = data["limit_train"] or "all"
        lines += [
            f"**{name}** (train: {limit} images, {data['epochs']} epochs; "
            f"WC grid on seed 0 by validation accuracy → a={a}, b={b}; "
            f"{block['wall_time_s'] / 60:.0f} min)",
            "",
            "| variant | test accuracy (mean ± std) | seeds |",
            "|---|---|---|",
        ]
        base = block["variants"]["baseline"]["mean"]
        for variant, row in block["variants"].items():
            delta = "" if variant == "baseline" else (
                f" ({row['mean'] - base:+.2f})")
            lines.append(
                f"| {variant} | {row['mean']:.2f}% ± {row['std']:.2f}%"
                f"{delta} | {len(row['test_acc'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def _copy_plots(report, out):
    """The first conv's weight distribution, baseline vs WC, seed 0."""
    for name, block in report["datasets"].items():
        for variant in ("baseline", "wc"):
            source = os.path.join(block["variants"][variant]["dir"], "seed-0",
                                  "weights.png")
            if os.path.exists(source):
                shutil.copy(source, os.path.join(
                    out, f"study-{name}-{variant}-weights.png"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS),
                        choices=list(DATASETS))
    parser.add_argument("--seeds", type=int, default=5,
                        help="seeds per variant (default: 5)")
    parser.add_argument("--epochs", type=int,
                        help="override the epochs (smoke runs)")
    parser.add_argument("--root", default="runs/study",
                        help="where the runs go (default: runs/study)")
    parser.add_argument("--out", default=RESULTS,
                        help=f"where the tables go (default: {RESULTS})")
    args = parser.parse_args(argv)
    report = study(args.datasets, args.seeds, args.epochs, args.root)
    output.write(args.out, "study", report, to_markdown(report))
    _copy_plots(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

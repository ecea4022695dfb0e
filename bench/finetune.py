"""Fine-tuning a trained model with WC, on real offline data.

The recipe of "Fine-tuning a trained model" (docs/guides/fine-tuning.md),
run through `python -m train`'s code over several seeds:

1. baseline: the small CNN (BN) of `models/` trained with SGD + momentum
   and PyTorch-style weight decay, best-on-validation weights kept;
2. from each seed's baseline (`--init-from .../seed-{seed}/...`), the same
   number of fine-tuning epochs with AdamW for each variant:
   * the baseline itself with plain AdamW;
   * converted to WC with `a="auto", b="auto"` (each layer's largest |w|
     at half the bound, Ψ'(0) = 1), modified AdamW (moments from ∂L/∂Ψ(v),
     step × Ψ'(v), decay of Ψ(v)), folded and exported (`--export`);
   * the same WC model with plain AdamW (moments from ∂L/∂v, decay of v),
     to show what the modified optimizer changes.

Every variant starts from the same weights per seed; the test accuracy
before (the baseline's, kept exactly by `convert`) and after fine-tuning is
reported, with the paired change, as mean ± sample std over the seeds.

    python -m bench.finetune          # Fashion-MNIST, 3 seeds (~15 min)
    python -m bench.finetune --quick  # digits, a smoke run (~1 min)

Writes `bench/results/finetune.json` and `finetune.md` (naming the CPU) and
prints the table; the runs go to `runs/finetune/` (resumable: re-running
the command skips finished seeds).
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import machine, output  # noqa: E402
from train import presets  # noqa: E402
from train import run as train_run  # noqa: E402
from train.config import Config  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")

# The demo's baseline recipe (`python -m train`), on more images.
BASELINE = {
    **{k: v for k, v in presets.DEMO.items() if k != "seeds"},
    "limit_train": 10000,
    "method": "none",
}
# lr: the better of 1e-4 and 3e-4 on seed 0's validation accuracy, for the
# baseline and WC alike (a pilot run, not part of the results).
FINETUNE = {
    "schedule": "constant",
    "milestones": [],
    "lr": 3e-4,
    "weight_decay": 0.05,
    "epochs": 5,
}
# name → (label, config changes). Every variant fine-tunes the baseline.
VARIANTS = {
    "baseline-adamw": (
        "baseline → AdamW",
        {"method": "none", "optimizer": "adamw"},
    ),
    "wc-modified-adamw": (
        "WC (a, b auto) → modified AdamW",
        {"method": "wc", "a": "auto", "b": "auto",
         "optimizer": "modified-adamw", "export": True},
    ),
    "wc-adamw": (
        "WC (a, b auto) → plain AdamW",
        {"method": "wc", "a": "auto", "b": "auto", "optimizer": "adamw"},
    ),
}
QUICK = {
    "baseline": {"dataset": "digits", "limit_train": None, "epochs": 4,
                 "milestones": [3]},
    "finetune": {"epochs": 2},
}


def _run(out, seeds, **settings):
    config = Config(**{**settings, "seeds": seeds, "out": out, "verbose": "0"})
    return train_run.run(config.resolve(), log=lambda message: None)


def _stats(values):
    values = [100 * v for v in values]
    return {
        "values": values,
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def scales_of(baseline_dir, settings):
    """The (a, b) `a="auto", b="auto"` gives each layer of the seed-0
    baseline (`keras_wc.convert`'s report)."""
    import keras_wc
    from keras_wc import tree
    from train import assembly

    config = Config(**{**settings, "seeds": 1}).resolve()
    bundle = assembly.load_data(config, 0)
    model = assembly.build_model(
        config, bundle,
        init_file=os.path.join(baseline_dir, "seed-0", "best.weights.h5"),
    )
    return {
        node.layer.name: [
            round(float(node.layer.a), 4),
            round(float(node.layer.b), 4),
        ]
        for node in tree.walk(model)
        if isinstance(node.layer, keras_wc.WCDense | keras_wc.WCConv2D)
    }


def study(seeds, root="runs/finetune", quick=False):
    base = {**BASELINE, **(QUICK["baseline"] if quick else {})}
    tune = {**FINETUNE, **(QUICK["finetune"] if quick else {})}
    start = time.time()
    print(f"baseline: {base['epochs']} epochs, {seeds} seeds", flush=True)
    base_dir = os.path.join(root, "baseline")
    baseline = _run(base_dir, seeds, **base)
    init_from = os.path.join(base_dir, "seed-{seed}", "best.weights.h5")
    rows = {"baseline": {
        "label": f"baseline (SGD, {base['epochs']} epochs)",
        "after": _stats([s["test_acc"] for s in baseline["seeds"]]),
        "wall_time_s": baseline["wall_time_s"],
    }}
    print(f"  baseline: {rows['baseline']['after']['mean']:.2f}", flush=True)
    for name, (label, changes) in VARIANTS.items():
        settings = {**base, **tune, **changes, "init_from": init_from}
        result = _run(os.path.join(root, name), seeds, **settings)
        records = result["seeds"]
        row = {
            "label": label,
            "before": _stats([r["initial_test_acc"] for r in records]),
            "after": _stats([r["test_acc"] for r in records]),
            "change": _stats(
                [r["test_acc"] - r["initial_test_acc"] for r in records]
            ),
            "wall_time_s": result["wall_time_s"],
        }
        if changes.get("export"):
            row["exported"] = _stats([r["export_test_acc"] for r in records])
        rows[name] = row
        print(f"  {name}: {row['before']['mean']:.2f} -> "
              f"{row['after']['mean']:.2f}", flush=True)
    return {
        "machine": machine.describe(),
        "baseline": base,
        "finetune": tune,
        "seeds": seeds,
        "wc_scales_seed0": scales_of(
            base_dir, {**base, **tune, **VARIANTS["wc-adamw"][1]}
        ),
        "rows": rows,
        "wall_time_s": round(time.time() - start, 1),
    }


def _cell(stats):
    return f"{stats['mean']:.2f}% ± {stats['std']:.2f}"


def to_markdown(report):
    base, tune = report["baseline"], report["finetune"]
    limit = base["limit_train"] or "all"
    lines = [
        f"Fine-tuning on {base['dataset']} ({limit} training images, full "
        f"test set), {report['seeds']} seeds; {machine.line(report['machine'])}"
        f"; {report['wall_time_s'] / 60:.0f} min in all.",
        "",
        f"Baseline: {base['model']}, SGD lr {base['lr']} momentum "
        f"{base['momentum']}, weight decay {base['weight_decay']} (L2), "
        f"{base['epochs']} epochs. Fine-tuning from each seed's baseline: "
        f"AdamW lr {tune['lr']} (constant), weight decay "
        f"{tune['weight_decay']} (decoupled), {tune['epochs']} epochs; "
        "best-on-validation weights tested.",
        "",
        "| variant | test accuracy before | after | change (paired) |",
        "|---|---|---|---|",
    ]
    for row in report["rows"].values():
        before = _cell(row["before"]) if "before" in row else "–"
        change = (
            f"{row['change']['mean']:+.2f} ± {row['change']['std']:.2f}"
            if "change" in row else "–"
        )
        lines.append(
            f"| {row['label']} | {before} | {_cell(row['after'])} | "
            f"{change} |"
        )
    exported = [r for r in report["rows"].values() if "exported" in r]
    for row in exported:
        lines += [
            "",
            f"{row['label']}, folded and exported: "
            f"{_cell(row['exported'])} (the trained WC model: "
            f"{_cell(row['after'])}).",
        ]
    scales = ", ".join(
        f"{name} {a:g}" for name, (a, _) in report["wc_scales_seed0"].items()
    )
    lines += ["", f"`a = b` per layer (seed 0, `a=\"auto\"`): {scales}.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3,
                        help="seeds (default: 3)")
    parser.add_argument("--quick", action="store_true",
                        help="digits and few epochs: a smoke run")
    parser.add_argument("--root", default="runs/finetune",
                        help="where the runs go (default: runs/finetune)")
    parser.add_argument("--out", default=RESULTS,
                        help=f"where the tables go (default: {RESULTS})")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be a positive integer, got {args.seeds}")
    report = study(args.seeds, args.root, args.quick)
    output.write(args.out, "finetune", report, to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m train.report OUT [OUT ...]`: runs as a table in paper format.

Each `OUT` is a run directory (holding `results.json`), a `results.json`
file, or a directory searched recursively for run directories. The table has
one row per run, "Model | Accuracy" as in the WC paper's tables (mean ± std
over the seeds, in %), beside the paper's published number for presets:

    | Model | Dataset | Accuracy | Paper | Seeds |
    |---|---|---|---|---|
    | ResNet18 + WC | CIFAR-10 | 94.41% ± 0.10% | 94.44% ± 0.12% | 5 |

The standard deviation is the sample standard deviation over the seeds
(`ddof=1`; 0 for one seed).
"""

import argparse
import json
import os
import sys

from train import results as results_lib

_DATASETS = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "imagenet2012": "ImageNet",
    "tiny_imagenet": "TinyImageNet",
    "fashion_mnist": "Fashion-MNIST",
    "digits": "digits",
}
def find_results(paths):
    """The `results.json` files under `paths`, in the order given.

    Raises:
        FileNotFoundError: a path is missing or holds no results.json.
    """
    found = []
    for path in paths:
        if os.path.isfile(path):
            found.append(path)
            continue
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no such file or directory: {path}")
        direct = os.path.join(path, results_lib.FILE)
        if os.path.isfile(direct):
            found.append(direct)
            continue
        nested = sorted(
            os.path.join(root, results_lib.FILE)
            for root, _, files in os.walk(path)
            if results_lib.FILE in files and "/.workers" not in root
        )
        if not nested:
            raise FileNotFoundError(f"no results.json under {path}")
        found.extend(nested)
    return found


def load(paths):
    """The results dicts of the runs under `paths` (see `find_results`)."""
    results = []
    for path in find_results(paths):
        with open(path) as file:
            results.append(json.load(file))
    return results


def _format(mean, std):
    if mean is None:
        return "–"
    if std is None:
        return f"{mean:.2f}%"
    return f"{mean:.2f}% ± {std:.2f}%"


def row(results):
    """`(model, dataset, accuracy, paper, seeds)` cells of one run."""
    config = results["config"]
    summary = results.get("test_acc")
    accuracy = (
        _format(100 * summary["mean"], 100 * summary["std"])
        if summary
        else "–"
    )
    paper = results.get("paper")
    paper_cell = _format(paper["mean"], paper["std"]) if paper else "–"
    done = len(results.get("seeds", []))
    seeds = str(done)
    if done < config["seeds"]:
        seeds = f"{done}/{config['seeds']} (running)"
    dataset = _DATASETS.get(config["dataset"], config["dataset"])
    if config.get("limit_train"):
        dataset += f" ({config['limit_train']} train)"
    return results["label"], dataset, accuracy, paper_cell, seeds


def table(runs):
    """The Markdown table of a list of results dicts."""
    lines = [
        "| Model | Dataset | Accuracy | Paper | Seeds |",
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row(results)) + " |" for results in runs]
    return "\n".join(lines)


def main(argv=None):
    """`python -m train.report`; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m train.report",
        description=(
            "Aggregate runs of `python -m train` into a Markdown table in the "
            "WC paper's format (test accuracy, mean ± std over seeds, in %), "
            "beside the paper's published number for presets."
        ),
    )
    parser.add_argument(
        "outs",
        nargs="+",
        metavar="OUT",
        help="a run directory (with results.json), a results.json file, or "
        "a directory searched recursively",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="also write the table to FILE (Markdown)",
    )
    args = parser.parse_args(argv)
    try:
        text = table(load(args.outs))
    except (OSError, ValueError, KeyError) as error:
        print(f"python -m train.report: error: {error}", file=sys.stderr)
        return 2
    print(text)
    if args.output:
        with open(args.output, "w") as file:
            file.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

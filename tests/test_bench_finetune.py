"""bench/finetune.py: its committed results and the docs' table."""

import json
import os

import pytest

from bench import finetune

ROOT = os.path.dirname(os.path.dirname(__file__))
RESULTS = os.path.join(ROOT, "bench", "results")


def _report():
    with open(os.path.join(RESULTS, "finetune.json")) as f:
        return json.load(f)


@pytest.mark.backend_independent
def test_committed_table_matches_its_json():
    report = _report()
    with open(os.path.join(RESULTS, "finetune.md")) as f:
        assert f.read() == finetune.to_markdown(report)


@pytest.mark.backend_independent
def test_committed_study_is_complete_and_names_the_cpu():
    report = _report()
    assert report["seeds"] >= 3
    assert report["machine"]["cpu"] in finetune.to_markdown(report)
    assert report["baseline"]["dataset"] == "fashion_mnist"
    assert set(report["rows"]) == {"baseline", *finetune.VARIANTS}
    for name, row in report["rows"].items():
        assert len(row["after"]["values"]) == report["seeds"], name
    # Every fine-tuning starts from the baseline's accuracy, seed by seed
    # (convert keeps the function).
    baseline = report["rows"]["baseline"]["after"]["values"]
    for name in finetune.VARIANTS:
        before = report["rows"][name]["before"]["values"]
        assert all(abs(a - b) < 0.03 for a, b in zip(
            before, baseline, strict=True)), name
    wc = report["rows"]["wc-modified-adamw"]
    assert all(abs(a - b) < 0.03 for a, b in zip(
        wc["exported"]["values"], wc["after"]["values"], strict=True))


@pytest.mark.backend_independent
def test_the_docs_include_the_committed_table_and_quote_its_numbers():
    with open(os.path.join(ROOT, "docs", "results", "studies.md")) as f:
        studies = f.read()
    assert '--8<-- "bench/results/finetune.md"' in studies
    # The numbers the text around the table quotes.
    section = studies.split("## Fine-tuning", 1)[1].split("\n## ", 1)[0]
    section = " ".join(section.split())
    exported = _report()["rows"]["wc-modified-adamw"]["exported"]
    cell = finetune._cell(exported).replace("%", " %")
    assert cell in section, cell


@pytest.mark.slow
@pytest.mark.backends(
    "tensorflow",
    reason="the study's smoke run, on the backend its results come from; "
    "the fine-tuning recipe it drives runs on every backend "
    "(tests/train/test_finetune.py)",
)
def test_quick_study_runs(tmp_path):
    """The smoke configuration end to end (digits, 2 seeds)."""
    finetune.main(
        ["--quick", "--seeds", "2", "--root", str(tmp_path / "runs"),
         "--out", str(tmp_path / "out")]
    )
    with open(tmp_path / "out" / "finetune.json") as f:
        report = json.load(f)
    assert report["baseline"]["dataset"] == "digits"
    wc = report["rows"]["wc-modified-adamw"]
    # One digits test image is 0.17 %.
    assert all(abs(a - b) < 0.2 for a, b in zip(
        wc["exported"]["values"], wc["after"]["values"], strict=True))
    assert len(report["wc_scales_seed0"]) >= 2

"""The benchmark helpers and the committed results they produced."""

import json
import os

import keras
import numpy as np
import pytest

from bench import speed, study

RESULTS = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "bench", "results"
)


@pytest.mark.backend_independent
def test_interleaved_returns_a_median_per_function():
    calls = []
    functions = {
        "a": lambda x: calls.append("a") or x,
        "b": lambda x: calls.append("b") or x,
    }
    times = speed.interleaved(functions, (1.0,), rounds=3, calls=2)
    assert set(times) == {"a", "b"} and all(t >= 0 for t in times.values())
    # 2 warm-up calls each, then rounds interleave a, b, a, b, ...
    assert calls[4:] == ["a", "a", "b", "b"] * 3


@pytest.mark.backend_independent
def test_ratios_are_relative_to_the_base():
    ratios = speed._ratios({"plain": 2.0, "wc": 3.0})
    assert ratios["wc"]["ratio"] == pytest.approx(1.5)
    assert ratios["plain"]["ratio"] == 1.0


SPEED_RESULTS = sorted(
    name[: -len(".json")]
    for name in os.listdir(RESULTS)
    if name.startswith("speed-") and name.endswith(".json")
)


@pytest.mark.backend_independent
def test_every_backend_has_committed_speed_results():
    for backend in ("tensorflow", "jax", "torch"):
        assert f"speed-{backend}" in SPEED_RESULTS


@pytest.mark.backend_independent
@pytest.mark.parametrize("name", SPEED_RESULTS)
def test_committed_speed_table_matches_its_json(name):
    with open(os.path.join(RESULTS, f"{name}.json")) as f:
        result = json.load(f)
    assert name.split("-")[1] == result["backend"] and not result["quick"]
    assert result["machine"]["cpu"]  # every result names its CPU
    with open(os.path.join(RESULTS, f"{name}.md")) as f:
        assert f.read() == speed.to_markdown(result)


@pytest.mark.backend_independent
@pytest.mark.parametrize("tag", ["", "amd/zen4", "../x"])
def test_a_bad_tag_fails_before_anything_runs(tag, tmp_path, capsys):
    with pytest.raises(SystemExit):
        speed.main(["--quick", "--tag", tag, "--out", str(tmp_path)])
    assert "--tag" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_quick_run_writes_this_backends_rows(tmp_path):
    assert (
        speed.main(
            [
                "--quick",
                "--archs",
                "dense",
                "--skip-memory",
                "--skip-extras",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    backend = keras.backend.backend()
    with open(tmp_path / f"speed-{backend}-quick.json") as f:
        result = json.load(f)
    assert result["backend"] == backend
    assert "oneDNN" in (tmp_path / f"speed-{backend}-quick.md").read_text()
    rows = result["training"]
    assert list(rows) == [
        f"dense batch 8 jit {'on' if jit else 'off'}"
        for jit in speed.jit_modes()
    ]
    for row in rows.values():
        assert set(row) == set(speed.VARIANTS)
        assert row["plain"]["ratio"] == 1.0
        assert all(r["seconds"] > 0 for r in row.values())
    assert list(result["optimizer"]) == [
        f"jit {'on' if jit else 'off'}" for jit in speed.jit_modes()
    ]
    for row in result["optimizer"].values():
        assert set(row) == {"adam", "modified-adam"}


@pytest.mark.backend_independent
def test_committed_study_table_matches_its_json():
    with open(os.path.join(RESULTS, "study.json")) as f:
        report = json.load(f)
    assert all(
        len(row["test_acc"]) >= 5
        for block in report["datasets"].values()
        for row in block["variants"].values()
    )
    with open(os.path.join(RESULTS, "study.md")) as f:
        assert f.read() == study.to_markdown(report)


@pytest.mark.backends(
    "tensorflow", reason="the rows' layout; `make bench` times every backend"
)
def test_quick_finetuning_rows_time_every_variant_and_optimizer():
    ratios = speed.finetuning_ratios(8, False, quick=True, rounds=1)
    assert set(ratios) == {
        "plain",
        *(
            variant + suffix
            for variant in ("wc", "wc-fine", "wn")
            for suffix in ("", " modified")
        ),
    }
    assert ratios["plain"]["ratio"] == 1.0


def test_naive_layer_is_the_wc_variants_function():
    # The naive model starts from the plain model's function, as `convert`
    # does: the same outputs for the same weights.
    x, _ = speed._batch("dense", 4, quick=True)
    plain = speed.plain_model("dense", quick=True)
    naive = speed.naive_model(plain, quick=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(naive(x)),
        keras.ops.convert_to_numpy(plain(x)),
        atol=1e-5,
    )


def test_dense_heavy_model_size():
    model = speed.dense_heavy()
    assert model.count_params() == 1024 * 2048 + 2048 * 2048 + 2048 * 10 + (
        2048 + 2048 + 10
    )


@pytest.mark.backend_independent
def test_committed_scaling_table_matches_its_json():
    from bench import scaling

    with open(os.path.join(RESULTS, "scaling.json")) as f:
        result = json.load(f)
    assert result["backend"] == "jax" and not result["quick"]
    assert result["machine"]["cpu"]
    with open(os.path.join(RESULTS, "scaling.md")) as f:
        assert f.read() == scaling.to_markdown(result)


@pytest.mark.slow
@pytest.mark.backends("jax", reason="keras.distribution (JAX)")
def test_scaling_quick_run(tmp_path):
    from bench import scaling

    # The dense row: the Gemma one's layouts are tests/test_distribution.py's.
    argv = ["--quick", "--rounds", "1", "--rows", "dense"]
    argv += ["--out", str(tmp_path)]
    assert scaling.main(argv) == 0
    with open(tmp_path / "scaling-quick.json") as f:
        result = json.load(f)
    for row in result["rows"].values():
        assert set(row) == set(scaling.VARIANTS)
        # Nothing the plain model shards is replicated.
        for cell in row.values():
            assert cell["memory_ratio"] < 1.05

"""The tree is ruff-clean (rules and line length in pyproject.toml)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.backend_independent
def test_ruff_check_passes():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "keras_wc",
            "models",
            "train",
            "bench",
            "tests",
            "pip_build.py",
            "setup.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""The documentation site builds with warnings as errors, and its API
reference covers the public API.

`mkdocs build --strict` (mkdocs.yml): a broken link or anchor, a docstring
mkdocstrings cannot parse, or a missing included results file fails it.
"""

import os
import subprocess
import sys

import pytest

import keras_wc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1",
             "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    warnings = [line for line in log.splitlines()
                if line.startswith(("WARNING -", "ERROR -"))]
    assert not warnings, "\n".join(warnings)
    return site


@pytest.mark.backend_independent
def test_the_docs_build_strictly(site):
    assert (site / "index.html").exists()


@pytest.mark.backend_independent
def test_the_api_reference_documents_every_public_name(site):
    reference = (site / "api" / "keras_wc" / "index.html").read_text()
    modules = {"callbacks", "companders", "native", "optimizers"}
    for name in sorted(set(keras_wc.__all__) - modules - {"__version__"}):
        assert f'id="keras_wc.{name}"' in reference, name
    for module in modules | {"sharding"}:
        assert (site / "api" / module / "index.html").exists(), module
    optimizers = (site / "api" / "optimizers" / "index.html").read_text()
    for name in keras_wc.optimizers.__all__:
        assert f'id="keras_wc.optimizers.{name}"' in optimizers, name

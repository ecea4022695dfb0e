"""The README's and the docs' self-contained Python examples run as written.

The README's run on every backend; the docs pages' (`docs/**/*.md`, with
the Markdown files they include) run once, on TensorFlow: their outcome is
the library's, which the rest of the suite tests on every backend.
"""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
# `--8<-- "path"`: pymdownx.snippets includes the file (paths from ROOT).
_SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::[\d:]*)?"$', re.M)
# Blocks that train on the user's own data (`x_train`, `x, y`) or load a
# preset (a download) are excerpts.
EXCERPTS = ("x_train", "fit(x, y", "from_preset(")


def _text(path):
    """The Markdown of `path`, with the Markdown files it includes."""
    with open(path) as f:
        text = f.read()
    return _SNIPPET.sub(
        lambda m: _text(os.path.join(ROOT, m[1]))
        if m[1].endswith(".md") and not m[1].startswith("bench/results/")
        else "",
        text,
    )


def _runnable(path):
    """(id, block) of each runnable ```python block of `path`."""
    text = _text(path)
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    name = os.path.relpath(path, ROOT)
    return [
        (f"{name}:{text[: text.index(block)].count(chr(10)) + 1}", block)
        for block in blocks
        if not any(excerpt in block for excerpt in EXCERPTS)
    ]


README_BLOCKS = _runnable(README)
DOC_PAGES = sorted(glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True))
DOC_BLOCKS = [block for page in DOC_PAGES for block in _runnable(page)]


def _run(name, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = "import keras\nimport keras_wc\n" + block
    exec(compile(code, os.path.join(ROOT, name.split(":")[0]), "exec"), {})


@pytest.mark.backend_independent
def test_readme_and_docs_have_runnable_examples():
    assert len(README_BLOCKS) >= 2
    assert len(DOC_BLOCKS) >= 8


@pytest.mark.parametrize(
    "name,block", README_BLOCKS, ids=[name for name, _ in README_BLOCKS]
)
def test_readme_example_runs(name, block, tmp_path, monkeypatch):
    _run(name, block, tmp_path, monkeypatch)


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "name,block", DOC_BLOCKS, ids=[name for name, _ in DOC_BLOCKS]
)
def test_docs_example_runs(name, block, tmp_path, monkeypatch):
    _run(name, block, tmp_path, monkeypatch)

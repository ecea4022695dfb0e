"""The README's self-contained Python examples run as written."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")
BLOCKS = re.findall(r"```python\n(.*?)```", open(README).read(), re.S)
# Blocks that train on the user's own data (`x_train`, `x, y`) or load a
# preset (a download) are excerpts.
RUNNABLE = [
    block
    for block in BLOCKS
    if not any(
        excerpt in block for excerpt in ("x_train", "fit(x, y", "from_preset(")
    )
]


@pytest.mark.backend_independent
def test_readme_has_runnable_examples():
    assert len(RUNNABLE) >= 4


@pytest.mark.parametrize(
    "block", RUNNABLE, ids=[b.splitlines()[0][:40] for b in RUNNABLE]
)
def test_readme_example_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile("import keras\nimport keras_wc\n" + block, README, "exec"), {})

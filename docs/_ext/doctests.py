"""Griffe extension: docstring examples render as code.

keras_wc writes examples as Keras does, doctest lines under `Example:`
(`>>> layer = ...`), which Markdown would read as nested block quotes.
This fences each run of doctest lines (a `>>>` line and the lines after it
up to a blank line) as a `pycon` code block before the docstring is parsed.
"""

import re

import griffe

_FENCE = re.compile(r"^( *)>>> ")


def fence_doctests(text):
    """`text` with each doctest run inside a ```pycon fence."""
    lines, out, in_code = text.splitlines(), [], False
    for line in lines:
        if not in_code:
            match = _FENCE.match(line)
            if match:
                indent = match.group(1)
                out.append(f"{indent}```pycon")
                in_code = True
        elif not line.strip():
            out.append(f"{indent}```")
            in_code = False
        out.append(line)
    if in_code:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None and ">>> " in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)

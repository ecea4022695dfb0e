"""Where every benchmark writes its result: `<name>.json` and `<name>.md`."""

import json
import os


def write(out, name, result, table):
    """Writes `result` as `out/<name>.json` and `table` (its Markdown) as
    `out/<name>.md`, and prints the table."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(table)
    print(table)

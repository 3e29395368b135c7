"""The lowest versions pyproject.toml declares, for the CI job that tests exactly them.

``python .ci/lowest_versions.py python`` prints the lowest Python (from ``requires-python``);
``python .ci/lowest_versions.py constraints`` prints pip constraints pinning numpy, visualdl and
paddlepaddle (the ``cpu`` extra) to their declared lower bounds.
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PINNED = ("numpy", "visualdl", "paddlepaddle")


def lower_bound(spec: str) -> str:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.-]*)\s*>=\s*([0-9][0-9.]*)\s*", spec)
    if match is None:
        raise SystemExit(f"{spec!r} in pyproject.toml has no plain '>=' lower bound to test")
    return match.group(2)


def main() -> None:
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    if sys.argv[1:] == ["python"]:
        print(lower_bound(project["requires-python"]))
        return
    if sys.argv[1:] != ["constraints"]:
        raise SystemExit(__doc__)
    specs = project["dependencies"] + project["optional-dependencies"]["cpu"]
    names = {re.match(r"[A-Za-z0-9_.-]+", s).group(0).lower(): s for s in specs}
    for name in PINNED:
        print(f"{name}=={lower_bound(names[name].replace(name, '', 1))}")


if __name__ == "__main__":
    main()

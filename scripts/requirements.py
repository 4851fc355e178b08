"""Write requirements.txt (what `chalice package` bundles) from pyproject.toml's runtime dependencies.

`make requirements` runs it; tests/test_package.py fails when the two drift apart.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = (
    "# Generated from pyproject.toml [project.dependencies] by `make requirements`: do not edit.\n"
    "# Runtime dependencies only; `chalice package` bundles exactly these into the Lambda.\n"
)


def render() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return HEADER + "".join(f"{dependency}\n" for dependency in project["dependencies"])


def main() -> int:
    (ROOT / "requirements.txt").write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())

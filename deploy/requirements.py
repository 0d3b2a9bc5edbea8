"""Print the requirements of one part of the project, read from pyproject.toml (used by the Dockerfile).

    python deploy/requirements.py serve [--ort-package onnxruntime-gpu] > requirements.txt
    python deploy/requirements.py train > requirements-train.txt

``serve`` is ``[project.dependencies]``, with ``onnxruntime`` swapped for ``--ort-package`` (plus
``--ort-extras``) when that is another package (onnxruntime-gpu). constraints.txt pins onnxruntime, not
onnxruntime-gpu (whose releases lag behind), so the GPU package is pinned only by ``--ort-version``
(Dockerfile build argument ORT_VERSION); without it pip takes the newest one that fits the other pins.
``train`` is the ``[train]`` extra. Install the output with
``pip install -c constraints.txt -r ...``. Standard library only (runs before anything is installed).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _name(requirement: str) -> str:
    match = _NAME.match(requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def requirements(part: str, ort_package: str = "onnxruntime", ort_extras: str = "",
                 ort_version: str = "", root: Path = ROOT) -> list[str]:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    if part == "train":
        return list(project["optional-dependencies"]["train"])
    deps = list(project["dependencies"])
    if _name(ort_package) == "onnxruntime":
        return deps
    swapped = f"{ort_package}{ort_extras}" + (f"=={ort_version}" if ort_version else "")
    return [swapped if _name(dep) == "onnxruntime" else dep for dep in deps]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["serve", "train"])
    parser.add_argument("--ort-package", default="onnxruntime")
    parser.add_argument("--ort-extras", default="", help="e.g. [cuda,cudnn] (only with onnxruntime-gpu)")
    parser.add_argument("--ort-version", default="", help="pin for --ort-package (default: unpinned)")
    args = parser.parse_args(argv)
    sys.stdout.write("\n".join(requirements(args.part, args.ort_package, args.ort_extras, args.ort_version))
                     + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

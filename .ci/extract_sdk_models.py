"""Extract the field tables of an OpenAPI-generated SDK's models from its wheel, without installing it.

    python -m pip download --no-deps kserve==0.21.0 -d /tmp/wheels
    python .ci/extract_sdk_models.py /tmp/wheels/kserve-0.21.0-py3-none-any.whl V1beta1InferenceService \\
        > tests/schemas/kserve-0.21.0-models.json

Why: the ``kserve`` package cannot join our test environment (every release conflicts with a pin:
0.21.0 wants python-dateutil<3 and protobuf<7, 0.15.2 prometheus-client<0.21, 0.13.1 numpy<2), and
it brings a model server (FastAPI, uvicorn, pandas, grpcio-tools) we do not need. Its model classes are
plain generated code, so their ``openapi_types`` and ``attribute_map`` literals (and the fields a setter
refuses to leave empty) are read with ``ast`` and written as JSON, for every model reachable from the
root type that the wheel itself defines. Types it does not define (``V1Container`` ...) are Kubernetes'
own and are checked with the Kubernetes client's classes. tests/openapi_models.py reads the JSON.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile

_REQUIRED = re.compile(r"Invalid value for `(\w+)`, must not be `None`")
_NAMES = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def model_tables(wheel: str) -> dict[str, dict]:
    """Every class in the wheel that has ``openapi_types`` and ``attribute_map`` literals."""
    tables = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if "/models/" not in name or not name.endswith(".py"):
                continue
            source = archive.read(name).decode()
            for node in ast.walk(ast.parse(source)):
                if not isinstance(node, ast.ClassDef):
                    continue
                literals = {}
                for item in node.body:
                    if (isinstance(item, ast.Assign) and len(item.targets) == 1
                            and isinstance(item.targets[0], ast.Name)
                            and item.targets[0].id in ("openapi_types", "attribute_map")):
                        literals[item.targets[0].id] = ast.literal_eval(item.value)
                if len(literals) == 2:
                    segment = ast.get_source_segment(source, node) or ""
                    literals["required"] = sorted(set(_REQUIRED.findall(segment)))
                    tables[node.name] = literals
    return tables


def reachable(tables: dict[str, dict], root: str) -> dict[str, dict]:
    """The tables of ``root`` and of every model of the wheel its fields lead to."""
    found, todo = {}, [root]
    while todo:
        name = todo.pop()
        if name in found or name not in tables:
            continue
        found[name] = tables[name]
        for type_name in tables[name]["openapi_types"].values():
            todo += [word for word in _NAMES.findall(type_name) if word in tables]
    return dict(sorted(found.items()))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    wheel, root = argv
    tables = reachable(model_tables(wheel), root)
    if root not in tables:
        print(f"{root} is not a model of {wheel}", file=sys.stderr)
        return 1
    json.dump({"source": wheel.rsplit("/", 1)[-1], "root": root, "models": tables}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

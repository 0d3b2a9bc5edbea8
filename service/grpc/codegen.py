"""Regenerate the committed Python modules from ``grpc_predict_v2.proto``: ``make grpc-code``.

Why committed rather than compiled at build time: the image then needs neither grpcio-tools (a 2.8 MB
wheel plus setuptools) nor a build step, a reviewer sees the generated code change with the proto, and
``tests/test_grpc_code.py`` regenerates into a temporary folder and fails when the two differ. Only the
dev extra installs grpcio-tools.

The proto is compiled from the repository root as ``service/grpc/grpc_predict_v2.proto``, so the
generated stubs import ``service.grpc.grpc_predict_v2_pb2`` (a package import) instead of a top-level
module.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PROTO = "service/grpc/grpc_predict_v2.proto"
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Compile the proto into ``out_dir`` (mirroring service/grpc/ there); the generated files' paths."""
    import importlib.util

    spec = importlib.util.find_spec("grpc_tools")  # dev extra only
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("grpc_tools is not installed (the dev extra has it)")
    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(spec.submodule_search_locations[0]) / "_proto"
    # protoc runs in its own process: in a process that has already loaded protobuf messages and started
    # threads (a test run), grpc_tools' in-process compiler can crash the interpreter.
    args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", str(ROOT / PROTO)]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed on {PROTO}: {result.stderr.strip()}")
    return [out_dir / "service" / "grpc" / name for name in GENERATED]


def main() -> None:
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copyfile(path, ROOT / "service" / "grpc" / path.name)
            print(f"wrote service/grpc/{path.name}", file=sys.stderr)


if __name__ == "__main__":
    main()

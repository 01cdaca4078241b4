"""Regenerate the committed protobuf and gRPC modules from the .proto files.

`make proto` runs this; the test suite runs `generate()` into a scratch folder and
compares, so the committed code can never drift from the .proto files.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent / "components" / "v1"
# The import root: protos import each other as "secretbridge/proto/...".
SOURCE_ROOT = PROTO_DIR.parents[3]


def proto_files() -> list[Path]:
    """The .proto files, in a stable order."""
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Compile every .proto into `out_root` (laid out like the source tree)."""
    from grpc_tools import protoc  # a build-time tool, not a runtime dependency

    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "protoc",
        f"-I{SOURCE_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(p.relative_to(SOURCE_ROOT)) for p in proto_files()),
    ]
    # protoc resolves relative paths against the working directory.
    import os

    cwd = os.getcwd()
    os.chdir(SOURCE_ROOT)
    try:
        code = protoc.main(args)
    finally:
        os.chdir(cwd)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")
    out_dir = out_root / PROTO_DIR.relative_to(SOURCE_ROOT)
    return sorted(p for p in out_dir.iterdir() if p.name.endswith((".py", ".pyi")) and "_pb2" in p.name)


def main() -> int:
    written = generate(SOURCE_ROOT)
    for path in written:
        print(f"wrote {path.relative_to(SOURCE_ROOT.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

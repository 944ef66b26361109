"""Regenerate (or check) the committed Python code for proto/xinrong/v1/*.proto.

The generated modules are committed so a clone runs without grpcio-tools;
``--check`` regenerates into a scratch directory and fails if anything differs,
which is what the drift test and ``make check-proto`` run.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("xinrong") / "v1"


def proto_sources() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Run protoc from grpcio-tools into out_dir; return the generated paths (relative)."""
    from grpc_tools import protoc

    well_known = str(resources.files("grpc_tools") / "_proto")
    sources = [str(p.relative_to(PROTO_ROOT)) for p in proto_sources()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p.relative_to(out_dir) for p in (out_dir / PACKAGE_DIR).glob("*_pb2*.py*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code drifted")
    args = parser.parse_args(argv)
    if not args.check:
        generated = generate(ROOT)
        init = ROOT / PACKAGE_DIR / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated protobuf and gRPC code for package xinrong.v1 (do not edit)."""\n')
        print(f"generated {len(generated)} files under {PACKAGE_DIR}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        committed = sorted(p.relative_to(ROOT) for p in (ROOT / PACKAGE_DIR).glob("*_pb2*.py*"))
        problems = []
        if set(generated) != set(committed):
            problems.append(f"file sets differ: generated {generated}, committed {committed}")
        for rel in generated:
            if (ROOT / rel).exists() and not filecmp.cmp(Path(tmp) / rel, ROOT / rel, shallow=False):
                problems.append(f"{rel} differs from what proto/ generates")
        if problems:
            print("\n".join(problems), file=sys.stderr)
            print("run `make proto` and commit the result", file=sys.stderr)
            return 1
    print("generated code matches proto/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

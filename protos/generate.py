"""Regenerate dispatcher/v1/ from protos/dispatcher/v1/*.proto.

    python protos/generate.py          # rewrite dispatcher/v1/
    python protos/generate.py --check  # exit 1 if the committed code differs (CI)

Uses the pinned grpcio-tools and mypy-protobuf from the `dev` extra, so the output is the same
on every machine. The generated files are committed and never edited by hand.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = Path("dispatcher") / "v1"
HEADER = "Generated from protos/dispatcher/v1 by protos/generate.py. Do not edit.\n"


def plugin_flags() -> list[str]:
    """Point protoc at mypy-protobuf's plugins beside this interpreter (venv not on PATH)."""
    flags = []
    for name in ("protoc-gen-mypy", "protoc-gen-mypy_grpc"):
        path = shutil.which(name) or str(Path(sys.executable).parent / name)
        flags.append(f"--plugin={name}={path}")
    return flags


def generate_into(out_root: Path) -> Path:
    """Run protoc for every .proto and return the generated package directory."""
    well_known = str(resources.files("grpc_tools") / "_proto")
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto")
    )
    args = [
        "protoc",
        *plugin_flags(),
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package = out_root / PACKAGE_DIR
    (package / "__init__.py").write_text(f'"""{HEADER.strip()}"""\n')
    (package / "py.typed").write_text("")
    return package


def differences(expected: Path, actual: Path) -> list[str]:
    cmp = filecmp.dircmp(expected, actual, ignore=["__pycache__"])
    return [*cmp.left_only, *cmp.right_only, *cmp.diff_files]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if dispatcher/v1 is stale")
    opts = parser.parse_args()
    target = ROOT / PACKAGE_DIR
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate_into(Path(tmp))
        if opts.check:
            stale = differences(fresh, target) if target.exists() else ["dispatcher/v1 (missing)"]
            if stale:
                names = ", ".join(sorted(stale))
                print(f"generated code is stale: {names}; run python protos/generate.py")
                return 1
            print("generated code is up to date")
            return 0
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(fresh, target)
    print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

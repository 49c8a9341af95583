"""Regenerate the Python modules of the wire schema in proto/ from proto/*.proto.

    python scripts/gen_proto.py           # rewrite proto/*_pb2.py, *_pb2.pyi, *_pb2_grpc.py
    python scripts/gen_proto.py --check   # exit 1 if the committed modules are not fresh

The .proto files import each other as "durakv/proto/x.proto" (the path they have inside
the installed package), so they are compiled from a staging tree shaped like that: protoc
then registers them under package-qualified names (no clash with another library's
"kv.proto" in the process-wide descriptor pool) and emits `from durakv.proto import x_pb2`,
never a bare `import x_pb2`. The script checks that no bare import is left.

Output is a function of the .proto files and the grpcio-tools version only, so the
version installed must be the one pyproject.toml pins in the `test` extra; the script
refuses to run with another. A `_pb2_grpc.py` module is kept only for files that define a
service.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE = "durakv.proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
_BARE_IMPORT = re.compile(r"^(?:import|from)\s+(\w+_pb2(?:_grpc)?)\b", re.MULTILINE)


def pinned_tools_version() -> str | None:
    """The grpcio-tools version pinned (==) in pyproject's `test` extra, or None."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    for requirement in project.get("optional-dependencies", {}).get("test", []):
        match = re.fullmatch(r"\s*grpcio-tools\s*==\s*([\w.]+)\s*", requirement)
        if match:
            return match.group(1)
    return None


def check_tools_version() -> str:
    installed = metadata.version("grpcio-tools")
    pinned = pinned_tools_version()
    if pinned is None:
        raise SystemExit("pyproject.toml does not pin grpcio-tools (==) in the test extra")
    if installed != pinned:
        raise SystemExit(
            f"grpcio-tools {installed} is installed but pyproject.toml pins {pinned}; "
            f"install it with: python -m pip install 'grpcio-tools=={pinned}'"
        )
    return installed


def proto_files() -> list[Path]:
    files = sorted(PROTO_DIR.glob("*.proto"))
    if not files:
        raise SystemExit(f"no .proto files in {PROTO_DIR}")
    return files


def generate(out_dir: Path) -> dict[str, str]:
    """Compile every proto/*.proto; returns {generated file name: text}."""
    import grpc_tools  # imported here so --help works without it

    package_path = Path(*PACKAGE.split("."))
    with tempfile.TemporaryDirectory(prefix="durakv-proto-") as tmp:
        src = Path(tmp) / "src"
        (src / package_path).mkdir(parents=True)
        names = []
        for proto in proto_files():
            shutil.copyfile(proto, src / package_path / proto.name)
            names.append((package_path / proto.name).as_posix())
        well_known = Path(grpc_tools.__file__).parent / "_proto"
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={src}",
            f"--proto_path={well_known}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *names,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"protoc failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    files: dict[str, str] = {}
    for path in sorted((out_dir / package_path).iterdir()):
        if not path.name.endswith(GENERATED_SUFFIXES):
            raise SystemExit(f"protoc wrote an unexpected file {path.name}")
        text = path.read_text(encoding="utf-8")
        if path.name.endswith("_pb2_grpc.py") and "def add_" not in text:
            continue  # the file defines no service: the module would hold only a version check
        bare = _BARE_IMPORT.findall(text)
        if bare:
            raise SystemExit(f"{path.name}: bare import of {bare} (expected `from {PACKAGE} import ...`)")
        files[path.name] = text
    return files


def committed() -> dict[str, str]:
    return {
        path.name: path.read_text(encoding="utf-8")
        for path in sorted(PROTO_DIR.iterdir())
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    }


def diff(fresh: dict[str, str], current: dict[str, str]) -> list[str]:
    """Human-readable differences between fresh and committed modules (empty if none)."""
    problems = []
    for name in sorted(set(fresh) | set(current)):
        if name not in current:
            problems.append(f"missing: proto/{name}")
        elif name not in fresh:
            problems.append(f"stale (no .proto generates it): proto/{name}")
        elif fresh[name] != current[name]:
            lines = difflib.unified_diff(
                current[name].splitlines(), fresh[name].splitlines(), f"proto/{name}", "fresh", lineterm="", n=1
            )
            shown = [line if len(line) <= 160 else line[:160] + " ..." for line in list(lines)[:40]]
            problems.append(f"differs: proto/{name}\n" + "\n".join(shown))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 if stale")
    args = parser.parse_args(argv)
    version = check_tools_version()
    with tempfile.TemporaryDirectory(prefix="durakv-proto-out-") as out:
        fresh = generate(Path(out))
    current = committed()
    problems = diff(fresh, current)
    if args.check:
        if problems:
            print("\n".join(problems))
            print("the generated modules are stale: run `python scripts/gen_proto.py` and commit the result")
            return 1
        print(f"{len(fresh)} generated modules are fresh (grpcio-tools {version})")
        return 0
    for name in current.keys() - fresh.keys():
        (PROTO_DIR / name).unlink()
    for name, text in fresh.items():
        if current.get(name) != text:
            (PROTO_DIR / name).write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {len(fresh)} modules to proto/ (grpcio-tools {version}); {len(problems)} changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

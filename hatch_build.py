"""Build hook: generate the protobuf/gRPC modules from protos/.

The modules land in ``src/sessions/generated/`` with their imports rewritten
under ``sessions.generated``, so that they never clash with the public client
SDK's top-level ``yandex`` package. Nothing generated is committed or edited.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PROTOS = ROOT / "protos"
PACKAGE = "sessions.generated"
OUTPUT = ROOT / "src" / "sessions" / "generated"

# Top-level proto packages that are ours to generate (google.* comes from
# protobuf and googleapis-common-protos).
OWN_ROOTS = ("yandex", "sessions")
_IMPORT = re.compile(rf"^(from|import) ({'|'.join(OWN_ROOTS)})(\.| )", re.MULTILINE)


def proto_files(protos: Path = PROTOS) -> list[Path]:
    return sorted(p for p in protos.rglob("*.proto"))


def generate(output: Path = OUTPUT, protos: Path = PROTOS) -> list[Path]:
    """Run grpcio-tools' protoc on every .proto file; return the files written."""
    import grpc_tools
    from grpc_tools import protoc

    output.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{protos}",
        f"-I{well_known}",
        *_googleapis_includes(),
        f"--python_out={output}",
        f"--pyi_out={output}",
        f"--grpc_python_out={output}",
        *(str(p.relative_to(protos)) for p in proto_files(protos)),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")

    written = []
    for path in sorted(output.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        if path.name != "__init__.py":
            text = path.read_text()
            path.write_text(_IMPORT.sub(rf"\1 {PACKAGE}.\2\3", text))
        written.append(path)
    for folder in [output, *(p for p in output.rglob("*") if p.is_dir())]:
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text("")
            written.append(init)
    return written


def _googleapis_includes() -> list[str]:
    # google/rpc/status.proto ships with googleapis-common-protos.
    try:
        import google.rpc

        return [f"-I{Path(next(iter(google.rpc.__path__))).parent.parent}"]
    except ImportError:
        return []


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # imported outside a build, e.g. by the freshness test
    BuildHookInterface = object  # type: ignore[misc,assignment]


class ProtobufBuildHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        generate()
        build_data.setdefault("artifacts", []).append("src/sessions/generated/**")


if __name__ == "__main__":
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT):
        print(p)

"""The installed generated modules are what protos/ produces today.

``src/sessions/generated/`` is written by the hatch build hook at install
time and never committed, so after an edit to protos/ it is stale until the
package is reinstalled. These tests regenerate into a temporary folder with
the same ``hatch_build.generate()`` and compare byte for byte.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

import sessions
import sessions.generated

ROOT = Path(__file__).resolve().parent.parent
HATCH_BUILD = ROOT / "hatch_build.py"
PROTOS = ROOT / "protos"
REINSTALL = "pip install -e '.[test]'"


def _load_hatch_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_sessions_hatch_build", HATCH_BUILD)
    assert spec is not None and spec.loader is not None, f"cannot load {HATCH_BUILD}"
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def _installed_generated_dir() -> Path:
    paths = [Path(p).resolve() for p in sessions.generated.__path__]
    assert len(paths) == 1, f"sessions.generated spans several folders: {paths}"
    return paths[0]


def _sources(folder: Path) -> dict[str, bytes]:
    """Every generated .py/.pyi file under folder, keyed by relative path."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix in (".py", ".pyi") and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def installed() -> dict[str, bytes]:
    files = _sources(_installed_generated_dir())
    assert files, (
        f"no generated modules in {_installed_generated_dir()}; run `{REINSTALL}` to generate them"
    )
    return files


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    hatch_build = _load_hatch_build()
    output = tmp_path_factory.mktemp("generated")
    hatch_build.generate(output, PROTOS)
    files = _sources(output)
    assert files, f"hatch_build.generate() wrote nothing from {PROTOS}"
    return files


def test_installed_modules_match_protos(installed: dict[str, bytes], fresh: dict[str, bytes]) -> None:
    missing = sorted(set(fresh) - set(installed))
    stale_extra = sorted(set(installed) - set(fresh))
    differ = sorted(name for name in set(fresh) & set(installed) if fresh[name] != installed[name])
    problems = []
    if missing:
        problems.append(f"missing from the install: {missing}")
    if stale_extra:
        problems.append(f"installed but no longer generated: {stale_extra}")
    if differ:
        problems.append(f"differ from a fresh generation: {differ}")
    if problems:
        import grpc_tools

        version = getattr(grpc_tools, "__version__", None)
        if version is None:
            from importlib.metadata import version as dist_version

            version = dist_version("grpcio-tools")
        pytest.fail(
            f"the generated modules in {_installed_generated_dir()} are stale relative to "
            f"{PROTOS}: " + "; ".join(problems) + f". Reinstall to regenerate them: `{REINSTALL}` "
            f"(this check regenerated with grpcio-tools {version})."
        )


def test_no_top_level_yandex_package_from_our_install() -> None:
    ours = Path(sessions.__file__).resolve().parent
    spec = importlib.util.find_spec("yandex")
    if spec is None:
        return
    # The public SDK may be installed alongside; it must not be ours.
    locations = [spec.origin] if spec.origin and spec.origin not in ("namespace", "built-in") else []
    locations += list(spec.submodule_search_locations or [])
    for location in locations:
        path = Path(location).resolve()
        assert not path.is_relative_to(ours), (
            f"a top-level `yandex` package resolves into our package ({path}); generated "
            f"modules must live only under sessions.generated"
        )
        assert not path.is_relative_to(ROOT / "src"), (
            f"a top-level `yandex` package resolves into our source tree ({path})"
        )


_BARE_IMPORT = re.compile(rb"^\s*(from|import)\s+yandex\b", re.MULTILINE)
_OWN_IMPORT = re.compile(rb"^\s*(?:from|import)\s+([\w.]*yandex[\w.]*)", re.MULTILINE)


def test_generated_imports_go_through_sessions_generated(installed: dict[str, bytes]) -> None:
    bare = {
        name: [m.group(0).decode().strip() for m in _BARE_IMPORT.finditer(text)]
        for name, text in installed.items()
    }
    bare = {name: lines for name, lines in bare.items() if lines}
    assert not bare, f"generated modules import the top-level yandex package: {bare}"

    # Every import of one of our protos is through sessions.generated.
    imports = [
        (name, m.group(1).decode())
        for name, text in installed.items()
        for m in _OWN_IMPORT.finditer(text)
    ]
    assert imports, "expected the generated modules to import each other"
    wrong = [(name, mod) for name, mod in imports if not mod.startswith("sessions.generated.yandex")]
    assert not wrong, f"imports of our protos outside sessions.generated: {wrong}"


def test_fresh_generation_has_no_bare_yandex_imports(fresh: dict[str, bytes]) -> None:
    bare = sorted(name for name, text in fresh.items() if _BARE_IMPORT.search(text))
    assert not bare, f"hatch_build.generate() left bare `yandex` imports in {bare}"


def test_the_command_says_its_version() -> None:
    import subprocess
    import sys
    from importlib.metadata import version

    shown = subprocess.run([sys.executable, "-m", "sessions", "--version"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"sessions {version('sessions')}"


def test_a_bad_log_level_is_one_line_and_exit_2() -> None:
    import subprocess
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "sessions", "--log-level", "foo", "serve", "--store", "memory://"],
        capture_output=True, text=True, timeout=60,
    )
    assert shown.returncode == 2
    assert shown.stderr.strip().splitlines() == [
        "sessions: --log-level: unknown level 'foo'; one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    ]

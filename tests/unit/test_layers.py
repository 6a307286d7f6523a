"""The layering of ARCHITECTURE.md, checked from the import statements (no module is imported).

Arrows point down only: a module of ``esdb_gater.shared`` imports its own layer or a lower one,
a service imports ``shared`` and never another service, nothing imports ``bench`` or ``tests``
except the command line, and no code names the old top-level packages (``shared``, ``services``,
``bench``): the distribution installs ``esdb_gater`` alone.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# shared/<package> -> the shared packages it may import (its own included)
SHARED_LAYERS: dict[str, set[str]] = {
    "core": {"core"},
    "models": {"core", "models"},
    "log": {"core", "models", "log"},
    "security": {"core", "models", "log", "security"},
    "upcasting": {"core", "models", "log", "upcasting"},
    "runtime": {"core", "models", "log", "security", "runtime"},
    "client": {"core", "models", "security", "client"},
    "tooling": {"tooling"},
}


def _imports(path: Path) -> list[str]:
    """Every module an ``import``/``from`` statement of ``path`` names (relative ones resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(("esdb_gater", *path.relative_to(ROOT).with_suffix("").parts[:-1]))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            out.append(mod)
            out.extend(f"{mod}.{alias.name}" for alias in node.names)  # from pkg import module
    return out


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _python_files("shared"), ids=lambda p: str(p.relative_to(ROOT)))
def test_shared_modules_import_only_their_layer_or_below(path: Path) -> None:
    parts = path.relative_to(ROOT / "shared").parts
    if len(parts) == 1:
        assert parts[0] == "__init__.py", f"shared/{parts[0]}: every module belongs to a layer package"
        return
    allowed = SHARED_LAYERS[parts[0]]
    for mod in _imports(path):
        if mod.startswith("esdb_gater.shared."):
            layer = mod.split(".")[2]
            assert layer in allowed, f"{path.relative_to(ROOT)} imports {mod}: {parts[0]} may import {sorted(allowed)}"
        assert not mod.startswith(("esdb_gater.services", "esdb_gater.bench", "esdb_gater.cli", "tests")), (
            f"{path.relative_to(ROOT)} imports {mod}, a layer above shared/"
        )


@pytest.mark.parametrize("path", _python_files("services"), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_service_imports_shared_and_itself_only(path: Path) -> None:
    rel = path.relative_to(ROOT / "services").parts
    own = f"esdb_gater.services.{rel[0]}" if len(rel) > 1 else "esdb_gater.services"
    for mod in _imports(path):
        if mod.startswith("esdb_gater.services."):
            name = mod.split(".")[2]
            # the catalogue (services/__init__.py) is the one name every service may read
            assert mod.startswith(own) or name in {"SERVICES", "main_for"}, f"{path.relative_to(ROOT)} imports {mod}"
        assert not mod.startswith(("esdb_gater.bench", "esdb_gater.cli", "tests")), (
            f"{path.relative_to(ROOT)} imports {mod}"
        )


@pytest.mark.parametrize(
    "path", _python_files("shared", "services", "bench", "esdb_gater/cli", "tools", "tests"), ids=str
)
def test_no_code_names_the_old_top_level_packages(path: Path) -> None:
    for mod in _imports(path):
        top = mod.split(".")[0]
        assert top not in {"shared", "services", "bench"}, f"{path.relative_to(ROOT)} imports {mod}"


def test_bench_is_imported_only_by_the_command_line() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in _python_files("shared", "services", "tools")
        if any(m.startswith("esdb_gater.bench") for m in _imports(p))
    ]
    assert offenders == []


def test_the_distribution_installs_one_top_level_package() -> None:
    """setuptools finds ``esdb_gater`` alone (shared/, services/, bench/ are linked in under it)."""
    from setuptools import find_packages

    found = find_packages(str(ROOT), include=["esdb_gater*"])
    assert {name.split(".")[0] for name in found} == {"esdb_gater"}
    assert {"esdb_gater.shared.core", "esdb_gater.services.stream", "esdb_gater.bench"} <= set(found)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'include = ["esdb_gater*"]' in pyproject


def test_an_application_with_its_own_shared_and_services_packages_keeps_them(tmp_path: Path) -> None:
    """The common names ``shared``/``services`` of an application do not clash with the gateway."""
    for name in ("shared", "services"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"OWNER = 'app-{name}'\n")
    script = textwrap.dedent(
        """
        import shared, services
        from esdb_gater.shared.client import GaterClient
        from esdb_gater.services import SERVICES, definition
        definition("stream")
        assert shared.OWNER == "app-shared" and services.OWNER == "app-services", (shared, services)
        assert "stream" in SERVICES and GaterClient.__module__.startswith("esdb_gater.")
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_container_image_copies_everything_the_package_is_built_from() -> None:
    """``pip install .`` in the Dockerfile needs the namespace folder, every folder it links to and
    the eventsourcing shim: a missing COPY breaks the image build, not any other test."""
    copied = {
        src.rstrip("/")
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for src in line.split()[1:-1]  # COPY <src>... <dest>
    }
    links = {p.resolve().relative_to(ROOT).parts[0] for p in (ROOT / "esdb_gater").iterdir() if p.is_symlink()}
    assert links == {"shared", "services", "bench"}
    missing = ({"pyproject.toml", "esdb_gater", "eventsourcing_gater.py"} | links) - copied
    assert not missing, f"Dockerfile does not COPY {sorted(missing)}"

"""The package's layout: layers that import only downwards, thin commands, a wheel that ships every config."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from medlit.cli import COMMANDS
from tests.conftest import CONF, ROOT

PACKAGE = ROOT / "medlit"
# highest first: a module may import its own layer and the layers after it, never one before it
LAYERS = ["cli", "deploy", "interpret", "training", "evaluation", "models", "data"]
SHARED = {"medlit", "medlit.errors", "medlit.resolvers"}  # the package root, importable from every layer


def imported_modules(path: Path) -> set[str]:
    """Every `medlit...` module a file imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("medlit")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medlit"):
            names = {f"{node.module}.{alias.name}" for alias in node.names}
            found |= {name for name in names if (PACKAGE.parent / (name.replace(".", "/") + ".py")).is_file()}
            found.add(node.module)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_belongs_to_a_layer_or_the_shared_root():
    strays = [module_name(p) for p in PACKAGE.rglob("*.py") if not layer(module_name(p))]
    assert set(strays) <= SHARED | {"medlit.__main__"}, strays


def test_imports_run_only_down_the_layers():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        source = layer(module_name(path))
        for target in imported_modules(path):
            if source and target not in SHARED and LAYERS.index(layer(target)) < LAYERS.index(source):
                upward.append(f"{module_name(path)} imports {target}")
    assert not upward, "\n".join(upward)


def test_no_command_imports_another_command():
    commands = {f"medlit.cli.{name}" for name in COMMANDS}
    crossing = [
        f"{module_name(path)} imports {target}"
        for path in (PACKAGE / "cli").glob("*.py")
        for target in imported_modules(path)
        if target in commands and target != module_name(path)
    ]
    assert not crossing, "\n".join(crossing)
    assert {p.stem for p in (PACKAGE / "cli").glob("*.py")} == {*COMMANDS, "__init__", "runner"}


def test_the_import_checks_see_an_upward_import(tmp_path):
    """The checks above are only as good as the import reader: it must find lazy and aliased imports."""
    source = tmp_path / "x.py"
    source.write_text(
        "import os\n\ndef f():\n    from medlit.deploy.rebuild import rebuild as r\n    import medlit.cli\n"
    )
    assert imported_modules(source) == {"medlit.deploy.rebuild", "medlit.cli"}


@pytest.mark.slow
def test_the_wheel_ships_every_config_file_and_the_web_page(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("medlit", "conf"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path, source]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("medlit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"medlit/conf/{p.relative_to(CONF).as_posix()}" for p in CONF.rglob("*.yaml")}
    assert configs - names == set()
    assert "medlit/conf/hydra/launcher/slurm.yaml" in names
    assert "medlit/deploy/serve.html" in names
    metadata = next(name for name in names if name.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: MIT" in text
    entry_points = zipfile.ZipFile(wheel).read(metadata.replace("METADATA", "entry_points.txt")).decode()
    assert "medlit = medlit.cli:main" in entry_points

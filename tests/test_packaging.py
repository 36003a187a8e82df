"""The project installs one namespace, ``axwarehouse``: every package folder is listed in pyproject.toml (the
top-level stages/ folder as ``axwarehouse.stages``) and the ``axw`` script is ``axwarehouse.cli:main``."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; on 3.10 the packaging checks are skipped

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _package_folders() -> set[str]:
    found = {"axwarehouse." + ".".join(p.parent.relative_to(ROOT / "axwarehouse").parts)
             for p in (ROOT / "axwarehouse").rglob("__init__.py")}
    found = {name.rstrip(".") for name in found}
    assert (ROOT / "stages" / "__init__.py").is_file()
    return found | {"axwarehouse.stages"}


def test_every_package_folder_installs_under_axwarehouse():
    setuptools = _pyproject()["tool"]["setuptools"]
    assert set(setuptools["packages"]) == _package_folders()
    assert setuptools["package-dir"] == {"axwarehouse.stages": "stages"}


def test_the_axw_script_is_the_namespaced_cli():
    assert _pyproject()["project"]["scripts"] == {"axw": "axwarehouse.cli:main"}
    (script,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "axw"]
    assert script.value == "axwarehouse.cli:main"
    assert script.load().__module__ == "axwarehouse.cli"


def test_stages_import_from_the_top_level_folder():
    import axwarehouse.stages.steer

    assert Path(axwarehouse.stages.steer.__file__).resolve() == ROOT / "stages" / "steer.py"

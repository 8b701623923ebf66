"""pyproject.toml: every folder that ships data is a declared package, and its globs cover its files."""
from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_package_data_belongs_to_declared_packages():
    conf = _setuptools()
    packages = set(conf["packages"])
    for package, globs in conf["package-data"].items():
        assert package in packages, f"{package} ships data but is not in [tool.setuptools] packages"
        # a glob into a subfolder makes that subfolder an undeclared package (setuptools warns, then may drop it)
        assert not any("/" in g for g in globs), f"{package}: {globs} reach into a subfolder"
    for package in packages:
        assert (ROOT / package.replace(".", "/")).is_dir(), package


def test_data_folders_ship_every_file():
    conf = _setuptools()
    for package in ("graphs.tensorrt_ops", "spatial.weights"):
        globs = conf["package-data"][package]
        files = [p.name for p in (ROOT / package.replace(".", "/")).iterdir() if p.is_file()]
        assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), (package, files, globs)

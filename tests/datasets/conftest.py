"""Make ``mlip.datasets`` importable from a source checkout that is not pip-installed.

With ``pip install -e .`` this does nothing. Otherwise it maps the package
names of ``[tool.setuptools.package-dir]`` in pyproject.toml onto their
folders, as the installed package would.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class _PackageDirFinder(importlib.abc.MetaPathFinder):
    def __init__(self, mapping: dict[str, Path]):
        self.mapping = mapping

    def find_spec(self, fullname, path=None, target=None):
        folder = self.mapping.get(fullname)
        if folder is None:
            return None
        init = folder / "__init__.py"
        if init.exists():
            return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[str(folder)])
        spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        return spec


def _ensure_importable() -> None:
    try:
        importlib.import_module("mlip.datasets")
        return
    except ImportError:
        for name in [m for m in sys.modules if m == "mlip" or m.startswith("mlip.")]:
            del sys.modules[name]
    import tomllib  # Python >= 3.11; only needed without an installed mlip

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dirs = cfg["tool"]["setuptools"]["package-dir"]
    sys.meta_path.insert(0, _PackageDirFinder({k: ROOT / v for k, v in dirs.items()}))
    importlib.import_module("mlip.datasets")


_ensure_importable()


# -- shared fixtures ----------------------------------------------------------
import pytest  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
SHARED = Path("/work/shared/data")


@pytest.fixture(scope="session")
def rmd17_excerpt() -> Path:
    """50 real rMD17 ethanol frames (see data/README.md)."""
    return DATA / "rmd17_ethanol_50.xyz"


@pytest.fixture(scope="session")
def co_cu_systems():
    """Three EMT relaxations of CO on Cu(111): list of (sid, frames)."""
    from mlip.datasets.testing import emt_co_on_cu

    return [(1000 + k, emt_co_on_cu(steps=6 + 2 * k, seed=k)) for k in range(3)]


@pytest.fixture(scope="session")
def bulk_cu_frames():
    """Eight rattled bulk Cu cells with EMT energy, forces and stress."""
    from mlip.datasets.testing import emt_bulk_cu

    return emt_bulk_cu(8)


@pytest.fixture(scope="session")
def rmd17_frames(rmd17_excerpt):
    """The rMD17 excerpt read with ASE, energy (``Energy``) and forces on a calculator."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = ase.io.read(rmd17_excerpt, ":")
    for a in frames:
        a.calc = SinglePointCalculator(a, energy=a.info["Energy"], forces=a.get_forces())
    return frames

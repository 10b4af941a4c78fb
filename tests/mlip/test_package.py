"""The top-level package: what static tools see equals what runs, and the import stays light."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import mlip


def _type_checking_imports() -> dict[str, str]:
    tree = ast.parse(Path(mlip.__file__).read_text())
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                for alias in imp.names:
                    names[alias.name] = "mlip." + imp.module
    return names


def test_type_checking_imports_match_the_lazy_exports():
    assert _type_checking_imports() == mlip._EXPORTS


def test_every_public_name_resolves_to_its_module():
    for name in mlip.__all__:
        value = getattr(mlip, name)
        if name in mlip._EXPORTS:
            assert value is getattr(importlib.import_module(mlip._EXPORTS[name]), name)
    assert issubclass(mlip.MLIPError, ValueError)
    assert (Path(mlip.__file__).parent / "py.typed").is_file()


def test_import_mlip_does_not_load_the_model_stack():
    heavy = ("torch", "e3nn", "torch_geometric", "vesin", "h5py")
    code = f"import sys, mlip, mlip.errors, mlip.atomic; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_one_cache_folder(monkeypatch, tmp_path):
    from mlip.kernels.tp.cp import cache_dir as cp_cache
    from mlip.paths import cache_dir

    monkeypatch.setenv("MLIP_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path and cp_cache() == tmp_path / "cp"
    monkeypatch.delenv("MLIP_CACHE_DIR")
    assert cache_dir("cp") == cp_cache() and cache_dir().name == "mlip"


def test_loading_a_model_does_not_import_torch_geometric():
    """torch_geometric (seconds to import) is loaded where graphs are built, not by mlip.load or
    mlip-train export."""
    code = "import sys, mlip.io, mlip.potential, mlip.graph; print('torch_geometric' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

"""The kernels layer imports nothing from the rest of mlip but its stdlib-only foundations."""

import ast
from pathlib import Path

import mlip.kernels

KERNELS = Path(mlip.kernels.__file__).parent
ALLOWED = {"mlip.errors", "mlip.atomic", "mlip.paths"}


def imported_mlip_modules(source: str, depth: int) -> set[str]:
    """Absolute ``mlip.*`` modules outside ``mlip.kernels`` imported by ``source``, and relative
    imports that climb out of the kernels package (``from ...x``); ``depth`` is the file's
    depth below kernels/ (1: kernels/x.py, 2: kernels/tp/x.py)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level >= depth + 1:
                found.add("." * node.level + (node.module or ""))
                continue
            names = [node.module] if node.level == 0 and node.module else []
        else:
            continue
        for name in names:
            if (name == "mlip" or name.startswith("mlip.")) and not name.startswith("mlip.kernels"):
                found.add(name)
    return found


def test_kernels_import_only_foundations():
    files = sorted(KERNELS.rglob("*.py"))
    assert len(files) > 20
    bad = {}
    for f in files:
        rel = f.relative_to(KERNELS)
        extra = imported_mlip_modules(f.read_text(), len(rel.parts)) - ALLOWED
        if extra:
            bad[str(rel)] = sorted(extra)
    assert bad == {}


def test_checker_sees_a_forbidden_import():
    """Guards against a vacuous test: the checker reports imports of other layers, absolute or
    relative, and lets the foundations and the package's own modules through."""
    source = ("import mlip.potential\nfrom mlip.model import Potential\nfrom ...graph import x\n"
              "from mlip.errors import ConfigError\nfrom mlip.kernels.irreps import as_irreps\n"
              "from ..irreps import split_channels\nfrom .base import TPSpec\n")
    assert imported_mlip_modules(source, depth=2) - ALLOWED == {"mlip.potential", "mlip.model", "...graph"}
    assert imported_mlip_modules("from ..graph import x\n", depth=1) == {"..graph"}

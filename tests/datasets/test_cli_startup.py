"""The installed entry points ``mlip-data`` and ``mlip-md``, run in subprocesses: what they import
(``python -X importtime`` lists every module a process imports) and ``mlip-data info`` on several inputs.

``--help`` and argument errors must come back without the model stack (torch_geometric, which
imports torch._dynamo, and e3nn: seconds of start-up); ``mlip-data info`` and ``convert`` of
extxyz never batch graphs, so they never import torch_geometric either.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"
HEAVY = ("torch_geometric", "e3nn", "torch._dynamo")


def run(command: str, *args, cwd) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run entry point ``command`` (its console script, else ``python -m``) under ``-X importtime``;
    returns the process (stderr without the import lines) and the names of the modules it imported."""
    script = Path(sys.executable).with_name(command)
    module = {"mlip-data": "mlip.datasets.cli", "mlip-md": "mlip.md"}[command]
    target = [str(script)] if script.exists() else ["-m", module]
    r = subprocess.run([sys.executable, "-X", "importtime", *target, *map(str, args)], cwd=cwd,
                       capture_output=True, text=True, timeout=300)
    lines = r.stderr.splitlines()
    modules = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    r.stderr = "\n".join(line for line in lines if not line.startswith("import time:"))
    assert modules, "python -X importtime printed nothing"
    return r, modules


@pytest.mark.parametrize("command, args, code", [
    ("mlip-data", ["--help"], 0),
    ("mlip-data", ["convert", "--help"], 0),
    ("mlip-data", ["convert", "--format", "nonsense", "x.xyz", "-o", "y.h5"], 2),
    ("mlip-data", ["info"], 2),
    ("mlip-md", ["--help"], 0),
    ("mlip-md", ["model.pt"], 2),
    ("mlip-md", ["missing.pt", "missing.xyz"], 2),
    ("mlip-md", ["missing.pt", "missing.xyz", "--ensemble", "nvt", "--thermostat", "bogus"], 2),
])
def test_help_and_argument_errors_import_no_model_stack(tmp_path, command, args, code):
    r, modules = run(command, *args, cwd=tmp_path)
    assert r.returncode == code, r.stderr
    assert (r.stdout if code == 0 else r.stderr).strip()
    assert not [m for m in HEAVY if m in modules], sorted(m for m in modules if m.startswith(HEAVY))
    if command == "mlip-md":  # nothing of torch at all before the input is checked
        assert "torch" not in modules
    assert not list(tmp_path.iterdir())


def test_convert_and_info_of_several_inputs(tmp_path):
    """``convert`` of extxyz and ``info`` import no torch_geometric; ``info a.h5 b.h5`` shows each
    input, then the total, with the periodicity (rMD17 frames: 3D by ASE's reading, none with --pbc none)."""
    xyz = DATA / "ethanol_rmd17_3.xyz"
    for name, pbc in (("a.h5", "none"), ("b.h5", "auto")):
        r, modules = run("mlip-data", "convert", "--format", "extxyz", xyz, "-o", name, "--pbc", pbc, "--quiet",
                         cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "torch_geometric" not in modules
    assert "Pass --pbc none" in r.stderr  # the note of --pbc auto, shared with mlip-md
    r, modules = run("mlip-data", "info", "a.h5", "b.h5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not [m for m in HEAVY if m in modules]
    sections = r.stdout.split("\n\n")
    assert [s.splitlines()[0] for s in sections] == ["== a.h5", "== b.h5", "== total of 2 inputs"]
    periodic = [next(line for line in s.splitlines() if line.startswith("periodic")) for s in sections]
    assert [p.split("(")[0].split(None, 1)[1].strip() for p in periodic] == ["none: 3", "3D: 3", "none: 3, 3D: 3"]
    structures = [next(line for line in s.splitlines() if line.startswith("structures")) for s in sections]
    assert [int(s.split()[-1]) for s in structures] == [3, 3, 6]
    r, _ = run("mlip-data", "info", "a.h5", "b.h5", "--json", cwd=tmp_path)
    out = json.loads(r.stdout)
    assert [i["input"] for i in out["inputs"]] == ["a.h5", "b.h5"]
    assert [i["pbc"] for i in out["inputs"]] == [{"none": 3}, {"3D": 3}]
    assert out["total"]["pbc"] == {"none": 3, "3D": 3} and out["total"]["n_structures"] == 6
    r, _ = run("mlip-data", "info", "a.h5", "--json", cwd=tmp_path)  # one input: its summary, as before
    assert json.loads(r.stdout)["n_structures"] == 3

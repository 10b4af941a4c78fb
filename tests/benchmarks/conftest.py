"""Tests of the scripts in ``benchmarks/``: each script runs in-process as a module on a tiny
case, with its README writer replaced by a recorder (``module.readme_calls``)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def benchmark_script(monkeypatch):
    """``benchmark_script("tp")``: the script ``benchmarks/tp.py`` as a module, its README writer
    recording ``(name, text)`` calls in ``module.readme_calls`` instead of writing."""

    def load(name: str):
        monkeypatch.syspath_prepend(str(BENCHMARKS))
        module = importlib.import_module(name)
        calls = []
        monkeypatch.setattr(module, "write_readme_section", lambda section, text: calls.append((section, text)))
        module.readme_calls = calls
        return module

    return load

"""``benchmarks/md.py``: the MD table's ratio columns."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")


def _row(engine, steps, run=None, atoms=108):
    r = {"engine": engine, "l_max": 2, "atoms": atoms, "edges": 4614, "params": 1, "nl_ms": 0.1, "graph_ms": 0.2,
         "model_ms": 1e3 * atoms / steps, "n": 5, "atom_steps_per_s": steps, "rss_gb": 0.5}
    return r if run is None else dict(r, run=run)


def test_ratio_columns_compare_within_one_run(benchmark_script):
    """``vs MACE`` and ``vs cg`` divide a row's throughput by mace-torch's and by mlip-cg's of the
    same size and run; a row of another run (marked †) is never divided by this run's."""
    md = benchmark_script("md")
    rows = [_row("mace", 400.0), _row("mlip-cg", 800.0), _row("mlip-grid", 1000.0),
            _row("mlip-grid", 900.0, run=1), _row("mlip-cg", 600.0, run=1)]
    lines = {line.split("|")[4].strip(): line for line in md.table(rows).splitlines()[2:]}
    cells = lambda name: [c.strip() for c in lines[name].split("|")[10:12]]  # noqa: E731
    assert cells("mace") == ["–", "–"]
    assert cells("mlip-cg") == ["2.00x", "–"]
    assert cells("mlip-grid") == ["2.50x", "1.25x"]
    assert cells("mlip-grid †") == ["–", "1.50x"]  # its run has no MACE row; its own cg row
    assert md.table(rows).splitlines()[0].count("|") == md.table(rows).splitlines()[1].count("|")

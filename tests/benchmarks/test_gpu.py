"""``benchmarks/gpu.py`` (the lent GPU machine's measurements) on the CPU: the time guard, the
target checks and a tiny run of every part (its full ``--quick`` check takes minutes here:
``bash benchmarks/gpu.sh check``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("ase")
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def gpu(benchmark_script):
    return benchmark_script("gpu")


def test_time_guard_skips_every_case_and_says_so(gpu, tmp_path, capsys):
    out = tmp_path / "g.json"
    assert gpu.main(["--device", "cpu", "--quick", "--max-seconds", "0", "--no-mace", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {r["part"] for r in rows} == {"tp", "md", "train"}
    assert rows and all("time guard" in r["skipped"] for r in rows)
    assert result["meta"]["guard_hit"] and "time guard" in capsys.readouterr().out
    assert gpu.readme_calls == []  # --quick never rewrites the README


def test_targets_are_checked_on_rows_of_the_same_run(gpu):
    rows = [
        {"part": "md", "engine": "mlip-cg-cueq", "l_max": 2, "atoms": 10_000, "atom_steps_per_s": 3e5, "model_ms": 1},
        {"part": "md", "engine": "mace-cueq", "l_max": 2, "atoms": 10_000, "atom_steps_per_s": 2e5, "model_ms": 1},
        {"part": "tp", "impl": "grid", "L": 6, "N": 100, "C": 32, "fb": {"s": 1.0}},
        {"part": "tp", "impl": "cg-cueq", "L": 6, "N": 100, "C": 32, "fb": {"s": 2.5}},
        {"part": "tp", "impl": "grid", "L": 7, "N": 100, "C": 32, "skipped": "memory"},
    ]
    t = gpu.targets(rows)
    assert any("10,000 atoms, l_max 2: 1.50x (met" in x for x in t), t
    assert any("L = 6, N = 100, C = 32: 2.50x (missed" in x for x in t), t
    assert not any("L = 7" in x for x in t)
    text = gpu.report({"meta": {"device_name": "Card X", "device": "cuda:0", "torch": "2", "python": "3",
                                "date": "d", "command": "c", "out": "o", "seconds": 1.0, "train_model": "m"},
                       "rows": rows})
    assert "Card X" in text and "skipped (memory)" in text


def test_tiny_run_of_every_part(gpu, tmp_path):
    out = tmp_path / "g.json"
    assert gpu.main(["--device", "cpu", "--quick", "--tp-L", "1", "--tp-N", "8", "--tp-C", "2", "--md-sizes", "4",
                     "--train-batch", "2", "--no-mace", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    done = {(r["part"], r.get("impl") or r.get("engine")) for r in rows if "skipped" not in r}
    assert {("tp", "cg"), ("tp", "grid"), ("tp", "e3nn"), ("md", "mlip-cg"), ("train", "mlip-cg")} <= done, rows
    assert all(r["fb"]["s"] > 0 for r in rows if r["part"] == "tp" and "fb" in r)

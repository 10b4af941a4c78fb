"""``benchmarks/tp.py``: benchmarks/README.md is rewritten only with ``--write-readme``, never by ``--quick``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TINY = ["--L", "1", "--N", "4", "--C", "2", "--backends", "cg", "--no-e3nn", "--no-cueq", "--modes", "channelwise",
        "--kinds", "model", "--cap", "5"]


@pytest.fixture
def tp(benchmark_script):
    return benchmark_script("tp")


def test_readme_only_with_write_readme(tp, tmp_path, capsys):
    readme = (BENCHMARKS / "README.md").read_bytes()
    assert tp.main([*TINY, "--out", str(tmp_path / "a.json")]) == 0
    assert tp.readme_calls == [] and (tmp_path / "a.json").exists() and (tmp_path / "a.png").exists()
    assert "README" not in capsys.readouterr().out
    assert tp.main([*TINY, "--out", str(tmp_path / "b.json"), "--write-readme"]) == 0
    assert [name for name, _ in tp.readme_calls] == ["tp"]
    assert "Reproduce: `python benchmarks/tp.py" in tp.readme_calls[0][1]
    assert "Load average (1 min) at the start and end of each run: `--L 1 --N 4" in tp.readme_calls[0][1]
    assert "benchmarks/README.md" in capsys.readouterr().out
    assert (BENCHMARKS / "README.md").read_bytes() == readme  # the real file was never touched


def test_quick_never_rewrites_the_readme_and_help_says_so(tmp_path):
    script = BENCHMARKS / "tp.py"
    r = subprocess.run([sys.executable, str(script), "--quick", "--write-readme"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "a --quick run never rewrites benchmarks/README.md" in r.stderr
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
    text = " ".join(r.stdout.split())
    assert r.returncode == 0
    assert "3-5 minutes on 2 idle CPU cores" in text and "never rewrites the README" in text
    assert "rewritten only when asked" in text


def test_many_body_kind_times_each_backends_product(tp, tmp_path):
    """``--kinds manybody`` times every backend's many-body product (not e3nn's: it has none)
    and writes its own table; elementwise mode adds nothing for it."""
    import json

    out = tmp_path / "mb.json"
    args = ["--L", "1", "--N", "4", "--C", "2", "--backends", "cg", "grid", "--no-cueq", "--modes", "channelwise",
            "elementwise", "--kinds", "manybody", "--cap", "5", "--interleave", "--out", str(out), "--write-readme"]
    assert tp.main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert sorted((r["impl"], r["mode"], r["kind"]) for r in rows) == [
        ("cg", "channelwise", "manybody"), ("grid", "channelwise", "manybody")]
    assert all("ms" in r["fwd"] and "ms" in r["fb"] for r in rows)
    text = tp.readme_calls[0][1]
    assert "many-body product (correlation 3)" in text and "e3nn" not in text.split("**many-body")[1]


def test_gemm_rate_divides_by_the_peak_timed_next_to_the_rows_case(tp, tmp_path, monkeypatch):
    """The GEMM peak is timed at the start, before and after each L of an interleaved run and at
    the end; a row's rate divides by the median of the two timings next to its L (the VM's speed
    moves within a run), the run's median is kept in the row and the header, and a merged table
    keeps each run's own."""
    import json
    import statistics

    runs = {}
    # timings: start, before L, after L, end
    for L, peaks in ((1, [20.0, 10.0, 30.0, 25.0]), (2, [100.0, 60.0, 80.0, 110.0])):
        timings = iter(peaks)
        monkeypatch.setattr(tp, "gemm_peak", timings.__next__)
        out = tmp_path / f"L{L}.json"
        args = ["--L", str(L), "--N", "4", "--C", "2", "--backends", "grid", "--no-e3nn", "--no-cueq", "--modes",
                "channelwise", "--kinds", "model", "--cap", "5", "--interleave", "--out", str(out)]
        assert tp.main(args) == 0
        runs[L] = json.loads(out.read_text())
        assert runs[L]["meta"]["gemm_peak_samples"] == peaks
        assert [r["gemm_peak"] for r in runs[L]["rows"]] == [statistics.median(peaks)]
        assert [r["gemm_peak_local"] for r in runs[L]["rows"]] == [statistics.median(peaks[1:3])]
    assert tp.main(["--from-json", str(tmp_path / "L1.json"), str(tmp_path / "L2.json"), "--out",
                    str(tmp_path / "merged.json"), "--write-readme"]) == 0
    text = tp.readme_calls[-1][1]
    assert "N = 4 samples, C = 2 channels" in text
    assert "22.5 GFLOP/s" in text and "90.0 GFLOP/s" in text and "timings 10.0-30.0" in text
    for L, peak in ((1, 20.0), (2, 70.0)):
        row = runs[L]["rows"][0]
        rate = row["gemm_flops"]["fb"] / (row["fb"]["ms"] * 1e6)
        assert f"{rate:.1f} ({100 * rate / peak:.0f} %)" in text


def test_rows_kind_times_the_stacked_rows_route_where_a_backend_has_it(tp, tmp_path):
    """``--kinds rows`` times forward_rows in chunks (the interaction's route) for the mlip
    backends that have it; one without it (gaunt) is listed as skipped at every L, not timed
    and not taken for a slow case; e3nn has no such route and is left out."""
    import json

    out = tmp_path / "rows.json"
    for sweep in (["--interleave"], []):
        args = ["--L", "1", "2", "--N", "40", "--C", "2", "--backends", "grid", "cp", "gaunt", "--no-cueq", "--modes",
                "channelwise", "elementwise", "--kinds", "rows", "--cap", "5", *sweep, "--out", str(out),
                "--write-readme"]
        assert tp.main(args) == 0
        rows = {(r["impl"], r["L"]): r for r in json.loads(out.read_text())["rows"]}
        assert sorted(rows) == [(b, L) for b in ("cp", "gaunt", "grid") for L in (1, 2)]
        for L in (1, 2):
            assert all("ms" in rows[(b, L)][k] for b in ("grid", "cp") for k in ("fwd", "fb"))
            assert rows[("gaunt", L)]["fb"] == {"skipped": "no stacked-rows route"}
        text = tp.readme_calls[-1][1]
        assert "stacked rows in CPU chunks (the potential's route), forward + backward" in text
        assert "e3nn" not in text.split("**channelwise")[1] and "elementwise" not in text.split("**")[1]

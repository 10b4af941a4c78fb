"""MD throughput of mlip (every tensor-product backend) against mace-torch, side by side.

Measures energy + forces of one structure (the cost of an MD step) in float32 on rattled
(sigma 0.05 Å) periodic fcc Cu (a = 3.61 Å, element "Cu", r_max 5 Å, ~42 neighbours per
atom) of about 100, 1,000 and 10,000 atoms, for model sizes l_max 1 and 2 (64 channels,
2 layers, correlation 3, 8 Bessel functions, radial MLP [64, 64, 64]). The peer is
mace-torch's ``ScaleShiftMACE`` with matched hyperparameters (as ``mace_run_train --model
MACE`` builds it, with ``max_ell = l_max``), run from its own venv
(``benchmarks/.venv-mace``, created on first use: e3nn 0.4.4 there, never in the project's
venv). Each case runs in its own subprocess that prints JSON (peak memory per case).

Timing: 2 warm-up calls, then the median of 5; a call over 10 s gets 1 warm-up and as many
timed calls as fit in 60 s. ``--clock cpu`` times process CPU time instead of elapsed time
(steadier while other jobs share the CPU); ``--rounds R`` runs every case R times with the
engines in alternating order and keeps each engine's fastest round. The neighbour list (graph
building) is timed separately; the throughput is atom-steps per second of the model's energy +
forces. A case predicted (from the previous size, linearly) above ``--max-call-s`` seconds per
call, or above 60 % of the available memory, is skipped and reported with its estimate.

Usage::

    .venv/bin/python benchmarks/md.py                 # full run (tens of minutes)
    .venv/bin/python benchmarks/md.py --quick         # 100 atoms, l_max 1
    .venv/bin/python benchmarks/md.py --sizes 100,1000 --backends cg,grid --lmax 2

Writes ``benchmarks/results/md.json``, ``benchmarks/results/md.png`` and the ``md`` section
of ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _readme import write_readme_section

from mlip.allocator import allocator_env
from mlip.atomic import atomic_path, atomic_write_text
from mlip.kernels.tp import BACKENDS as TP_BACKENDS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "benchmarks" / "README.md"
MACE_VENV = ROOT / "benchmarks" / ".venv-mace"
MACE_VERSION = "0.3.16"
#: the registered tensor-product backends (mlip.kernels.tp.BACKENDS)
BACKENDS = tuple(TP_BACKENDS)

# Shared by both workers (plain text so it can run in either venv).
COMMON = r'''
import json, os, resource, statistics, sys, time
import numpy as np
from ase.build import bulk

def structure(reps):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(tuple(reps))
    atoms.rattle(0.05, seed=0)
    return atoms

CLOCK = time.process_time if os.environ.get("MD_BENCH_CLOCK") == "cpu" else time.perf_counter

def timed(fn, budget=60.0, warmups=2, repeats=5):
    """(median s, n timed, first call s) on CLOCK: 2 warm-ups + median of 5; a call > 10 s
    gets 1 warm-up and as many timed calls as fit in the budget (wall time)."""
    t = time.perf_counter(); fn(); first = time.perf_counter() - t
    if first > 10.0:
        warmups, repeats = 0, max(1, int(budget // first))
    for _ in range(max(warmups - 1, 0)):
        fn()
    ts = []
    start = time.perf_counter()
    for _ in range(repeats):
        t = CLOCK(); fn(); ts.append(CLOCK() - t)
        if time.perf_counter() - start > budget:
            break
    return statistics.median(ts), len(ts), first

def rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
'''

OURS_WORKER = COMMON + r'''
import torch
import mlip
from vesin import NeighborList

case = json.loads(sys.argv[1])
torch.set_num_threads(case["threads"])
atoms = structure(case["reps"])
cfg = mlip.PotentialConfig(elements=["Cu"], r_max=5.0, num_channels=64, l_max=case["l_max"], correlation=3,
                           num_layers=2, num_radial=8, radial_mlp=[64, 64, 64], avg_num_neighbors=42.0,
                           tp_backend=case["backend"], dtype="float32")
t = time.perf_counter(); model = mlip.Potential(cfg).eval(); build_s = time.perf_counter() - t
model.low_memory = case.get("low_memory", False)
nl = NeighborList(cutoff=5.0, full_list=True)
nl_s, _, _ = timed(lambda: nl.compute(points=atoms.positions, box=atoms.cell.array, periodic=True, quantities="ijS"))
graph_s, _, _ = timed(lambda: mlip.atoms_to_graph(atoms, 5.0))
graph = mlip.atoms_to_graph(atoms, 5.0)
model_s, n, first = timed(lambda: model(graph, forces=True, stress=False))
print(json.dumps(dict(atoms=len(atoms), edges=int(graph.edge_index.shape[1]), build_s=build_s, nl_ms=1e3 * nl_s,
                      graph_ms=1e3 * graph_s, model_ms=1e3 * model_s, n=n, first_s=first, rss_gb=rss_gb(),
                      params=sum(p.numel() for p in model.parameters()), torch=torch.__version__)))
'''

#: mace-torch's model matched to mlip's (plain text for the workers; ``kw``: e.g. cueq_config)
MACE_MODEL = r'''
def mace_model(L, **kw):
    from e3nn import o3
    from mace import modules
    hidden = o3.Irreps("+".join(f"64x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(L + 1)))
    return modules.ScaleShiftMACE(
        r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=L,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=2, num_elements=1, hidden_irreps=hidden, MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(1), avg_num_neighbors=42.0, atomic_numbers=[29], correlation=3,
        gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64], atomic_inter_scale=1.0, atomic_inter_shift=0.0,
        **kw)
'''

MACE_WORKER = COMMON + MACE_MODEL + r'''
import torch
import mace
from mace import data as mdata, modules  # imported before the build is timed
from mace.data.neighborhood import get_neighborhood
from mace.tools import torch_geometric, utils

case = json.loads(sys.argv[1])
torch.set_num_threads(case["threads"])
torch.manual_seed(0)
atoms = structure(case["reps"])
L = case["l_max"]
t = time.perf_counter()
model = mace_model(L).float().eval()
build_s = time.perf_counter() - t
pbc, cell = (True, True, True), atoms.cell.array
nl_s, _, _ = timed(lambda: get_neighborhood(atoms.positions, cutoff=5.0, pbc=pbc, cell=cell))
z = utils.AtomicNumberTable([29])

def make_batch():
    cfg = mdata.config_from_atoms(atoms)
    d = mdata.AtomicData.from_config(cfg, z_table=z, cutoff=5.0)
    return torch_geometric.batch.Batch.from_data_list([d]).to_dict()

graph_s, _, _ = timed(make_batch)
batch = make_batch()
model_s, n, first = timed(lambda: model(batch, compute_force=True))
print(json.dumps(dict(atoms=len(atoms), edges=int(batch["edge_index"].shape[1]), build_s=build_s, nl_ms=1e3 * nl_s,
                      graph_ms=1e3 * graph_s, model_ms=1e3 * model_s, n=n, first_s=first, rss_gb=rss_gb(),
                      params=sum(p.numel() for p in model.parameters()), torch=torch.__version__,
                      mace=getattr(mace, "__version__", "?"))))
'''


def fcc_reps(n_atoms: int) -> tuple[int, int, int]:
    """Near-cubic repeats (a <= b <= c <= a + 1) of the 4-atom fcc cell closest to ``n_atoms``."""
    best = None
    for a in range(1, 40):
        for b in (a, a + 1):
            for c in (b, a + 1):
                if c < b:
                    continue
                err = abs(4 * a * b * c - n_atoms)
                if best is None or err < best[0]:
                    best = (err, (a, b, c))
    return best[1]


def ensure_mace_venv(path: Path, version: str) -> Path:
    """Python of a venv with mace-torch (created if missing: torch first, then mace-torch)."""
    py = path / "bin" / "python"
    if py.exists() and _mace_ok(py):
        return py
    import torch

    torch_version = torch.__version__.split("+")[0]
    print(f"creating {path} (torch=={torch_version}, mace-torch=={version}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run(pip + [f"torch=={torch_version}"], check=True)
    subprocess.run(pip + [f"mace-torch=={version}"], check=True)
    if not _mace_ok(py):
        raise RuntimeError(f"mace-torch does not import in {path}")
    return py


def _worker_env(clock: str, allocator: str = "default") -> dict:
    """Environment of a worker (either engine): the clock, and with ``allocator="tuned"`` the
    glibc malloc settings of ``mlip.allocator`` (what mlip-md and mlip-train use), given to
    mlip and mace-torch alike."""
    env = dict(os.environ)
    env["MD_BENCH_CLOCK"] = clock
    for k in allocator_env():
        env.pop(k, None)
    if allocator == "tuned":
        env.update(allocator_env())
    return env


def _mace_env(clock: str = "wall", allocator: str = "default") -> dict:
    env = _worker_env(clock, allocator)
    # e3nn 0.4.4 (pinned by mace-torch) loads its own constants with torch.load's old default
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    return env


def _mace_ok(py: Path) -> bool:
    r = subprocess.run([str(py), "-c", "import mace, e3nn; print(e3nn.__version__)"], capture_output=True,
                       text=True, env=_mace_env())
    return r.returncode == 0


def run_case(python: str, code: str, case: dict, env: dict | None, timeout: float) -> dict:
    """Run one worker subprocess; its last stdout line is JSON."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
        script = f.name
    try:
        r = subprocess.run([python, script, json.dumps(case)], capture_output=True, text=True, env=env,
                           timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:
        os.unlink(script)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _estimate(done: list[dict], n_atoms: int) -> tuple[float, float]:
    """Predicted (s per call, peak GB) at ``n_atoms`` from the smaller cases: time linear in
    the atoms; memory along the line through the last two sizes (one size: proportional)."""
    last = done[-1]
    est_s = last["model_ms"] / 1e3 * n_atoms / last["atoms"]
    if len(done) >= 2:
        prev = done[-2]
        slope = (last["rss_gb"] - prev["rss_gb"]) / (last["atoms"] - prev["atoms"])
        est_gb = last["rss_gb"] + slope * (n_atoms - last["atoms"])
    else:
        est_gb = last["rss_gb"] * n_atoms / last["atoms"]
    return est_s, est_gb


def mem_available_gb() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("inf")


def machine() -> dict:
    import e3nn
    import torch

    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "e3nn": e3nn.__version__, "date": time.strftime("%Y-%m-%d %H:%M"), "loadavg_start": os.getloadavg()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="MD throughput (energy + forces, float32) of mlip vs mace-torch.")
    p.add_argument("--quick", action="store_true", help="only ~100 atoms and l_max 1")
    p.add_argument("--sizes", default="100,1000,10000", help="approximate atom counts (fcc Cu supercells)")
    p.add_argument("--backends", default=",".join(BACKENDS), help="mlip tensor-product backends")
    p.add_argument("--lmax", default="1,2", help="model sizes (l_max)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per run")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time; cpu: process CPU time (all threads), steadier on a shared machine")
    p.add_argument("--low-memory", action="store_true",
                   help="mlip models with low_memory=True (edge chunks recomputed in the backward: "
                        "about half the memory, about a third more time)")
    p.add_argument("--allocator", choices=("tuned", "default"), default="tuned",
                   help="tuned: both engines' processes run with mlip.allocator's glibc malloc settings "
                        "(freed memory reused, no page faults per call; what mlip-md does); default: glibc's own")
    p.add_argument("--max-call-s", type=float, default=40.0, help="skip a case predicted slower than this per call")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every case this many times (engines in alternating order) and keep the fastest round")
    p.add_argument("--no-mace", action="store_true", help="do not run mace-torch")
    p.add_argument("--mace-python", default=None, help="python of an existing venv with mace-torch")
    p.add_argument("--mace-version", default=MACE_VERSION, help="mace-torch version for a new venv")
    p.add_argument("--out", type=Path, default=RESULTS / "md.json", help="JSON results")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    p.add_argument("--mem-fraction", type=float, default=0.8,
                   help="skip a case whose predicted peak memory exceeds this fraction of the available memory")
    p.add_argument("--report-only", type=Path, nargs="+", default=None, metavar="JSON",
                   help="only redraw the plot and README section from earlier JSON results; rows of the "
                   "second and later files fill the cases the first one skipped (marked in the table)")
    a = p.parse_args(argv)
    if a.report_only is not None:
        main_result, *extras = [json.loads(f.read_text()) for f in a.report_only]
        for f, extra in zip(a.report_only[1:], extras):
            extra["file"] = f.name
        rows = merge_rows(main_result["rows"], extras)
        main_result["file"] = a.report_only[0].name
        png = a.report_only[0].with_suffix(".png")
        plot(rows, png)
        write_readme(main_result, png, rows=rows, extras=extras)
        print(f"wrote {png}, {README}")
        return 0
    sizes = [100] if a.quick else [int(s) for s in a.sizes.split(",")]
    lmaxes = [1] if a.quick else [int(s) for s in a.lmax.split(",")]
    backends = [b for b in a.backends.split(",") if b]
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        p.error(f"unknown backend(s) {bad}; choose from {BACKENDS}")

    engines = [] if a.no_mace else ["mace"]
    engines += [f"mlip-{b}" for b in backends]
    mace_py = None
    if not a.no_mace:
        mace_py = a.mace_python or str(ensure_mace_venv(MACE_VENV, a.mace_version))
    meta = machine()
    meta.update(clock=a.clock, allocator=a.allocator, threads=a.threads, rounds=a.rounds, low_memory=a.low_memory,
                command=shlex.join(argv if argv is not None else sys.argv[1:]))
    rows = []
    for L in lmaxes:
        history: dict[str, list[dict]] = {}  # successful rows per engine, by size
        for n_target in sizes:
            reps = fcc_reps(n_target)
            n_atoms = 4 * reps[0] * reps[1] * reps[2]
            todo = []
            for eng in engines:
                row = {"engine": eng, "l_max": L, "atoms": n_atoms}
                if any(r["engine"] == eng and r["l_max"] == L and ("error" in r or r.get("skipped")) for r in rows):
                    row.update(skipped=True)  # a smaller case already failed or was skipped
                elif history.get(eng):
                    est_s, est_gb = _estimate(history[eng], n_atoms)
                    if est_s > a.max_call_s or est_gb > a.mem_fraction * mem_available_gb():
                        row.update(skipped=True, est_s=est_s, est_gb=est_gb)
                        print(f"l_max={L} {n_atoms:>6} {eng:<11} skipped (est. {est_s:.0f} s/call, {est_gb:.1f} GB)",
                              flush=True)
                rows.append(row)
                if not row.get("skipped"):
                    todo.append(row)
            # rounds alternate the order of the engines; each row keeps its least disturbed round
            for k in range(a.rounds):
                for row in todo if k % 2 == 0 else todo[::-1]:
                    if "error" in row:
                        continue
                    eng = row["engine"]
                    case = {"reps": reps, "l_max": L, "threads": a.threads, "backend": eng.split("-", 1)[-1],
                            "low_memory": a.low_memory}
                    if eng == "mace":
                        res = run_case(mace_py, MACE_WORKER, case, _mace_env(a.clock, a.allocator), timeout=900)
                    else:
                        res = run_case(sys.executable, OURS_WORKER, case, _worker_env(a.clock, a.allocator),
                                       timeout=900)
                    if "error" in res:
                        row.update(res)
                        print(f"l_max={L} {n_atoms:>6} {eng:<11} ERROR {res['error']}", flush=True)
                        continue
                    row.setdefault("rounds_model_ms", []).append(res["model_ms"])
                    if "model_ms" not in row or res["model_ms"] < row["model_ms"]:
                        row.update(res)
                    print(f"l_max={L} {n_atoms:>6} {eng:<11} edges {res['edges']:>7}  NL {res['nl_ms']:7.1f} ms  "
                          f"graph {res['graph_ms']:7.1f} ms  E+F {res['model_ms']:9.1f} ms (n={res['n']})  "
                          f"{n_atoms / res['model_ms'] * 1e3:8.0f} atom-steps/s  {res['rss_gb']:.2f} GB", flush=True)
            for row in todo:
                if "model_ms" in row and "error" not in row:
                    row["atom_steps_per_s"] = n_atoms / (row["model_ms"] / 1e3)
                    history.setdefault(row["engine"], []).append(row)
    meta["loadavg_end"] = os.getloadavg()
    if mace_py:
        meta["mace"] = next((r.get("mace") for r in rows if r["engine"] == "mace" and "mace" in r), None)
    result = {"meta": meta, "args": {k: str(v) for k, v in vars(a).items()}, "rows": rows}
    atomic_write_text(a.out, json.dumps(result, indent=1))
    png = a.out.with_suffix(".png")
    plot(rows, png)
    if not a.no_readme:
        result["file"] = a.out.name
        write_readme(result, png)
    print(f"wrote {a.out}, {png}" + ("" if a.no_readme else f", {README}"))
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lmaxes = sorted({r["l_max"] for r in rows})
    fig, axes = plt.subplots(1, len(lmaxes), figsize=(5.5 * len(lmaxes), 4.2), squeeze=False)
    for ax, L in zip(axes[0], lmaxes):
        for eng in dict.fromkeys(r["engine"] for r in rows):
            best: dict[int, dict] = {}  # one point per size, the main run first
            for r in rows:
                if r["engine"] == eng and r["l_max"] == L and "atom_steps_per_s" in r:
                    if r["atoms"] not in best or (r.get("run") or 0) < (best[r["atoms"]].get("run") or 0):
                        best[r["atoms"]] = r
            pts = sorted((n, r["atom_steps_per_s"]) for n, r in best.items())
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, "o-" if eng != "mace" else "s--k", label=eng)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("atoms (rattled fcc Cu, r_max 5 Å); see the table for runs")
        ax.set_ylabel("atom-steps / s (energy + forces, float32)")
        ax.set_title(f"l_max = {L}, 64 channels, 2 layers, correlation 3")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def table(rows: list[dict]) -> str:
    """The MD table; ``vs MACE`` and ``vs cg`` are throughput ratios to mace-torch and to mlip's
    cg backend in the same run (rows of another run are never compared with this run's)."""
    def steps(engine):
        return {(r["l_max"], r["atoms"], r.get("run")): r.get("atom_steps_per_s")
                for r in rows if r["engine"] == engine}

    mace, cg = steps("mace"), steps("mlip-cg")
    out = ["| l_max | atoms | edges | engine | params | NL ms | graph ms | E+F ms | atom-steps/s | vs MACE | vs cg "
           "| RSS GB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        edges = f"{r['edges']:,}" if "edges" in r else "–"
        mark = " " + "†" * r["run"] if r.get("run") else ""
        head = f"| {r['l_max']} | {r['atoms']:,} | {edges} | {r['engine']}{mark} |"
        if r.get("skipped"):
            est = f"skipped (est. {r['est_s']:.0f} s/call, {r['est_gb']:.1f} GB)" if "est_s" in r else "skipped"
            out.append(f"{head} – | – | – | {est} | – | – | – | – |")
        elif "error" in r:
            out.append(f"{head} – | – | – | error: {r['error'][:80]} | – | – | – | – |")
        else:
            key = (r["l_max"], r["atoms"], r.get("run"))
            vs = [f"{r['atom_steps_per_s'] / ref[key]:.2f}x" if ref.get(key) and r["engine"] not in skip else "–"
                  for ref, skip in ((mace, ("mace",)), (cg, ("mace", "mlip-cg")))]
            n = f" (n={r['n']})" if r["n"] < 5 else ""
            out.append(f"{head} {r['params']:,} | {r['nl_ms']:.1f} | {r['graph_ms']:.1f} | {r['model_ms']:,.1f}{n} | "
                       f"{r['atom_steps_per_s']:,.0f} | {vs[0]} | {vs[1]} | {r['rss_gb']:.2f} |")
    return "\n".join(out)


def merge_rows(rows: list[dict], extras: list[dict]) -> list[dict]:
    """Fill cases of ``rows`` that were skipped with rows of other runs (``extras``), marked
    with their run number. Ratios must stay within one run, so an extra run's MACE row comes
    along with them, and where the main run has no MACE row for a size the extra run's rows
    for that size replace the main ones."""
    ok = lambda r: not r.get("skipped") and "error" not in r  # noqa: E731
    out = [dict(r) for r in rows]
    for n, extra in enumerate(extras, start=1):
        groups: dict[tuple, list[dict]] = {}
        for r in extra["rows"]:
            if ok(r):
                groups.setdefault((r["l_max"], r["atoms"]), []).append(dict(r, run=n))
        for (L, atoms), ex in groups.items():
            here = {r["engine"]: k for k, r in enumerate(out)
                    if (r["l_max"], r["atoms"]) == (L, atoms) and not r.get("run")}
            ex_mace = [r for r in ex if r["engine"] == "mace"]
            main_mace = "mace" in here and ok(out[here["mace"]])
            if ex_mace and not main_mace:
                take = ex  # the whole size from the extra run
            else:
                take = [r for r in ex if r["engine"] != "mace"
                        and (r["engine"] not in here or not ok(out[here[r["engine"]]]))]
                if take:
                    take += ex_mace
            for r in take:
                k = here.get(r["engine"])
                if k is not None and (not ok(out[k]) or r["engine"] != "mace" or not main_mace):
                    out[k] = r
                else:
                    out.append(r)
    return sorted(out, key=lambda r: (r["l_max"], r["atoms"], r.get("run") or 0, r["engine"] != "mace", r["engine"]))


def _load_verdict(m: dict) -> str:
    """What the load averages say: a load within half a core of the benchmark's own busy
    threads means nothing else ran; more means the CPU was shared and times are noisy."""
    own = m.get("threads", 1)
    if max(m["loadavg_start"][0], m["loadavg_end"][0]) <= own + 0.5:
        return (f"about the benchmark's own {own} busy thread(s), so nothing else ran; compare ratios "
                "within the table all the same (one VM's speed drifts by a few per cent).")
    return ("the CPU was shared with other jobs, so absolute times\nare noisy (±30 % or worse); compare ratios "
            "within the table.")


def _describe(m: dict) -> str:
    return (f"`.venv/bin/python benchmarks/md.py {m.get('command', '')}`".replace(" `", "`") +
            f" ({m['date']}, load average {m['loadavg_start'][0]:.1f} -> {m['loadavg_end'][0]:.1f}, "
            f"{'tuned' if m.get('allocator') == 'tuned' else 'glibc default'} allocator)")


def write_readme(result: dict, png: Path, rows: list[dict] | None = None, extras: tuple = ()) -> None:
    m = result["meta"]
    rows = result["rows"] if rows is None else rows
    marks = "".join(
        f"\nRows marked {'†' * n} come from a separate run, {_describe(e['meta'])}, raw rows "
        f"`benchmarks/results/{e.get('file', '?')}`; compare them with each other, not with the other rows.\n"
        for n, e in enumerate(extras, start=1))
    if extras:
        files = " ".join(f"benchmarks/results/{r.get('file', '?')}" for r in (result, *extras))
        marks += f"\nTable and plot: `.venv/bin/python benchmarks/md.py --report-only {files}`.\n"
    clock_text = ("process CPU time (steadier than elapsed time while other jobs share the CPU)"
                  if m.get("clock") == "cpu" else "elapsed (wall) time")
    alloc_text = ("; both engines' processes with glibc malloc's mmap threshold 32 MiB and trim threshold "
                  "1 GiB (`mlip.allocator`, as mlip-md runs: freed memory is reused instead of faulted in again)"
                  if m.get("allocator") == "tuned" else "")
    rounds = m.get("rounds", 1)
    rounds_text = (f"; every case run {rounds} times in alternating engine order, the fastest round kept"
                   if rounds > 1 else "")
    timing = (f"of 5 after 2 warm-ups, {clock_text}, {m.get('threads')} torch thread(s)"
              f"{rounds_text}{alloc_text}")
    body = f"""## MD throughput: mlip vs mace-torch (`benchmarks/md.py`)

Energy + forces per MD step, float32, rattled periodic fcc Cu (a = 3.61 Å, σ 0.05 Å),
r_max 5 Å; 64 channels, 2 layers, correlation 3, 8 Bessel functions, radial MLP
[64, 64, 64]. mace-torch {m.get('mace', '?')} `ScaleShiftMACE` (e3nn 0.4.4, own venv) with the
same hyperparameters (`max_ell = l_max`). Atom-steps/s from the model's E+F time: median
{timing}; "NL" is the neighbour list alone (vesin for mlip, matscipy in
`get_neighborhood` for MACE), "graph" the whole graph building (mlip: `atoms_to_graph`;
MACE: config + `AtomicData` + collate). RSS is the peak memory of the case's process.

Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']}, e3nn {m['e3nn']}
(mlip); {m['date']}. Load average {m['loadavg_start'][0]:.1f} at the start and
{m['loadavg_end'][0]:.1f} at the end: {_load_verdict(m)}

Reproduce: {_describe(m)}; raw rows `benchmarks/results/{result.get('file', 'md.json')}`.
{marks}
{table(rows)}

![MD throughput]({Path(os.path.relpath(png, README.parent)).as_posix()})
"""
    write_readme_section("md", body, README)


if __name__ == "__main__":
    sys.exit(main())

"""One GPU session's measurements (issue 15): tensor products, MD throughput, training steps.

Three parts, each against its peers in the same run, on ``--device`` (default: CUDA when present):

* ``tp``: channelwise products ``C x (0e+1o+...+L) ⊗ (0e+1o+...+L) -> outputs up to L`` with
  per-sample weights, float32, for L = 1..8, N = 10k and 100k samples, C = 32 and 128: every
  mlip backend on the torch engine, ``cg`` also on the cuEquivariance engine (``cg-cueq``),
  and as peers e3nn and cuEquivariance's own ``ChannelWiseTensorProduct`` (``cueq``); forward
  (no grad) and forward + backward (w.r.t. both inputs and the weights).
* ``md``: energy + forces (an MD step's model call) of rattled periodic fcc Cu of about 1k, 10k
  and 100k atoms at l_max 1 and 2 (the model of ``benchmarks/md.py``: 64 channels, 2 layers,
  correlation 3, r_max 5 Å, float32); every backend on the torch engine, ``cg`` also on
  cuEquivariance, and mace-torch (``ScaleShiftMACE`` with the same hyperparameters) with and
  without its cuEquivariance acceleration, in its own process (``--mace-path``: a folder with
  mace-torch and e3nn 0.4.4, put first on that process's ``PYTHONPATH``).
* ``train``: optimizer steps per second (energy + force loss, forces with ``create_graph``,
  backward, Adam) on batches of 5 and 32 rMD17 ethanol frames (the bundled
  ``mlip/train/data/ethanol_rmd17_200.xyz``; the model of ``benchmarks/train.py``: 32 channels,
  l_max 2, correlation 3, 2 layers, r_max 5 Å), float32.

Timing: warm-up calls, then the median of timed calls; on CUDA with CUDA events around each
call (the launches included), elsewhere ``time.perf_counter``. A case predicted to need more
than ``--mem-fraction`` of the device memory is skipped, as is everything once ``--max-seconds``
have passed (each skipped case says why). Writes one JSON (``--out``) and the ``gpu`` (or, on
the CPU, ``gpu-cpu``) section of ``benchmarks/README.md``, naming the card.

    python benchmarks/gpu.py --out gpu.json                  # on the lent GPU machine (< 8 min)
    python benchmarks/gpu.py --device cpu --quick --no-readme --out /tmp/gpu-quick.json   # a check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import md as md_bench
import numpy as np
import torch
import tp as tp_bench
from _readme import write_readme_section

import mlip
from mlip.atomic import atomic_write_text
from mlip.kernels import TensorProduct
from mlip.kernels.tp import BACKENDS as TP_BACKENDS
from mlip.kernels.tp import cueq

ROOT = Path(__file__).resolve().parents[1]
ETHANOL = ROOT / "mlip" / "train" / "data" / "ethanol_rmd17_200.xyz"
BACKENDS = tuple(TP_BACKENDS)


# -- timing -----------------------------------------------------------------------------------
class Clock:
    """Times calls on one device: CUDA events on CUDA, ``perf_counter`` elsewhere; a global
    deadline (``--max-seconds``) that every part checks before each case."""

    def __init__(self, device: torch.device, max_seconds: float, warmup: int = 2, repeats: int = 5):
        self.device, self.warmup, self.repeats = device, warmup, repeats
        self.deadline = self.part_deadline = time.perf_counter() + max_seconds

    def begin(self, share: float) -> None:
        """Start a part that may use ``share`` of the time left (and whatever earlier parts saved)."""
        now = time.perf_counter()
        self.part_deadline = min(self.deadline, now + share * (self.deadline - now))

    def left(self) -> float:
        return min(self.deadline, self.part_deadline) - time.perf_counter()

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def once(self, fn) -> float:
        """Seconds of one call of ``fn``."""
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    def median(self, fn, warmup: int | None = None, repeats: int | None = None, budget: float = 20.0) -> dict:
        """Median seconds of ``fn`` after ``warmup`` calls; a slow first call shortens the run."""
        warmup = self.warmup if warmup is None else warmup
        repeats = self.repeats if repeats is None else repeats
        first = self.once(fn)
        if first > budget:
            return {"s": first, "n": 1, "note": "1 cold call"}
        for _ in range(warmup - 1):
            self.once(fn)
        ts, t_end = [], time.perf_counter() + budget
        for _ in range(repeats):
            ts.append(self.once(fn))
            if time.perf_counter() > t_end:
                break
        return {"s": statistics.median(ts), "n": len(ts)}


def _oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc)


def _free_memory(device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def memory_bytes(device: torch.device) -> float:
    """Memory available to a case: the card's total on CUDA, MemAvailable on the CPU."""
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    return md_bench.mem_available_gb() * 1024**3


# -- tensor products --------------------------------------------------------------------------
def tp_impls(device: torch.device) -> list[str]:
    """Implementations timed: every backend, cg on cuEquivariance, e3nn, cuEquivariance's own."""
    impls = list(BACKENDS)
    if cueq.available():
        impls += ["cg-cueq", "cueq"]
    return impls + ["e3nn"]


def tp_build(impl: str, L: int, C: int, device: torch.device):
    """(module, weight_numel) of one implementation of the channelwise product up to L."""
    in1, in2, out = tp_bench.irreps_upto(L, C), tp_bench.irreps_upto(L, 1), tp_bench.irreps_upto(L, C)
    if impl == "cg-cueq":
        m = TensorProduct(in1, in2, out, mode="channelwise", backend="cg", engine="cuequivariance").to(device)
        return m, m.weight_numel
    return tp_bench.build(impl, in1, in2, out, "channelwise", device)


def tp_case_bytes(L: int, N: int, C: int, weight_numel: int) -> float:
    """Rough peak bytes of a forward + backward: inputs, weights, output and their gradients,
    and a few output-sized intermediates (float32)."""
    d = C * (L + 1) ** 2
    return 4.0 * N * (6 * d + (L + 1) ** 2 + 2 * weight_numel)


def time_tp(clock: Clock, m, dims: tuple, N: int, cap: float) -> dict:
    """``{"fwd": ..., "fb": ...}`` of module ``m`` on random inputs of widths ``dims`` (x1, x2,
    weight) and ``N`` samples (their memory goes back when this returns)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x1, x2, w = (torch.randn(N, d, generator=g).to(clock.device).requires_grad_() for d in dims)

    def fwd():
        with torch.no_grad():
            m(x1, x2, w)

    def fb():
        y = m(x1, x2, w)
        torch.autograd.grad(y.square().sum(), (x1, x2, w))

    return {"fwd": clock.median(fwd, budget=cap), "fb": clock.median(fb, budget=cap)}


def run_tp(clock: Clock, a, log) -> list[dict]:
    device = clock.device
    rows, built, slow, build_s = [], {}, {}, {}
    impls = tp_impls(device)
    limit = a.mem_fraction * memory_bytes(device)
    for C in a.tp_C:
        for L in a.tp_L:
            numel = TensorProduct(tp_bench.irreps_upto(L, C), tp_bench.irreps_upto(L, 1),
                                  tp_bench.irreps_upto(L, C), mode="channelwise", backend="cg").weight_numel
            for impl in impls:
                built.clear()  # one module at a time: the last one's memory goes back
                _free_memory(device)
                for N in a.tp_N:
                    row = {"part": "tp", "impl": impl, "L": L, "N": N, "C": C}
                    rows.append(row)
                    why = None
                    if clock.left() < 0:
                        why = "time guard (--max-seconds)"
                    elif impl == "e3nn" and L > a.e3nn_max_L:
                        why = f"e3nn above L = {a.e3nn_max_L} (--e3nn-max-L)"
                    elif tp_case_bytes(L, N, C, numel) > limit:
                        why = f"memory (est. {tp_case_bytes(L, N, C, numel) / 1e9:.0f} GB)"
                    elif slow.get((impl, N, C), 0) > a.tp_cap:
                        why = f"previous L over {a.tp_cap:.0f} s per call"
                    elif impl not in built and 3 * build_s.get(impl, 0.0) > clock.left():
                        # cp's CP-ALS factors take minutes at high L unless cached (MLIP_CACHE_DIR)
                        why = f"build est. {3 * build_s[impl]:.0f} s (previous L: {build_s[impl]:.0f} s)"
                    if why:
                        row["skipped"] = why
                        continue
                    try:
                        if impl not in built:
                            t = time.perf_counter()
                            built[impl] = tp_build(impl, L, C, device)
                            row["build_s"] = build_s[impl] = time.perf_counter() - t
                        m, numel_impl = built[impl]
                        row.update(time_tp(clock, m, (C * (L + 1) ** 2, (L + 1) ** 2, numel_impl), N, a.tp_cap))
                        slow[(impl, N, C)] = row["fb"]["s"]
                    except Exception as exc:  # noqa: BLE001 - a case that fails is reported, the sweep goes on
                        row["skipped"] = ("out of memory" if _oom(exc) else f"{type(exc).__name__}: {exc}")[:160]
                        built.clear()
                        _free_memory(device)
                    log(row)
    built.clear()
    _free_memory(device)
    return rows


def warm_cp_cache(Ls=range(1, 9)) -> None:
    """Compute cp's CP-ALS factors of every product this script builds (the sweep's L = 1..8, the
    MD and training models) into ``MLIP_CACHE_DIR`` (``gpu.sh wheels`` carries them to the GPU
    machine: at L = 8 they take minutes on one core)."""
    for L in Ls:
        t = time.perf_counter()
        tp_build("cp", L, 1, torch.device("cpu"))
        print(f"cp factors, L = {L}: {time.perf_counter() - t:.0f} s", flush=True)
    for L in (1, 2):
        md_model(L, "cp", "torch", torch.device("cpu"))
        mlip.Potential(mlip.PotentialConfig(elements=["H", "C", "O"], r_max=5.0, num_channels=8, l_max=L,
                                            correlation=3, num_layers=2, tp_backend="cp"))


# -- MD throughput ----------------------------------------------------------------------------
def md_model(l_max: int, backend: str, engine: str, device: torch.device) -> mlip.Potential:
    """The model of benchmarks/md.py (OURS_WORKER's configuration) on ``device``."""
    cfg = mlip.PotentialConfig(elements=["Cu"], r_max=5.0, num_channels=64, l_max=l_max, correlation=3,
                               num_layers=2, num_radial=8, radial_mlp=[64, 64, 64], avg_num_neighbors=42.0,
                               tp_backend=backend, dtype="float32")
    model = mlip.Potential(cfg).eval()
    if engine != "torch":
        model = model.with_engine(engine)
    return model.to(device)


def md_engines() -> list[tuple[str, str, str]]:
    """(name, backend, engine) of the mlip rows."""
    out = [(f"mlip-{b}", b, "torch") for b in BACKENDS]
    if cueq.available():
        out.insert(1, ("mlip-cg-cueq", "cg", "cuequivariance"))
    return out


MACE_GPU_WORKER = md_bench.COMMON + md_bench.MACE_MODEL + r'''
import torch
import mace
from mace import data as mdata
from mace.tools import torch_geometric, utils

job = json.loads(sys.argv[1])
device = torch.device(job["device"])
deadline = time.perf_counter() + job["seconds"]
torch.manual_seed(0)
z = utils.AtomicNumberTable([29])

def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()

def build(L, use_cueq):
    kw = {}
    if use_cueq:
        from mace.modules.wrapper_ops import CuEquivarianceConfig
        kw["cueq_config"] = CuEquivarianceConfig(enabled=True, layout="ir_mul", group="O3_e3nn", optimize_all=True,
                                                 conv_fusion=device.type == "cuda")
    return mace_model(L, **kw).float().to(device).eval()

rows, last = [], {}
for case in job["cases"]:
    row = dict(case)
    rows.append(row)
    prev = last.get((case["engine"], case["l_max"]))
    if time.perf_counter() > deadline:
        row["skipped"] = "time guard (--max-seconds)"
        continue
    if prev is not None and "model_ms" not in prev:
        row["skipped"] = "a smaller size failed or was skipped"
        continue
    if prev is not None and prev["model_ms"] * case["atoms"] / prev["atoms"] > 1e3 * job["cap"]:
        row["skipped"] = f"est. {prev['model_ms'] * case['atoms'] / prev['atoms'] / 1e3:.0f} s per call"
        continue
    last[(case["engine"], case["l_max"])] = row
    try:
        model = build(case["l_max"], case["cueq"])
        atoms = structure(case["reps"])
        d = mdata.AtomicData.from_config(mdata.config_from_atoms(atoms), z_table=z, cutoff=5.0)
        batch = {k: v.to(device) if torch.is_tensor(v) else v
                 for k, v in torch_geometric.batch.Batch.from_data_list([d]).to_dict().items()}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        def call():
            model(batch, compute_force=True)
            sync()
        call(); call()
        ts = []
        for _ in range(5):
            t = time.perf_counter(); call(); ts.append(time.perf_counter() - t)
        row.update(model_ms=1e3 * statistics.median(ts), n=len(ts), edges=int(batch["edge_index"].shape[1]),
                   peak_gb=torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else rss_gb(),
                   mace=getattr(mace, "__version__", "?"))
        del model, batch
    except Exception as exc:
        row["skipped"] = ("out of memory" if "out of memory" in str(exc) else f"{type(exc).__name__}: {exc}")[:160]
    if device.type == "cuda":
        torch.cuda.empty_cache()
print(json.dumps(rows))
'''


def mace_python_env(a) -> dict | None:
    """Environment for the mace-torch process (``--mace-path`` first on its PYTHONPATH), or None
    when mace-torch does not import there."""
    env = md_bench._mace_env("wall")
    if a.mace_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(a.mace_path), env.get("PYTHONPATH")]))
    r = subprocess.run([sys.executable, "-c", "import mace, e3nn; print(e3nn.__version__)"], capture_output=True,
                       text=True, env=env)
    return env if r.returncode == 0 else None


def time_md(clock: Clock, model, graph, cap: float) -> tuple[dict, float]:
    """(timing, peak GB) of energy + forces of ``graph``: CUDA's peak allocation, or the process's
    peak RSS on the CPU."""
    if clock.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(clock.device)
    t = clock.median(lambda: model(graph, forces=True), budget=cap)
    peak = torch.cuda.max_memory_allocated(clock.device) / 1e9 if clock.device.type == "cuda" else _rss_gb()
    return t, peak


def run_md(clock: Clock, a, log) -> list[dict]:
    device = clock.device
    end = clock.part_deadline
    clock.begin(0.4)  # mace-torch first, in its own process, with 40 % of the part's time
    rows = run_mace(clock, a, log)
    clock.part_deadline = end
    limit = a.mem_fraction * memory_bytes(device)
    history: dict[tuple, dict] = {}  # (engine, l_max) -> its row at the previous size
    for target in a.md_sizes:  # sizes outer: l_max 2 at 10k atoms (a target) before anything at 100k
        reps = md_bench.fcc_reps(target)
        n_atoms = 4 * reps[0] * reps[1] * reps[2]
        atoms = graph = None
        for L in a.md_lmax:
            for name, backend, engine in md_engines():
                row = {"part": "md", "engine": name, "l_max": L, "atoms": n_atoms}
                rows.append(row)
                prev = history.get((name, L))
                est = prev["peak_gb"] * 1e9 * n_atoms / prev["atoms"] if prev else 0.0
                if clock.left() < 0:
                    row["skipped"] = "time guard (--max-seconds)"
                elif prev is None and target != a.md_sizes[0]:
                    row["skipped"] = "a smaller size failed or was skipped"
                elif est > limit:
                    row["skipped"] = f"memory (est. {est / 1e9:.0f} GB)"
                elif prev and prev["model_ms"] * n_atoms / prev["atoms"] > 1e3 * a.md_cap:
                    row["skipped"] = f"est. {prev['model_ms'] * n_atoms / prev['atoms'] / 1e3:.0f} s per call"
                if "skipped" in row:
                    log(row)
                    continue
                try:
                    if graph is None:
                        atoms = md_bench_structure(reps)
                        t = time.perf_counter()
                        graph = mlip.atoms_to_graph(atoms, 5.0)
                        graph_ms = 1e3 * (time.perf_counter() - t)
                        graph = graph.to(device)
                    t, peak = time_md(clock, md_model(L, backend, engine, device), graph, a.md_cap)
                    row.update(edges=int(graph.edge_index.shape[1]), graph_ms=graph_ms, model_ms=1e3 * t["s"],
                               n=t["n"], peak_gb=peak, atom_steps_per_s=n_atoms / t["s"])
                    history[(name, L)] = row
                except Exception as exc:  # noqa: BLE001
                    row["skipped"] = ("out of memory" if _oom(exc) else f"{type(exc).__name__}: {exc}")[:160]
                _free_memory(device)
                log(row)
        del atoms, graph
        _free_memory(device)
    return rows


def md_bench_structure(reps):
    """The rattled fcc Cu of benchmarks/md.py (its worker's ``structure``)."""
    scope: dict = {}
    exec(md_bench.COMMON, scope)  # noqa: S102 - md.py's shared worker code, defined once there
    return scope["structure"](reps)


def _rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def run_mace(clock: Clock, a, log) -> list[dict]:
    if a.no_mace:
        return []
    variants = [False, True] if cueq.available() else [False]
    cases = [{"part": "md", "engine": "mace-cueq" if c else "mace", "cueq": c, "l_max": L,
              "reps": md_bench.fcc_reps(n), "atoms": 4 * int(np.prod(md_bench.fcc_reps(n)))}
             for n in a.md_sizes for L in a.md_lmax for c in variants]
    env = mace_python_env(a)
    if env is None:
        rows = [dict(c, skipped="mace-torch does not import (see --mace-path)") for c in cases]
        for r in rows:
            log(r)
        return rows
    # the largest size only where a smaller one of the same variant ran: done inside the worker
    seconds = max(clock.left(), 0.0)
    job = {"device": str(clock.device), "cases": cases, "seconds": seconds, "cap": a.md_cap}
    res = md_bench.run_case(sys.executable, MACE_GPU_WORKER, job, env, timeout=seconds + 120)
    if isinstance(res, dict):  # an error of the whole process
        rows = [dict(c, skipped=res.get("error", "failed")[:160]) for c in cases]
    else:
        rows = res
    for r in rows:
        if "model_ms" in r:
            r["atom_steps_per_s"] = r["atoms"] / (r["model_ms"] / 1e3)
        log(r)
    return rows


# -- training steps ---------------------------------------------------------------------------
def ethanol_frames():
    """(graphs, energies, forces) of the bundled 200 rMD17 ethanol frames."""
    import ase.io

    frames = ase.io.read(ETHANOL, ":")
    graphs, energies, forces = [], [], []
    for at in frames:
        results = at.calc.results if at.calc is not None else {}
        e = at.info.get("Energy", at.info.get("energy", results.get("energy")))
        f = at.arrays.get("forces", results.get("forces"))
        at.pbc = False
        graphs.append(mlip.atoms_to_graph(at, 5.0))
        energies.append(float(e))
        forces.append(np.asarray(f, dtype=np.float64))
    return graphs, energies, forces


def time_train(clock: Clock, model, batch, ref_e, ref_f, a) -> dict:
    """Median seconds of one optimizer step: energy + force loss (forces with create_graph),
    backward, Adam."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        out = model(batch, forces=True, create_graph=True)
        loss = (out["energy"] - ref_e).square().mean() + (out["forces"] - ref_f).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return clock.median(step, warmup=a.train_warmup, repeats=a.train_steps, budget=a.md_cap)


def run_train(clock: Clock, a, log) -> list[dict]:
    device = clock.device
    graphs, energies, forces = ethanol_frames()
    e_mean = float(np.mean(energies))
    rows = []
    for batch_size in a.train_batch:
        idx = list(range(batch_size))
        batch = mlip.batch_graphs([graphs[i] for i in idx]).to(device)
        ref_e = torch.tensor([energies[i] - e_mean for i in idx], dtype=torch.float32, device=device)
        ref_f = torch.from_numpy(np.concatenate([forces[i] for i in idx])).float().to(device)
        for name, backend, engine in md_engines():
            row = {"part": "train", "engine": name, "batch": batch_size, "atoms": int(batch.num_nodes)}
            rows.append(row)
            if clock.left() < 0:
                row["skipped"] = "time guard (--max-seconds)"
                log(row)
                continue
            try:
                cfg = mlip.PotentialConfig(elements=["H", "C", "O"], r_max=5.0, num_channels=a.train_channels,
                                           l_max=a.train_lmax, correlation=3, num_layers=2, tp_backend=backend,
                                           dtype="float32")
                model = mlip.Potential(cfg)
                if engine != "torch":
                    model = model.with_engine(engine)
                t = time_train(clock, model.to(device).train(), batch, ref_e, ref_f, a)
                row.update(step_ms=1e3 * t["s"], n=t["n"], steps_per_s=1.0 / t["s"])
            except Exception as exc:  # noqa: BLE001
                row["skipped"] = ("out of memory" if _oom(exc) else f"{type(exc).__name__}: {exc}")[:160]
            _free_memory(device)
            log(row)
    return rows


# -- report -----------------------------------------------------------------------------------
def cpu_md_reference() -> dict:
    """This repository's CPU MD rows (benchmarks/results/md-s5b.json: 2-core Xeon, 1 thread):
    ``(engine, l_max, atoms) -> atom-steps/s``."""
    path = ROOT / "benchmarks" / "results" / "md-s5b.json"
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {(r["engine"], r["l_max"], r["atoms"]): r["atom_steps_per_s"] for r in rows if "atom_steps_per_s" in r}


def _ms(entry) -> str:
    if not entry:
        return "–"
    v = entry["s"] * 1e3
    return f"{v:,.2f}" if v < 10 else f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, checked on these rows (same run)."""
    out = []
    md = {(r["engine"], r["l_max"], r["atoms"]): r for r in rows if r["part"] == "md" and "model_ms" in r}
    sizes = sorted({r["atoms"] for r in rows if r["part"] == "md"})
    mid = [n for n in sizes if 5000 <= n <= 20000]
    for n in mid:
        ours, peer = md.get(("mlip-cg-cueq", 2, n)), md.get(("mace-cueq", 2, n))
        if ours and peer:
            ratio = ours["atom_steps_per_s"] / peer["atom_steps_per_s"]
            out.append(f"cg on cuEquivariance vs mace-torch with cuEquivariance, MD at {n:,} atoms, l_max 2: "
                       f"{ratio:.2f}x ({'met' if ratio >= 1 else 'missed'}; target >= 1)")
        else:
            out.append(f"cg on cuEquivariance vs mace-torch with cuEquivariance at {n:,} atoms, l_max 2: not measured")
    tp = {(r["impl"], r["L"], r["N"], r["C"]): r for r in rows if r["part"] == "tp" and "fb" in r}
    for (impl, L, N, C), r in sorted(tp.items(), key=lambda kv: kv[0][1:]):
        if impl != "grid" or L < 6 or ("cg-cueq", L, N, C) not in tp:
            continue
        ratio = tp[("cg-cueq", L, N, C)]["fb"]["s"] / r["fb"]["s"]
        out.append(f"grid vs cg on cuEquivariance, forward + backward, L = {L}, N = {N:,}, C = {C}: {ratio:.2f}x "
                   f"({'met' if ratio >= 3 else 'missed'}; target >= 3)")
    ref = cpu_md_reference()
    for (eng, L, n), r in sorted(md.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        cpu = ref.get((eng, L, n))
        if cpu and n >= 1000:
            ratio = r["atom_steps_per_s"] / cpu
            out.append(f"{eng} on this device vs the 2-core CPU (benchmarks/results/md-s5b.json), {n:,} atoms, "
                       f"l_max {L}: {ratio:.1f}x ({'met' if ratio > 1 else 'missed'}; target > 1)")
    return out


def report(result: dict) -> str:
    m, rows = result["meta"], result["rows"]
    lines = [f"## GPU run (`benchmarks/gpu.py`, {m['device_name']})", "",
             f"Device: **{m['device_name']}** ({m['device']}); torch {m['torch']} (CUDA {m.get('cuda') or '–'}), "
             f"cuEquivariance {m.get('cuequivariance') or 'not installed'}, e3nn {m.get('e3nn')}; "
             f"Python {m['python']}; "
             f"{m['date']}. Command: `{m['command']}` (JSON: `{m['out']}`). Timing: "
             + ("CUDA events around each call (launches included)" if m["device"].startswith("cuda")
                else "time.perf_counter") + ", median after warm-up. Wall time of the run: "
             f"{m['seconds']:.0f} s" + (" — the time guard skipped cases (marked)." if m.get("guard_hit") else "."), ""]
    t = targets(rows)
    if t:
        lines += ["Targets (issue 15), from this run:", ""] + [f"- {x}" for x in t] + [""]
    tp = [r for r in rows if r["part"] == "tp"]
    if tp:
        impls = list(dict.fromkeys(r["impl"] for r in tp))
        lines += ["### Tensor products (channelwise, outputs up to L, float32, per-sample weights; ms)", ""]
        for N, C in dict.fromkeys((r["N"], r["C"]) for r in tp):
            by = {(r["impl"], r["L"]): r for r in tp if (r["N"], r["C"]) == (N, C)}
            Ls = sorted({r["L"] for r in tp if (r["N"], r["C"]) == (N, C)})
            lines += [f"**N = {N:,}, C = {C}: forward / forward + backward**", "",
                      "| L | " + " | ".join(impls) + " | cg-cueq / grid (f+b) |", "|---" * (len(impls) + 2) + "|"]
            for L in Ls:
                cells = []
                for i in impls:
                    r = by.get((i, L), {})
                    cells.append(f"{_ms(r.get('fwd'))} / {_ms(r.get('fb'))}" if "fb" in r
                                 else f"skipped ({r['skipped']})" if "skipped" in r else "–")
                a_, b_ = by.get(("cg-cueq", L), {}).get("fb"), by.get(("grid", L), {}).get("fb")
                ratio = f"{a_['s'] / b_['s']:.2f}x" if a_ and b_ else "–"
                lines.append(f"| {L} | " + " | ".join(cells) + f" | {ratio} |")
            lines.append("")
    md = [r for r in rows if r["part"] == "md"]
    if md:
        ref = cpu_md_reference()
        lines += ["### MD throughput (energy + forces, float32, fcc Cu, r_max 5 Å, model of `benchmarks/md.py`)", "",
                  "| l_max | atoms | engine | edges | E+F ms | atom-steps/s | vs mace-torch | vs mace-torch + cueq "
                  "| vs 2-core CPU | peak GB |", "|---|---|---|---|---|---|---|---|---|---|"]
        ok = {(r["engine"], r["l_max"], r["atoms"]): r for r in md if "model_ms" in r}
        for r in sorted(md, key=lambda r: (r["l_max"], r["atoms"])):
            head = f"| {r['l_max']} | {r['atoms']:,} | {r['engine']} |"
            if "model_ms" not in r:
                lines.append(f"{head} – | skipped ({r.get('skipped', '?')}) | – | – | – | – | – |")
                continue
            vs = []
            for peer in ("mace", "mace-cueq"):
                p = ok.get((peer, r["l_max"], r["atoms"]))
                vs.append(f"{r['atom_steps_per_s'] / p['atom_steps_per_s']:.2f}x"
                          if p and not r["engine"].startswith("mace") else "–")
            cpu = ref.get((r["engine"], r["l_max"], r["atoms"]))
            vs.append(f"{r['atom_steps_per_s'] / cpu:.1f}x" if cpu else "–")
            lines.append(f"{head} {r.get('edges', 0):,} | {r['model_ms']:,.1f} | {r['atom_steps_per_s']:,.0f} | "
                         + " | ".join(vs) + f" | {r.get('peak_gb', 0):.2f} |")
        lines.append("")
    tr = [r for r in rows if r["part"] == "train"]
    if tr:
        lines += [f"### Training steps (rMD17 ethanol batches, {m['train_model']}, float32, Adam; energy + force "
                  "loss, forces with create_graph)", "", "| batch | atoms | engine | step ms | steps/s |",
                  "|---|---|---|---|---|"]
        for r in tr:
            if "step_ms" in r:
                lines.append(f"| {r['batch']} | {r['atoms']} | {r['engine']} | {r['step_ms']:.1f} | "
                             f"{r['steps_per_s']:.1f} |")
            else:
                lines.append(f"| {r['batch']} | {r['atoms']} | {r['engine']} | skipped ({r.get('skipped')}) | – |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (a check that every part runs: L 1-2, N 256, C 8; 32 atoms; 2 train steps)")
    p.add_argument("--parts", nargs="+", default=["tp", "md", "train"], choices=["tp", "md", "train"])
    p.add_argument("--max-seconds", type=float, default=330.0,
                   help="after this many seconds every remaining case is skipped (and marked so)")
    p.add_argument("--mem-fraction", type=float, default=0.6,
                   help="skip a case predicted to need more than this fraction of the device's memory")
    p.add_argument("--tp-L", type=int, nargs="+", help="degrees (default 1..8)")
    p.add_argument("--tp-N", type=int, nargs="+", help="samples (default 10000 100000)")
    p.add_argument("--tp-C", type=int, nargs="+", help="channels (default 32 128)")
    p.add_argument("--tp-cap", type=float, default=2.0,
                   help="seconds: an implementation slower than this per call stops at that L")
    p.add_argument("--e3nn-max-L", type=int, default=6, help="highest L timed for e3nn (its build is slow)")
    p.add_argument("--md-sizes", type=int, nargs="+", help="approximate atoms (default 1000 10000 100000)")
    p.add_argument("--md-lmax", type=int, nargs="+", help="model sizes (default 1 2)")
    p.add_argument("--md-cap", type=float, default=5.0, help="seconds: skip a case predicted slower per call")
    p.add_argument("--mace-path", type=Path, default=None,
                   help="folder with mace-torch and e3nn 0.4.4 (pip install --target), first on the PYTHONPATH "
                   "of the mace-torch process; default: whatever that process imports")
    p.add_argument("--no-mace", action="store_true", help="do not run mace-torch")
    p.add_argument("--train-batch", type=int, nargs="+", help="frames per batch (default 5 32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    p.add_argument("--report-only", type=Path, metavar="JSON",
                   help="measure nothing: write the README section of an earlier run's JSON (e.g. one "
                   "brought back from the GPU machine) and print it")
    a = p.parse_args(argv)
    if a.report_only is not None:
        result = json.loads(a.report_only.read_text())
        result["meta"]["out"] = os.path.relpath(a.report_only, ROOT)
        text = report(result)
        print(text)
        if not a.no_readme:
            write_readme_section("gpu" if result["meta"]["device"].startswith("cuda") else "gpu-cpu", text)
        return 0
    q = a.quick
    a.tp_L = a.tp_L or ([1, 2] if q else list(range(1, 9)))
    a.tp_N = a.tp_N or ([256] if q else [10_000, 100_000])
    a.tp_C = a.tp_C or ([8] if q else [32, 128])
    a.md_sizes = a.md_sizes or ([32] if q else [1000, 10_000, 100_000])
    a.md_lmax = a.md_lmax or ([1] if q else [1, 2])
    a.train_batch = a.train_batch or ([5] if q else [5, 32])
    a.train_channels, a.train_lmax = (8, 1) if q else (32, 2)
    a.train_warmup, a.train_steps = (1, 2) if q else (3, 10)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here (torch.cuda.is_available() is False)")
    t0 = time.perf_counter()
    clock = Clock(device, a.max_seconds, *((1, 3) if q else (2, 5)))

    def log(row):
        keep = {k: v for k, v in row.items() if k not in ("part", "reps", "cueq")}
        print(f"[{time.perf_counter() - t0:6.1f} s] {row['part']}: " + json.dumps(keep, default=str), flush=True)

    rows = []
    parts = [(name, fn, share) for name, fn, share in (("tp", run_tp, 0.45), ("md", run_md, 0.8),
                                                          ("train", run_train, 1.0)) if name in a.parts]
    for k, (_, fn, share) in enumerate(parts):
        clock.begin(1.0 if k == len(parts) - 1 else share)  # the last part gets what is left
        rows += fn(clock, a, log)
    meta = {"device": str(device), "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                                    else f"CPU: {md_bench.machine()['cpu']}"),
            "cuda": torch.version.cuda, "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": "python benchmarks/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "out": str(a.out), "seconds": time.perf_counter() - t0, "max_seconds": a.max_seconds,
            "guard_hit": any("time guard" in str(r.get("skipped", "")) for r in rows),
            "train_model": f"{a.train_channels} channels, l_max {a.train_lmax}, correlation 3, 2 layers, r_max 5 Å",
            "cuequivariance_ops": cueq.cuda_ops_available()}
    for mod in ("e3nn", "cuequivariance"):
        try:
            meta[mod] = __import__(mod).__version__
        except ImportError:
            meta[mod] = None
    result = {"meta": meta, "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(result, indent=1, default=str))
    text = report(result)
    print(text)
    if not (a.no_readme or q):  # a quick run is a check, never a result
        write_readme_section("gpu" if device.type == "cuda" else "gpu-cpu", text)
    if meta["guard_hit"]:
        print(f"gpu.py: the time guard (--max-seconds {a.max_seconds:.0f}) skipped the remaining cases", flush=True)
    print(f"wrote {a.out} ({meta['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training benchmark: accuracy after a wall-clock budget, per TP backend, next to mace-torch.

Data: rMD17 ethanol ``ethanol_train_01.xyz`` (1000 DFT frames), 10% of the frames held out
(random by frame, seed 0) for validation. The same train/val frames are written as extxyz
and given to both codes.

The budget is counted by ``--clock``: ``cpu`` (default) is the CPU time of the training
process (one torch thread by default), so that runs sharing the 2-core machine with other
work, or with each other, still get the same compute; ``wall`` is wall-clock time.

For each mlip backend (``cg``, ``grid``, ``cp``) the same model is trained with
``mlip-train fit`` for the budget in stages (``--minutes 5 15 45``: run to 5 minutes, stop
with a checkpoint, resume to 15, then to 45); after each stage the checkpoint is exported
and evaluated on the held-out frames (energy MAE meV/atom, force MAE meV/Å). The learning
rate is constant after warm-up with reduce-on-plateau, since the step count a budget allows
is not known in advance.

mace-torch (in its own venv, ``benchmarks/.venv-mace``; created with ``python -m venv`` and
``pip install torch==2.13.0 mace-torch`` when missing) trains the same architecture size on
the same files with ``mace_run_train``; the script notes the time (same clock: CPU time of
MACE's process tree from ``/proc``) at which each of MACE's validation lines appears and
reports, per mark, the last validation before it; MACE is stopped at the last mark.

Usage::

    python benchmarks/train.py                                   # full study (about 3 x 65 min + MACE)
    python benchmarks/train.py --backends cg --minutes 1 2 --no-mace --no-readme   # smoke test
    # two at a time on 2 cores, then one report from the JSON files:
    python benchmarks/train.py --backends cg --no-readme --json benchmarks/results/train-cg.json &
    python benchmarks/train.py --backends --json benchmarks/results/train-mace.json --no-readme
    python benchmarks/train.py --merge benchmarks/results/train-*.json

Writes ``benchmarks/results/train.json`` and the section between ``<!-- train:start -->``
and ``<!-- train:end -->`` of ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from _readme import write_readme_section

from mlip.config import backend_names
from mlip.datasets.testing import shared_data_dir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = (shared_data_dir() or Path("$MLIP_SHARED_DATA")) / "rmd17" / "ethanol_train_01.xyz"
MACE_VENV = HERE / ".venv-mace"


def parse_args(argv=None):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA, help="extxyz file with energies and forces")
    p.add_argument("--backends", nargs="*", default=["cg", "grid", "cp"], choices=backend_names(),
                   help="mlip backends to train (none: only MACE)")
    p.add_argument("--minutes", nargs="+", type=float, default=[5, 15, 45],
                   help="evaluation marks (minutes of --clock)")
    p.add_argument("--clock", default="cpu", choices=["cpu", "wall"],
                   help="budget clock: CPU time of the training process, or wall-clock time")
    p.add_argument("--merge", nargs="+", type=Path, default=None,
                   help="only merge these result JSON files into --json and the README section")
    p.add_argument("--note", action="append", help="with --merge: a note line for the README section (repeatable)")
    p.add_argument("--work", type=Path, default=HERE / "results" / "train_runs", help="run folders")
    p.add_argument("--json", type=Path, default=HERE / "results" / "train.json")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each training process")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--l-max", type=int, default=2)
    p.add_argument("--correlation", type=int, default=3)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--r-max", type=float, default=5.0)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--no-mace", action="store_true", help="skip mace-torch")
    p.add_argument("--mace-max-ell", type=int, default=3,
                   help="MACE's edge spherical-harmonic degree (its default 3; mlip's edges use l_max)")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the README section (smoke runs)")
    p.add_argument("--step-times", action="store_true",
                   help="only time one training step of each --backends model in one process (engines alternating, "
                        "--threads threads, CPU time, median of 35 after 5 warm-ups) on --batch-size-frame batches "
                        "of --data: the per-step cost without other jobs on the machine, to read the step counts of "
                        "runs made under different load")
    return p.parse_args(argv)


# -- data -------------------------------------------------------------------------------------
def split_frames(data: Path, work: Path) -> tuple[Path, Path, int, int]:
    """Write train.xyz / val.xyz (90/10 by frame, seed 0); returns paths and sizes."""
    import ase.io
    import numpy as np

    frames = read_labelled(data)
    perm = np.random.default_rng(0).permutation(len(frames))
    n_val = round(0.1 * len(frames))
    val_idx, train_idx = sorted(perm[:n_val]), sorted(perm[n_val:])
    work.mkdir(parents=True, exist_ok=True)
    train, val = work / "train.xyz", work / "val.xyz"
    for path, idx in ((train, train_idx), (val, val_idx)):
        ase.io.write(path, [frames[i] for i in idx], format="extxyz")
    return train, val, len(train_idx), len(val_idx)


def read_labelled(data: Path, index=":") -> list:
    """Frames of ``data`` with their energy in ``info["energy"]`` and forces in
    ``arrays["forces"]`` (rMD17 stores them as ``Energy`` and a calculator's forces), no cell."""
    import ase.io

    out = []
    for a in ase.io.read(data, index):
        energy = float(a.info["Energy"]) if "Energy" in a.info else a.get_potential_energy()
        forces = a.arrays["forces"].copy() if "forces" in a.arrays else a.get_forces()
        a.calc = None
        a.pbc = False
        a.info = {"energy": energy}
        a.arrays["forces"] = forces
        out.append(a)
    return out


# -- mlip ------------------------------------------------------------------------------------
#: the loss section of the mlip-train config (and of --step-times' steps)
LOSS = {"energy_weight": 1.0, "forces_weight": 10.0}


def model_options(args, backend: str) -> dict:
    """The model section of the mlip-train config (and of --step-times' models)."""
    return {"num_channels": args.channels, "l_max": args.l_max, "correlation": args.correlation,
            "num_layers": args.layers, "r_max": args.r_max, "tp_backend": backend, "dtype": args.dtype,
            "radial_mlp": [64, 64, 64]}


def step_times(args) -> dict[str, float]:
    """Median CPU time (ms) of one training step per backend, all models in this process,
    taking turns: the trainer's loss (:func:`mlip.train.metrics.loss_terms`, weighted by
    :data:`LOSS`), parameter gradients, an Adam step."""
    import statistics

    import numpy as np
    import torch

    import mlip
    from mlip.allocator import tune_cpu_allocator
    from mlip.graph import batch_graphs
    from mlip.train.metrics import loss_terms

    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    def labelled_graph(a):  # the targets the trainer's graphs carry (mlip.train.data.GraphTransform)
        g = mlip.atoms_to_graph(a, args.r_max)
        g.ref_energy = torch.tensor([a.info["energy"]], dtype=torch.float64)
        g.ref_forces = torch.from_numpy(np.asarray(a.arrays["forces"], dtype=np.float64))
        g.natoms = torch.tensor([len(a)])
        return g

    b = args.batch_size
    frames = read_labelled(args.data, f":{5 * b}")
    batches = [batch_graphs([labelled_graph(a) for a in frames[i:i + b]]) for i in range(0, len(frames), b)]
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    models = {}
    for backend in args.backends:
        model = mlip.Potential(mlip.PotentialConfig(elements=elements, **model_options(args, backend))).train()
        models[backend] = (model, torch.optim.Adam(model.parameters(), lr=args.lr))
    times: dict[str, list[float]] = {k: [] for k in models}
    for step in range(40):
        batch = batches[step % len(batches)]
        for backend, (model, opt) in models.items():
            t0 = time.process_time()
            out = model(batch, forces=True, stress=False, create_graph=True)
            t = loss_terms(out, batch, use_stress=False)
            loss = (LOSS["energy_weight"] * t["e"] / batch.num_graphs
                    + LOSS["forces_weight"] * t["f"] / (3 * batch.num_nodes))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step >= 5:
                times[backend].append(time.process_time() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def mlip_config(args, backend: str, train: Path, val: Path, out: Path) -> dict:
    """The mlip-train config of one backend."""
    return {
        "out": str(out),
        "data": {"train": [str(train)], "val": [str(val)], "train_split": None, "val_split": None, "pbc": "none",
                 "block_size": 64, "cache_graphs": True, "cache_dir": str(args.work / "data_cache"),
                 "split_fractions": [1.0, 0.0, 0.0]},
        "model": model_options(args, backend),
        "loss": dict(LOSS),
        "optim": {"lr": args.lr, "ema_decay": 0.99, "clip_grad_norm": 100.0},
        "schedule": {"kind": "plateau", "warmup_steps": 50, "plateau_patience": 5, "plateau_factor": 0.8},
        "train": {"max_steps": 10**9, "batch_size": args.batch_size, "val_every": 100, "checkpoint_every": 200,
                  "log_every": 20, "threads": args.threads, "progress": False, "plots": True, "device": "cpu",
                  "clock": args.clock},
    }


def run_mlip(args, backend: str, train: Path, val: Path) -> list[dict]:
    """Train one backend in stages to each mark; evaluate after each. Returns one row per mark."""
    import yaml

    out = args.work / f"mlip-{backend}"
    cfg_path = args.work / f"mlip-{backend}.yaml"
    cfg_path.write_text(yaml.safe_dump(mlip_config(args, backend, train, val, out)))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    rows = []
    for k, minutes in enumerate(args.minutes):
        cmd = [sys.executable, "-m", "mlip.train", "fit", str(cfg_path), f"train.max_minutes={minutes}"]
        cmd += ["--resume"] if k else ["--overwrite"]
        t0 = time.time()
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(f"mlip {backend} stage {minutes} min failed:\n{p.stderr[-3000:]}")
        model = out / f"model_{minutes:g}min.pt"
        # this stage's model replaces one an earlier run of the same --work left there
        p = subprocess.run([sys.executable, "-m", "mlip.train", "export", str(out / "checkpoints" / "last.pt"),
                            "-o", str(model), "--overwrite"], cwd=ROOT, capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(f"mlip {backend} export after {minutes} min failed:\n{p.stderr[-3000:]}")
        metrics = evaluate(model, val, args)
        ck = _checkpoint_step(out / "checkpoints" / "last.pt")
        rows.append({"code": "mlip", "backend": backend, "minutes": minutes, "steps": ck, **metrics,
                     "stage_wall_s": time.time() - t0})
        print(f"mlip {backend:5s} {minutes:5g} min: step {ck}, E MAE {metrics['energy_mae']:.2f} meV/atom, "
              f"F MAE {metrics['forces_mae']:.1f} meV/Å", flush=True)
    return rows


def _checkpoint_step(path: Path) -> int:
    from mlip.train import load_checkpoint

    return int(load_checkpoint(path)["step"])


def evaluate(model: Path, val: Path, args) -> dict:
    """Energy / force MAE of an mlip model file on the held-out frames."""
    import mlip
    from mlip.train.data import resolve_dataset
    from mlip.train.evaluate import evaluate_dataset

    paths = resolve_dataset([str(val)], cache_dir=args.work / "data_cache", split_fractions=(1.0, 0.0, 0.0))
    m, _ = evaluate_dataset(mlip.load(model), paths, None)
    return {k: m[k] for k in ("energy_mae", "forces_mae", "energy_rmse", "forces_rmse", "forces_cos", "efwt")}


# -- mace -------------------------------------------------------------------------------------
def mace_python() -> Path:
    """The MACE venv's python, creating the venv (torch 2.13.0 + mace-torch) when missing."""
    py = MACE_VENV / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import mace"], capture_output=True).returncode == 0:
        return py
    subprocess.run([sys.executable, "-m", "venv", str(MACE_VENV)], check=True)
    subprocess.run([py, "-m", "pip", "install", "torch==2.13.0", "mace-torch"], check=True)
    return py


def session_cpu_seconds(sid: int) -> float:
    """User + system CPU seconds of every live process of session ``sid`` and of its reaped children."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        if int(f[3]) == sid:
            total += int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if int(stat.parent.name) == sid else 0)
    return total / tick


def run_mace(args, train: Path, val: Path) -> list[dict]:
    """Train mace-torch for the last mark; report its last validation before each mark."""
    py = mace_python()
    out = args.work / "mace"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(py.parent / "mace_run_train"), "--name", "ethanol", "--train_file", str(train),
           "--valid_file", str(val), "--energy_key", "energy", "--forces_key", "forces", "--model", "MACE",
           "--num_channels", str(args.channels), "--max_L", str(args.l_max), "--max_ell", str(args.mace_max_ell),
           "--correlation", str(args.correlation),
           "--num_interactions", str(args.layers), "--r_max", str(args.r_max), "--batch_size", str(args.batch_size),
           "--valid_batch_size", "32", "--lr", str(args.lr), "--energy_weight", "1", "--forces_weight", "10",
           "--E0s", "average", "--ema", "--ema_decay", "0.99", "--max_num_epochs", "100000",
           "--eval_interval", "1", "--error_table", "PerAtomMAE", "--default_dtype", args.dtype,
           "--device", "cpu", "--seed", "0", "--work_dir", str(out), "--scheduler_patience", "5"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    log = open(out / "stdout.txt", "w")
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    raw = (lambda: session_cpu_seconds(proc.pid)) if args.clock == "cpu" else (lambda: time.time() - t0)
    start = [None]  # the clock when MACE logs "Started training": setup is not counted, as for mlip

    def clock() -> float:
        if start[0] is None:
            if "Started training" not in (out / "stdout.txt").read_text(errors="replace"):
                return 0.0
            start[0] = raw()
        return raw() - start[0]

    seen: list[tuple[float, dict]] = []
    results = None
    try:
        while clock() < 60 * max(args.minutes) and proc.poll() is None:
            time.sleep(2)
            if results is None and (out / "results").exists():
                results = next(iter(sorted((out / "results").glob("*_train.txt"))), None)
            if results is not None:
                lines = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
                evals = [x for x in lines if x.get("mode") == "eval"]
                now = clock()
                for e in evals[len(seen):]:
                    seen.append((now, e))
        if proc.poll() not in (None, 0) and not seen:
            raise RuntimeError(f"mace_run_train failed (exit {proc.returncode}); see {out / 'stdout.txt'}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        log.close()
    rows = []
    for minutes in args.minutes:
        before = [e for t, e in seen if t <= 60 * minutes]
        e = before[-1] if before else {}
        rows.append({"code": "mace-torch", "backend": "cg (e3nn)", "minutes": minutes, "epoch": e.get("epoch"),
                     "energy_mae": 1000 * e["mae_e_per_atom"] if "mae_e_per_atom" in e else None,
                     "forces_mae": 1000 * e["mae_f"] if "mae_f" in e else None})
        print(f"mace        {minutes:5g} min: {rows[-1]}", flush=True)
    return rows


# -- report ----------------------------------------------------------------------------------
def write_readme(rows: list[dict], metas: list[dict]) -> None:
    """Rewrite the train section of benchmarks/README.md."""
    fmt = lambda v, d: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    meta = metas[0]
    clock = meta.get("clock", "wall")
    lines = ["## Training accuracy per time budget (`benchmarks/train.py`)", ""]
    lines += [f"Command: `{m['command']}` ({m['date']}, {m['machine']}; load average {m['load']})." for m in metas]
    lines += ["", f"Data: rMD17 ethanol, {meta['n_train']} training / {meta['n_val']} held-out frames (10% by frame, "
              f"seed 0). Model: {meta['model']}. Metrics on the held-out frames. Minutes are "
              + ("CPU minutes of the training process." if clock == "cpu" else "wall-clock minutes."), "",
              "| code | backend | minutes | steps / epoch | E MAE (meV/atom) | F MAE (meV/Å) | F MAE vs mace-torch |",
              "|---|---|---:|---:|---:|---:|---:|"]
    mace = {r["minutes"]: r.get("forces_mae") for r in rows if r["code"] == "mace-torch"}
    for r in rows:
        ref, f = mace.get(r["minutes"]), r.get("forces_mae")
        rel = f"{100 * (f / ref - 1):+.0f} %" if ref and f is not None and r["code"] != "mace-torch" else "—"
        lines.append(f"| {r['code']} | {r['backend']} | {r['minutes']:g} | {r.get('steps', r.get('epoch')) or '—'} | "
                     f"{fmt(r.get('energy_mae'), 2)} | {fmt(r.get('forces_mae'), 1)} | {rel} |")
    lines += ["", "JSON: `benchmarks/results/train.json`."] + [f"Note: {n}" for m in metas for n in m.get("notes", [])]
    write_readme_section("train", "\n".join(lines))


def main(argv=None) -> int:
    """Run the study; returns the exit status."""
    args = parse_args(argv)
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        rows = [r for part in parts for r in part["rows"]]
        metas = [part["meta"] for part in parts]
        metas[0] = {**metas[0], "notes": list(args.note or [])}
        args.json.write_text(json.dumps({"meta": metas, "rows": rows}, indent=2))
        if not args.no_readme:
            write_readme(rows, metas)
        print(f"wrote {args.json}")
        return 0
    args.work = args.work.resolve()
    if not args.data.exists():
        print(f"{args.data}: missing (rMD17 ethanol_train_01.xyz)", file=sys.stderr)
        return 1
    if args.step_times:
        for backend, ms in step_times(args).items():
            print(f"mlip {backend:5s}: {ms:.1f} ms per training step (CPU time, median of 35)")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    args.minutes = sorted(args.minutes)
    train, val, n_train, n_val = split_frames(args.data, args.work)
    rows = []
    for backend in args.backends:
        rows += run_mlip(args, backend, train, val)
    if not args.no_mace:
        rows += run_mace(args, train, val)
    import torch

    meta = {"command": "python benchmarks/train.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} CPU cores, {args.threads} threads, "
            f"Python {platform.python_version()}, torch {torch.__version__}",
            "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()), "n_train": n_train, "n_val": n_val,
            "clock": args.clock,
            "model": f"{args.channels} channels, l_max {args.l_max}, correlation {args.correlation}, "
                     f"{args.layers} layers, r_max {args.r_max} Å, {args.dtype}, batch {args.batch_size}, lr {args.lr}"}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    if not args.no_readme:
        write_readme(rows, [meta])
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

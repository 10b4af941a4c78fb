"""``mlip-train``: train, evaluate and export potentials.

Subcommands::

    mlip-train fit CONFIG.yaml [key=value ...] [--resume | --overwrite]
    mlip-train eval MODEL DATA [DATA ...] [--split val] [--out DIR] [--diagnostics]
    mlip-train descriptors MODEL DATA [DATA ...] [--bits 4] [-o INDEX] [--query QDATA --k 10]
    mlip-train export CHECKPOINT -o MODEL
    mlip-train demo [--out runs/demo]

Multi-process: ``torchrun --nproc_per_node N -m mlip.train fit CONFIG.yaml``.
Bad input (config, data, checkpoint) ends with ``mlip-train: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlip.allocator import add_cli_flag, tune_from_cli

__all__ = ["main", "build_parser"]

_FIT_EPILOG = """\
CONFIG is a YAML file with the sections data, model, loss, optim, schedule, train, finetune and the key
out (the run folder); every key has a default, documented in mlip/train/config.py and in the
example mlip/train/configs/ethanol.yaml (print it with `mlip-train fit --example`). Relative
data paths in a YAML file are relative to the file's folder.

Overrides: dotted key=value pairs after CONFIG, values parsed as YAML, e.g.
  mlip-train fit cfg.yaml optim.lr=1e-3 model.tp_backend=grid train.max_steps=5000 out=runs/grid

Outputs in `out`: config.yaml, metrics.csv (+ tensorboard/ when installed), checkpoints/last.pt
and best.pt, model.pt (deployable), metrics.json, learning_curve.png, parity_<split>.png.
A killed run continues with --resume (same CONFIG and overrides; only train.max_steps,
train.max_minutes and other bookkeeping keys may change).
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``mlip-train`` argument parser with its subcommands."""
    p = argparse.ArgumentParser(prog="mlip-train", description="Train, evaluate and export mlip potentials.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    sub = p.add_subparsers(dest="command", required=True, metavar="{fit,eval,export,descriptors,demo}")

    f = sub.add_parser("fit", help="train a potential from a YAML config", description="Train a potential.",
                       epilog=_FIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("config", nargs="?", type=Path, help="YAML config file")
    f.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. optim.lr=1e-3")
    f.add_argument("--resume", action="store_true", help="continue the run in `out` from checkpoints/last.pt")
    f.add_argument("--overwrite", action="store_true", help="start again even if `out` holds a run")
    f.add_argument("--example", action="store_true", help="print the documented example config and exit")
    add_cli_flag(f)

    e = sub.add_parser("eval", help="metrics table and parity plots of a model on data",
                       description="Evaluate a model (or a training checkpoint) on data.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("model", type=Path, help="model file (mlip.save / mlip-train export) or a training checkpoint")
    e.add_argument("data", nargs="+", help="HDF5 shards / shard directories, or extxyz files (converted and cached)")
    e.add_argument("--split", default=None, help="split to evaluate (train, val, test); default: every structure")
    e.add_argument("--batch-size", type=int, default=32, help="structures per batch")
    e.add_argument("--out", type=Path, default=None, help="folder for metrics.json and parity_<name>.png")
    e.add_argument("--cache-dir", type=Path, default=None,
                   help="where converted extxyz files are cached (default: the user cache folder)")
    e.add_argument("--pbc", choices=("auto", "none", "all"), default="none",
                   help="periodicity of converted extxyz frames (none: molecules)")
    e.add_argument("--device", default="cpu", help="torch device")
    e.add_argument("--stress", action="store_true", help="also score stress (3D periodic data with stress)")
    e.add_argument("--diagnostics", action="store_true",
                   help="also print the HTSR alpha of every weight matrix (and write diagnostics.csv to --out)")
    e.add_argument("--min-size", type=int, default=20,
                   help="with --diagnostics: fit alpha only for matrices with at least this many eigenvalues")

    q = sub.add_parser("descriptors", help="TurboQuant index of invariant structure descriptors; similarity search",
                       description="Per-structure invariant descriptors (mean of the scalar node features after "
                       "the last interaction, see mlip.descriptors), compressed with TurboQuant at --bits bits "
                       "per coordinate; optionally search it with the structures of --query.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("model", type=Path, help="model file (mlip.save / mlip-train export)")
    q.add_argument("data", nargs="+", type=Path, help="extxyz file(s) of the structures to index (read with ASE)")
    q.add_argument("--bits", type=int, default=4, help="bits per descriptor coordinate (1..8)")
    q.add_argument("-o", "--output", type=Path, default=None, help="write the index here (torch.save)")
    q.add_argument("--query", type=Path, default=None, help="extxyz file of query structures")
    q.add_argument("--k", type=int, default=10, help="neighbours per query")
    q.add_argument("--seed", type=int, default=0, help="seed of TurboQuant's random rotation")

    x = sub.add_parser("export", help="write the deployable model file of a checkpoint",
                       description="Checkpoint -> model file read by mlip.load, MLIPCalculator, mlip-md and OpenMM.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    x.add_argument("checkpoint", type=Path, help="training checkpoint (checkpoints/last.pt or best.pt)")
    x.add_argument("-o", "--output", type=Path, required=True, help="model file to write")
    x.add_argument("--weights", choices=("ema", "raw"), default="ema",
                   help="ema: moving-average weights (if the run kept them); raw: the optimizer's weights")

    d = sub.add_parser("demo", help="train on the bundled rMD17 ethanol sample, report, then run MD",
                       description="The main job: a small model on 200 rMD17 ethanol frames (bundled), the "
                       "metrics table and plots, then a short NVE MD run with the trained model.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder")
    d.add_argument("--minutes", type=float, default=3.0, help="training wall-clock budget")
    d.add_argument("--steps", type=int, default=3000, help="training steps (the cosine schedule spans them)")
    d.add_argument("--md-steps", type=int, default=400, help="NVE MD steps (0.5 fs) with the trained model")
    d.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for one small molecule)")
    add_cli_flag(d)
    d.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for fit")
    return p


def _fit(args, parser) -> int:
    from .config import load_config
    from .trainer import fit

    if args.example:
        print((Path(__file__).parent / "configs" / "ethanol.yaml").read_text())
        return 0
    if args.config is None:
        parser.error("fit: CONFIG is required (see --example)")
    if args.resume and args.overwrite:
        parser.error("fit: --resume and --overwrite exclude each other")
    cfg = load_config(args.config, args.overrides)
    res = fit(cfg, resume=args.resume, overwrite=args.overwrite)
    if res.model_path is not None:
        print(f"model: {res.model_path} (step {res.step}{', stopped early' if res.stopped_early else ''}); "
              f"run folder {res.out}")
    return 0


def _eval(args) -> int:
    import mlip

    from .data import resolve_dataset
    from .evaluate import evaluate_dataset, format_table
    from .export import model_from_checkpoint
    from .plots import parity_plots

    try:
        model = mlip.load(args.model, device=args.device)
    except ValueError:
        model = model_from_checkpoint(args.model).to(args.device)  # a checkpoint, or a clear error
    if args.cache_dir is None:
        import platformdirs

        args.cache_dir = Path(platformdirs.user_cache_dir("mlip")) / "converted"
    paths = resolve_dataset(list(args.data), cache_dir=args.cache_dir, pbc=args.pbc, split_fractions=(0.9, 0.1, 0.0))
    metrics, pred = evaluate_dataset(model, paths, args.split, batch_size=args.batch_size, device=args.device,
                                     use_stress=args.stress)
    name = args.split or "all"
    print(format_table({name: metrics}))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps({name: metrics}, indent=2))
        parity_plots(pred, args.out / f"parity_{name}.png", title=name)
        print(f"wrote {args.out / 'metrics.json'} and {args.out / f'parity_{name}.png'}")
    if args.diagnostics:
        from .diagnostics import (
            format_diagnostics,
            weight_diagnostics,
            write_diagnostics_csv,
        )

        rows = weight_diagnostics(model, min_size=args.min_size)
        print("\nHTSR alpha per weight matrix (Martin & Mahoney; 2 <= alpha <= 6: heavy-tailed):")
        print(format_diagnostics(rows))
        if args.out is not None:
            print(f"wrote {write_diagnostics_csv(rows, args.out / 'diagnostics.csv')}")
    return 0


def _read_structures(paths):
    from ase.io import read

    atoms = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: no such file")
        frames = read(str(p), index=":")
        for a in frames:
            if a.cell.rank < 3:
                a.pbc = False
        atoms.extend(frames)
    return atoms


def _descriptors(args) -> int:
    import mlip
    from mlip.descriptors import DescriptorIndex, invariant_descriptors

    if not 1 <= args.bits <= 8:
        raise ValueError(f"--bits: expected 1..8, got {args.bits}")
    model = mlip.load(args.model)
    desc = invariant_descriptors(model, _read_structures(args.data))
    index = DescriptorIndex(desc, args.bits, seed=args.seed)
    print(f"{len(index)} structures, {index.dim} invariant (0e) channels, {args.bits} bits: "
          f"{index.bytes_per_descriptor} bytes per descriptor (float32: {index.float32_bytes_per_descriptor})")
    if args.output is not None:
        print(f"wrote {index.save(args.output)}")
    if args.query is not None:
        scores, idx = index.search(invariant_descriptors(model, _read_structures([args.query])), args.k)
        print("query  neighbours (index:score, best first)")
        for i, (s, j) in enumerate(zip(scores.tolist(), idx.tolist())):
            print(f"{i:>5}  " + " ".join(f"{a}:{b:.3f}" for a, b in zip(j, s)))
    return 0


def _export(args) -> int:
    from .export import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.output, weights=args.weights)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mlip-train``; returns the exit status (2 for bad input)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may also follow the options (fit CONFIG --resume a.b=1)
        if args.command in ("fit", "demo") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in ("fit", "demo"):
        tune_from_cli(args)
    try:
        if args.command == "fit":
            return _fit(args, parser)
        if args.command == "eval":
            return _eval(args)
        if args.command == "export":
            return _export(args)
        if args.command == "descriptors":
            return _descriptors(args)
        from .demo import run_demo

        run_demo(args.out, minutes=args.minutes, steps=args.steps, md_steps=args.md_steps, threads=args.threads,
                 overrides=args.overrides)
        return 0
    except (ValueError, FileNotFoundError) as exc:
        print(f"mlip-train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

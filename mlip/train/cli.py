"""``mlip-train``: train, evaluate and export potentials.

Subcommands::

    mlip-train fit CONFIG.yaml [key=value ...] [--resume | --overwrite]
    mlip-train eval MODEL DATA [DATA ...] [--split val] [--out DIR] [--diagnostics]
    mlip-train export CHECKPOINT -o MODEL [--overwrite]
    mlip-train demo [--out runs/demo]

Multi-process: ``torchrun --nproc_per_node N -m mlip.train fit CONFIG.yaml``.
Bad input (config, data, checkpoint) ends with ``mlip-train: error: ...`` and exit status 2.
Results (metrics tables, the files written) go to stdout; progress, notes and warnings to
stderr. The similarity search over structure descriptors is ``python -m mlip.descriptors``.

Start-up: this module imports only the standard library and light mlip modules; each command
imports what it needs when it runs, so ``--help`` and argument errors come back without loading
torch_geometric, e3nn or the model.

This module and :mod:`mlip.train.demo` are entry points: applications above every layer, which
may import :mod:`mlip.calculators` (the demo runs MD through the ASE calculator). The library
modules of :mod:`mlip.train` must not.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import textwrap
from pathlib import Path

from mlip.allocator import add_cli_flag, tune_from_cli

from . import demo
from .metrics import EFWT_TEXT

__all__ = ["main", "build_parser"]

_MAIN_EPILOG = """\
commands:
  mlip-train fit CONFIG.yaml [key=value ...] [--resume | --overwrite]
  mlip-train eval MODEL DATA [DATA ...] [--split val] [--out DIR] [--diagnostics]
  mlip-train export CHECKPOINT -o MODEL [--overwrite]
  mlip-train demo [--out runs/demo]

Multi-process: torchrun --nproc_per_node N -m mlip.train fit CONFIG.yaml
Bad input ends with `mlip-train: error: ...` and exit status 2. Results (metrics tables, files
written) go to stdout; progress, notes and warnings to stderr.
"""

_FIT_EPILOG = """\
CONFIG is a YAML file with the sections data, model, loss, optim, schedule, train, finetune and the key
out (the run folder); every key has a default, documented in mlip/train/config.py and in the
example mlip/train/configs/ethanol.yaml (print it with `mlip-train fit --example`). Relative
data paths in a YAML file are relative to the file's folder.

Overrides: dotted key=value pairs after CONFIG, values parsed as YAML, e.g.
  mlip-train fit cfg.yaml optim.lr=1e-3 model.tp_backend=grid train.max_steps=5000 out=runs/grid

E0s (model.e0s): null or least_squares (fit on the training split), isolated (energies of the
isolated atoms in the data: one-atom, non-periodic structures such as MACE's
config_type=IsolatedAtom frames), average (one energy per atom for every element), or a
mapping {symbol: eV}.

Time budget: with train.max_minutes the run stops when the time is spent or at train.max_steps,
whichever comes first, and a cosine schedule decays over that same budget.

Outputs in `out`: config.yaml, metrics.csv, checkpoints/last.pt and best.pt, model.pt
(deployable: the EMA weights of the best validation), metrics.json, learning_curve.png,
parity_<split>.png. TensorBoard logs (tensorboard/) are written only when the tensorboard
package is installed (pip install 'mlip[tensorboard]'); metrics.csv holds the same numbers.

Stopping: Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes a checkpoint of it,
prints the command that continues the run and exits with status 130 or 143. A killed run
continues with --resume (same CONFIG and overrides; only train.max_steps, train.max_minutes
and other bookkeeping keys may change).
"""

_EVAL_EPILOG = f"""\
Columns of the table: energy MAE and RMSE per atom (meV/atom) and MAE per structure (meV),
force-component MAE and RMSE (meV/Å), F cos (mean cosine between predicted and reference
force of each atom), EFwT, stress MAE (meV/Å³; with --stress).
{textwrap.fill(EFWT_TEXT + ".", 95)}

--out DIR writes metrics.json, predictions_<split>.xyz (extxyz: every structure with
REF_energy and MLIP_energy in eV, REF_forces and MLIP_forces in eV/Å, and with --stress
REF_stress and MLIP_stress in eV/Å³) and parity_<split>.png (<split> is `all` without --split).
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Raw epilogs; ``(default: X)`` after an option's help unless the help names its default
    already or there is none to name."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default in (None, False, argparse.SUPPRESS)
                or action.option_strings == [] and action.nargs in ("*", "+", "?")):
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The ``mlip-train`` argument parser with its subcommands."""
    p = argparse.ArgumentParser(prog="mlip-train", description="Train, evaluate and export mlip potentials.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_MAIN_EPILOG)
    sub = p.add_subparsers(dest="command", required=True, metavar="{fit,eval,export,demo}")

    f = sub.add_parser("fit", help="train a potential from a YAML config", description="Train a potential.",
                       epilog=_FIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("config", nargs="?", type=Path, help="YAML config file")
    f.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. optim.lr=1e-3")
    f.add_argument("--resume", action="store_true", help="continue the run in `out` from checkpoints/last.pt")
    f.add_argument("--overwrite", action="store_true", help="start again even if `out` holds a run")
    f.add_argument("--example", action="store_true", help="print the documented example config and exit")
    add_cli_flag(f)

    e = sub.add_parser("eval", help="metrics table, predictions and parity plots of a model on data",
                       description="Evaluate a model (or a training checkpoint) on data.", epilog=_EVAL_EPILOG,
                       formatter_class=_Formatter)
    e.add_argument("model", type=Path, help="model file (mlip.save / mlip-train export) or a training checkpoint")
    e.add_argument("data", nargs="+", help="HDF5 shards / shard directories, or extxyz files (converted and cached)")
    e.add_argument("--split", default=None,
                   help="split of the data to evaluate (those the data hold, e.g. train, val, test); "
                   "default: every structure")
    e.add_argument("--batch-size", type=int, default=32, help="structures per batch")
    e.add_argument("--out", type=Path, default=None,
                   help="folder for metrics.json, predictions_<split>.xyz and parity_<split>.png")
    e.add_argument("--cache-dir", type=Path, default=None,
                   help="where converted extxyz files are cached (default: $MLIP_CACHE_DIR/converted, else the "
                   "user cache folder)")
    e.add_argument("--pbc", choices=("auto", "none", "all"), default="none",
                   help="periodicity of converted extxyz frames (none: molecules)")
    e.add_argument("--energy-key", default=None,
                   help="extxyz info key of the reference energy (default: searched: energy, Energy, REF_energy, "
                   "free_energy)")
    e.add_argument("--forces-key", default=None,
                   help="extxyz per-atom key of the reference forces (default: searched: forces, REF_forces, force)")
    e.add_argument("--device", default="cpu", help="torch device")
    e.add_argument("--stress", action="store_true", help="also score stress (3D periodic data with stress)")
    e.add_argument("--diagnostics", action="store_true",
                   help="also print the HTSR alpha of every weight matrix (and write diagnostics.csv to --out)")
    e.add_argument("--min-size", type=int, default=20,
                   help="with --diagnostics: fit alpha only for matrices with at least this many eigenvalues")

    x = sub.add_parser("export", help="write the deployable model file of a checkpoint",
                       description="Checkpoint -> model file read by mlip.load, MLIPCalculator, mlip-md and OpenMM.",
                       formatter_class=_Formatter)
    x.add_argument("checkpoint", type=Path, help="training checkpoint (checkpoints/last.pt or best.pt)")
    x.add_argument("-o", "--out", type=Path, default=None, help="model file to write (required)")
    x.add_argument("--output", dest="out", type=Path, help=argparse.SUPPRESS)  # the spelling before 0.2
    x.add_argument("--overwrite", action="store_true", help="replace the model file if it exists")
    x.add_argument("--weights", choices=("ema", "raw"), default="ema",
                   help="ema: moving-average weights (if the run kept them); raw: the optimizer's weights")

    d = sub.add_parser("demo", help="train on the bundled rMD17 ethanol sample, report, then run MD",
                       description="The main job: a small model on 200 rMD17 ethanol frames (bundled), the "
                       "metrics table and plots, then a short NVE MD run with the trained model.",
                       formatter_class=_Formatter)
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder")
    d.add_argument("--minutes", type=float, default=demo.MINUTES, help="training wall-clock budget")
    d.add_argument("--steps", type=int, default=demo.STEPS,
                   help="training steps (the cosine schedule spans the steps or the minutes, whichever ends first)")
    d.add_argument("--md-steps", type=int, default=demo.MD_STEPS, help="NVE MD steps (0.5 fs) with the trained model")
    d.add_argument("--threads", type=int, default=demo.THREADS,
                   help="torch CPU threads (1 is fastest for one small molecule)")
    add_cli_flag(d)
    d.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for fit")
    return p


def _resume_command(args) -> str:
    """The command line that continues the run of ``mlip-train fit`` ``args``."""
    words = ["mlip-train", "fit", str(args.config), *args.overrides, "--resume"]
    if args.no_tune_allocator:
        words.append("--no-tune-allocator")
    return shlex.join(words)


def _fit(args, parser) -> int:
    from .config import load_config

    if args.example:
        print((Path(__file__).parent / "configs" / "ethanol.yaml").read_text())
        return 0
    if args.config is None:
        parser.error("fit: CONFIG is required (see --example)")
    if args.resume and args.overwrite:
        parser.error("fit: --resume and --overwrite exclude each other")
    cfg = load_config(args.config, args.overrides)
    from .distributed import resolve_device

    tune_from_cli(args, device=resolve_device(cfg.train.device))  # malloc tuning helps CPU runs only
    from .trainer import TrainingInterrupted, fit

    def terminated(signum, frame):  # before and after the training loop, which handles it itself
        raise TrainingInterrupted(signum)

    signal.signal(signal.SIGTERM, terminated)
    try:
        res = fit(cfg, resume=args.resume, overwrite=args.overwrite)
    except KeyboardInterrupt as exc:  # TrainingInterrupted too
        signum = getattr(exc, "signum", signal.SIGINT)
        if getattr(exc, "checkpoint", None) is not None:
            what = str(exc)
        elif (Path(cfg.out) / "checkpoints" / "last.pt").is_file():
            what = f"interrupted by {signal.Signals(signum).name}; the last checkpoint is {cfg.out}/checkpoints/last.pt"
        else:
            print(f"mlip-train: interrupted by {signal.Signals(signum).name} before a checkpoint was written; "
                  "nothing to resume", file=sys.stderr)
            return 128 + signum
        print(f"mlip-train: {what}; continue with: {_resume_command(args)}", file=sys.stderr)
        return 128 + signum
    if res.model_path is not None:
        print(f"model: {res.model_path} ({res.model_weights}, step {res.model_step}); run folder {res.out}")
    return 0


def _load_model(path: Path, device: str):
    """A model file or the model of a training checkpoint (chosen by the file's format)."""
    from mlip.io import from_payload, read_plain_file

    from .checkpoint import FORMAT as CHECKPOINT_FORMAT
    from .export import model_from_checkpoint

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file or checkpoint")
    payload = read_plain_file(path, unreadable="not a readable mlip model file or training checkpoint")
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        del payload
        return model_from_checkpoint(path).to(device)
    return from_payload(payload, source=str(path)).to(device)


def _check_split(paths, split: str | None) -> None:
    """Refuse a ``--split`` the data do not hold, naming the splits they do hold."""
    from mlip.datasets import ShardReader
    from mlip.errors import ConfigError

    if split is None:
        return
    held = []
    for p in paths:
        reader = ShardReader(p)
        held.append(set(reader.splits))
        reader.close()
    if all(split in h for h in held):
        return
    common = sorted(set.intersection(*held)) if held else []
    if common:
        raise ConfigError(f"--split {split!r}: the data hold no such split; their splits are "
                          f"{', '.join(common)} (or leave out --split for every structure)")
    raise ConfigError(f"--split {split!r}: the data hold no splits; leave out --split to evaluate every structure")


def _eval(args) -> int:
    from mlip.atomic import atomic_write_text

    from . import plots
    from .data import resolve_dataset
    from .evaluate import evaluate_dataset, format_table, write_predictions

    model = _load_model(args.model, args.device)
    if args.cache_dir is None:
        args.cache_dir = _cache_root() / "converted"
    paths = resolve_dataset(list(args.data), cache_dir=args.cache_dir, pbc=args.pbc, energy_key=args.energy_key,
                            forces_key=args.forces_key, split_fractions=(0.9, 0.1, 0.0), options_from="cli")
    _check_split(paths, args.split)
    metrics, pred = evaluate_dataset(model, paths, args.split, batch_size=args.batch_size, device=args.device,
                                     use_stress=args.stress)
    name = args.split or "all"
    print(format_table({name: metrics}, note=True))
    if args.out is not None:
        wrote = [atomic_write_text(args.out / "metrics.json", json.dumps({name: metrics}, indent=2)),
                 write_predictions(pred, args.out / f"predictions_{name}.xyz")]
        missing = plots.unavailable()
        if missing:
            print(f"mlip-train eval: {missing}", file=sys.stderr)
        else:
            wrote.append(plots.parity_plots(pred, args.out / f"parity_{name}.png", title=name))
        print(f"wrote {', '.join(map(str, wrote))}")
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


def _cache_root() -> Path:
    """The user cache folder of mlip (:func:`mlip.paths.cache_dir`)."""
    from mlip.paths import cache_dir

    return cache_dir()


def _export(args, parser) -> int:
    from .export import export_checkpoint

    if args.out is None:
        parser.error("export: -o/--out MODEL is required")
    path = export_checkpoint(args.checkpoint, args.out, weights=args.weights, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mlip-train``; returns the exit status (2 for bad input, 128 + the signal
    number for a run stopped by SIGINT or SIGTERM)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["descriptors"]:
        print("mlip-train: error: 'descriptors' moved to its own command: python -m mlip.descriptors MODEL DATA "
              "[--bits B] [-o INDEX] [--query Q --k K] (see --help)", file=sys.stderr)
        return 2
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may also follow the options (fit CONFIG --resume a.b=1)
        if args.command in ("fit", "demo") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "demo":  # its config says train.device=auto
        from .distributed import resolve_device

        tune_from_cli(args, device=resolve_device("auto"))
    try:
        if args.command == "fit":
            return _fit(args, parser)
        if args.command == "eval":
            return _eval(args)
        if args.command == "export":
            return _export(args, parser)
        demo.run_demo(args.out, minutes=args.minutes, steps=args.steps, md_steps=args.md_steps, threads=args.threads,
                      overrides=args.overrides)
        return 0
    except (ValueError, FileNotFoundError) as exc:
        print(f"mlip-train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

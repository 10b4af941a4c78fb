"""``mlip-train`` (``python -m mlip.train``) run as a real entry point in a subprocess: fit errors,
export and eval, the help of every subcommand, the moved descriptors command; and the layer rule
of the entry points."""

from __future__ import annotations

import ast
import inspect
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import mlip
from mlip.kernels.tp import BACKENDS
from mlip.train import CheckpointError, demo, export_checkpoint, load_checkpoint, model_from_checkpoint

MLIP_TRAIN = Path(mlip.__file__).parent / "train"


def test_cli_names_unknown_key_and_wrong_type(tmp_path, t):
    p = t.cli("fit", t.write(tmp_path / "c.yaml", {"model": {"num_chanels": 4}}))
    assert p.returncode == 2
    assert "model.num_chanels" in p.stderr and "num_channels" in p.stderr
    p = t.cli("fit", t.write(tmp_path / "d.yaml", {}), "model.tp_backend=fast")
    assert p.returncode == 2
    assert "model.tp_backend" in p.stderr
    for name in BACKENDS:  # every registered backend is offered
        assert repr(name) in p.stderr


def test_export_and_eval_commands(finished_run, tmp_path, cache_dir, t):
    last = finished_run.out / "checkpoints" / "last.pt"
    out = tmp_path / "exported.pt"
    p = t.cli("export", last, "-o", out)
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = mlip.load(out), model_from_checkpoint(last)
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    # --output: the spelling before -o/--out, still accepted
    p = t.cli("export", last, "--output", tmp_path / "alias.pt")
    assert p.returncode == 0, p.stderr[-3000:]
    assert all(torch.equal(v, w) for v, w in zip(mlip.load(tmp_path / "alias.pt").state_dict().values(),
                                                  a.state_dict().values()))
    raw = export_checkpoint(last, tmp_path / "raw.pt", weights="raw")
    ck = load_checkpoint(last)
    assert torch.equal(mlip.load(raw).state_dict()["embedding"], ck["model"]["embedding"])
    p = t.cli("eval", out, t.ETHANOL, "--split", "val", "--out", tmp_path / "ev", "--cache-dir", cache_dir)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "E MAE meV/atom" in p.stdout and "F MAE meV/Å" in p.stdout and "EFwT" in p.stdout
    assert (tmp_path / "ev" / "parity_val.png").is_file()
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())["val"]
    assert m["structures"] == 5
    # a checkpoint is accepted by eval too
    p = t.cli("eval", last, t.ETHANOL, "--cache-dir", cache_dir)
    assert p.returncode == 0, p.stderr[-3000:]


def test_eval_without_matplotlib_and_the_cache_folder(finished_run, tmp_path, t):
    """Without matplotlib: one line, metrics.json and no PNG. Without --cache-dir, converted
    data go to $MLIP_CACHE_DIR/converted."""
    env = {**t.without_matplotlib(tmp_path), "MLIP_CACHE_DIR": str(tmp_path / "cache")}
    p = t.cli("eval", finished_run.model_path, t.ETHANOL, "--split", "val", "--out", tmp_path / "ev", env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert [ln for ln in p.stderr.splitlines() if "mlip[plots]" in ln] == [
        "mlip-train eval: matplotlib is not installed (pip install 'mlip[plots]'); no PNG plots will be written"]
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["val"]["structures"] == 5
    assert not list((tmp_path / "ev").glob("*.png"))
    assert len(list((tmp_path / "cache" / "converted").glob("*.h5"))) == 1


def test_help_of_every_subcommand(t):
    text = ""
    for cmd in ("fit", "eval", "export", "demo"):
        p = t.cli(cmd, "--help")
        assert p.returncode == 0, p.stderr
        text += p.stdout
        if cmd == "export":
            assert "-o OUT, --out OUT" in p.stdout and "--output" not in p.stdout  # the alias is hidden
    assert "--resume" in text and "key=value" in text and "--weights" in text and "--md-steps" in text


def test_descriptors_moved_to_its_own_command(t):
    p = t.cli("descriptors", "model.pt", "data.xyz", "--bits", "4")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [p.stderr.strip()]  # one line
    assert "python -m mlip.descriptors" in p.stderr


def test_export_refuses_bad_checkpoint_and_keeps_target(short_run, tmp_path, t):
    out = tmp_path / "run"
    shutil.copytree(short_run[0], out)
    bad = out / "checkpoints" / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    target = tmp_path / "model.pt"
    target.write_bytes(b"keep me")
    with pytest.raises(CheckpointError):
        export_checkpoint(bad, target)
    assert target.read_bytes() == b"keep me"
    p = t.cli("export", bad, "-o", target)
    assert p.returncode == 2 and "mlip-train: error:" in p.stderr
    assert target.read_bytes() == b"keep me"
    # a model file is not a checkpoint either
    with pytest.raises(CheckpointError, match="model file"):
        load_checkpoint(out / "model.pt")


def test_demo_defaults_are_written_once():
    from mlip.train.cli import build_parser

    args = build_parser().parse_args(["demo"])
    assert (args.minutes, args.steps, args.md_steps, args.threads) == (demo.MINUTES, demo.STEPS, demo.MD_STEPS,
                                                                       demo.THREADS) == (3.0, 3000, 400, 1)
    sig = inspect.signature(demo.run_demo).parameters
    assert (sig["minutes"].default, sig["steps"].default, sig["md_steps"].default, sig["threads"].default) == (
        demo.MINUTES, demo.STEPS, demo.MD_STEPS, demo.THREADS)


def test_only_entry_points_import_calculators():
    """Calculators sit above the training layer: of mlip.train, only the entry points cli and demo
    may import them."""
    offenders = []
    for path in sorted(MLIP_TRAIN.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else ["mlip." * (node.level == 2) + (node.module or "")] if isinstance(node, ast.ImportFrom)
                     else [])
            if any(n == "mlip.calculators" or n.startswith("mlip.calculators.") for n in names):
                offenders.append(path.name)
    assert set(offenders) <= {"cli.py", "demo.py", "__main__.py"} and "demo.py" in offenders


# -- issue 18: start-up, help, hints, eval --out, export's overwrite rule ----------------------------
_MODULES_AFTER = """
import runpy, sys
sys.argv = ["mlip-train", *sys.argv[1:]]
try:
    runpy.run_module("mlip.train", run_name="__main__")
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch_geometric", "e3nn", "mlip.potential", "mlip.datasets.streaming") if m in sys.modules)
print("HEAVY", heavy, "EXIT", code, file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [["--help"], ["fit", "--help"], ["eval", "--help"], ["fit"], ["export", "x.pt"],
                                  ["eval"]])
def test_help_and_argument_errors_do_not_import_the_model_stack(argv, t):
    """--help and argument errors come back without torch_geometric, e3nn or the model (lazy imports)."""
    import subprocess

    p = subprocess.run([t.PYTHON, "-c", _MODULES_AFTER, *argv], capture_output=True, text=True, cwd=t.ROOT,
                       timeout=300)
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("HEAVY []"), p.stderr[-2000:]
    assert last.endswith("EXIT 0" if "--help" in argv else "EXIT 2"), p.stderr[-2000:]


def test_help_texts(t):
    main = t.cli("--help")
    assert main.returncode == 0 and "Subcommands::" not in main.stdout and "mlip-train fit CONFIG" in main.stdout
    ev = t.cli("eval", "--help").stdout
    flat = " ".join(ev.split())
    assert "(default: None)" not in flat and flat.count("(default: $MLIP_CACHE_DIR") == 1
    assert re.search(r"\(default:[^)]*\)\s*\(default:", flat) is None  # each default said once
    # batch-size, cache-dir, pbc, energy-key, forces-key, device, min-size
    assert flat.count("(default:") == 7
    from mlip.train.metrics import EFWT_ENERGY, EFWT_FORCES

    assert "EFwT: fraction of structures" in flat and f"{1000 * EFWT_ENERGY:g} meV/atom" in flat
    assert f"{1000 * EFWT_FORCES:g} meV/Å" in flat and "--energy-key" in flat and "REF_energy" in flat
    fit = " ".join(t.cli("fit", "--help").stdout.split())
    assert "pip install 'mlip[tensorboard]'" in fit and "SIGTERM" in fit and "isolated" in fit


def test_hints_name_the_right_tool(finished_run, tmp_path, cache_dir, t):
    # a data file given as the config: named, no codec error
    h5 = next(iter(cache_dir.glob("*.h5")))
    p = t.cli("fit", h5)
    assert p.returncode == 2 and str(h5) in p.stderr and "codec" not in p.stderr and "data.train" in p.stderr
    # a model file given to export: a model file, nothing about --resume
    with pytest.raises(CheckpointError, match="a model file") as err:
        export_checkpoint(finished_run.model_path, tmp_path / "m.pt")
    assert "--resume" not in str(err.value) and not (tmp_path / "m.pt").exists()
    # a misspelled split: named, with the splits the data hold
    p = t.cli("eval", finished_run.model_path, t.ETHANOL, "--split", "tset", "--cache-dir", cache_dir)
    assert p.returncode == 2 and "'tset'" in p.stderr and "test, train, val" in p.stderr
    assert "mlip-data" not in p.stderr


def test_fit_names_the_config_key_of_a_missing_energy(tmp_path, t):
    import ase.io

    from mlip.train import DataError

    frames = ase.io.read(t.ETHANOL, ":3")
    for a in frames:
        a.info = {"E": a.info["Energy"]}
    ase.io.write(tmp_path / "e.xyz", frames, format="extxyz")
    from mlip.train.config import config_from_dict

    cfg = t.config(tmp_path / "run", tmp_path / "cache", data={"train": [str(tmp_path / "e.xyz")]})
    with pytest.raises(DataError) as err:
        from mlip.train import fit

        fit(config_from_dict(cfg))
    assert "data.energy_key" in str(err.value) and "--energy-key" not in str(err.value)


def test_eval_writes_predictions_with_named_keys(finished_run, tmp_path, cache_dir, t):
    """eval --out: predictions_<split>.xyz holds REF_/MLIP_ energies and forces of every structure;
    --energy-key/--forces-key read other names; energy is reported per structure too."""
    import ase.io
    import numpy as np

    from mlip.calculators import MLIPCalculator

    frames = ase.io.read(t.ETHANOL, ":4")
    for a in frames:  # other key names than the usual ones
        a.info = {"my_E": a.info["Energy"]}
        a.arrays["my_F"] = a.get_forces()
        a.calc = None
    src = tmp_path / "renamed.xyz"
    ase.io.write(src, frames, format="extxyz")
    p = t.cli("eval", finished_run.model_path, src, "--energy-key", "my_E", "--forces-key", "my_F",
              "--out", tmp_path / "ev", "--cache-dir", tmp_path / "cache")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "E MAE meV/struct" in p.stdout and "predictions_all.xyz" in p.stdout
    got = ase.io.read(tmp_path / "ev" / "predictions_all.xyz", ":")
    assert len(got) == 4
    calc = MLIPCalculator(finished_run.model_path)
    errors = []
    for g, ref in zip(got, frames):
        assert g.info["REF_energy"] == pytest.approx(ref.info["my_E"], abs=1e-9)
        assert np.allclose(g.arrays["REF_forces"], ref.arrays["my_F"], atol=1e-9)
        assert np.allclose(g.positions, ref.positions) and list(g.numbers) == list(ref.numbers)
        a = ref.copy()
        a.pbc = False
        a.calc = calc
        assert g.info["MLIP_energy"] == pytest.approx(a.get_potential_energy(), abs=1e-6)
        assert np.allclose(g.arrays["MLIP_forces"], a.get_forces(), atol=1e-6)
        errors.append(abs(g.info["MLIP_energy"] - g.info["REF_energy"]))
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())["all"]
    assert m["energy_total_mae"] == pytest.approx(1000 * np.mean(errors), rel=1e-6)
    assert m["energy_mae"] == pytest.approx(1000 * np.mean(errors) / 9, rel=1e-6)  # ethanol: 9 atoms


def test_export_refuses_to_overwrite_and_follows_the_umask(finished_run, tmp_path, t):
    import os

    last = finished_run.out / "checkpoints" / "last.pt"
    target = tmp_path / "model.pt"
    target.write_bytes(b"keep me")
    p = t.cli("export", last, "-o", target)
    assert p.returncode == 2 and "--overwrite" in p.stderr and target.read_bytes() == b"keep me"
    p = t.cli("export", last, "-o", target, "--overwrite", preexec_fn=lambda: os.umask(0o027))
    assert p.returncode == 0, p.stderr[-2000:]
    assert mlip.load(target).elements == ["H", "C", "O"]
    assert target.stat().st_mode & 0o777 == 0o640
    from mlip.train.checkpoint import save_checkpoint

    old = os.umask(0o027)
    try:
        ck = save_checkpoint({"step": 1}, tmp_path / "ck.pt")
    finally:
        os.umask(old)
    assert ck.stat().st_mode & 0o777 == 0o640


def test_eval_refuses_a_model_file_that_would_run_code(tmp_path, t):
    evil = tmp_path / "evil.pt"
    marker = tmp_path / "ran"
    t.code_running_file(evil, marker)
    p = t.cli("eval", evil, t.ETHANOL, "--cache-dir", tmp_path / "cache")
    assert p.returncode == 2
    assert "would run code" in p.stderr and str(evil) in p.stderr
    assert "weights_only" not in p.stderr and "corrupted" not in p.stderr
    assert not marker.exists()



@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_fit_tunes_malloc_only_for_cpu_runs(monkeypatch, device):
    """The malloc tuning keeps freed host memory for reuse: it helps CPU runs only, so it follows
    the config's train.device, read before the tuning."""
    import mlip.allocator
    import mlip.train.trainer
    from mlip.train import cli

    class Stop(Exception):
        pass

    applied = []
    monkeypatch.setattr(mlip.allocator, "tune_cpu_allocator", lambda: applied.append(True) or True)
    monkeypatch.setattr(mlip.train.trainer, "fit", lambda *a, **k: (_ for _ in ()).throw(Stop()))
    example = Path(cli.__file__).parent / "configs" / "ethanol.yaml"
    with pytest.raises(Stop):
        cli.main(["fit", str(example), f"train.device={device}"])
    assert applied == ([True] if device == "cpu" else [])

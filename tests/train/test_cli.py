"""``mlip-train`` (``python -m mlip.train``) run as a real entry point in a subprocess: fit errors,
export and eval, the help of every subcommand, the moved descriptors command; and the layer rule
of the entry points."""

from __future__ import annotations

import ast
import inspect
import json
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

"""Shared helpers of the training tests: tiny configs on the committed 50-frame rMD17 excerpt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
ETHANOL = ROOT / "tests" / "datasets" / "data" / "rmd17_ethanol_50.xyz"
PYTHON = sys.executable


def tiny_config(out, cache, **sections) -> dict:
    """A config dict for a 4-channel, l_max 1, 1-layer float64 model on the 50 ethanol frames.

    ``sections``: dicts merged into the sections (``train={"max_steps": 5}``) or plain top-level keys.
    """
    cfg = {
        "out": str(out),
        "data": {"train": [str(ETHANOL)], "cache_dir": str(cache), "pbc": "none", "block_size": 8,
                 "cache_graphs": True},
        "model": {"num_channels": 4, "l_max": 1, "correlation": 2, "num_layers": 1, "radial_mlp": [8],
                  "readout_hidden": 4, "dtype": "float64"},
        "optim": {"lr": 0.01, "ema_decay": 0.9},
        "schedule": {"kind": "cosine", "warmup_steps": 2},
        "train": {"max_steps": 6, "batch_size": 4, "val_every": 3, "checkpoint_every": 2, "log_every": 2,
                  "val_batch_size": 16, "threads": 1, "progress": False, "plots": False, "device": "cpu"},
    }
    for k, v in sections.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    """Write ``cfg`` as YAML to ``path``."""
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*args, timeout=300, module="mlip.train", env=None, **popen) -> subprocess.CompletedProcess:
    """``python -m mlip.train ARGS`` (or another ``module``) in a fresh process with one thread;
    ``env``: extra environment variables (e.g. :func:`without_matplotlib`)."""
    env = dict(os.environ, **(env or {}), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([PYTHON, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT, **popen)


def params_of(checkpoint: Path) -> dict:
    """Model weights, EMA shadow and optimizer moments of a checkpoint, by name."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    out = {f"model.{k}": v for k, v in ck["model"].items()}
    if ck["ema"]:
        out.update({f"ema.{k}": v for k, v in ck["ema"]["shadow"].items()})
    for i, st in ck["optimizer"]["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                out[f"optim.{i}.{k}"] = v
    return out


class _RunsCode:
    """Unpickling this (``torch.load(weights_only=False)``) would create the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def code_running_file(path: Path, marker: Path) -> Path:
    """A torch file, formatted like a model file, whose loading with ``weights_only=False`` would run
    code (create ``marker``)."""
    torch.save({"format": "mlip.potential", "payload": _RunsCode(marker)}, path)
    return path


def without_matplotlib(folder: Path) -> dict:
    """Environment variables for a subprocess in which ``import matplotlib`` fails as if it were not installed
    (a stand-in package that raises ImportError, first on ``PYTHONPATH``)."""
    fake = folder / "no_matplotlib" / "matplotlib"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
    path = os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache of converted extxyz files for the whole session."""
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, cache_dir):
    """One finished 6-step run with plots (a :class:`~mlip.train.FitResult`), shared by the tests."""
    from mlip.train import fit
    from mlip.train.config import config_from_dict

    out = tmp_path_factory.mktemp("fit") / "run"
    return fit(config_from_dict(tiny_config(out, cache_dir, train={"plots": True, "progress": True})))


@pytest.fixture(scope="session")
def short_run(tmp_path_factory, cache_dir):
    """A finished 4-step run ``(out, config dict)`` to damage copies of."""
    from mlip.train import fit
    from mlip.train.config import config_from_dict

    out = tmp_path_factory.mktemp("bad") / "run"
    cfg = tiny_config(out, cache_dir, train={"max_steps": 4, "checkpoint_every": 2, "val_every": 2})
    fit(config_from_dict(cfg))
    return out, cfg


@pytest.fixture(scope="session")
def t():
    """Helpers: ``t.config(out, cache, **sections)``, ``t.write``, ``t.cli``, ``t.params``, ``t.ETHANOL``,
    ``t.without_matplotlib``, ``t.code_running_file``."""
    from types import SimpleNamespace

    return SimpleNamespace(config=tiny_config, write=write_config, cli=run_cli, params=params_of, ETHANOL=ETHANOL,
                           ROOT=ROOT, PYTHON=PYTHON, without_matplotlib=without_matplotlib,
                           code_running_file=code_running_file)

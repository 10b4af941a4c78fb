"""Invariant structure descriptors and their TurboQuant index (mlip.descriptors, python -m mlip.descriptors)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read

import mlip
from mlip.descriptors import DescriptorIndex, invariant_descriptors, recall_at_k

DATA = Path(__file__).resolve().parents[2] / "mlip" / "train" / "data" / "ethanol_rmd17_200.xyz"


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    cfg = mlip.PotentialConfig(elements=["H", "C", "O"], num_channels=64, l_max=1, correlation=2, num_layers=1,
                               radial_mlp=[16], readout_hidden=4, dtype="float64", seed=0)
    return mlip.Potential(cfg).eval()


@pytest.fixture(scope="module")
def frames():
    atoms = read(DATA, index=":")
    for a in atoms:
        a.pbc = False
    return atoms


@pytest.fixture(scope="module")
def desc(model, frames):
    return invariant_descriptors(model, frames)


def test_descriptors_are_the_last_scalar_features_and_invariant(model, frames, desc):
    assert desc.shape == (200, 64) and desc.dtype == torch.float64
    rng = np.random.default_rng(1)
    few = [a.copy() for a in frames[:5]]
    for a in few:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        a.positions = a.positions @ q.T + rng.normal(size=3)  # rotation (or reflection) and translation
    rotated = invariant_descriptors(model, few)
    assert torch.allclose(rotated, desc[:5], atol=1e-10, rtol=0)
    assert not torch.allclose(desc[0], desc[1])  # they do tell structures apart


def test_quantised_search_recall(desc):
    # 64 channels (a usual width): at 4 bits recall@10 is about 0.93 here; with 8-16 channels
    # it falls to 0.67-0.8 (a coarser, noisier score estimate in few dimensions).
    index = DescriptorIndex(desc, bits=4)
    unit = index.prepare(desc)
    exact = torch.topk(unit @ unit.T, 10, dim=1).indices
    scores, approx = index.search(desc, 10)
    assert recall_at_k(exact, approx) >= 0.8
    assert scores.shape == (200, 10) and bool((scores[:, :-1] >= scores[:, 1:]).all())
    assert index.bytes_per_descriptor == 4 * 64 // 8 + 4 < index.float32_bytes_per_descriptor
    # the scores are inner products with the decoded unit vectors
    assert torch.allclose(scores, torch.gather(unit @ index.decode().T, 1, approx), atol=1e-12)


def test_index_round_trip_and_cli(model, frames, desc, tmp_path):
    index = DescriptorIndex(desc, bits=3)
    index.save(tmp_path / "i.pt")
    again = DescriptorIndex.load(tmp_path / "i.pt")
    assert torch.equal(again.search(desc[:3], 5)[1], index.search(desc[:3], 5)[1])
    assert not list(tmp_path.glob("*.tmp"))

    mlip.save(model, tmp_path / "m.pt")
    from ase.io import write

    write(tmp_path / "q.xyz", frames[:2])
    p = _cli(str(tmp_path / "m.pt"), str(DATA), "--bits", "4", "-o", str(tmp_path / "c.pt"),
             "--query", str(tmp_path / "q.xyz"), "--k", "3")
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    assert "200 structures, 64 invariant (0e) channels, 4 bits: 36 bytes per descriptor (float32: 256)" in out
    cli_index = DescriptorIndex.load(tmp_path / "c.pt")
    _, top = cli_index.search(desc[:2], 3)
    assert int(top[0, 0]) == 0 and int(top[1, 0]) == 1  # each query finds itself first
    assert out.splitlines()[-2].split()[1].startswith("0:")


def _cli(*args) -> subprocess.CompletedProcess:
    """``python -m mlip.descriptors ARGS`` in a fresh process."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mlip.descriptors", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_help_and_bad_input(tmp_path):
    p = _cli("--help")
    assert p.returncode == 0
    assert "-o OUT, --out OUT" in p.stdout and "--query" in p.stdout and "--bits" in p.stdout
    p = _cli(str(tmp_path / "missing.pt"), str(DATA), "--bits", "9")
    assert p.returncode == 2 and "--bits: expected 1..8, got 9" in p.stderr


def test_index_file_that_would_run_code_is_refused(tmp_path):
    """An index is read like every mlip file (mlip.io.read_plain_file): code is never run, the
    error says so and names the file, and a foreign file is not taken for an index."""
    import pytest
    import torch

    from mlip.errors import CheckpointError

    torch.save({"format": "mlip.DescriptorIndex/1", "hook": print}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil.pt: refused: loading this file would run code") as err:
        DescriptorIndex.load(tmp_path / "evil.pt")
    assert "weights_only=False" not in str(err.value)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not a descriptor index"):
        DescriptorIndex.load(tmp_path / "other.pt")

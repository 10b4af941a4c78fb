"""mlip.allocator: with the tuned glibc thresholds a potential's energy + forces reuses freed
memory (no page faults), without them the same calls fault; the CLIs' flag; bad thresholds."""

import json
import platform
import subprocess
import sys

import pytest

from mlip import allocator
from mlip.md import build_parser as md_parser
from mlip.train.cli import build_parser as train_parser

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

# energy + forces of a periodic l_max 2 potential (64 channels, 2 layers), the allocation
# pattern of an MD step; minor page faults per call after warm-up
LOOP = r"""
import json, resource, sys, torch
torch.set_num_threads(1)
import mlip
if sys.argv[1] == "tuned":
    from mlip.allocator import tune_cpu_allocator
    assert tune_cpu_allocator()
from ase.build import bulk
atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
atoms.rattle(0.05, seed=0)
cfg = mlip.PotentialConfig(elements=["Cu"], num_channels=64, l_max=2, tp_backend=sys.argv[2], dtype="float32")
model = mlip.Potential(cfg).eval()
graph = mlip.atoms_to_graph(atoms, cfg.r_max)
for _ in range(4):
    model(graph, forces=True)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    model(graph, forces=True)
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 4))
"""


def _faults(mode: str, backend: str) -> float:
    out = subprocess.run([sys.executable, "-c", LOOP, mode, backend], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_tuned_allocator_reuses_freed_memory():
    tuned, default = _faults("tuned", "cg"), _faults("default", "cg")
    # per call; measured here: default 4,800-8,000, tuned 0-350
    assert default > 1000, (tuned, default)  # the loop does see the faults
    assert tuned < default / 10, (tuned, default)


@glibc
def test_grid_reuses_its_scratch_buffers_with_either_allocator():
    """grid keeps its CPU temporaries in per-thread scratch buffers: its calls do not fault pages
    in again even with glibc's defaults (measured here: default 1-2, tuned 0-250 per call)."""
    tuned, default = _faults("tuned", "grid"), _faults("default", "grid")
    assert default < 1000 and tuned < 1000, (tuned, default)


def test_bad_thresholds_raise():
    with pytest.raises(ValueError, match="mmap_threshold"):
        allocator.tune_cpu_allocator(mmap_threshold=0)
    with pytest.raises(ValueError, match="trim_threshold"):
        allocator.tune_cpu_allocator(trim_threshold=2**31)


def test_not_glibc_changes_nothing(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert allocator.tune_cpu_allocator() is False


def test_env_matches_the_constants():
    env = allocator.allocator_env()
    assert env == {"MALLOC_MMAP_THRESHOLD_": str(allocator.MMAP_THRESHOLD),
                   "MALLOC_TRIM_THRESHOLD_": str(allocator.TRIM_THRESHOLD)}


def test_cli_flags():
    assert md_parser().parse_args(["m.pt", "s.xyz"]).no_tune_allocator is False
    assert md_parser().parse_args(["m.pt", "s.xyz", "--no-tune-allocator"]).no_tune_allocator is True
    p = train_parser()
    assert p.parse_args(["fit", "c.yaml", "--no-tune-allocator"]).no_tune_allocator is True
    assert p.parse_args(["demo"]).no_tune_allocator is False

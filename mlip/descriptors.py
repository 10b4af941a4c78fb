"""Invariant per-structure descriptors of a potential and a compressed similarity-search index.

**Which features.** :func:`invariant_descriptors` averages over the atoms of each structure the
node features ``h_i`` after the last interaction layer of :class:`mlip.Potential`. The last
layer keeps only scalars (irreps ``C x 0e``, as MACE), so these are the ``C`` rotation- and
translation-invariant channels that the last readout maps to atomic energies. They are read
with a forward pre-hook on ``model.readouts[-1]`` (its input is ``h[:, :C]``); the model is not
modified. Only ``l = 0`` features are used: the ``l > 0`` parts of earlier layers are
equivariant, and per-coordinate quantisation would break that.

**Compression.** :class:`DescriptorIndex` stores each descriptor with TurboQuant
(:class:`mlip.kernels.operators.turboquant.TurboQuantMSE`: a random rotation and a Lloyd--Max scalar
codebook, ``bits`` bits per coordinate, bit-packed). Descriptors of one chemical system are all
close to their common mean, so by default the index subtracts the mean of the indexed set and
normalises to unit norm before quantising: the search score is the cosine similarity of the
centred descriptors, estimated as ``<q, x_hat>`` (the query stays in full precision).

**Command line** (an entry point, see :func:`main`)::

    python -m mlip.descriptors MODEL DATA [DATA ...] [--bits 4] [-o INDEX] [--query QDATA --k 10] [--seed 0]

indexes the structures of the extxyz file(s) DATA with the model file MODEL, prints the size of
the index, writes it to INDEX (``-o/--out``) and lists the ``k`` nearest indexed structures of
each query structure.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .errors import CheckpointError

__all__ = ["invariant_descriptors", "DescriptorIndex", "recall_at_k", "main"]


def _batches(data, r_max: float, batch_size: int):
    from ase import Atoms

    from .graph import atoms_to_graph, batch_graphs

    if isinstance(data, (str, Path)):
        from ase.io import read

        data = read(str(data), index=":")
        for a in data:
            a.pbc = a.pbc if a.cell.rank == 3 else False
    if isinstance(data, Atoms):
        data = [data]
    if hasattr(data, "pos"):  # one graph or batch
        yield data
        return
    items = list(data) if not isinstance(data, list) else data
    if items and isinstance(items[0], Atoms):
        for s in range(0, len(items), batch_size):
            yield batch_graphs([atoms_to_graph(a, r_max) for a in items[s:s + batch_size]])
        return
    yield from items  # graphs / batches


def invariant_descriptors(model, data, *, batch_size: int = 32) -> torch.Tensor:
    """Per-structure invariant descriptors ``[S, C]`` (float64): mean over atoms of the scalar
    (``0e``) node features after the last interaction layer (see the module docstring).

    Args:
        model: an :class:`mlip.Potential`.
        data: a list of ``ase.Atoms`` (or one), an extxyz path, a graph / batch from
            :mod:`mlip.graph`, or an iterable of those batches.
    """
    captured = []

    def hook(_module, args):
        captured.append(args[0].detach())

    handle = model.readouts[-1].register_forward_pre_hook(hook)
    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in _batches(data, model.r_max, batch_size):
                captured.clear()
                model(batch, forces=False, stress=False, create_graph=False)
                h = captured[-1].to(torch.float64)
                n = h.shape[0]
                index = getattr(batch, "batch", None)
                index = torch.zeros(n, dtype=torch.long) if index is None else index.to(h.device)
                num_graphs = int(index.max()) + 1 if n else 0
                sums = torch.zeros(num_graphs, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, index, h)
                counts = torch.bincount(index, minlength=num_graphs).to(h.dtype).unsqueeze(1)
                out.append((sums / counts).cpu())
    finally:
        handle.remove()
        model.train(was_training)
    if not out:
        raise ValueError("no structures")
    return torch.cat(out)


def _pack(indices: torch.Tensor, bits: int) -> torch.Tensor:
    idx = indices.to(torch.int64).numpy()
    planes = (idx[..., None] >> np.arange(bits)) & 1  # [S, D, bits]
    return torch.from_numpy(np.packbits(planes.reshape(idx.shape[0], -1).astype(np.uint8), axis=1))


def _unpack(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    planes = np.unpackbits(packed.numpy(), axis=1, count=dim * bits).reshape(packed.shape[0], dim, bits)
    return torch.from_numpy((planes.astype(np.int64) << np.arange(bits)).sum(-1))


class DescriptorIndex:
    """TurboQuant-compressed descriptors with inner-product (cosine) search.

    Args:
        descriptors: ``[S, D]`` float descriptors (e.g. :func:`invariant_descriptors`), ``D >= 3``.
        bits: bits per coordinate (1..8).
        seed: seed of TurboQuant's random rotation.
        center: subtract the mean of ``descriptors`` (stored, and applied to queries) before
            normalising; recommended for structures of one system, whose raw descriptors
            differ by little compared with their length.

    ``search(query, k)`` returns ``(scores [Q, k], indices [Q, k])``, best first, where the score
    estimates ``<unit(q - mean), unit(x - mean)>``. Memory: :attr:`bytes_per_descriptor`
    (``ceil(bits * D / 8)`` code bytes + a float32 norm) versus ``4 * D`` for float32.
    """

    def __init__(self, descriptors: torch.Tensor, bits: int = 4, *, seed: int = 0, center: bool = True):
        from mlip.kernels.operators.turboquant import TurboQuantMSE

        x = torch.as_tensor(descriptors, dtype=torch.float64)
        if x.dim() != 2 or x.shape[0] == 0:
            raise ValueError(f"descriptors: expected a non-empty [S, D] tensor, got shape {tuple(x.shape)}")
        self.dim, self.bits, self.seed = int(x.shape[1]), int(bits), int(seed)
        self.mean = x.mean(0) if center else torch.zeros(self.dim, dtype=torch.float64)
        self.quantizer = TurboQuantMSE(self.dim, self.bits, seed=self.seed)
        unit, norms = self.prepare(x, with_norms=True)
        code = self.quantizer.quantize(unit)
        self.codes = _pack(code.indices, self.bits)
        self.norms = norms.to(torch.float32)
        self._rotated = None

    # -- encoding ------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor, *, with_norms: bool = False):
        """Centred, unit-norm vectors ``[S, D]`` (what the index quantises and queries are compared as)."""
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, self.dim) - self.mean
        norms = torch.linalg.vector_norm(x, dim=1)
        unit = x / norms.clamp_min(1e-300).unsqueeze(1)
        return (unit, norms) if with_norms else unit

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def bytes_per_descriptor(self) -> float:
        """Stored bytes per descriptor: packed codes + one float32 norm."""
        return self.codes.shape[1] + 4

    @property
    def float32_bytes_per_descriptor(self) -> int:
        """Bytes of the same descriptor in float32."""
        return 4 * self.dim

    def decode(self) -> torch.Tensor:
        """The quantised unit vectors ``[S, D]`` (``x_hat``)."""
        return self.quantizer.codebook[_unpack(self.codes, self.bits, self.dim)] @ self.quantizer.rotation

    # -- search --------------------------------------------------------------------------
    def search(self, query: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` indexed descriptors with the largest estimated inner product with each query."""
        q = self.prepare(query)
        if self._rotated is None:  # codebook values in the rotated frame: <q, Pi^T c> = <Pi q, c>
            self._rotated = self.quantizer.codebook[_unpack(self.codes, self.bits, self.dim)]
        scores = (q @ self.quantizer.rotation.T) @ self._rotated.T
        k = min(int(k), len(self))
        top = torch.topk(scores, k, dim=1)
        return top.values, top.indices

    # -- files ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to rebuild the index (tensors and ints; ``weights_only``-safe)."""
        return {"format": "mlip.DescriptorIndex/1", "dim": self.dim, "bits": self.bits, "seed": self.seed,
                "mean": self.mean, "codes": self.codes, "norms": self.norms}

    def save(self, path) -> Path:
        """Write the index with ``torch.save`` (atomically: a temporary file, then a rename)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)
        return path

    @classmethod
    def load(cls, path) -> "DescriptorIndex":
        """Read an index written by :meth:`save`."""
        from mlip.io import read_plain_file
        from mlip.kernels.operators.turboquant import TurboQuantMSE

        st = read_plain_file(path, unreadable="not a readable descriptor index")
        if not isinstance(st, dict) or st.get("format") != "mlip.DescriptorIndex/1":
            raise CheckpointError(f"{path}: not a descriptor index")
        self = cls.__new__(cls)
        self.dim, self.bits, self.seed = int(st["dim"]), int(st["bits"]), int(st["seed"])
        self.mean, self.codes, self.norms = st["mean"], st["codes"], st["norms"]
        self.quantizer = TurboQuantMSE(self.dim, self.bits, seed=self.seed)
        self._rotated = None
        return self


def recall_at_k(exact: torch.Tensor, approx: torch.Tensor) -> float:
    """Mean fraction of the exact top-k indices ``[Q, k]`` found in the approximate top-k ``[Q, k]``."""
    hits = [len(set(e.tolist()) & set(a.tolist())) / e.numel() for e, a in zip(exact, approx)]
    return float(np.mean(hits)) if hits else math.nan


def _read_structures(paths) -> list:
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m mlip.descriptors``."""
    p = argparse.ArgumentParser(
        prog="python -m mlip.descriptors",
        description="Per-structure invariant descriptors of a potential (mean of the scalar node features after "
        "the last interaction), compressed with TurboQuant at --bits bits per coordinate; optionally search the "
        "index with the structures of --query.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", type=Path, help="model file (mlip.save / mlip-train export)")
    p.add_argument("data", nargs="+", type=Path, help="extxyz file(s) of the structures to index (read with ASE)")
    p.add_argument("--bits", type=int, default=4, help="bits per descriptor coordinate (1..8)")
    p.add_argument("-o", "--out", type=Path, default=None, help="write the index here (torch.save)")
    p.add_argument("--output", dest="out", type=Path, help=argparse.SUPPRESS)  # the spelling of mlip-train
    p.add_argument("--query", type=Path, default=None, help="extxyz file of query structures")
    p.add_argument("--k", type=int, default=10, help="neighbours per query")
    p.add_argument("--seed", type=int, default=0, help="seed of TurboQuant's random rotation")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m mlip.descriptors``: index structures, optionally search it; returns the exit status
    (2 for bad input, with a one-line ``error:`` message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.bits <= 8:
        parser.error(f"--bits: expected 1..8, got {args.bits}")
    import mlip

    try:
        model = mlip.load(args.model)
        desc = invariant_descriptors(model, _read_structures(args.data))
        index = DescriptorIndex(desc, args.bits, seed=args.seed)
        print(f"{len(index)} structures, {index.dim} invariant (0e) channels, {args.bits} bits: "
              f"{index.bytes_per_descriptor} bytes per descriptor (float32: {index.float32_bytes_per_descriptor})")
        if args.out is not None:
            print(f"wrote {index.save(args.out)}")
        if args.query is not None:
            scores, idx = index.search(invariant_descriptors(model, _read_structures([args.query])), args.k)
            print("query  neighbours (index:score, best first)")
            for i, (s, j) in enumerate(zip(scores.tolist(), idx.tolist())):
                print(f"{i:>5}  " + " ".join(f"{a}:{b:.3f}" for a, b in zip(j, s)))
    except (ValueError, FileNotFoundError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``cuequivariance`` engine: mlip's products run by NVIDIA cuEquivariance.

Each product is written as a cuEquivariance segmented polynomial (the description: which
segments, which paths, which coefficients) built from *our* paths and coefficients, in our
weight order, and executed by ``cuequivariance_torch.SegmentedPolynomial`` (the executor):
method ``uniform_1d`` (CUDA kernels) on CUDA when ``cuequivariance_ops_torch`` imports,
its pure-torch ``naive`` fallback otherwise (CPU; used to prove parity without a GPU).

Layouts: cuEquivariance's kernels want the component-major ``ir_mul`` layout per irrep
(``[2l+1, C]``, channels contiguous); mlip's features are e3nn's multiplicity-major
``mul_ir``. The executors permute columns on the way in and out (one gather each).

The package is optional (extra ``mlip[cuda]``) and imported only when this engine runs.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import torch

from mlip.errors import ConfigError

__all__ = ["available", "cuda_ops_available", "require", "SegmentedExecutor", "CGExecutor", "cg_polynomial",
           "ir_mul_index"]

_INSTALL = "pip install 'mlip[cuda]' (cuequivariance, cuequivariance-torch)"


def available() -> bool:
    """Whether ``cuequivariance`` and ``cuequivariance_torch`` are installed (not imported)."""
    return all(importlib.util.find_spec(m) is not None for m in ("cuequivariance", "cuequivariance_torch"))


@functools.lru_cache(maxsize=None)
def cuda_ops_available() -> bool:
    """Whether cuEquivariance's CUDA kernels can run here: a CUDA device, ``cuequivariance_torch``
    and ``cuequivariance_ops_torch`` importable."""
    if not torch.cuda.is_available() or not available():
        return False
    try:
        import cuequivariance_ops_torch  # noqa: F401
        import cuequivariance_torch  # noqa: F401
    except Exception:  # a broken or mismatched install counts as absent: auto falls back to torch
        return False
    return True


def require():
    """``(cuequivariance, cuequivariance_torch)``, imported; :class:`~mlip.errors.ConfigError`
    naming the extra to install when they are missing."""
    try:
        import cuequivariance as cue
        import cuequivariance_torch as cuet
    except ImportError as exc:
        raise ConfigError(f"the cuequivariance engine needs cuEquivariance ({exc}): {_INSTALL}") from None
    return cue, cuet


def ir_mul_index(irs, channels: int) -> torch.Tensor:
    """Column index turning multiplicity-major features (e3nn ``mul_ir``) of per-channel irreps
    ``irs`` with ``channels`` channels into component-major ones (``ir_mul``): ``y = x[:, idx]``;
    ``argsort(idx)`` goes back."""
    idx, off = [], 0
    for ir in irs:
        idx.append(off + np.arange(channels * ir.dim).reshape(channels, ir.dim).T.reshape(-1))
        off += channels * ir.dim
    return torch.from_numpy(np.concatenate(idx)).to(torch.long)


class SegmentedExecutor:
    """Runs a ``cue.SegmentedPolynomial`` with one output on the device of its inputs.

    One ``cuequivariance_torch.SegmentedPolynomial`` per device, built on first use and
    held outside the module tree (not in any state dict, not cast by ``.to(dtype)``: the
    fallback keeps its coefficients in float64 and casts them per call). ``cuda_method`` is
    the method used on CUDA when the CUDA ops import, ``naive`` everywhere else.
    """

    def __init__(self, polynomial, *, cuda_method: str = "uniform_1d"):
        self.polynomial = polynomial
        self.cuda_method = cuda_method
        self._runners: dict = {}

    def method(self, device: torch.device) -> str:
        """The cuEquivariance method that runs on ``device``."""
        return self.cuda_method if device.type == "cuda" and cuda_ops_available() else "naive"

    def _runner(self, device: torch.device):
        key = str(device)
        run = self._runners.get(key)
        if run is None:
            _, cuet = require()
            run = cuet.SegmentedPolynomial(self.polynomial, method=self.method(device)).to(device)
            self._runners[key] = run
        return run

    def __call__(self, inputs: list, input_indices: dict | None = None) -> torch.Tensor:
        [y] = self._runner(inputs[0].device)(list(inputs), input_indices or {}, {}, {})
        return y

    def __getstate__(self):  # copies and pickles rebuild the runners on first use
        return {"polynomial": self.polynomial, "cuda_method": self.cuda_method, "_runners": {}}

    def __deepcopy__(self, memo):
        new = SegmentedExecutor.__new__(SegmentedExecutor)
        new.__dict__.update(self.__getstate__())
        return new


def cg_polynomial(paths, spec):
    """The ``cg`` product (:class:`~mlip.kernels.tp.cg.CGBackend`) as a segmented polynomial.

    Operands: weights (one segment of C per path, in path order: exactly ``cg``'s layout
    ``weight.view(N, P, C)``), ``x1`` (segments ``[2l1+1, C]``), ``x2`` (``[2l2+1]`` in
    channelwise mode, ``[2l2+1, C]`` in elementwise mode) and the output (``[2l3+1, C]``),
    all component-major. Each path adds ``coeff[i, j, k] w[u] x1[i, u] x2[j(, u)]`` into
    its output irrep, ``coeff`` being the path's normalised CG tensor (e3nn's numbers).
    """
    cue, _ = require()
    C = spec.channels
    channelwise = spec.mode == "channelwise"
    d = cue.SegmentedTensorProduct.from_subscripts("u,iu,j,ku+ijk" if channelwise else "u,iu,ju,ku+ijk")
    for ir in spec.irs1:
        d.add_segment(1, (ir.dim, C))
    for ir in spec.irs2:
        d.add_segment(2, (ir.dim,) if channelwise else (ir.dim, C))
    for ir in spec.irs3:
        d.add_segment(3, (ir.dim, C))
    for p in paths:
        w = d.add_segment(0, (C,))
        d.add_path(w, p.i1, p.i2, p.i3, c=p.coeff)
    return cue.SegmentedPolynomial.eval_last_operand(d)


class CGExecutor:
    """The ``cg`` product of a :class:`~mlip.kernels.tp.cg.CGBackend` on cuEquivariance: same
    weights, same numbers (to rounding). Call as the backend: ``(x1, x2, weight)`` on
    multiplicity-major features, or :meth:`forward_rows` on stacked component-major rows."""

    def __init__(self, backend):
        spec = backend.spec
        self.spec = spec
        self.run = SegmentedExecutor(cg_polynomial(backend.paths, spec))
        idx = [ir_mul_index(irs, c) for irs, c in
               ((spec.irs1, spec.channels), (spec.irs2, spec.channels2), (spec.irs3, spec.channels))]
        self._index = {"in1": idx[0], "in2": idx[1], "out": torch.argsort(idx[2])}
        self._identity = {k: bool(torch.equal(v, torch.arange(v.numel()))) for k, v in self._index.items()}
        self._cast: dict = {}

    def _permute(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if self._identity[name]:
            return x
        key = (name, x.device)
        idx = self._cast.get(key)
        if idx is None:
            idx = self._cast[key] = self._index[name].to(x.device)
        return x.index_select(1, idx)

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x1 [N, D1*C]``, ``x2 [N, D2*C2]`` (e3nn layout), ``weight [N|1, P*C]`` -> ``[N, D3*C]``."""
        y = self.run([weight, self._permute("in1", x1), self._permute("in2", x2)])
        return self._permute("out", y)

    def forward_rows(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x1 [D1, N, C]``, ``x2 [D2, N, C2]``, ``weight [N|1, P*C]`` -> ``[D3, N, C]``: rows
        transposed to samples first are exactly cuEquivariance's ``ir_mul`` layout."""
        n = x1.shape[1]
        y = self.run([weight, x1.transpose(0, 1).reshape(n, -1), x2.transpose(0, 1).reshape(n, -1)])
        return y.view(n, -1, self.spec.channels).transpose(0, 1).contiguous()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cast"] = {}
        return state

    def __deepcopy__(self, memo):
        import copy

        new = CGExecutor.__new__(CGExecutor)
        state = self.__getstate__()
        state["run"] = copy.deepcopy(self.run, memo)
        new.__dict__.update(state)
        return new

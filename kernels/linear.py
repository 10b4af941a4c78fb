"""Element-dependent equivariant linear map (MACE's self-connection), with engines.

``y_l = x_l @ W_l[element] / sqrt(mul_in)``: one weight matrix per output irrep and element
(a tensor product with the one-hot element vector, which is linear). Runs on ``torch``
(all elements at once, then the atom's element picked: no per-atom weight matrices) or on
``cuequivariance`` (an indexed linear: the weight table gathered per atom by the executor).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mlip.errors import KernelInputError

from .irreps import as_irreps
from .tp.engines import EngineSwitch, resolve_engine

__all__ = ["ElementLinear"]


def _blocks(irreps) -> list[tuple[int, object, int, int]]:
    """``(mul, ir, start, stop)`` of each irreps entry in the flat layout."""
    out, start = [], 0
    for mul, ir in irreps:
        out.append((mul, ir, start, start + mul * ir.dim))
        start += mul * ir.dim
    return out


class ElementLinear(EngineSwitch, torch.nn.Module):
    """Element-dependent equivariant linear map ``y_l = x_l @ W_l[element] / sqrt(mul_in)``.

    Each output irrep takes the input entry of the same irrep (the last one if repeated);
    input irreps absent from the output are dropped. Weights: ``weights[i]``
    ``[mul_in, num_elements * mul_out]`` per output entry ``i`` (element-major columns),
    drawn from ``generator`` in float64 (unit normal).
    Shapes: ``x [N, irreps_in.dim]``, ``element [N]`` (index in ``0..num_elements-1``)
    -> ``[N, irreps_out.dim]``. Engines: ``torch``, ``cuequivariance`` (same numbers).
    """

    engines = ("torch", "cuequivariance")
    engine_owner = "element-dependent linear"

    def __init__(self, irreps_in, irreps_out, num_elements: int, *, generator: torch.Generator,
                 engine: str = "auto"):
        super().__init__()
        self.irreps_in, self.irreps_out = as_irreps(irreps_in, "irreps_in"), as_irreps(irreps_out, "irreps_out")
        self.num_elements = num_elements
        src = {blk[1]: (k, blk) for k, blk in enumerate(_blocks(self.irreps_in))}
        self.plan, self.sources, weights = [], [], []
        for mul_out, ir, _, _ in _blocks(self.irreps_out):
            if ir not in src:
                raise KernelInputError(f"ElementLinear: output irrep {ir} is not in the input {self.irreps_in}")
            k, (mul_in, _, a, b) = src[ir]
            self.plan.append((a, b, mul_in, ir.dim, mul_out, 1.0 / math.sqrt(mul_in)))
            self.sources.append(k)
            weights.append(torch.nn.Parameter(
                torch.randn(mul_in, num_elements * mul_out, generator=generator, dtype=torch.float64)))
        self.weights = torch.nn.ParameterList(weights)
        self._executor = None
        self.engine = engine

    def forward(self, x: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
        if resolve_engine(self._engine, x.device, self.engines) == "cuequivariance":
            return self._forward_cueq(x, element)
        n, E = x.shape[0], self.num_elements
        out = []
        for (a, b, mul_in, dim, mul_out, scale), w in zip(self.plan, self.weights):
            xb = x[:, a:b].reshape(n, mul_in, dim).transpose(1, 2)  # [N, dim, mul_in]
            y = xb @ (w * scale)  # [N, dim, E * mul_out]
            if E > 1:
                y = y.view(n, dim, E, mul_out)
                idx = element.view(n, 1, 1, 1).expand(n, dim, 1, mul_out)
                y = torch.gather(y, 2, idx).squeeze(2)
            out.append(y.transpose(1, 2).reshape(n, dim * mul_out))
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]

    # -- cuequivariance --------------------------------------------------------------------
    def _build_cueq(self):
        from .tp import cueq

        cue, _ = cueq.require()
        d = cue.SegmentedTensorProduct.from_subscripts("uv,iu,iv")
        for mul, ir in self.irreps_in:
            d.add_segment(1, (ir.dim, mul))
        for k, (_, _, mul_in, dim, mul_out, scale) in enumerate(self.plan):
            d.add_segment(2, (dim, mul_out))
            w = d.add_segment(0, (mul_in, mul_out))
            d.add_path(w, self.sources[k], k, c=np.array(scale))
        # indices: mul_ir -> ir_mul columns of the input, ir_mul -> mul_ir of the output
        idx_in, idx_out = (self._ir_mul_index(irreps) for irreps in (self.irreps_in, self.irreps_out))
        return (cueq.SegmentedExecutor(cue.SegmentedPolynomial.eval_last_operand(d), cuda_method="naive"),
                idx_in, torch.argsort(idx_out))

    @staticmethod
    def _ir_mul_index(irreps) -> torch.Tensor:
        idx = [a + np.arange(mul * ir.dim).reshape(mul, ir.dim).T.reshape(-1) for mul, ir, a, _ in _blocks(irreps)]
        return torch.from_numpy(np.concatenate(idx)).to(torch.long)

    def _forward_cueq(self, x: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
        if self._executor is None:
            self._executor = self._build_cueq()
        run, idx_in, idx_out = self._executor
        E = self.num_elements
        # the weight table [E, sum mul_in * mul_out]: each element's matrices, row-major
        table = torch.cat([w.view(w.shape[0], E, -1).transpose(0, 1).reshape(E, -1) for w in self.weights], dim=1)
        y = run([table, x.index_select(1, idx_in.to(x.device))], {0: element})
        return y.index_select(1, idx_out.to(x.device))

"""Shared cases for the tensor-product tests (on pytest's pythonpath)."""

import contextlib

import torch

from mlip.kernels import tp
from mlip.kernels.tp.product import SphericalProductBackend

#: every registered backend (the registry, not a hand-written list)
BACKENDS = list(tp.BACKENDS)
#: the backends that compute the Gaunt product (functions multiplied on the sphere)
GAUNT_BACKENDS = [name for name, cls in tp.BACKENDS.items() if issubclass(cls, SphericalProductBackend)]


def irreps_upto(L: int, mul: int) -> str:
    """Natural-parity irreps ``mul x 0e + mul x 1o + ...`` up to degree L."""
    return "+".join(f"{mul}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(L + 1))


def case(mode: str, L: int, C: int = 3):
    """(in1, in2, out) irreps of a model-like product up to degree L."""
    in1 = irreps_upto(L, C)
    in2 = irreps_upto(L, 1) if mode == "channelwise" else irreps_upto(L, C)
    return in1, in2, irreps_upto(L, C)


def options(backend: str) -> dict:
    """The backend's options for exactness tests (``cp`` below full rank is only approximately
    equivariant: its exact options ask for full rank)."""
    return dict(tp.BACKENDS[backend].exact_options)


@contextlib.contextmanager
def default_dtype(dtype):
    """Build e3nn reference modules under ``dtype`` (e3nn builds constants in the default dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)



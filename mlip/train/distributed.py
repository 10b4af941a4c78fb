"""Multi-process training with torch.distributed (DDP-style gradient averaging).

Started by ``torchrun --nproc_per_node N -m mlip.train fit CONFIG`` (or with the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT`` set by any launcher). Backend: NCCL when training on CUDA, gloo on CPU.

Gradients are summed over processes (one ``all_reduce`` of a flat buffer per step). Each
process scales its loss by the *global* normalisation (graphs and atoms of the global batch),
so the summed gradient is exactly that of single-process training on the global batch, also
when the processes hold different numbers of atoms.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "all_reduce_sum", "all_reduce_grads", "broadcast_object",
           "all_gather_object", "barrier", "shutdown"]


@dataclass
class DistInfo:
    """This process's place: ``rank`` of ``world_size``, its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1


def resolve_device(device: str) -> str:
    """The device ``train.device`` names: ``cpu``, ``cuda``, or for ``auto`` ``cuda`` when available."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by the environment (if any) and pick the device.

    ``device``: ``cpu``, ``cuda`` or ``auto`` (``cuda`` when available).
    """
    device = resolve_device(device)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device: cuda requested but no CUDA device is available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world, local, dev)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over processes in place (no-op for one process); returns ``t``."""
    if info.active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_grads(params, info: DistInfo) -> None:
    """Sum the ``.grad`` of ``params`` over processes with one flat ``all_reduce``."""
    if not info.active:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every process."""
    if not info.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj, info: DistInfo) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
    if not info.active:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    """Wait for every process."""
    if info.active:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

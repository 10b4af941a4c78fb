"""Exponential moving average of a model's weights."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["EMA"]


class EMA:
    """Shadow copy ``w_ema = d * w_ema + (1 - d) * w`` of the floating parameters and buffers.

    The decay ramps up as ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early
    averages do not remember the random initialisation for long.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold the current weights of ``model`` into the average."""
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
        self.num_updates += 1

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module):
        """Within the block, ``model`` holds the averaged weights; restored afterwards."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(backup, strict=False)

    def state_dict(self) -> dict:
        """``{"decay", "num_updates", "shadow"}``."""
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError("EMA state does not match the model's parameters")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)

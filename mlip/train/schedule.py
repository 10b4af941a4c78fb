"""Learning-rate schedule: linear warm-up, then cosine decay, reduce-on-plateau or constant."""

from __future__ import annotations

import math

__all__ = ["LRSchedule"]


class LRSchedule:
    """Sets ``lr`` of every parameter group of ``optimizer`` each step.

    Args:
        optimizer: a torch optimizer; its groups' ``lr`` is overwritten.
        base_lr: the peak learning rate.
        cfg: a :class:`~mlip.train.config.ScheduleConfig`.
        max_steps: the step count the cosine decays over.

    With a time budget, the trainer reports the fraction of it spent after each step
    (:meth:`set_time_fraction`); the cosine then follows whichever of steps and time ends first
    (see :class:`~mlip.train.config.ScheduleConfig`).
    """

    def __init__(self, optimizer, base_lr: float, cfg, max_steps: int):
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.cfg = cfg
        self.max_steps = int(max_steps)
        self.step_count = 0
        self.scale = 1.0  # plateau reductions
        self.best = math.inf
        self.bad = 0
        self.time_fraction = 0.0  # of train.max_minutes spent (0 without a time budget)
        self._apply()

    def lr(self) -> float:
        """Learning rate of the next optimizer step."""
        c, t = self.cfg, self.step_count
        warm = min(1.0, (t + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        if c.kind == "cosine" and t >= c.warmup_steps:
            span = max(1, self.max_steps - c.warmup_steps)
            frac = min(1.0, max((t - c.warmup_steps) / span, self.time_fraction))
            decay = c.min_lr_factor + (1 - c.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * frac))
        else:
            decay = 1.0
        return self.base_lr * warm * decay * self.scale

    def _apply(self) -> None:
        lr = self.lr()
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def step(self) -> None:
        """Advance one optimizer step."""
        self.step_count += 1
        self._apply()

    def set_time_fraction(self, fraction: float) -> None:
        """The fraction of the time budget spent so far (the same number on every process);
        sets the learning rate of the next step."""
        self.time_fraction = min(1.0, max(0.0, float(fraction)))
        self._apply()

    def observe(self, val_loss: float) -> None:
        """Report a validation loss (``plateau`` reduces after ``plateau_patience`` bad ones)."""
        if self.cfg.kind != "plateau":
            return
        if val_loss < self.best * (1 - 1e-4):
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
            if self.bad >= self.cfg.plateau_patience:
                self.scale *= self.cfg.plateau_factor
                self.bad = 0
        self._apply()

    def state_dict(self) -> dict:
        """Step, time fraction, plateau scale and plateau bookkeeping."""
        return {"step_count": self.step_count, "scale": self.scale, "best": self.best, "bad": self.bad,
                "max_steps": self.max_steps, "time_fraction": self.time_fraction}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (the ``max_steps`` of this run is kept)."""
        self.step_count = int(state["step_count"])
        self.scale = float(state["scale"])
        self.best = float(state["best"])
        self.bad = int(state["bad"])
        self.time_fraction = float(state.get("time_fraction", 0.0))  # absent before time budgets counted
        self._apply()

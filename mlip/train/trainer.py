"""The training run: data, model, optimizer, loop, validation, checkpoints, final report.

:func:`fit` is the entry point (``mlip-train fit``). The run folder ``cfg.out`` holds::

    config.yaml              the full configuration of the run
    metrics.csv              train rows every train.log_every steps, val rows at each validation
    tensorboard/             the same scalars (when tensorboard is installed)
    checkpoints/last.pt      every train.checkpoint_every steps, at each new best and at the end
    checkpoints/best.pt      the state at the best validation loss
    model.pt                 the deployable model (mlip.save; EMA weights of best.pt)
    metrics.json             final metrics per split; learning_curve.png, parity_<split>.png
    data_cache/              extxyz files converted to HDF5

Only rank 0 writes files; every rank reads the checkpoint when resuming. ``last.pt`` is written
before ``best.pt``; a run resumed after a crash between the two copies ``last.pt`` to ``best.pt``
when ``last.pt`` is the best state, and temporaries of killed writers are removed.

Stopping: the run ends at ``train.max_steps``, at its time budget ``train.max_minutes``, by early
stopping (``train.patience``) or on SIGINT / SIGTERM; it says which on stderr. On a signal it
finishes the step, writes a checkpoint of that step and raises :class:`TrainingInterrupted`
(``mlip-train`` prints the ``--resume`` command and exits with 128 + the signal number). A second
Ctrl-C stops at once.

Output: the final metrics table goes to stdout (results), the progress bar, notes and warnings
to stderr.

Test-only fault injection: ``MLIP_TEST_KILL_AT=<point>[@<step>]`` makes the process SIGKILL
itself at ``point`` on the first step >= ``step``; the one point is ``checkpoint:after-last``
(``last.pt`` written, ``best.pt`` not yet). Tests use it to check what a crash leaves behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

import mlip
from mlip.atomic import atomic_path, atomic_write_text, remove_stale_temporaries
from mlip.errors import CheckpointError, ConfigError, DataError, OutputExistsError
from mlip.kernels import set_engine

from . import distributed as D
from . import plots
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Config, config_from_dict, config_to_dict
from .data import BatchStream, GraphTransform, compute_e0s, iterate_batches, resolve_dataset, scan
from .ema import EMA
from .evaluate import format_table, validation_metrics
from .logger import MetricsLog, read_metrics
from .metrics import MetricSums, loss_terms
from .schedule import LRSchedule

__all__ = ["fit", "FitResult", "TrainingInterrupted"]


@dataclass
class FitResult:
    """What :func:`fit` returns: the run folder, steps done, final metrics per split, model file.

    ``model_weights`` says which weights ``model_path`` holds (e.g. ``"best EMA weights"``) and
    ``model_step`` their step; ``stop_reason`` why training ended.
    """

    out: Path
    step: int
    metrics: dict
    model_path: Path | None
    stopped_early: bool
    stop_reason: str = ""
    model_step: int | None = None
    model_weights: str = ""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM ended a training run; a ``KeyboardInterrupt``, so code that stops on
    Ctrl-C still does.

    Attributes:
        signum: the signal number.
        step: the last step done (``None``: before training began).
        checkpoint: the checkpoint of that step (``None``: none was written).
    """

    def __init__(self, signum: int, step: int | None = None, checkpoint: Path | None = None):
        self.signum, self.step, self.checkpoint = int(signum), step, checkpoint
        name = signal.Signals(self.signum).name
        where = (f" after step {step}; checkpoint {checkpoint}" if checkpoint is not None
                 else " before a checkpoint was written")
        super().__init__(f"interrupted by {name}{where}")


def _test_kill_point(point: str, step: int) -> None:
    """Test-only fault injection (see the module docstring): SIGKILL at ``point`` when
    ``MLIP_TEST_KILL_AT`` names it."""
    spec = os.environ.get("MLIP_TEST_KILL_AT")
    if spec:
        name, _, at = spec.partition("@")
        if name == point and step >= int(at or 0):
            os.kill(os.getpid(), signal.SIGKILL)


# Config keys a resumed run may change (everything else must match the checkpoint).
_RESUME_MAY_CHANGE = {"out", "train.max_steps", "train.max_minutes", "train.val_every", "train.checkpoint_every",
                      "train.log_every", "train.progress", "train.plots", "train.threads", "train.device",
                      "train.engine",
                      "train.val_batch_size", "train.patience", "data.num_workers", "data.cache_graphs",
                      "data.cache_dir"}


_SECTIONS = tuple(f.name for f in dataclasses.fields(Config) if f.name != "out")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and not prefix and k in _SECTIONS:
            out.update(_flatten(v, k + "."))
        else:
            out[prefix + k] = v
    return out


def check_resume_compatible(cfg: Config, ckpt: dict, path: Path, world_size: int) -> None:
    """Raise :class:`CheckpointError` naming the settings that differ from the checkpoint's run."""
    old, new = _flatten(ckpt["config"]), _flatten(config_to_dict(cfg))
    # a key added to the config after the checkpoint was written had its default's effect
    old = {**{k: v for k, v in _flatten(config_to_dict(Config())).items() if k not in old}, **old}
    diff = sorted(k for k in set(old) | set(new) if k not in _RESUME_MAY_CHANGE and old.get(k) != new.get(k))
    if diff:
        detail = "; ".join(f"{k}: checkpoint {old.get(k)!r}, now {new.get(k)!r}" for k in diff[:5])
        raise CheckpointError(f"{path}: cannot resume with a different setup ({detail}). Only "
                              f"{', '.join(sorted(_RESUME_MAY_CHANGE))} may change")
    if len(ckpt["data"]) != world_size:
        raise CheckpointError(f"{path}: written by {len(ckpt['data'])} process(es); resume with the same number "
                              f"(now {world_size})")


def _avg_num_neighbors(paths, split, r_max: float, limit: int = 500) -> float:
    from mlip.datasets import StreamingDataset

    edges = atoms = 0
    transform = GraphTransform(r_max)
    for k, s in enumerate(StreamingDataset(paths, split, shuffle=False)):
        if k >= limit:
            break
        g = transform(s)
        edges += g.edge_index.shape[1]
        atoms += g.num_nodes
    return max(edges / max(atoms, 1), 1.0)


class Trainer:
    """One training run (see the module docstring); use :func:`fit`."""

    def __init__(self, cfg: Config, *, resume: bool = False, overwrite: bool = False):
        self.cfg = cfg
        self.info = D.init_distributed(cfg.train.device)
        self.out = Path(cfg.out)
        self.ckpt_dir = self.out / "checkpoints"
        self.plots = cfg.train.plots
        if self.plots and self.info.is_main:
            missing = plots.unavailable()
            if missing:
                print(f"train.plots: {missing}", file=sys.stderr)
                self.plots = False
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.ckpt = self._check_run_dir(resume, overwrite)
        self._prepare_data()
        self._build_model()
        self._build_optimizer()
        self.step, self.elapsed0, self.stopped_early = 0, 0.0, False
        self.best = {"loss": math.inf, "step": -1, "bad": 0}
        self.last_val: dict = {}
        self.train_sums = MetricSums(self.info.device)
        if self.ckpt is not None:
            self._restore(self.ckpt)
        else:
            torch.manual_seed(cfg.train.seed)
        self._open_outputs()

    # -- setup -------------------------------------------------------------------------
    def _check_run_dir(self, resume: bool, overwrite: bool):
        last = self.ckpt_dir / "last.pt"
        if resume:
            if not last.exists():
                raise CheckpointError(f"--resume: no checkpoint {last} (start without --resume)")
            ckpt = load_checkpoint(last)
            check_resume_compatible(self.cfg, ckpt, last, self.info.world_size)
            return ckpt
        if last.exists() and not overwrite:
            raise OutputExistsError(f"{self.out} already holds a run ({last}); pass --resume to continue it or "
                                    "--overwrite to start again, or choose another out=")
        return None

    def _prepare_data(self) -> None:
        c, info = self.cfg, self.info
        cache = Path(c.data.cache_dir) if c.data.cache_dir else self.out / "data_cache"
        kw = dict(cache_dir=cache, pbc=c.data.pbc, energy_key=c.data.energy_key, forces_key=c.data.forces_key,
                  split_fractions=c.data.split_fractions, split_seed=c.data.split_seed)
        paths = None
        if info.is_main:
            try:
                paths = (resolve_dataset(c.data.train, **kw, progress=c.train.progress),
                         resolve_dataset(c.data.val, **kw) if c.data.val else None)
            except DataError as exc:  # every rank raises it
                paths = exc
        paths = D.broadcast_object(paths if info.is_main else None, info)
        if isinstance(paths, Exception):
            raise paths
        self.train_paths, val_paths = paths
        self.val_paths = val_paths if val_paths is not None else self.train_paths
        self.val_split = c.data.val_split
        stats = None
        if info.is_main:
            try:
                stats = (scan(self.train_paths, c.data.train_split), scan(self.val_paths, self.val_split))
            except DataError as exc:
                stats = exc
        stats = D.broadcast_object(stats, info)
        if isinstance(stats, Exception):
            raise stats
        self.train_stats, self.val_stats = stats
        missing = sorted(set(self.val_stats.symbols) - set(self.train_stats.symbols))
        if missing:
            raise DataError(", ".join(map(str, self.val_paths)), f"validation split {self.val_split!r}",
                            f"holds element(s) {missing} absent from the training data (elements "
                            f"{self.train_stats.symbols}): the model cannot learn them")
        self.use_stress = c.loss.stress_weight > 0 and self.train_stats.has_stress
        if c.loss.stress_weight > 0 and not self.train_stats.has_stress and info.is_main:
            print("mlip-train: loss.stress_weight > 0 but the training data holds no stress; "
                  "training on energy and forces", file=sys.stderr)

    def _load_reference(self) -> None:
        """``finetune.from_model``: the start model and the reference weights of OrthoReg."""
        self.base_model, self.reference = None, None
        path = self.cfg.finetune.from_model
        if path is None:
            return
        try:
            self.base_model = mlip.load(path)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"finetune.from_model: cannot load {path} ({exc})") from None
        self.reference = {k: p.detach().clone().to(self.info.device) for k, p in self.base_model.named_parameters()}

    def _model_config(self) -> mlip.PotentialConfig:
        c = self.cfg
        if self.ckpt is not None:
            return mlip.PotentialConfig.from_dict(self.ckpt["model_config"])
        if self.base_model is not None:
            mc = self.base_model.config
            unknown = sorted(set(self.train_stats.symbols) - set(mc.elements))
            if unknown:
                raise ConfigError(f"finetune.from_model: the training data holds {unknown}, not among the "
                                  f"model's elements {mc.elements}")
            return mlip.PotentialConfig.from_dict(mc.to_dict())
        data_elements = self.train_stats.symbols
        elements = list(c.model.elements) if c.model.elements else data_elements
        unknown = sorted(set(data_elements) - set(elements))
        if unknown:
            raise ConfigError(f"model.elements: the training data holds {unknown}, not in {elements}")
        if isinstance(c.model.e0s, dict):
            e0s = compute_e0s(c.model.e0s, self.train_stats, elements, self.train_paths)
        else:
            e0s = compute_e0s(c.model.e0s, self.train_stats, [e for e in elements if e in data_elements],
                              self.train_paths)
        avg = c.model.avg_num_neighbors
        if avg is None:
            avg = D.broadcast_object(_avg_num_neighbors(self.train_paths, c.data.train_split, c.model.r_max)
                                     if self.info.is_main else None, self.info)
        fields = {f.name: getattr(c.model, f.name) for f in dataclasses.fields(mlip.PotentialConfig)}
        try:  # a plain PotentialConfig (the model section may name how E0s are computed)
            return mlip.PotentialConfig(**{**fields, "elements": elements, "e0s": e0s, "avg_num_neighbors": avg})
        except ConfigError as exc:
            raise ConfigError(f"model.{exc}") from None

    def _build_model(self) -> None:
        self._load_reference()
        mc = self._model_config()
        missing = sorted(set(self.val_stats.symbols) - set(mc.elements))
        if missing:
            raise DataError(", ".join(map(str, self.val_paths)), f"validation split {self.val_split!r}",
                            f"holds element(s) {missing} the model does not know ({mc.elements})")
        self.model = mlip.Potential(mc)
        if self.base_model is not None and self.ckpt is None:
            self.model.load_state_dict(self.base_model.state_dict())
        self.model = set_engine(self.model.to(self.info.device).train(), self.cfg.train.engine)
        self.orthoreg_sums = torch.zeros(2, dtype=torch.float64)  # (sum of R, steps) since the last train row
        for p in self.model.parameters():  # identical start on every rank
            if self.info.active:
                torch.distributed.broadcast(p.data, src=0)
        self.ema = EMA(self.model, self.cfg.optim.ema_decay) if self.cfg.optim.ema_decay else None
        c, info = self.cfg, self.info
        if c.train.batch_size % info.world_size:
            raise ConfigError(f"train.batch_size: {c.train.batch_size} is not divisible by the {info.world_size} "
                              "processes")
        cache = c.data.cache_graphs
        self.train_transform = GraphTransform(mc.r_max, cache=cache)
        self.val_transform = GraphTransform(mc.r_max, cache=cache)
        self.stream = BatchStream(
            self.train_paths, c.data.train_split, batch_size=c.train.batch_size // info.world_size,
            transform=self.train_transform, shuffle=c.data.shuffle, shuffle_buffer=c.data.shuffle_buffer,
            seed=c.train.seed, rank=info.rank, world_size=info.world_size, block_size=c.data.block_size,
            num_workers=c.data.num_workers, drop_last=c.train.drop_last)

    def _build_optimizer(self) -> None:
        o = self.cfg.optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                           weight_decay=o.weight_decay)
        self.schedule = LRSchedule(self.optimizer, o.lr, self.cfg.schedule, self.cfg.train.max_steps)

    def _restore(self, ck: dict) -> None:
        try:
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
            self.schedule.load_state_dict(ck["schedule"])
            if self.ema is not None:
                self.ema.load_state_dict(ck["ema"])
            self.stream.load_state_dict(ck["data"][self.info.rank])
            set_rng_state(ck["rng"])
            sums = ck["train_sums"]  # a checkpoint from before sums were added holds fewer
            self.train_sums.tensor[:len(sums)].copy_(sums)
            if ck.get("orthoreg_sums") is not None:
                self.orthoreg_sums.copy_(ck["orthoreg_sums"])
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.ckpt_dir / 'last.pt'}: does not fit this model ({exc})") from None
        self.step = int(ck["step"])
        self.elapsed0 = float(ck["elapsed_s"])
        self.best = dict(ck["best"])
        self.last_val = dict(ck.get("metrics") or {})

    def _open_outputs(self) -> None:
        self.log = None
        if not self.info.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        for folder in (self.out, self.ckpt_dir):  # what writers killed mid-write left behind
            remove_stale_temporaries(folder)
        if self.ckpt is None:
            for old in ("last.pt", "best.pt"):  # --overwrite: nothing of the earlier run is resumed or exported
                with contextlib.suppress(FileNotFoundError):
                    (self.ckpt_dir / old).unlink()
            atomic_write_text(self.out / "config.yaml", yaml.safe_dump(config_to_dict(self.cfg), sort_keys=False))
        else:
            self._repair_best()
        self.log = MetricsLog(self.out, resume_step=self.step if self.ckpt is not None else None)

    def _repair_best(self) -> None:
        """Make ``best.pt`` the state the checkpoint names as best: after a crash between writing
        ``last.pt`` and ``best.pt``, ``last.pt`` is that state."""
        best, want = self.ckpt_dir / "best.pt", int(self.best["step"])
        if want < 0:
            return
        try:
            have = load_step(best) if best.exists() else None
        except CheckpointError:
            have = None
        if have == want:
            return
        if want == self.step:
            with atomic_path(best) as tmp:
                shutil.copyfile(self.ckpt_dir / "last.pt", tmp)
        else:
            print(f"mlip-train: {best} holds step {have}, but the run's best validation was at step {want}; "
                  "keeping it", file=sys.stderr)

    # -- one step ----------------------------------------------------------------------
    def train_step(self, batch) -> None:
        """Forward, loss normalised by the global batch, backward, gradient sum, clip, step, EMA."""
        info, w = self.info, self.cfg.loss
        batch = batch.to(info.device)
        if info.active:  # the global batch: one all-reduce (and one host sync) per step
            counts = torch.tensor([batch.num_graphs, batch.num_nodes], dtype=torch.float64, device=info.device)
            g, n = D.all_reduce_sum(counts, info).tolist()
        else:  # one process: the host already knows them
            g, n = float(batch.num_graphs), float(batch.num_nodes)
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(batch, forces=True, stress=self.use_stress, create_graph=True)
        t = loss_terms(out, batch, use_stress=self.use_stress)
        loss = w.energy_weight * t["e"] / g + w.forces_weight * t["f"] / (3 * n)
        if self.use_stress:
            loss = loss + w.stress_weight * t["s"] / (9 * g)
        lam = self.cfg.finetune.orthoreg_weight
        if lam > 0:
            from mlip.kernels.operators.orthoreg import orthoreg

            penalty = orthoreg(self.model, self.reference)
            # gradients are summed over processes: each adds its share of lambda * R
            loss = loss + (lam / info.world_size) * penalty
            self.orthoreg_sums += torch.tensor([float(penalty.detach()), 1.0], dtype=torch.float64)
        loss.backward()
        D.all_reduce_grads(self.model.parameters(), info)
        if self.cfg.optim.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad_norm)
        self.optimizer.step()
        self.schedule.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.train_sums.update({k: v.detach() for k, v in out.items()}, batch)

    # -- validation, logging, checkpoints ----------------------------------------------------
    def val_batches(self):
        """This rank's share of the validation data as graph batches."""
        from mlip.datasets import StreamingDataset

        c, info = self.cfg, self.info
        ds = StreamingDataset(self.val_paths, self.val_split, shuffle=False, rank=info.rank,
                              world_size=info.world_size, block_size=c.data.block_size)
        return iterate_batches(ds, c.train.val_batch_size, self.val_transform, drop_last=False)

    def _eval_model(self):
        return self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext(self.model)

    def validate(self) -> dict:
        """Validation metrics with the EMA weights; updates the best / early-stopping state."""
        with self._eval_model() as model:
            m, _ = validation_metrics(model, self.val_batches(), self.cfg.loss, info=self.info,
                                      use_stress=self.use_stress)
        self.last_val = m
        improved = m["loss"] < self.best["loss"]
        if improved:
            self.best = {"loss": m["loss"], "step": self.step, "bad": 0}
        else:
            self.best["bad"] += 1
        self.schedule.observe(m["loss"])
        p = self.cfg.train.patience
        if p is not None and self.best["bad"] >= p:
            self.stopped_early = True
        self._write_row("val", m)
        return {"improved": improved, **m}

    def _write_row(self, split: str, m: dict, rate: float | None = None) -> None:
        if self.log is None:
            return
        row = {"step": self.step, "epoch": self.stream.epoch, "elapsed_s": self.elapsed(), "split": split,
               "lr": self.optimizer.param_groups[0]["lr"], **{k: v for k, v in m.items() if k != "structures"}}
        if rate is not None:
            row["structures_per_s"] = rate
        self.log.write(row)

    def log_train(self, rate: float) -> dict:
        """Reduce the running training sums over ranks, write a row, reset the sums."""
        D.all_reduce_sum(self.train_sums.tensor, self.info)
        m = self.train_sums.compute(self.cfg.loss)
        lam = self.cfg.finetune.orthoreg_weight
        if lam > 0 and self.orthoreg_sums[1] > 0:
            m["orthoreg"] = float(self.orthoreg_sums[0] / self.orthoreg_sums[1])  # same on every rank
            m["loss"] += lam * m["orthoreg"]
        self._write_row("train", m, rate)
        self.train_sums = MetricSums(self.info.device)
        self.orthoreg_sums.zero_()
        return m

    def _clock(self) -> float:
        return time.process_time() if self.cfg.train.clock == "cpu" else time.perf_counter()

    def elapsed(self) -> float:
        """Training seconds (``train.clock``: wall or CPU) over all sessions of this run."""
        return self.elapsed0 + self._clock() - self.t0

    def checkpoint(self, best: bool) -> None:
        """Write ``last.pt`` (and ``best.pt``) on rank 0; every rank sends its stream position."""
        positions = D.all_gather_object(self.stream.state_dict(), self.info)
        if not self.info.is_main:
            return
        payload = {
            "config": config_to_dict(self.cfg), "model_config": self.model.config.to_dict(), "step": self.step,
            "elapsed_s": self.elapsed(), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
            "rng": rng_state(), "data": positions, "best": dict(self.best), "metrics": dict(self.last_val),
            "train_sums": self.train_sums.tensor.clone(), "orthoreg_sums": self.orthoreg_sums.clone(),
        }
        last = save_checkpoint(payload, self.ckpt_dir / "last.pt")
        if best:
            _test_kill_point("checkpoint:after-last", self.step)
            with atomic_path(self.ckpt_dir / "best.pt") as tmp:
                shutil.copyfile(last, tmp)

    def _poll(self) -> str | None:
        """Why the run stops after this step (``None``: it goes on); also gives the schedule the
        fraction of the time budget spent. One collective: the same answer on every process
        (rank 0's clock, a signal that reached any process)."""
        c = self.cfg.train
        frac = self.elapsed() / (60 * c.max_minutes) if c.max_minutes and self.info.is_main else 0.0
        flags = torch.tensor([float(self.stopped_early), frac, float(self._signal or 0)], dtype=torch.float64,
                             device=self.info.device)
        if self.info.active:
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        early, frac, signum = flags.tolist()
        if c.max_minutes:
            self.schedule.set_time_fraction(frac)
        if signum:
            self._signal = int(signum)
            return f"interrupted by {signal.Signals(self._signal).name}"
        if early:
            return (f"early stopping: {self.best['bad']} validations without improvement "
                    f"(train.patience={c.patience}; best at step {self.best['step']})")
        if frac >= 1.0:
            return (f"time budget train.max_minutes={c.max_minutes:g} reached ({frac * c.max_minutes:.2f} min of "
                    f"{c.clock} time)")
        if self.step >= c.max_steps:
            return f"train.max_steps={c.max_steps} reached"
        return None

    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self._signal = signum

    def _catch_signals(self) -> dict:
        """Handle SIGINT and SIGTERM by stopping after the current step; returns the old handlers."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    # -- the loop ------------------------------------------------------------------------
    def run(self, stop_at_step: int | None = None) -> FitResult:
        """Train until ``max_steps``, the time limit or early stopping; then the final report.

        ``stop_at_step``: end the session after this step with a checkpoint and no final
        report, as if the run had been preempted there (tests, job schedulers).
        """
        from tqdm import tqdm

        c = self.cfg.train
        self.t0 = self._clock()
        self._signal, reason = None, None
        old_handlers = self._catch_signals()
        bar = tqdm(total=c.max_steps, initial=self.step, disable=not (c.progress and self.info.is_main),
                   unit="step", desc="train", dynamic_ncols=True, file=sys.stderr)
        t_rate, n_rate = time.perf_counter(), 0
        try:
            while self.step < c.max_steps:
                self.train_step(next(self.stream))
                self.step += 1
                n_rate += c.batch_size
                bar.update(1)
                post = {}
                if self.step % c.log_every == 0:
                    rate = n_rate / max(time.perf_counter() - t_rate, 1e-9)
                    m = self.log_train(rate)
                    t_rate, n_rate = time.perf_counter(), 0
                    post = {"loss": f"{m['loss']:.3g}", "E": f"{m['energy_mae']:.2f}", "F": f"{m['forces_mae']:.1f}",
                            "struct/s": f"{rate:.0f}"}
                val = self.step % c.val_every == 0 or self.step == c.max_steps
                improved = False
                if val:
                    v = self.validate()
                    improved = v["improved"]
                    post.update({"val_E": f"{v['energy_mae']:.2f}", "val_F": f"{v['forces_mae']:.1f}"})
                if post:
                    bar.set_postfix(post, refresh=False)
                preempt = stop_at_step is not None and self.step >= stop_at_step
                reason = self._poll()
                stop = reason is not None or preempt
                if improved or stop or self.step % c.checkpoint_every == 0:
                    self.checkpoint(best=improved)
                if stop:
                    break
        finally:
            for s, handler in old_handlers.items():
                signal.signal(s, handler)
            bar.close()
            if self.log is not None:
                self.log.close()
        if self._signal is not None:
            raise TrainingInterrupted(self._signal, self.step, self.ckpt_dir / "last.pt")
        if reason is None and self.step >= c.max_steps:  # resumed at the end: the loop did not run
            reason = f"train.max_steps={c.max_steps} reached"
        if reason is None:  # stop_at_step: preempted on purpose, no final report
            return FitResult(self.out, self.step, {}, None, False)
        if self.info.is_main:
            print(f"mlip-train: training stopped at step {self.step} of {c.max_steps}: {reason}", file=sys.stderr)
        return self.finish(reason)

    def finish(self, reason: str = "") -> FitResult:
        """Final metrics table (stdout), model export and plots (rank 0); leaves the process group."""
        D.barrier(self.info)
        metrics, model_path, step, weights = {}, None, None, ""
        if self.info.is_main:
            from .export import export_checkpoint

            best = self.ckpt_dir / "best.pt"
            src = best if best.exists() else self.ckpt_dir / "last.pt"
            ck = load_checkpoint(src)
            step = int(ck["step"])
            weights = f"{'best' if src == best else 'last'} {'EMA ' if ck.get('ema') else ''}weights"
            del ck
            model_path = export_checkpoint(src, self.out / "model.pt", overwrite=True)
            model = set_engine(mlip.load(model_path, device=self.info.device), self.cfg.train.engine)
            metrics = self._final_metrics(model)
            atomic_write_text(self.out / "metrics.json", json.dumps(metrics, indent=2))
            print(f"\nfinal metrics of {model_path} ({weights}, step {step}):\n" + format_table(metrics, note=True),
                  flush=True)
        D.barrier(self.info)
        return FitResult(self.out, self.step, metrics, model_path, self.stopped_early, reason, step, weights)

    def _final_metrics(self, model) -> dict:
        from mlip.datasets import StreamingDataset

        c, results = self.cfg, {}
        splits = [("val", self.val_paths, self.val_split)]
        if c.data.val is None and self.val_split != "test":
            splits.append(("test", self.train_paths, "test"))
        if self.train_stats.n_structures <= 5000:
            splits.insert(0, ("train", self.train_paths, c.data.train_split))
        for name, paths, split in splits:
            if StreamingDataset(paths, split, shuffle=False).num_structures == 0:
                continue
            ds = StreamingDataset(paths, split, shuffle=False)
            batches = iterate_batches(ds, c.train.val_batch_size, GraphTransform(model.r_max), drop_last=False)
            m, pred = validation_metrics(model, batches, c.loss, info=D.DistInfo(device=self.info.device),
                               use_stress=self.use_stress, collect=True)
            results[name] = m
            if self.plots:
                plots.parity_plots(pred, self.out / f"parity_{name}.png", title=name)
        if self.plots and self.log is not None:
            plots.learning_curve(read_metrics(self.log.path), self.out / "learning_curve.png")
        return results


def load_step(path) -> int:
    """Step of a checkpoint file."""
    return int(load_checkpoint(path)["step"])


def fit(cfg: Config, *, resume: bool = False, overwrite: bool = False, stop_at_step: int | None = None) -> FitResult:
    """Train a potential as ``cfg`` says (see the module docstring for the run folder).

    Args:
        cfg: a validated :class:`~mlip.train.config.Config`.
        resume: continue the run in ``cfg.out`` from ``checkpoints/last.pt``.
        overwrite: start again even if ``cfg.out`` holds a run.
        stop_at_step: end this session after that step (with a checkpoint), as if preempted.

    Raises:
        ConfigError, DataError, CheckpointError, OutputExistsError (:mod:`mlip.errors`, all
        ``ValueError``): bad input, reported before anything in the run folder is written.
    """
    cfg = config_from_dict(dataclasses.asdict(cfg))  # validated private copy
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite)
    try:
        return trainer.run(stop_at_step)
    finally:
        D.shutdown()

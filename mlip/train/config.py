"""The typed configuration of a training run: a tree of dataclasses loaded from YAML.

Every section and field is listed here with its type and default; nothing is computed by
interpolation. A YAML file gives any subset of the fields; ``key=value`` overrides use dotted
paths (``optim.lr=1e-3 model.tp_backend=grid``) and their values are parsed as YAML scalars.

Validation: an unknown key, a value of the wrong type or a value outside its allowed set
raises :class:`mlip.errors.ConfigError` (a ``ValueError``) naming the dotted key and what is
allowed. The ``model`` section *is* a :class:`mlip.PotentialConfig` (see :func:`model_config`
for its defaults) and is checked by :meth:`mlip.PotentialConfig.validate` alone, its messages
prefixed with ``model.``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from mlip.config import FROM_DATA, PotentialConfig
from mlip.errors import ConfigError

__all__ = [
    "ConfigError", "DataConfig", "E0S_CHOICES", "model_config", "LossConfig", "OptimConfig", "ScheduleConfig",
    "TrainConfig", "FinetuneConfig", "Config", "load_config", "config_from_dict", "apply_overrides", "config_to_dict",
]


@dataclass
class DataConfig:
    """Where the structures come from.

    Attributes:
        train: training data: HDF5 shard(s), a shard directory / manifest, or extxyz file(s)
            (converted once to a cached HDF5 under ``cache_dir``).
        val: validation data; ``None`` uses the ``val`` split of ``train``.
        train_split: split of ``train`` to train on (``None``: every structure).
        val_split: split of ``val`` (or of ``train`` when ``val`` is ``None``) to validate on.
        split_fractions: train/val/test fractions used when an extxyz file is converted
            (random by frame for rMD17-style files).
        split_seed: seed of that split.
        cache_dir: folder of converted extxyz files (``None``: ``<out>/data_cache``).
        pbc: how converted extxyz frames are treated: ``auto`` (ASE's reading), ``none``
            (molecules: a ``Lattice`` is ignored), ``all``.
        energy_key, forces_key: extxyz keys (``None``: the usual names are searched).
        shuffle: shuffle the training stream (block order and a shuffle buffer).
        shuffle_buffer: structures per shuffle window.
        block_size: structures per streamed block (``None``: the shards' chunk length).
            Ranks get whole blocks, so use a small value for small data sets in DDP.
        num_workers: DataLoader worker processes (0: read in the training process).
        cache_graphs: keep built neighbour lists in memory (small data sets only).
    """

    train: list[str] = field(default_factory=list)
    val: Optional[list[str]] = None
    train_split: Optional[str] = "train"
    val_split: Optional[str] = "val"
    split_fractions: list[float] = field(default_factory=lambda: [0.9, 0.1, 0.0])
    split_seed: int = 0
    cache_dir: Optional[str] = None
    pbc: Literal["auto", "none", "all"] = "none"
    energy_key: Optional[str] = None
    forces_key: Optional[str] = None
    shuffle: bool = True
    shuffle_buffer: int = 4096
    block_size: Optional[int] = None
    num_workers: int = 0
    cache_graphs: bool = False


#: How a training run may set the reference energies ``model.e0s`` besides a mapping
#: ``{symbol: eV}``: ``null`` or ``least_squares`` (fit ``E_s ~ sum_i E0[z_i]`` on the training
#: split, the minimum-norm solution when compositions do not determine it), ``isolated`` (the
#: energies of isolated atoms in the training data: structures of one atom with no periodic
#: direction, e.g. MACE's ``config_type=IsolatedAtom`` frames), ``average`` (one energy per atom
#: for every element: the least-squares ``e`` of ``E_s ~ e * N_s``, i.e. the mean energy per atom
#: when all structures have the same size; MACE's ``E0s="average"`` is the least-squares fit).
E0S_CHOICES = ("least_squares", "isolated", "average")


def model_config(**fields) -> PotentialConfig:
    """The ``model`` section: a :class:`mlip.PotentialConfig` whose
    :data:`~mlip.config.FROM_DATA` fields (``elements``, ``e0s``, ``avg_num_neighbors``) default to
    ``None``, so that a run takes them from its training data (the elements present, E0s as
    ``e0s`` says - :data:`E0S_CHOICES`, ``None``: least squares on the training split - and the
    mean neighbour count within ``r_max``); every other field keeps its
    :class:`~mlip.PotentialConfig` default. ``fields`` set any of them."""
    return PotentialConfig(**{**dict.fromkeys(FROM_DATA), **fields})


@dataclass
class LossConfig:
    """Weights of the squared-error loss terms.

    ``loss = energy_weight * mean_graphs(((E - E_ref) / n_atoms)^2)
    + forces_weight * mean_atoms_components((F - F_ref)^2)
    + stress_weight * mean_graphs_components((S - S_ref)^2)`` (eV, Å units).
    The stress term is used only when the data holds stress and the weight is > 0.
    """

    energy_weight: float = 1.0
    forces_weight: float = 10.0
    stress_weight: float = 0.0


@dataclass
class OptimConfig:
    """AdamW and gradient clipping.

    Attributes:
        lr: peak learning rate.
        weight_decay: AdamW decoupled weight decay.
        betas: Adam betas.
        eps: Adam epsilon.
        clip_grad_norm: clip the global gradient norm to this (``None``: no clipping).
        ema_decay: decay of the exponential moving average of the weights (``None``: no EMA).
            Validation, the best checkpoint and exports use the EMA weights.
    """

    lr: float = 1e-2
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    clip_grad_norm: Optional[float] = 100.0
    ema_decay: Optional[float] = 0.99


@dataclass
class ScheduleConfig:
    """Learning-rate schedule: linear warm-up, then ``cosine`` decay, ``plateau`` or ``constant``.

    Attributes:
        kind: ``cosine`` (to ``min_lr_factor * lr`` at the end of the run), ``plateau``
            (multiply by ``plateau_factor`` after ``plateau_patience`` validations without
            improvement) or ``constant``.
        warmup_steps: steps of linear warm-up from ``lr / warmup_steps``.

    The cosine follows whichever budget of the run ends first: its progress after warm-up is the
    larger of the fraction of ``train.max_steps`` done and, when ``train.max_minutes`` is set, the
    fraction of that time spent (``elapsed / max_minutes``, by ``train.clock``; measured once per
    step on rank 0, stored in checkpoints, so a resumed run continues the same curve). A run that
    stops on its time budget has therefore decayed to ``min_lr_factor * lr``, not stayed at the
    peak. ``plateau`` and ``constant`` ignore the time budget.
    """

    kind: Literal["cosine", "plateau", "constant"] = "cosine"
    warmup_steps: int = 0
    min_lr_factor: float = 0.01
    plateau_factor: float = 0.5
    plateau_patience: int = 5


@dataclass
class TrainConfig:
    """The loop.

    Attributes:
        max_steps: optimizer steps in total.
        max_minutes: stop (with a checkpoint) after this much training time (``None``: no limit),
            measured by ``clock``. The run says why it stopped, and a cosine schedule spans
            this budget when it ends before ``max_steps`` (see :class:`ScheduleConfig`).
        clock: what ``max_minutes`` (and the ``elapsed_s`` of checkpoints) counts: ``wall``
            (wall-clock seconds) or ``cpu`` (CPU seconds of this process, all its threads;
            for equal-compute comparisons on a shared machine).
        batch_size: structures per optimizer step over all processes (the global batch);
            each of W processes takes ``batch_size / W``.
        val_every: validate every this many steps (and at the end).
        val_batch_size: structures per validation batch (per process).
        checkpoint_every: write ``checkpoints/last.pt`` every this many steps.
        patience: early stopping after this many validations without improvement
            (``None``: never).
        log_every: write a CSV / TensorBoard row of training metrics every this many steps.
        seed: seed of the data order and torch's RNG.
        device: ``cpu``, ``cuda`` or ``auto`` (``cuda`` when available).
        engine: how the model's products run (:data:`mlip.kernels.ENGINES`): ``auto``
            (cuEquivariance on CUDA where the backend has it, else torch), ``torch`` or
            ``cuequivariance``. Not part of the model: the same weights and numbers on any
            engine, and a resumed run may change it.
        threads: torch CPU threads (``None``: torch's choice).
        progress: show a tqdm progress bar.
        plots: write PNG learning curve and parity plots at the end.
        drop_last: drop each epoch's incomplete last batch.
    """

    max_steps: int = 1000
    max_minutes: Optional[float] = None
    clock: Literal["wall", "cpu"] = "wall"
    batch_size: int = 8
    val_every: int = 100
    val_batch_size: int = 32
    checkpoint_every: int = 100
    patience: Optional[int] = None
    log_every: int = 10
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "auto"
    engine: str = "auto"
    threads: Optional[int] = None
    progress: bool = True
    plots: bool = True
    drop_last: bool = True


@dataclass
class FinetuneConfig:
    """Fine-tuning from a trained model file, with an optional OrthoReg penalty.

    Attributes:
        from_model: a model file (``mlip.save`` / ``mlip-train export``) to start from
            (``None``: train from scratch). Its architecture, elements and E0s are used and the
            ``model`` section is ignored; its weights are the reference ``W_0``. A resumed run
            reads the file again (keep it unchanged).
        orthoreg_weight: ``lambda >= 0``: the training loss adds ``lambda * R`` with
            ``R = sum_W ||dW^T dW - I||_F`` (:func:`mlip.kernels.operators.orthoreg.orthoreg`, the
            smaller Gram matrix of each update ``dW = W - W_0``, over every weight tensor with
            ``ndim >= 2``). Needs ``from_model``. ``R`` is not 0 at the start: with ``dW = 0``
            it is ``sum_W sqrt(min(rows, cols))``, but its gradient there is 0, so the first
            step equals plain fine-tuning; it pulls each update towards orthonormal
            rows/columns (Liu et al. 2026). ``R`` and the total are logged in the ``orthoreg``
            and ``loss`` columns of the train rows of ``metrics.csv``; validation losses (best
            checkpoint, early stopping) are the data loss only. With 0 the run is plain
            fine-tuning, identical to training from the same weights.
    """

    from_model: Optional[str] = None
    orthoreg_weight: float = 0.0


@dataclass
class Config:
    """A whole training run: ``out`` (the run folder) and the sections."""

    out: str = "runs/train"
    data: DataConfig = field(default_factory=DataConfig)
    model: PotentialConfig = field(default_factory=model_config)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def validate(self) -> None:
        """Check values beyond their types; raise :class:`ConfigError` naming the key."""
        with _prefixed("model."):
            self.model.validate()
        _check(self)


# -- typed conversion --------------------------------------------------------------------
def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(typing.get_args(tp)[1])}"
    if tp is Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


def _convert(value, tp, key: str):
    """``value`` as type ``tp``, or :class:`ConfigError` naming ``key``."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping (section {tp.__name__}), got {value!r}")
        return _build(tp, value, key + ".")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error is the most precise
            return _convert(value, options[0], key)
        for a in options:  # a mapping or list for the mapping or list option: its own error is the most precise
            if (typing.get_origin(a), isinstance(value, dict), isinstance(value, (list, tuple))) in (
                    (dict, True, False), (list, False, True)):
                return _convert(value, a, key)
        for a in options:
            try:
                return _convert(value, a, key)
            except ConfigError:
                continue
        raise bad
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, Path)) and item is str:
            return [str(value)]  # one path for a list of paths
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        k_tp, v_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise bad
        return {str(k): _convert(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, (str, Path)):
            raise bad
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - a bug in this module


def _build(cls, d: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in d if k not in names]
    if unknown:
        raise ConfigError(f"unknown key {prefix + str(unknown[0])!r}; allowed keys "
                          f"{'in ' + prefix[:-1] if prefix else 'at the top level'}: {', '.join(names)}")
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in d.items()}
    with _prefixed(prefix):  # PotentialConfig validates itself on construction
        return _FACTORIES.get(cls, cls)(**kwargs)


#: How a section is built from its keys when not by its class (defaults that differ from the class's).
_FACTORIES = {PotentialConfig: model_config}


@contextlib.contextmanager
def _prefixed(prefix: str):
    """Re-raise a section's own :class:`ConfigError` with the section's dotted ``prefix``."""
    try:
        yield
    except ConfigError as exc:
        if not prefix:
            raise
        raise ConfigError(prefix + str(exc)) from None


def config_from_dict(d: dict | None) -> Config:
    """Build and validate a :class:`Config` from a plain dict (e.g. parsed YAML)."""
    cfg = _build(Config, d or {})
    cfg.validate()
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """Plain dict of ``cfg`` (YAML- and ``weights_only``-safe)."""
    return dataclasses.asdict(cfg)


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` overrides (dotted keys, YAML scalar values) to a plain dict in place.

    Raises:
        ConfigError: for a malformed override or a key that names no field.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=1e-3")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: cannot parse value {text!r} ({exc})") from None
        parts = key.split(".")
        cls, node = Config, d
        for i, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(cls)]
            if part not in names:
                where = ".".join(parts[:i]) or "the top level"
                raise ConfigError(f"unknown key {'.'.join(parts[:i + 1])!r}; allowed keys in {where}: "
                                  f"{', '.join(names)}")
            tp = typing.get_type_hints(cls)[part]
            if i == len(parts) - 1:
                node[part] = value
            else:
                if not dataclasses.is_dataclass(tp):
                    raise ConfigError(f"override {key}: {'.'.join(parts[:i + 1])} is not a section")
                node = node.setdefault(part, {})
                cls = tp
    return d


def load_config(path=None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults when ``path`` is ``None``) and apply overrides.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or value (the message names it).
    """
    d: dict = {}
    if path is not None:
        path = Path(path)
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a YAML config but a binary file (data such as HDF5 or extxyz goes in "
                              "data.train of a config; see mlip-train fit --example)") from None
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read config ({exc})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(d).__name__}")
        _relative_to(d, path.parent)
    apply_overrides(d, list(overrides or []))
    return config_from_dict(d)


def _relative_to(d: dict, folder: Path) -> None:
    """Make relative ``data.train`` / ``data.val`` / ``data.cache_dir`` / ``finetune.from_model`` paths of a
    file relative to its folder."""
    ft = d.get("finetune")
    if isinstance(ft, dict) and isinstance(ft.get("from_model"), str) and not Path(ft["from_model"]).is_absolute():
        ft["from_model"] = str(folder / ft["from_model"])
    data = d.get("data")
    if not isinstance(data, dict):
        return
    for key in ("train", "val", "cache_dir"):
        v = data.get(key)
        if isinstance(v, str) and not Path(v).is_absolute():
            data[key] = str(folder / v)
        elif isinstance(v, list):
            data[key] = [str(folder / p) if isinstance(p, str) and not Path(p).is_absolute() else p for p in v]


def _check(cfg: Config) -> None:
    def need(cond, key, what):
        if not cond:
            raise ConfigError(f"{key}: expected {what}, got {_get(cfg, key)!r}")

    t, o, s, l, dt = cfg.train, cfg.optim, cfg.schedule, cfg.loss, cfg.data
    e0s = cfg.model.e0s
    need(not isinstance(e0s, str) or e0s in E0S_CHOICES, "model.e0s",
         f"null, one of {', '.join(map(repr, E0S_CHOICES))} or a mapping {{symbol: eV}}")
    need(t.max_steps >= 1, "train.max_steps", "an integer >= 1")
    need(t.batch_size >= 1, "train.batch_size", "an integer >= 1")
    need(t.val_batch_size >= 1, "train.val_batch_size", "an integer >= 1")
    for k in ("val_every", "checkpoint_every", "log_every"):
        need(getattr(t, k) >= 1, f"train.{k}", "an integer >= 1")
    need(t.patience is None or t.patience >= 1, "train.patience", "null or an integer >= 1")
    need(t.max_minutes is None or t.max_minutes > 0, "train.max_minutes", "null or a number > 0")
    need(t.threads is None or t.threads >= 1, "train.threads", "null or an integer >= 1")
    from mlip.kernels import ENGINES

    need(t.engine in ENGINES, "train.engine", f"one of {', '.join(ENGINES)}")
    need(o.lr > 0, "optim.lr", "a number > 0")
    need(o.weight_decay >= 0, "optim.weight_decay", "a number >= 0")
    need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", "two numbers in [0, 1)")
    need(o.clip_grad_norm is None or o.clip_grad_norm > 0, "optim.clip_grad_norm", "null or a number > 0")
    need(o.ema_decay is None or 0 < o.ema_decay < 1, "optim.ema_decay", "null or a number in (0, 1)")
    need(s.warmup_steps >= 0, "schedule.warmup_steps", "an integer >= 0")
    need(0 <= s.min_lr_factor <= 1, "schedule.min_lr_factor", "a number in [0, 1]")
    need(0 < s.plateau_factor < 1, "schedule.plateau_factor", "a number in (0, 1)")
    need(s.plateau_patience >= 1, "schedule.plateau_patience", "an integer >= 1")
    for k in ("energy_weight", "forces_weight", "stress_weight"):
        need(getattr(l, k) >= 0, f"loss.{k}", "a number >= 0")
    need(l.energy_weight + l.forces_weight + l.stress_weight > 0, "loss.energy_weight", "some loss weight > 0")
    need(len(dt.split_fractions) == 3 and min(dt.split_fractions) >= 0 and abs(sum(dt.split_fractions) - 1) < 1e-6,
         "data.split_fractions", "three numbers >= 0 summing to 1 (train, val, test)")
    need(dt.block_size is None or dt.block_size >= 1, "data.block_size", "null or an integer >= 1")
    need(dt.num_workers >= 0, "data.num_workers", "an integer >= 0")
    need(dt.shuffle_buffer >= 1, "data.shuffle_buffer", "an integer >= 1")
    ft = cfg.finetune
    need(ft.orthoreg_weight >= 0, "finetune.orthoreg_weight", "a number >= 0")
    need(ft.orthoreg_weight == 0 or ft.from_model is not None, "finetune.orthoreg_weight",
         "0 unless finetune.from_model is set (OrthoReg needs reference weights)")
    for split_key in ("train_split", "val_split"):
        v = getattr(dt, split_key)
        need(v is None or v in ("train", "val", "test"), f"data.{split_key}", "null or one of 'train', 'val', 'test'")


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node

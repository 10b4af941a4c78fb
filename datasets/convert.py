"""Convert source files into HDF5 shards: atomic, resumable, with a skip report.

Output ``OUT`` ending in ``.h5``/``.hdf5`` is one file; anything else is a
directory of shards (``shard-00000.h5`` ...) plus ``manifest.json``.

* Every shard is written under a temporary name and renamed when complete;
  an interrupted or failed run leaves no half-written file.
* Directory output is resumable: after each shard the manifest records the
  source cursor; rerunning the same command (or ``resume=True``) keeps the
  completed shards and continues after the last one. Stray files from the
  interrupted run are removed first.
* Bad records raise :class:`~mlip.datasets.errors.DataError`, or with
  ``skip_bad`` are counted in a :class:`~mlip.datasets.errors.SkipReport`
  that is printed and stored (shard attr ``skip_report``, manifest).
* At the end, splits by trajectory are written next to every shard
  (``<shard>.splits.json``, :mod:`~mlip.datasets.splits`); a committed shard
  is never opened for writing again.
* The output is locked (:func:`mlip.atomic.output_lock`, ``<OUT>.lock``) for the
  whole run: a second ``convert`` (or ``split``) of the same OUT fails at once
  with :class:`~mlip.errors.OutputLockedError` instead of mixing its data in.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mlip.atomic import output_lock
from mlip.errors import OutputExistsError

from .errors import DataError, SkipReport
from .manifest import H5_SUFFIXES, MANIFEST, new_manifest, read_manifest, shard_name, write_manifest
from .sources import SOURCES, SourceOptions
from .splits import check_fractions, splits_path, write_splits
from .writer import ShardWriter

DEFAULT_SHARD_SIZE = 500_000


@dataclass
class ConversionResult:
    """What a conversion produced.

    Attributes:
        paths: the shard files, in order.
        n_structures, n_atoms: totals over all shards.
        report: skipped bad records.
        splits: split name -> structures.
        seconds: wall time of this run.
        resumed_shards: shards kept from an earlier, interrupted run.
        notes: warnings from the source reader.
    """

    paths: list
    n_structures: int
    n_atoms: int
    report: SkipReport
    splits: dict
    seconds: float
    resumed_shards: int = 0
    notes: list = field(default_factory=list)


def convert(fmt: str, sources, out, *, options: SourceOptions | None = None, shard_size: int | None = None,
            skip_bad: bool = False, resume: bool = False, overwrite: bool = False, compression: str = "none",
            split_fractions=(0.8, 0.1, 0.1), split_seed: int = 0, progress: bool = True) -> ConversionResult:
    """Convert ``sources`` of format ``fmt`` into ``out`` (see module docstring).

    Args:
        fmt: ``pubchemqcr``, ``oc20``, ``oc22`` or ``extxyz``.
        sources: files or directories.
        out: ``.h5`` file or shard directory.
        options: :class:`~mlip.datasets.sources.SourceOptions`.
        shard_size: structures per shard (directory output; a shard closes at
            the first source-record boundary at or after this many).
        skip_bad: skip and count bad records instead of raising.
        resume: require a partial conversion in ``out`` and continue it.
        overwrite: replace an existing output.
        compression: ``none``, ``lzf`` or ``gzip``.
        split_fractions, split_seed: the train/val/test split written at the end.
        progress: show a tqdm bar (structures/s) on stderr.

    Raises:
        DataError: for bad input without ``skip_bad``, or nothing converted.
        mlip.errors.OutputExistsError: if ``out`` exists (complete) and ``overwrite`` is False
            (:class:`~mlip.errors.OutputLockedError` if another process is converting into it).
    """
    if fmt not in SOURCES:
        raise ValueError(f"unknown format {fmt!r}; choose from {sorted(SOURCES)}")
    check_fractions(split_fractions)
    options = options or SourceOptions()
    source = SOURCES[fmt](sources, options)
    out = Path(out)
    with output_lock(out, what="converting into"):
        return _convert_locked(fmt, source, out, options, shard_size, skip_bad, resume, overwrite, compression,
                               split_fractions, split_seed, progress)


def _convert_locked(fmt, source, out: Path, options, shard_size, skip_bad, resume, overwrite, compression,
                    split_fractions, split_seed, progress) -> ConversionResult:
    """:func:`convert` once the output lock is held."""
    t0 = time.perf_counter()
    single = out.suffix in H5_SUFFIXES
    if single and shard_size:
        raise ValueError("--shard-size needs a directory output (OUT without .h5)")
    fingerprint = {"format": fmt, "sources": [str(p.resolve()) for p in source.files],
                   "options": options.fingerprint(), "shard_size": shard_size or DEFAULT_SHARD_SIZE,
                   "compression": compression}
    if single:
        if out.exists() and not overwrite:
            raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
        manifest, done = None, []
    else:
        manifest, done = _prepare_directory(out, fingerprint, resume, overwrite, fmt)
    report = SkipReport()
    for s in done:
        report.merge(s.get("skip_report", {}))
    cursor = done[-1]["cursor"] if done else None
    bar = tqdm(desc=f"convert {fmt}", unit=" struct", unit_scale=True, disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    new_paths = []
    tail = SkipReport()  # bad records after the last shard
    try:
        for shard in _shards(source, cursor, out, single, len(done), shard_size or DEFAULT_SHARD_SIZE,
                             skip_bad, compression, bar, tail):
            report.merge(shard["skip_report"])
            if single:
                new_paths.append(shard)
            else:
                manifest["shards"].append(shard)
                write_manifest(out, manifest)
    finally:
        bar.close()
    report.merge(tail)
    if single:
        if not new_paths:
            raise DataError(", ".join(map(str, source.files)), "", "no structures converted: " + report.summary())
        writer = new_paths[0]["writer"]
        try:
            splits_path(out).unlink(missing_ok=True)  # the replaced output's splits
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        splits = write_splits([out], split_fractions, split_seed)
        paths = [out]
        n_s, n_a = new_paths[0]["n_structures"], new_paths[0]["n_atoms"]
    else:
        if not manifest["shards"]:
            raise DataError(", ".join(map(str, source.files)), "", "no structures converted: " + report.summary())
        paths = [out / s["path"] for s in manifest["shards"]]
        splits = write_splits(paths, split_fractions, split_seed)
        n_s = sum(s["n_structures"] for s in manifest["shards"])
        n_a = sum(s["n_atoms"] for s in manifest["shards"])
        manifest.update(complete=True, n_structures=n_s, n_atoms=n_a, splits=splits,
                        skip_report=report.to_dict(), attrs=source.attrs(), notes=_notes(source))
        write_manifest(out, manifest)
    return ConversionResult(paths, n_s, n_a, report, splits, time.perf_counter() - t0,
                            resumed_shards=len(done), notes=_notes(source))


def _notes(source) -> list:
    return source.notes() if hasattr(source, "notes") else []


def _prepare_directory(out: Path, fingerprint: dict, resume: bool, overwrite: bool, fmt: str):
    """Load or start the manifest; clean files a crashed run left behind."""
    manifest = None
    if (out / MANIFEST).exists():
        manifest = read_manifest(out)
        if overwrite:
            manifest = None
        elif manifest.get("complete"):
            raise OutputExistsError(f"{out} holds a complete conversion; pass --overwrite to replace it")
        elif manifest.get("options") != fingerprint:
            raise ValueError(f"{out} holds a partial conversion made with other sources or options; "
                             "rerun with the same command to resume, or pass --overwrite")
    elif resume:
        raise FileNotFoundError(f"--resume: no partial conversion in {out} (no {MANIFEST})")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out} exists and is not an mlip conversion; choose another OUT or pass "
                                "--overwrite")
    out.mkdir(parents=True, exist_ok=True)
    keep = {s["path"] for s in manifest["shards"]} if manifest else set()
    if manifest is not None:
        keep.add(MANIFEST)
    for p in out.iterdir():
        if p.name not in keep and (p.name.startswith("shard-") or p.name == MANIFEST or p.suffix == ".tmp"):
            p.unlink()
    if manifest is None:
        manifest = new_manifest(fmt, fingerprint, fingerprint["sources"])
        manifest["options"] = fingerprint
        write_manifest(out, manifest)
    return manifest, list(manifest["shards"])


def _shards(source, cursor, out: Path, single: bool, first: int, shard_size: int, skip_bad: bool,
            compression: str, bar, tail: SkipReport):
    """Write shards from the source units; yield each shard's manifest entry when done.

    Bad records met after the last shard closed are added to ``tail``.
    """
    index = first
    writer, report, count, last_cursor = None, SkipReport(), 0, cursor

    def finish():
        attrs = {**source.attrs(), "skip_report": report.to_json(), "notes": json.dumps(_notes(source)),
                 "resume_cursor": json.dumps(last_cursor)}
        writer.finish(**attrs)
        entry = {"path": writer.path.name, "n_structures": writer.n_structures, "n_atoms": writer.n_atoms,
                 "cursor": last_cursor, "skip_report": report.to_dict()}
        if single:
            entry["writer"] = writer
        else:
            writer.commit()
        return entry

    try:
        for unit in source.iter_units(cursor):
            for err in unit.errors:
                if not skip_bad:
                    raise err
                report.add(err)
            for err in unit.skipped:  # left out by design (e.g. incomplete PubChemQCR steps): counted only
                report.add(err)
            for s in unit.structures:
                if writer is None:
                    path = out if single else out / shard_name(index)
                    writer = ShardWriter(path, attrs=source.attrs(), optional=s.optional_fields(),
                                         compression=compression)
                try:
                    writer.append(s)
                    count += 1
                except DataError as err:
                    if not skip_bad:
                        raise
                    report.add(err)
            last_cursor = unit.cursor
            bar.update(len(unit.structures))
            if report.skipped:
                bar.set_postfix(skipped=report.skipped, refresh=False)
            if not single and writer is not None and count >= shard_size:
                yield finish()
                index += 1
                writer, report, count = None, SkipReport(), 0
        if writer is not None:
            yield finish()
            writer = None
        else:
            tail.merge(report)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise

"""The errors of mlip: one base class, one subclass per kind of bad input.

Every error that bad input (a file, a structure, a configuration, a tensor of the wrong shape)
can cause is an :class:`MLIPError`, which is a ``ValueError``: ``except ValueError`` keeps
working for code written against plain ``ValueError``, and ``except mlip.MLIPError`` catches
everything mlip refuses on purpose. Messages name what was wrong and where (file, record,
config key, argument) and what was expected.

This module imports nothing but the standard library, so every layer (``mlip.kernels``,
``mlip.datasets``, the model, training, calculators) may import it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MLIPError", "ConfigError", "KernelInputError", "DataError", "StructureError", "CheckpointError",
           "OutputExistsError", "OutputLockedError"]


class MLIPError(ValueError):
    """Base of every error mlip raises for bad input."""


class ConfigError(MLIPError):
    """A configuration value or option that cannot be used: a :class:`mlip.PotentialConfig` field,
    a training-config key, a backend option. The message names the (dotted) key and what is allowed."""


class KernelInputError(MLIPError):
    """Tensors or irreps given to a kernel (tensor product, many-body product) that do not fit
    it: wrong shape, dtype, device or irreps. The message names the argument and what was expected."""


class DataError(MLIPError):
    """Input data that cannot be used: a source file, a converted HDF5 shard, a record in them.

    Args:
        path: the file (or directory) the problem was found in.
        where: the record inside it, e.g. ``"key b'000000702'"``, ``"frame 12"``,
            ``"dataset 'positions'"``; empty when the whole file is at fault.
        problem: what was wrong and what was expected.
        fatal: True when reading the file cannot go on after this error (truncated or corrupt
            file); later records of the file are lost.

    The message is ``"<path> [<where>]: <problem>"``.
    """

    def __init__(self, path: str | Path, where: str, problem: str, *, fatal: bool = False):
        self.path = str(path)
        self.where = where
        self.problem = problem
        self.fatal = fatal
        loc = f"{self.path} [{where}]" if where else self.path
        super().__init__(f"{loc}: {problem}")

    def __reduce__(self):  # picklable across DataLoader workers despite the keyword argument
        return (_rebuild_data_error, (self.path, self.where, self.problem, self.fatal))

    def kind(self) -> str:
        """A short category for reports: the problem text up to its first colon."""
        return self.problem.split(":")[0][:80]


def _rebuild_data_error(path, where, problem, fatal):
    return DataError(path, where, problem, fatal=fatal)


class StructureError(MLIPError):
    """An atomic structure the model cannot handle: unknown element, atoms on top of each other,
    non-finite or far-flung positions, a degenerate cell. Never a hang or a dead interpreter."""


class CheckpointError(MLIPError):
    """A model file or training checkpoint that cannot be used: unreadable, corrupted, foreign
    (not written by mlip), untrusted (would run code) or incompatible with this version."""


class OutputExistsError(MLIPError):
    """An output (run folder, converted data, model file) already exists and would be
    overwritten; the message says which flag allows it (``--resume``, ``--overwrite``)."""


class OutputLockedError(OutputExistsError):
    """Another process holds the :func:`mlip.atomic.output_lock` of an output (it is writing it now)."""

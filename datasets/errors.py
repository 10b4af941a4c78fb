"""Errors and skip reports for bad input.

Every problem with input data raises :class:`mlip.errors.DataError` (a
``ValueError``, re-exported here) whose message names the file, the record
(key, frame or index) and what was wrong. Converters run with
``skip_bad=True`` record such errors in a :class:`SkipReport` instead of
raising; the report is printed and stored in the output, so nothing is ever
skipped silently.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from mlip.errors import DataError

__all__ = ["DataError", "SkipReport"]


@dataclass
class SkipReport:
    """Counts of skipped records, by problem kind, with the first examples.

    Attributes:
        skipped: number of skipped records (structures or whole source records).
        by_kind: skipped count per problem category.
        examples: up to ``max_examples`` full error messages.
        bad_files: files whose reading stopped early (truncated / corrupt).
    """

    skipped: int = 0
    by_kind: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)
    bad_files: list = field(default_factory=list)
    max_examples: int = 20

    def add(self, err: DataError) -> None:
        """Count one skipped record."""
        self.skipped += 1
        self.by_kind[err.kind()] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(err))
        if err.fatal and err.path not in self.bad_files:
            self.bad_files.append(err.path)

    def merge(self, other: "SkipReport | dict") -> None:
        """Add the counts of another report (or its :meth:`to_dict` form)."""
        if isinstance(other, dict):
            other = SkipReport.from_dict(other)
        self.skipped += other.skipped
        self.by_kind.update(other.by_kind)
        room = self.max_examples - len(self.examples)
        self.examples.extend(other.examples[: max(room, 0)])
        self.bad_files.extend(f for f in other.bad_files if f not in self.bad_files)

    def to_dict(self) -> dict:
        """JSON-able form (stored in shard attributes and the manifest)."""
        return {
            "skipped": self.skipped,
            "by_kind": dict(self.by_kind),
            "examples": list(self.examples),
            "bad_files": list(self.bad_files),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SkipReport":
        """Inverse of :meth:`to_dict`."""
        return cls(
            skipped=int(d.get("skipped", 0)),
            by_kind=Counter(d.get("by_kind", {})),
            examples=list(d.get("examples", [])),
            bad_files=list(d.get("bad_files", [])),
        )

    def to_json(self) -> str:
        """The report as a JSON string."""
        return json.dumps(self.to_dict())

    def summary(self) -> str:
        """Human-readable multi-line summary."""
        if not self.skipped:
            return "skipped 0 bad records"
        lines = [f"skipped {self.skipped} bad record(s):"]
        lines += [f"  {n:>8d}  {k}" for k, n in self.by_kind.most_common()]
        if self.bad_files:
            lines.append("  files read only in part (truncated/corrupt): " + ", ".join(self.bad_files))
        lines.append("  first examples:")
        lines += [f"    {e}" for e in self.examples[:5]]
        return "\n".join(lines)

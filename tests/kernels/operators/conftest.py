"""Operator tests run on one torch thread (many small linear-algebra calls)."""

from one_thread import _one_thread  # noqa: F401  (autouse fixture)

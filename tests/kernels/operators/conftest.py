"""Operator tests run on one torch thread (many small linear-algebra calls)."""

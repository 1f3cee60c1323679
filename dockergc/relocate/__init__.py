"""Relocation of a whole data root to a new disk: its own planner and executor, on the
same journal machinery as gc (every step announced, fsync'd, and reversible)."""

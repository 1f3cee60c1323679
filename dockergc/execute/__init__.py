"""Execution: the only code that changes disk. Every change is journaled before it happens."""

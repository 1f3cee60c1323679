"""Store readers: read-only parsing of a Docker data root into typed records.

Nothing here writes. Anything malformed becomes a ``Finding`` and is kept.
"""

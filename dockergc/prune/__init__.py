"""Daemon-level cleanup (containers, images, build cache) through the Engine API: facts
(read), policy and plan (pure), executor (the only part that asks the daemon to delete)."""

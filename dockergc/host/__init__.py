"""The host around a data root: which processes use it, seen through /proc.

``procfs`` reads one process's view (its namespace, cwd, config files); ``detect`` finds
the daemons and processes that use a root. Daemon control stays in ``dockergc.daemon``.
"""

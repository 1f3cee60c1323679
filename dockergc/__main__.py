"""``python -m dockergc``: the same as the ``dockergc`` command."""

from dockergc.cli.main import console_main

console_main()

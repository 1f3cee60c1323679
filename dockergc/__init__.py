"""dockergc: find and safely reclaim what Docker's overlay2 data root leaks.

Stages, top to bottom: ``store`` (read-only parsing into records) -> ``graph``
(mark what is referenced) -> ``plan`` (pure: graph + policy -> actions) ->
execution (the only code that changes disk) -> ``cli`` (flags and rendering).
"""

__version__ = "0.1.0"

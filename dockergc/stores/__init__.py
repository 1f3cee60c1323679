"""Store families: each reads one kind of image store and finds what nothing reaches.

``interface`` is what the planner, executor and CLI see; ``overlay2`` adapts the
graphdriver readers (``dockergc.store``, ``dockergc.graph``, ``dockergc.plan``) to it and
``containerd`` is the containerd image store's family. A store never imports another.
"""

"""Which volumes a prune removes (pure): unused anonymous ones (``--volumes``), or every
unused one (``--volumes-all``), minus what a keep rule, a foreign driver or doubt spares.

"Unused" must hold twice: no container in any state lists the volume in its mounts
(apart from containers this plan removes first), and the daemon's own reference count
(GET /volumes?filters=dangling, which DELETE /volumes/{name} also enforces with a 409)
is zero. Where the two disagree the volume is kept: something holds it that we cannot
name.
"""

from __future__ import annotations

from collections.abc import Mapping

from dockergc.prune.facts import LOCAL_DRIVER, EngineContainer, EngineFacts, EngineVolume
from dockergc.prune.policy import PrunePolicy

Kept = tuple[str, str, str]  # (kind, name, why)


def volume_rule(volume: EngineVolume, policy: PrunePolicy) -> str | None:
    """The rule that selects ``volume`` if it is unused, or None if no rule covers it."""
    how = volume.anonymous()
    if how and (policy.volumes or policy.volumes_all):
        return f"unused anonymous volume ({how})"
    if not how and policy.volumes_all:
        return "unused named volume (--volumes-all)"
    return None


def _users(facts: EngineFacts) -> dict[str, list[EngineContainer]]:
    users: dict[str, list[EngineContainer]] = {}
    for c in facts.containers:
        for name in c.volumes:
            users.setdefault(name, []).append(c)
    return users


def _why_kept(
    volume: EngineVolume,
    policy: PrunePolicy,
    staying: list[EngineContainer],
    leaving: list[EngineContainer],
) -> str | None:
    if volume.driver != LOCAL_DRIVER:
        return f"driver {volume.driver or '(none)'} is not local"
    if volume.options:
        # As `docker volume prune` does: a local volume with mount options holds its data
        # on the device or share it mounts (nfs, a bind, tmpfs), not in the data root.
        opts = ", ".join(f"{k}={v}" for k, v in sorted(volume.options.items()))
        return f"local volume with mount options ({opts}): its data is not in the data root"
    why = policy.kept_volume(volume.name) or policy.kept_by_label(volume.labels)
    if why:
        return why
    if staying:
        c = staying[0]
        kept_by = policy.kept_container(c.name)
        return f"used by container {c.name}" + (f" ({kept_by})" if kept_by else "")
    if not leaving and not volume.dangling:
        return "the daemon holds a reference to it, yet no container mounts it"
    if volume.bytes is None:
        return f"not measured: {volume.unmeasured or 'unknown size'}"
    return None


def plan_volumes(
    facts: EngineFacts, policy: PrunePolicy, gone: set[str], now: float
) -> tuple[list[tuple[EngineVolume, str, int]], list[Kept]]:
    """((volume, rule, age), ...) to remove, in creation order, and what stays and why.
    ``gone``: ids of the containers this plan removes first."""
    users: Mapping[str, list[EngineContainer]] = _users(facts)
    chosen: list[tuple[EngineVolume, str, int]] = []
    kept: list[Kept] = []
    for volume in sorted(facts.volumes, key=lambda v: (v.created, v.name)):
        rule = volume_rule(volume, policy)
        if rule is None:
            continue
        mine = users.get(volume.name, [])
        staying = [c for c in mine if c.id not in gone]
        leaving = [c for c in mine if c.id in gone]
        why = _why_kept(volume, policy, staying, leaving)
        if why:
            kept.append(("volume", volume.name, why))
            continue
        if leaving:
            rule += f" once container {leaving[0].name} is removed"
        chosen.append((volume, rule, int(now - volume.created)))
    return chosen, kept

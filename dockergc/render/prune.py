"""Text for prune plans and prune runs (the JSON forms are their to_dict)."""

from __future__ import annotations

from dockergc.prune.executor import PruneResult
from dockergc.prune.plan import PrunePlan
from dockergc.render.interface import human_age, human_bytes


def _name(names: tuple[str, ...], ident: str) -> str:
    shown = ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")
    return shown or ident[:19]


def prune_plan_text(plan: PrunePlan) -> str:
    lines = []
    if plan.items:
        lines.append(f"{'KIND':<12} {'ID':<12} {'AGE':>6} {'FREES':>9}  NAME / RULE")
        for i in plan.items:
            short = i.id.removeprefix("sha256:")[:12]
            lines.append(
                f"{i.kind:<12} {short:<12} {human_age(i.age_seconds):>6} "
                f"{human_bytes(i.bytes):>9}  {_name(i.names, i.id)}  [{i.rule}]"
            )
    else:
        lines.append("nothing to prune under these rules")
    by_kind = ", ".join(f"{v['count']} {k}" for k, v in plan.totals().items()) or "0 items"
    lines.append(f"total: {by_kind}; frees {human_bytes(plan.bytes)} ({plan.bytes} bytes)")
    for kind, name, why in plan.kept:
        lines.append(f"kept {kind} {name}: {why}")
    lines.extend(f"note: {n}" for n in plan.notes)
    return "\n".join(lines)


def prune_result_text(result: PruneResult) -> str:
    lines = [
        f"{o.item.kind} {_name(o.item.names, o.item.id)}: {o.status}"
        + (f" ({o.detail})" if o.detail else "")
        for o in result.outcomes
        if o.status != "removed"
    ]
    removed = result.count("removed")
    cache = [o for o in result.outcomes if o.item.kind == "build-cache"]
    if cache:
        gone = [o for o in cache if o.status == "removed"]
        reclaimed = sum(o.reclaimed or 0 for o in gone)
        lines.append(
            f"build cache: the daemon deleted {len(gone)} of {len(cache)} records "
            f"and reported {human_bytes(reclaimed)} reclaimed"
        )
    volumes = ""
    if any(o.item.kind == "volume" for o in result.outcomes):
        volumes = (
            f"; the volumes removed held {human_bytes(result.volume_bytes)} "
            f"(planned {human_bytes(result.planned_volume_bytes)})"
        )
    lines.append(
        f"prune run {result.run_id}: removed {removed} of {len(result.outcomes)}; planned "
        f"{human_bytes(result.planned_bytes)}, freed {human_bytes(result.freed_bytes)} "
        f"({result.freed_source})" + volumes
    )
    return "\n".join(lines)

"""Machine-readable reports of a run (docs/json.md): ``ringvisor run --stats --json``."""

from __future__ import annotations

import math


def clean(value):
    """A value JSON can carry: NaN and infinities become null, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def monitor_report(mon) -> dict | None:
    """The monitor's counters: tables by cause (traps, callouts or emulated instructions,
    hypercalls ...) apart from the single counters."""
    if mon is None:
        return None
    r = mon.report()
    vcpus = r.pop("vcpus", None)        # (several virtual processors: vmm/vcpus.py)
    tables = {k: dict(v) for k, v in r.items() if isinstance(v, dict)}
    counters = {k: v for k, v in r.items() if not isinstance(v, dict)}
    out = {"name": mon.name, "tables": tables, "counters": counters}
    if vcpus is not None:
        out["vcpus"] = vcpus
    return out


def run_stats(machine, mon, stop, image: str, cmdline: str, engine: str) -> dict:
    """A finished run as a ``ringvisor.run-stats/1`` document."""
    ram = machine.mem.size if mon is None else mon.guest_ram
    return {"schema": "ringvisor.run-stats/1",
            "image": image, "engine": engine,
            "mode": getattr(machine, "mode_name", "native") if mon is None else mon.name,
            "cmdline": cmdline, "memory_mib": ram >> 20,
            "stop": {"reason": stop.reason, "status": stop.status,
                     "message": stop.message or None},
            "machine": machine.stats(), "monitor": monitor_report(mon)}

"""What the commands print about a run: one JSON document (docs/json.md), or the
machine's and the monitor's statistics as text on stderr.

Apart from the commands so that every one of them prints a report the same way.
"""

from __future__ import annotations

import json
import sys

from ringvisor import __version__


def emit_json(doc: dict, stream=None) -> None:
    """One JSON document (docs/json.md): the version that wrote it goes in, and a value
    JSON cannot carry (NaN, infinity) goes out as null."""
    from ringvisor.ui.report import clean
    stream = stream or sys.stdout
    doc = {"schema": doc["schema"], "ringvisor": __version__, **doc}
    stream.write(json.dumps(clean(doc), indent=1) + "\n")
    stream.flush()


def print_monitor_stats(mon) -> None:
    r = mon.report()
    vcpus = r.pop("vcpus", ())
    lines = [f"monitor: {mon.name}"]
    for key in ("exits", "traps", "emulated", "callouts", "hypercalls"):
        if key in r and r[key]:
            items = sorted(r[key].items(), key=lambda kv: -kv[1])
            lines.append(f"{key}: " + ", ".join(f"{k} {v:,}" for k, v in items))
    rest = {k: v for k, v in r.items() if not isinstance(v, dict)}
    lines.append(", ".join(f"{k.replace('_', ' ')}: {v:,}" if isinstance(v, int) else
                           f"{k.replace('_', ' ')}: {v}" for k, v in rest.items()))
    for c in vcpus:
        lines.append(f"  vCPU {c['apic_id']}: {c['instructions']:,} instructions, {c['traps']:,} "
                     f"traps, {c['interrupts']:,} interrupts"
                     + ("" if c["started"] else " (never started: waiting for a SIPI)"))
    print("\n".join(lines), file=sys.stderr)


def print_stats(m) -> None:
    s = m.stats()
    if s["instructions"] is None:           # --mode kvm: the host's CPU counts nothing
        exits = ", ".join(f"{k} {v:,}" for k, v in s["kvm_exits"].items())
        print(f"wall time: {s['wall_seconds']:.2f} s\n"
              f"KVM exits: {exits or 'none'}\n"
              f"interrupts injected: {s['interrupts']:,}", file=sys.stderr)
        return
    print(f"instructions retired: {s['instructions']:,}\n"
          f"wall time: {s['wall_seconds']:.2f} s ({s['mips']:.2f} MIPS)\n"
          f"blocks translated: {s['blocks_translated']:,} "
          f"(code cache: {s['code_cache_blocks']:,} blocks, {s['code_cache_bytes'] // 1024:,} KiB of "
          f"generated source; {s['invalidations']:,} invalidated, "
          f"{s['smc_restarts']} self-modifying-code restarts)\n"
          f"exceptions: {s['exceptions']:,}  interrupts: {s['interrupts']:,}  "
          f"page walks: {s['tlb_walks']:,}", file=sys.stderr)
    for c in s.get("cpus", ()):
        print(f"  CPU {c['apic_id']}: {c['instructions']:,} instructions, {c['exceptions']:,} "
              f"exceptions, {c['interrupts']:,} interrupts, {c['blocks_translated']:,} blocks"
              + ("" if c["started"] else " (never started: waiting for a SIPI)"), file=sys.stderr)
    if s["post_writes"]:
        print(f"POST codes: {s['post_writes']:,} written, the last {s['post_last']:#04x}",
              file=sys.stderr)
    for name in ("virtio-blk", "virtio-console"):
        if name in s:
            d = dict(s[name])
            broken = d.pop("broken")
            print(f"{name}: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in d.items())
                  + (f" -- broken: {broken}" if broken else ""), file=sys.stderr)

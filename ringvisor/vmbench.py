"""``ringvisor vmbench``: what each virtualization structure costs, measured side by side.

Every workload of the teaching kernel runs on the bare hardware and under each
monitor, in one process, one after the other.  Per workload and mode it reports
the guest's own cost per operation (``rdtsc`` cycles: on this machine, guest
instructions retired, with each trap into the monitor counting as one) and the
wall time per operation, taken as the difference between a run of ``2n`` and a run of
``n`` operations (so booting and the program's start-up cancel out), and the
ratio of both to native.
"""

from __future__ import annotations

import re
import time

from ringvisor.guests.build import image_path
from ringvisor.vmm import run_vm

NANO = ["syscall", "in", "crwr", "callret", "pgfault", "divzero", "ptemod"]
LMBENCH = ["null", "ctxsw", "forkwait", "pagefault"]
CPU = ["sieve", "crc32", "matmul", "qsort", "strings", "dhrystone"]
ITERS = {"syscall": 400, "in": 2000, "crwr": 2000, "callret": 4000, "pgfault": 200,
         "divzero": 400, "ptemod": 2000, "null": 400, "ctxsw": 100, "forkwait": 10,
         "pagefault": 200, "sieve": 3, "crc32": 20, "matmul": 6, "qsort": 4, "strings": 40,
         "dhrystone": 150}
TIMING = re.compile(r"\[timing\] (\S+): (\d+) cycles/op \(iters=(\d+)")


def _run(kernel, mode: str, cmdline: str, engine: str):
    t0 = time.perf_counter()
    r = run_vm(kernel, mode, cmdline, engine=engine, max_instructions=2_000_000_000, quiet=True)
    return r, time.perf_counter() - t0


def measure(modes=("native", "trapemu", "bt"), workloads=None, scale: float = 1.0,
            engine: str = "jit", report=print) -> dict:
    kernel = image_path("kernel")
    names = workloads or NANO + LMBENCH + CPU
    results: dict = {}
    for name in names:
        iters = max(1, int(ITERS.get(name, 10) * scale))
        row = {}
        for mode in modes:
            r1, wall1 = _run(kernel, mode, f"run={name} iters={iters}", engine)
            r, wall = _run(kernel, mode, f"run={name} iters={2 * iters}", engine)
            m = [x for x in TIMING.findall(r.output.decode(errors="replace")) if x[0] == name]
            ok = r.status == 1 and r1.status == 1 and bool(m)
            cycles = int(m[0][1]) if m else None
            row[mode] = {"ok": ok, "cycles": cycles, "wall_us": max(wall - wall1, 0.0) / iters * 1e6,
                         "instructions": r.stats["instructions"] - r1.stats["instructions"]}
        results[name] = row
        report(_line(name, iters, row, modes))
    return results


def _line(name: str, iters: int, row: dict, modes) -> str:
    nat = row.get("native")
    parts = [f"{name:10s} x{iters:<5d}"]
    for mode in modes:
        c = row[mode]
        if not c["ok"]:
            parts.append(f"{mode}: failed")
            continue
        txt = f"{mode}: {c['cycles']:>7,} cyc {c['wall_us']:>8.1f} us"
        if mode != "native" and nat and nat["ok"]:
            rc = c["cycles"] / nat["cycles"] if nat["cycles"] else float("nan")
            rw = c["wall_us"] / nat["wall_us"] if nat["wall_us"] else float("nan")
            txt += f" (x{rc:.2f} cyc, x{rw:.2f} wall)"
        parts.append(txt)
    return "  ".join(parts)

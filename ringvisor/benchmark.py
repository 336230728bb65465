"""``ringvisor bench``: the CPU-bound suite on the translating engine, beside QEMU.

Each workload is a standalone Multiboot guest built from ``guests/``.  It runs
on ringvisor (guest instructions, wall time, MIPS) and, in the same run, the
same image with the same command line runs on ``qemu-system-i386`` (TCG) so
the ratio is taken on one machine at one moment — these machines are shared
and noisy, so only side-by-side ratios mean anything.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass

from ringvisor.guests.build import image_path
from ringvisor.hw.machine import Machine, read_image
from ringvisor.tools import qemu

WORKLOADS = ("sieve", "crc32", "matmul", "qsort", "strings", "dhrystone")
# iterations giving roughly 20 M guest instructions each (see guests/README.md)
FULL_ITERS = {"sieve": 200, "crc32": 2500, "matmul": 600, "qsort": 400, "strings": 4000,
              "dhrystone": 35000}


@dataclass
class Result:
    name: str
    iters: int
    instructions: int
    seconds: float
    checksum_line: str
    qemu_seconds: float | None = None
    qemu_agrees: bool | None = None

    @property
    def mips(self) -> float:
        return self.instructions / self.seconds / 1e6


def run_one(name: str, iters: int, engine: str, mem_mb: int = 32) -> Result:
    out = bytearray()
    m = Machine(mem_mb, engine, output=out.extend)
    path = image_path(f"bench-{name}")
    m.boot_multiboot(read_image(path), f"iters={iters}", image_name=str(path))
    t0 = time.perf_counter()
    stop = m.run()
    dt = time.perf_counter() - t0
    text = out.decode(errors="replace")
    line = next((l for l in text.splitlines() if l.startswith(f"{name}:")), "")
    if stop.reason != "exit" or not line:
        raise RuntimeError(f"bench-{name} did not finish cleanly: {stop}")
    return Result(name, iters, m.cpu.state.icount, dt, line)


def run_suite(engine: str = "jit", scale: float = 1.0, names=WORKLOADS, use_qemu: bool = True,
              echo=print) -> list[Result]:
    results = []
    qemu_bin = qemu.find_qemu() if use_qemu else None
    for name in names:
        iters = max(1, int(FULL_ITERS[name] * scale))
        r = run_one(name, iters, engine)
        if qemu_bin:
            q = qemu.run_qemu(image_path(f"bench-{name}"), f"iters={iters}", timeout=600)
            qtext = q.output.decode(errors="replace")
            r.qemu_seconds = q.wall_seconds
            r.qemu_agrees = r.checksum_line in qtext.splitlines()
        results.append(r)
        echo(format_row(r))
    return results


HEADER = (f"{'workload':<10} {'iters':>6} {'guest insns':>12} {'wall s':>8} {'MIPS':>6} "
          f"{'qemu s':>7} {'ratio':>6}  checksum")


def format_row(r: Result) -> str:
    q = f"{r.qemu_seconds:7.2f}" if r.qemu_seconds is not None else f"{'-':>7}"
    ratio = f"{r.seconds / r.qemu_seconds:6.1f}" if r.qemu_seconds else f"{'-':>6}"
    agree = "" if r.qemu_agrees is None else ("  (= qemu)" if r.qemu_agrees else "  (DIFFERS from qemu)")
    return (f"{r.name:<10} {r.iters:>6} {r.instructions:>12,} {r.seconds:8.2f} {r.mips:6.2f} "
            f"{q} {ratio}  {r.checksum_line.split('checksum=')[-1]}{agree}")


def summary(results: list[Result], mem_mb: int = 32) -> list[str]:
    gm = math.exp(sum(math.log(r.mips) for r in results) / len(results))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [f"geometric mean: {gm:.2f} MIPS over {len(results)} workloads, "
             f"{sum(r.instructions for r in results):,} guest instructions"]
    qs = [r for r in results if r.qemu_seconds]
    if qs:
        gq = math.exp(sum(math.log(r.seconds / r.qemu_seconds) for r in qs) / len(qs))
        lines.append(f"ringvisor/qemu wall-time ratio (geometric mean, same run): {gq:.1f}x")
    lines.append(f"peak memory: {peak_mib:.0f} MiB (guest RAM {mem_mb} MiB + "
                 f"{peak_mib - mem_mb:.0f} MiB)")
    return lines

"""``ringvisor bench``: the CPU-bound suite on the translating engine, beside QEMU.

Each workload is a standalone Multiboot guest built from ``guests/``.  It runs
on ringvisor (guest instructions, wall time, MIPS) and, in the same run, the
same image with the same command line runs on ``qemu-system-i386`` (TCG) so
the ratio is taken on one machine at one moment — these machines are shared
and noisy, so only side-by-side ratios mean anything.
"""

from __future__ import annotations

import gc
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


QEMU_SCALE = 50


@dataclass
class Result:
    name: str
    iters: int
    instructions: int
    seconds: float
    checksum_line: str
    qemu_seconds: float | None = None      # the same image and iterations on QEMU (TCG)
    qemu_boot_seconds: float | None = None  # ... with iters=1: QEMU's start-up and boot
    qemu_agrees: bool | None = None

    qemu_long_seconds: float | None = None  # ... with QEMU_SCALE times the iterations
    cpu_seconds: float = 0.0                # CPU time of the same run (wall time less waiting
                                            # for a core on a shared machine)

    @property
    def qemu_net(self) -> float | None:
        """QEMU's time for this workload's instructions, start-up subtracted.

        QEMU runs these images in well under its own start-up time, so its cost
        per guest instruction is taken from the run QEMU_SCALE times longer.
        """
        if self.qemu_long_seconds is None or self.qemu_boot_seconds is None:
            return None
        net = self.qemu_long_seconds - self.qemu_boot_seconds
        return net / QEMU_SCALE if net > 0.05 else None

    @property
    def mips(self) -> float:
        return self.instructions / self.seconds / 1e6

    @property
    def cpu_mips(self) -> float:
        return self.instructions / self.cpu_seconds / 1e6 if self.cpu_seconds else 0.0


def run_one(name: str, iters: int, engine: str, mem_mb: int = 32) -> Result:
    out = bytearray()
    m = Machine(mem_mb, engine, output=out.extend)
    path = image_path(f"bench-{name}")
    m.boot_multiboot(read_image(path), f"iters={iters}", image_name=str(path))
    t0, c0 = time.perf_counter(), time.process_time()
    stop = m.run()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    text = out.decode(errors="replace")
    line = next((l for l in text.splitlines() if l.startswith(f"{name}:")), "")
    if stop.reason != "exit" or not line:
        raise RuntimeError(f"bench-{name} did not finish cleanly: {stop}")
    result = Result(name, iters, m.cpu.state.icount, dt, line, cpu_seconds=cpu)
    # a machine is a web of references (CPU, code cache, generated code): free it
    # now, so peak memory is that of one machine, not of the whole suite
    del m
    gc.collect()
    return result


def run_suite(engine: str = "jit", scale: float = 1.0, names=WORKLOADS, use_qemu: bool = True,
              echo=print, progress=None) -> list[Result]:
    """Run the workloads ``names``; ``progress`` (ui.progress.Progress) hears of each."""
    results = []
    qemu_bin = qemu.find_qemu() if use_qemu else None
    for i, name in enumerate(names):
        iters = max(1, int(FULL_ITERS[name] * scale))
        if progress is not None:
            progress.start(i, f"bench: {name} on ringvisor" + (" and QEMU" if qemu_bin else ""))
        r = run_one(name, iters, engine)
        if qemu_bin:
            q = qemu.run_qemu(image_path(f"bench-{name}"), f"iters={iters}", timeout=600)
            qtext = q.output.decode(errors="replace")
            r.qemu_seconds = q.wall_seconds
            r.qemu_boot_seconds = qemu.run_qemu(image_path(f"bench-{name}"), "iters=1",
                                                timeout=600).wall_seconds
            r.qemu_long_seconds = qemu.run_qemu(image_path(f"bench-{name}"),
                                                f"iters={iters * QEMU_SCALE}",
                                                timeout=600).wall_seconds
            r.qemu_agrees = r.checksum_line in qtext.splitlines()
        results.append(r)
        if progress is not None:
            progress.done(i)
        echo(format_row(r))
    return results


HEADER = (f"{'workload':<10} {'iters':>6} {'guest insns':>12} {'wall s':>8} {'MIPS':>6} {'cpuMIPS':>7} "
          f"{'qemu s':>7} {'boot s':>7} {'x50 s':>7} {'ratio':>6}  checksum")


def format_row(r: Result) -> str:
    q = f"{r.qemu_seconds:7.2f}" if r.qemu_seconds is not None else f"{'-':>7}"
    b = f"{r.qemu_boot_seconds:7.2f}" if r.qemu_boot_seconds is not None else f"{'-':>7}"
    lq = f"{r.qemu_long_seconds:7.2f}" if r.qemu_long_seconds is not None else f"{'-':>7}"
    ratio = f"{r.seconds / r.qemu_net:6.0f}" if r.qemu_net else f"{'-':>6}"
    agree = "" if r.qemu_agrees is None else ("  (= qemu)" if r.qemu_agrees else "  (DIFFERS from qemu)")
    return (f"{r.name:<10} {r.iters:>6} {r.instructions:>12,} {r.seconds:8.2f} {r.mips:6.2f} {r.cpu_mips:7.2f} "
            f"{q} {b} {lq} {ratio}  {r.checksum_line.split('checksum=')[-1]}{agree}")


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def totals(results: list[Result], mem_mb: int = 32) -> dict:
    """The suite's summary figures (``summary`` prints them, ``to_json`` carries them)."""
    qs = [r for r in results if r.qemu_net]
    return {"geomean_mips": _geomean([r.mips for r in results]),
            "geomean_cpu_mips": _geomean([r.cpu_mips for r in results])
            if all(r.cpu_mips for r in results) else None,
            "instructions": sum(r.instructions for r in results),
            "qemu_ratio_geomean": _geomean([r.seconds / r.qemu_net for r in qs]) if qs else None,
            "qemu_workloads": len(qs),
            "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "guest_ram_mib": mem_mb}


def summary(results: list[Result], mem_mb: int = 32) -> list[str]:
    t = totals(results, mem_mb)
    lines = [f"geometric mean: {t['geomean_mips']:.2f} MIPS over {len(results)} workloads, "
             f"{t['instructions']:,} guest instructions "
             f"({t['geomean_cpu_mips'] or 0.0:.2f} MIPS of CPU time: the machine's other load "
             "left out)"]
    if t["qemu_ratio_geomean"] is not None:
        lines.append(f"ringvisor/qemu time ratio (geometric mean, same run, QEMU's start-up "
                     f"subtracted): {t['qemu_ratio_geomean']:.0f}x over {t['qemu_workloads']} "
                     "workloads")
    lines.append(f"(qemu s: QEMU on the same image and iterations, checksum compared; boot s: "
                 f"QEMU with iters=1; x{QEMU_SCALE} s: QEMU with {QEMU_SCALE}x the iterations; "
                 f"ratio: ringvisor time / QEMU time for the same instructions)")
    peak = t["peak_memory_mib"]
    lines.append(f"peak memory: {peak:.0f} MiB (guest RAM {mem_mb} MiB + "
                 f"{peak - mem_mb:.0f} MiB)")
    return lines


def to_json(results: list[Result], engine: str, scale: float) -> dict:
    """The run as a ``ringvisor.bench/1`` document (docs/json.md)."""
    rows = []
    for r in results:
        q = None
        if r.qemu_seconds is not None:
            q = {"seconds": r.qemu_seconds, "boot_seconds": r.qemu_boot_seconds,
                 "long_seconds": r.qemu_long_seconds, "net_seconds": r.qemu_net,
                 "ratio": r.seconds / r.qemu_net if r.qemu_net else None,
                 "agrees": r.qemu_agrees}
        rows.append({"name": r.name, "iters": r.iters, "instructions": r.instructions,
                     "seconds": r.seconds, "mips": r.mips, "cpu_seconds": r.cpu_seconds,
                     "cpu_mips": r.cpu_mips,
                     "checksum": r.checksum_line.split("checksum=")[-1], "qemu": q})
    return {"schema": "ringvisor.bench/1", "engine": engine, "scale": scale,
            "qemu_scale": QEMU_SCALE, "workloads": rows, "summary": totals(results)}

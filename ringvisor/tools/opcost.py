"""Python bytecodes per guest operation under each mode: a measure of the monitors'
entries that does not depend on the machine's load.

``python -m ringvisor.tools.opcost [WORKLOAD] [ITERS] [MODE...]`` boots the teaching
kernel on the ``ringvisor vmbench`` workload (``syscall`` by default, 100 iterations)
under each mode (default: native, trapemu, bt, paravirt) with CPython's opcode tracing
on in every Python frame, and prints, per operation of the guest's timed loop (the
bracket of its RDTSC reads, as vmbench takes it), the bytecodes executed and the Python
calls made.  Both counts are exact and repeatable: two versions of a monitor can be
compared on a shared machine where CPU-time ratios drift by 30%.  They weigh a
dictionary probe like a constant load and a C call (``compile``, iced-x86's decoder)
as one bytecode, so they complement vmbench's timings rather than replacing them.
"""

from __future__ import annotations

import sys

from ringvisor.guests.build import image_path
from ringvisor.hw.machine import read_image
from ringvisor.vmbench import CPU, LMBENCH, NANO, TIMING, _bracket
from ringvisor.vmm.runner import create_vm

MODES = ("native", "trapemu", "bt", "paravirt")


def count(name: str, mode: str, iters: int) -> tuple[float, float]:
    """(bytecodes, Python calls) per operation of ``name`` under ``mode``."""
    out = bytearray()
    kernel = image_path("kernel-pv" if mode == "paravirt" else "kernel")
    m, _ = create_vm(read_image(kernel), mode, f"run={name},{name} iters={iters}",
                     engine="jit", output=out.extend)
    ops = calls = 0
    reads: list[tuple[int, int, int]] = []

    def local(frame, event, arg):
        nonlocal ops
        if event == "opcode":
            ops += 1
        return local

    def on_call(frame, event, arg):
        nonlocal calls
        calls += 1
        frame.f_trace_opcodes = True
        return local

    def probe(t: int) -> None:
        if not reads:
            # the workload's first RDTSC: trace from here on (the boot is not measured),
            # the frames already running included
            f = sys._getframe(1)
            while f is not None:
                f.f_trace, f.f_trace_opcodes = local, True
                f = f.f_back
            sys.settrace(on_call)
        reads.append((t, ops, calls))

    m.cpu.tsc_probe = probe
    try:
        stop = m.run(2_000_000_000)
    finally:
        sys.settrace(None)
    found = [x for x in TIMING.findall(out.decode(errors="replace")) if x[0] == name]
    if stop.status != 1 or not found:
        raise RuntimeError(f"{name} under {mode} did not finish: {stop.message}")
    n, total = int(found[-1][2]), int(found[-1][3])
    b = _bracket(reads, total)
    if b is None:
        raise RuntimeError(f"{name} under {mode}: no bracket of {total} cycles")
    return b[0] / n, b[1] / n


def main(argv: list[str]) -> int:
    name = argv[0] if argv else "syscall"
    if name not in NANO + LMBENCH + CPU:
        print(f"opcost: no such workload {name!r} (one of {', '.join(NANO + LMBENCH + CPU)})",
              file=sys.stderr)
        return 2
    try:
        iters = int(argv[1]) if len(argv) > 1 else 100
    except ValueError:
        print(f"opcost: the iteration count must be a number, not {argv[1]!r}", file=sys.stderr)
        return 2
    modes = argv[2:] or list(MODES)
    bad = [x for x in modes if x not in MODES]
    if bad or iters < 1:
        print(f"opcost: modes are {', '.join(MODES)}; iterations at least 1", file=sys.stderr)
        return 2
    base = None
    for mode in modes:
        ops, calls = count(name, mode, iters)
        base = base or (ops if mode == "native" else None)
        ratio = f"  ({ops / base:.2f}x native)" if base else ""
        print(f"{name} {mode:9s} {ops:9.0f} bytecodes/op {calls:7.0f} calls/op{ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

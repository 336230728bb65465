"""Lockstep cross-check of the translator against the one-instruction interpreter.

Two machines boot the same image: one runs translated blocks, the other one
instruction at a time with full state after every instruction.  After every
block of the first, the second catches up to the same instruction count and
the architectural states are compared; the first difference is reported with
the block that produced it.  Interrupts are recognised at block boundaries,
so two engines may legitimately take one at different instructions: the
check stops at the first external interrupt it sees (its guests are meant to
be interrupt-free: the benchmark images, the conformance kernels).
"""

from __future__ import annotations

from dataclasses import dataclass

from .faults import TripleFault, UnsupportedFeature
from .machine import Machine, Stop
from .state import REG_NAMES, SEG_NAMES


@dataclass
class CrossCheck:
    instructions: int
    blocks: int
    ok: bool
    message: str


def snapshot(m: Machine) -> dict:
    cpu = m.cpu
    st = cpu.state
    return {
        "eip": st.eip, "eflags": cpu.get_eflags(), "cr0": st.cr0, "cr2": st.cr2, "cr3": st.cr3,
        "cr4": st.cr4, **{n: st.regs[i] for i, n in enumerate(REG_NAMES)},
        **{n: (s.selector, s.base, s.limit, s.attr) for n, s in zip(SEG_NAMES, st.segs)},
        "halted": st.halted,
        # the x87/SSE state, compared field by field (vars: no copy, compared at once)
        **{f"fpu.{k}": v for k, v in vars(st.fpu).items()},
    }


def crosscheck(image: bytes, cmdline: str = "", max_instructions: int = 10_000_000,
               mem_mb: int = 32, check_memory_every: int = 256) -> CrossCheck:
    out_a, out_b = bytearray(), bytearray()
    a = Machine(mem_mb, "jit", output=out_a.extend, keep_source=True)
    b = Machine(mem_mb, "interp", output=out_b.extend)
    for m in (a, b):
        m.boot_multiboot(image, cmdline)
    a.cpu.exact = False        # whole blocks, as translated: they are what is checked
    sa, sb = a.cpu.state, b.cpu.state
    blocks = 0
    while sa.icount < max_instructions:
        before = sa.eip
        a.stop = None
        a.run(1)                                 # one block (or one interrupt delivery)
        if a.cpu.stats["interrupts"]:
            return CrossCheck(sa.icount, blocks, True, "stopped at the first external interrupt")
        # catch up one instruction (or one exception delivery) at a time: a fault
        # retires nothing, so both the count and the exceptions seen must match
        while (sb.icount < sa.icount or
               b.cpu.stats["exceptions"] < a.cpu.stats["exceptions"]) and \
                b.stop is None and not sb.halted:
            try:
                b.cpu.step()
            except (TripleFault, UnsupportedFeature) as e:    # (as Machine.run stops)
                b.stop = Stop("triple-fault" if isinstance(e, TripleFault) else "unsupported",
                              3, str(e))
        blocks += 1
        if sb.icount != sa.icount:
            return CrossCheck(sa.icount, blocks, False,
                              f"instruction counts differ after the block at {before:#010x}: "
                              f"jit {sa.icount}, interp {sb.icount}")
        x, y = snapshot(a), snapshot(b)
        diff = [k for k in x if x[k] != y[k]]
        if not diff and blocks % check_memory_every == 0 and a.mem.ram != b.mem.ram:
            diff = ["memory"]
        if diff or bytes(out_a) != bytes(out_b):
            what = ", ".join(f"{k}: jit {_fmt(x.get(k))} interp {_fmt(y.get(k))}" for k in diff) \
                or "serial output"
            src = _block_source(a, before)
            return CrossCheck(sa.icount, blocks, False,
                              f"states differ after the block at {before:#010x} "
                              f"(instruction {sa.icount}): {what}\n{src}")
        if a.stop and a.stop.reason != "limit":
            if b.stop is not None and b.stop.reason != a.stop.reason:
                return CrossCheck(sa.icount, blocks, False, f"jit stopped ({a.stop.reason}), "
                                  f"interp stopped ({b.stop.reason})")
            same = a.mem.ram == b.mem.ram
            return CrossCheck(sa.icount, blocks, same,
                              f"guest stopped ({a.stop.reason}); "
                              + ("memory identical" if same else "MEMORY DIFFERS"))
    return CrossCheck(sa.icount, blocks, True, "instruction budget reached")


def _fmt(v) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:#x}"
    if isinstance(v, tuple):
        return "(" + ", ".join(f"{e:#x}" for e in v) + ")"
    return str(v)


def _block_source(m: Machine, eip: int) -> str:
    for tr in m.cpu.cache.blocks.values():
        if tr.eip == eip and tr.source:
            return "the block as translated:\n" + tr.source
    return ""

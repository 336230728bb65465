"""Native-handler regions: ring-0 software written in Python, living on the machine.

A region of the physical address space is bound to a Python callable.  When
the CPU, at CPL 0, fetches an instruction from that region — typically after a
real gate transfer (an interrupt through the IDT, a call gate) has taken it
there — the callable runs *as* that ring-0 code: it receives the CPU with its
architectural state and must leave EIP (and whatever else it changes) as the
code it stands for would, for instance by returning with :meth:`Cpu.iret`.
This is how a monitor or a BIOS service written in Python runs *on* the
hardware instead of inside it: the guest reaches it only through the gates
and mappings that real hardware would check.

At any other CPL the region executes as an invalid opcode (#UD): ring-3 code
that reaches it has been let through by the page tables, as on real hardware,
but it gets no Python service.  Each entry retires one instruction.

The owner of a region may also take the exceptions its IDT gates lead there
*handed off* (``NativeRegions.handoff``): a monitor's entry for a fault the
guest raised is a gate delivery onto the monitor's stack, the handler, and an
IRET that unwinds the frame again -- two full protected-mode transfers whose
every check the monitor's own constant tables pass.  When nothing could come
between the delivery and the handler's first instruction (``Cpu.may_hand_off``:
no tracing, single-step, breakpoint, pending NMI or bound in the way), the CPU
offers the fault, or the software interrupt, to ``handoff(cpu, vector,
error_code, soft)`` instead.  It declines with None (the architectural delivery
follows); or, for a software interrupt its own gate refuses, raises the fault the
delivery would raise (``CpuFault(GP, vector * 8 + 2)`` for a gate whose DPL is
below the CPL, SDM Vol. 2 INT n), which is offered to it in turn; or returns the
handler to run in place of delivery, handler and IRET: the CPU counts the
exception, the gate transfer and the retired instructions as the long way would
and sets EIP to the one the frame would hold, and the handler runs with the CPU
as the fault found it and leaves the machine as its IRET would (``Cpu.iret``'s
``ring0``: that IRET as at CPL 0; the mode recomputed).  The owner answers for
its own tables: it accepts only what its gates would take without a fault.
"""

from __future__ import annotations

from typing import Callable

Handler = Callable[[object], None]


class NativeRegions:
    def __init__(self) -> None:
        self.regions: list[tuple[int, int, Handler, str]] = []
        # (cpu, vector, error code, soft) -> the handler taking it, or None (module's doc)
        self.handoff: Callable[[object, int, int | None, bool], Handler | None] | None = None

    def bind(self, start: int, length: int, handler: Handler, name: str = "native") -> None:
        """Bind physical ``[start, start + length)`` to ``handler`` (a callable taking the CPU)."""
        if length <= 0 or start < 0 or start + length > 1 << 32:
            raise ValueError("a native region must lie inside the 4 GiB physical space")
        end = start + length
        for s, e, _, n in self.regions:
            if start < e and s < end:
                raise ValueError(f"native region {name!r} overlaps {n!r}")
        self.regions.append((start, end, handler, name))

    def find(self, phys: int) -> tuple[int, Handler, str] | None:
        for s, e, h, n in self.regions:
            if s <= phys < e:
                return s, h, n
        return None

    def __bool__(self) -> bool:
        return bool(self.regions)

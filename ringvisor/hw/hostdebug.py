"""The host debugger's hold on the CPU: breakpoints and watchpoints the guest cannot see.

A debugger attached to the machine (``ringvisor.debug.gdbstub``) must stop the
guest at an address or on a data access without touching anything the guest
can observe: not its memory, not DR0-DR7, not EFLAGS.TF.  This is QEMU's
``BP_GDB`` class of breakpoints (``cpu_breakpoint_insert``), kept apart from the
architectural debug registers that ``Cpu.update_debug`` models.

* Breakpoints are linear addresses.  A page holding one is executed an
  instruction at a time (``Cpu.step`` checks the address before executing);
  every other page keeps running as translated blocks, so a breakpoint costs
  nothing until execution comes near it.
* Watchpoints are linear byte ranges, checked by the MMU's slow path (their
  pages stay out of the TLB, as for DR7 data breakpoints) while the CPU runs an
  instruction at a time; a hit stops the CPU *after* the accessing instruction,
  as an x86 data breakpoint does (a trap, SDM Vol. 3 §17.3.1.2).
* A hit records :attr:`event` and ends ``Cpu.run``; the machine's loop reports
  it as a pause (``Stop("paused")``), and the run goes on when the debugger says.
* Resuming from a breakpoint passes it once (what EFLAGS.RF does for DR7
  breakpoints), so "continue" from the address it stopped at makes progress.
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE = 0xFFFFF000
KINDS = ("write", "read", "access")


@dataclass(frozen=True)
class HostEvent:
    """Why the host debugger stopped the CPU."""

    kind: str                 # "breakpoint", "step" (break_next) or one of KINDS (a watchpoint)
    address: int              # the breakpoint's, or the watched range's first byte


class HostDebug:
    def __init__(self) -> None:
        self.breakpoints: set[int] = set()
        self.pages: set[int] = set()             # pages executed one instruction at a time
        self.watchpoints: list[tuple[int, int, str]] = []   # (first, last, kind)
        self.event: HostEvent | None = None
        self.stepping = False                    # the debugger steps: breakpoints do not stop it
        self.break_next = False                  # stop before the next instruction, wherever
        self._pass: tuple[int, int] | None = None   # (address, icount): resuming from it

    @property
    def armed(self) -> bool:
        """Must the CPU check each instruction it executes one at a time?"""
        return bool(self.breakpoints) or self.break_next

    def set_breakpoints(self, addresses) -> None:
        self.breakpoints = {a & 0xFFFFFFFF for a in addresses}
        self.pages = {a & PAGE for a in self.breakpoints}

    def set_watchpoints(self, ranges) -> None:
        """``ranges``: (first byte, length, kind) with kind in KINDS."""
        out = []
        for first, length, kind in ranges:
            if kind not in KINDS or length <= 0:
                raise ValueError(f"bad watchpoint ({first:#x}, {length}, {kind!r})")
            out.append((first & 0xFFFFFFFF, (first + length - 1) & 0xFFFFFFFF, kind))
        self.watchpoints = out

    def watch_pages(self) -> set[int]:
        pages = set()
        for first, last, _ in self.watchpoints:
            pages.update(range(first & PAGE, (last & PAGE) + 0x1000, 0x1000))
        return pages

    def pass_once(self, lin: int, icount: int) -> None:
        """The next instruction, at ``lin``, runs even if a breakpoint is set there."""
        self._pass = (lin, icount)

    def hit(self, lin: int, icount: int) -> bool:
        """Is there a breakpoint at ``lin`` that stops the instruction about to run?"""
        if self.break_next:
            self.break_next = False
            self.event = HostEvent("step", lin)
            return True
        if self.stepping or lin not in self.breakpoints or self._pass == (lin, icount):
            return False
        self.event = HostEvent("breakpoint", lin)
        return True

    def watched(self, lin: int, size: int, write: bool) -> None:
        """A data access (from the MMU's slow path)."""
        last = lin + size - 1
        for first, end, kind in self.watchpoints:
            if lin <= end and first <= last and (kind == "access" or (kind == "write") == write):
                if self.event is None:
                    self.event = HostEvent(kind, first)
                return

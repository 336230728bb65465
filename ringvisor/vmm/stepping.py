"""Running exactly one guest instruction, and the interrupt shadows.

Some things only the hardware can do for the monitor, one instruction long:

- a guest store the monitor cannot let through its shadow page tables for
  good: into a page table the store's own mapping comes from (the live page
  directory, a self-mapped table), into a read-only page with CR0.WP clear
  (a kernel store that succeeds natively, but which the real WP=1 refuses at
  ring 1), or the first load of a GDT descriptor (``gdt``).  The monitor opens
  the page (or puts the descriptor in place), sets the real TF and lets the
  instruction run; the #DB after it closes everything again.  A store that
  straddles two such pages faults on the second while the first is open: the
  step grows to both, it does not start over (which would re-protect the
  first and loop forever);
- the interrupt shadow: after STI (from IF = 0), MOV SS and POP SS the
  processor takes no interrupt before the next instruction has run (SDM Vol.
  3 §6.8.3).  When the monitor emulated one of those and a virtual interrupt
  is waiting, it steps that next instruction first.

The step is the monitor's, and the guest must not see it: the interrupt flag
stays on (an interrupt before the stepped instruction just enters the
monitor, which carries on stepping after it), the TF the hardware pushes
for the monitor is taken out of every frame before the guest could see it,
and a stepped PUSHF has TF cleared in the image it stored.  If the guest
single-steps itself, the #DB is also its own and is reflected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import iced_x86 as ix

from ringvisor.hw.faults import DB

from .frame import Frame
from .guestmem import GuestPageFault

TF = 1 << 8
DR6_BS = 1 << 14
M = ix.Mnemonic


@dataclass
class Step:
    cs: int                                    # where the stepped instruction starts (real)
    eip: int
    guest_tf: bool                             # the guest single-steps itself
    pushf: int = 0                             # 2 or 4 for a PUSHF: the image to fix
    pages: dict = field(default_factory=dict)  # opened linear page -> (frame, bytes before)
    sels: list = field(default_factory=list)   # GDT entries put in place for a first load


class Stepping:
    """The single-step machinery of the monitor core (mixed into ``Monitor``)."""

    step: Step | None = None
    shadow_at: tuple | None = None             # (cs, eip) the interrupt shadow still covers
    new_shadow = False                          # the instruction just emulated opens one

    # the step under way is state (a VM may be saved between the instruction and its #DB)
    @property
    def step_state(self) -> dict | None:
        s = self.step
        if s is None:
            return None
        return {"cs": s.cs, "eip": s.eip, "guest_tf": s.guest_tf, "pushf": s.pushf,
                "pages": [[p, fr, b] for p, (fr, b) in s.pages.items()], "sels": list(s.sels)}

    @step_state.setter
    def step_state(self, d: dict | None) -> None:
        self.step = None if d is None else Step(
            int(d["cs"]), int(d["eip"]), bool(d["guest_tf"]), int(d["pushf"]),
            {int(p): (int(fr), b) for p, fr, b in d["pages"]}, [int(x) for x in d["sels"]])
        self.gm.tlb_stale = self.step is not None and bool(self.step.pages)

    def begin_step(self, f: Frame) -> Step:
        """The step of the instruction at the frame's CS:EIP (the one under way, if any)."""
        s = self.step
        if s is not None and (s.cs, s.eip) == (f.cs, f.eip):
            return s
        if s is not None:
            self.close_step(s, f, False)
        s = Step(f.cs, f.eip, bool(f.eflags & TF))
        if not self.in_tc(f):
            try:
                ins = self.fetch(f)
                if ins.mnemonic in (M.PUSHF, M.PUSHFD):
                    s.pushf = 2 if ins.mnemonic == M.PUSHF else 4
            except GuestPageFault:
                pass
        self.step = s
        self.stats["single steps"] += 1
        return s

    def open_page(self, f: Frame, lin: int, frame: int, tracked: bool) -> None:
        """Let the instruction at the frame's EIP write guest page ``lin`` (-> ``frame``)."""
        s = self.begin_step(f)
        page = lin & ~0xFFF
        if page not in s.pages:
            s.pages[page] = (frame, self.mem.read(frame, 0x1000) if tracked else None)
            self.shadow.set_writable(page, True)
            # the store may rewrite a table the real TLB's entries came from, which the
            # shadow learns only when the step closes: until then the monitor walks
            self.gm.tlb_stale = True

    def open_entry(self, f: Frame, sel: int) -> None:
        self.begin_step(f).sels.append(sel)

    def step_entry(self, vector: int, f: Frame) -> bool:
        """An entry while a step is under way; True if it is only the step's own #DB."""
        s = self.step
        if not s.guest_tf:
            f.eflags &= ~TF
        if (f.cs, f.eip) == (s.cs, s.eip):
            return False              # it faulted, or an interrupt came first: the step goes on
        self.step = None
        trap = vector == DB and bool(self.cpu.state.dr[6] & DR6_BS)
        self.close_step(s, f, trap)
        if trap and not s.guest_tf:
            self.cpu.state.dr[6] &= ~DR6_BS
            return True
        return False

    def step_exit(self, f: Frame) -> None:
        """Leaving the monitor: arm the step again, or close it if the guest moved on."""
        s = self.step
        if s is None:
            return
        if (f.cs, f.eip) == (s.cs, s.eip) and not self.delivered:
            f.eflags |= TF
        else:
            self.step = None
            self.close_step(s, f, False)

    def close_step(self, s: Step, f: Frame, trap: bool) -> None:
        for page, (frame, before) in s.pages.items():
            self.shadow.set_writable(page, False)
            if before is not None:
                after = self.mem.read(frame, 0x1000)
                if after != before:
                    for off in range(0, 0x1000, 4):
                        if after[off:off + 4] != before[off:off + 4]:
                            self.guest_written(frame + off, 4)
        self.gm.tlb_stale = False
        for sel in s.sels:
            self.table_of(sel).loaded(sel)
        if trap and s.pushf and not s.guest_tf:
            # the image PUSHF stored holds the monitor's TF: take it out
            st = self.cpu.state
            lin = (self.real_descriptor_base(f.ss) + st.regs[4]) & 0xFFFFFFFF
            try:
                value = self.gm.read_u(lin, s.pushf, f.user)
                self.gm.write_u(lin, s.pushf, value & ~TF, f.user)
            except GuestPageFault:
                pass

    # -- the interrupt shadows ------------------------------------------------------------
    def shadow_entry(self, f: Frame) -> bool:
        """At entry: does the shadow opened before still cover the instruction at EIP?"""
        here = self.shadow_at is not None and self.shadow_at == (f.cs, f.eip)
        self.shadow_at = None
        self.new_shadow = False
        return here

    def shadowed(self, f: Frame, covered: bool, here: tuple) -> bool:
        """At exit: True if no interrupt may be taken yet (stepping the shadowed instruction
        first when one is waiting)."""
        if not (self.new_shadow or (covered and (f.cs, f.eip) == here and not self.delivered)):
            return False
        self.shadow_at = (f.cs, f.eip)
        if self.vcpu.vif and self.interrupt_waiting() and not self.enters_monitor(f):
            self.begin_step(f)
        return True

    def enters_monitor(self, f: Frame) -> bool:
        """Does the instruction at the frame's EIP enter the monitor anyway (binary
        translation's callouts)?  Then it needs no step."""
        return False

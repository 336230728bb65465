"""Real-address mode under the monitors (trapemu, bt): what VMware's monitor did.

A guest kernel that clears CR0.PE (kvm-unit-tests' ``realmode``, an SMP AP
trampoline, a kernel calling its BIOS) runs 8086 code with segment bases of
selector * 16, its interrupt vector table at IDTR, and no privilege at all.  The
monitor cannot give it the real processor's real mode (it would own the machine),
so it runs that code in two ways, as VMware's monitor did:

* **virtual-8086 mode on the real processor**, while the guest's segment caches
  are what virtual-8086 mode would load anyway (every base selector * 16, 64 KiB
  or larger limits, 16-bit CS and SS, IP below 64 KiB: ``runnable``).  Its code
  runs for real at CPL 3 on the shadow page tables of a guest without paging (the
  1:1 map of its RAM); everything the 8086 program may do there that real mode
  does differently traps: CLI, STI, PUSHF, POPF, INT n, IRET and port I/O
  (#GP(0): the real IOPL is 0 and the real TSS has no I/O bitmap), MOV to or from
  CR0, CR3, CR4, LGDT, LIDT, HLT (#GP(0) at CPL 3), and every exception;
* **the monitor's interpreter** for each trapped instruction and for whatever
  virtual-8086 mode cannot run faithfully: "big" or "unreal" real mode (a limit
  above 64 KiB, or a base a protected-mode descriptor left, kept in the caches,
  SDM Vol. 3 §9.9.2), a 32-bit offset beyond 64 KiB (it faults in virtual-8086
  mode: #GP(0) or #SS(0), §20.1.1, where the guest's big limit allows it), the
  stretch between MOV CR0 and the far JMP that reloads CS in either direction.
  The interpreter is the CPU core itself (``hw.cpu.Cpu``, the same translator
  and semantics), run on the guest's own state: its registers and caches, its
  CR0/CR3/CR4, GDTR and IDTR, its x87 state, its RAM (and nothing above it:
  ``GuestRam``), its port I/O on the virtual platform.  So the real-mode rules --
  IOPL does not apply, IF is the guest's (virtual) flag, INT n, exceptions and
  external interrupts go through the IVT at the guest's IDTR base with FLAGS, CS
  and IP on its stack (§20.1.4), a 16-bit offset beyond 0xFFFF is the real-mode
  "interrupt 13" (§20.1.1) -- are the processor's own, not a second copy of them.

A trapped instruction is executed again by the interpreter from its first byte
(faults are precise: nothing of it happened), so an exception virtual-8086 mode
raised for a reason real mode does not have (a big limit, a sensitive
instruction) is not one the guest sees, and one real mode raises is delivered
through the IVT exactly where the processor would.  Under ``bt`` real-mode code
runs the same way: virtual-8086 mode is CPL 3, which binary translation runs
directly like any user code, and the interpreter covers what it cannot -- the
translator works on 32-bit protected-mode kernel code with flat kernel segments,
and a 16-bit translator would have to re-derive every real-mode rule the
interpreter already has.

Time passes while the interpreter works: the instructions it retires are the
guest's and count in the machine's virtual clock (``Cpu.retire``), and it stops at
the processor's bound (the next timer, the machine's slice), leaving the guest
where its next fetch faults back into the monitor: the machine runs its timers,
the physical interrupts come through the real IDT as for any guest code (and reach
the guest's IVT when its IF allows), a debugger or an instruction limit stops it.

Back to protected mode: the interpreter runs from the guest's MOV CR0 setting PE
until CS, SS and the data segments hold descriptors of its GDT at CPL 0, and the
guest then resumes as any kernel code does under the monitor (ring compression,
shadow paging); a guest leaving protected mode (MOV CR0 clearing PE, emulated as
any MOV CR0) enters the interpreter with the caches its descriptors gave.
"""

from __future__ import annotations

from ringvisor.hw.cpu import Cpu
from ringvisor.hw.faults import CpuFault
from ringvisor.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from ringvisor.hw.realmode import vm86_segment
from ringvisor.hw.segments import Descriptor, null_segment
from ringvisor.hw.state import (ATTR_DB, ATTR_P, ATTR_S, ATTR_UNUSABLE, CR0_PE, IF, IOPL_MASK, VM,
                                Segment)
from ringvisor.hw import transfers

from . import descriptors as D
from .errors import MonitorStop
from .gdt import ACCESSED
from .guestmem import GuestBadFrame, GuestPageFault

ES, CS, SS, DS, FS, GS = range(6)
DATA_SEGS = (ES, DS, FS, GS)
# the most the interpreter runs between two looks at the clock and at virtual-8086 mode
SLICE = 4096
# what a virtual-8086 segment register holds besides its base (SDM Vol. 3 §20.1.1)
VM86_LIMIT = 0xFFFF


class _EveryPage(set):
    """Every page of the interpreter's memory counts as holding code: its MMU then never
    caches a mapping for writing (``Mmu.walk``), so each store comes through
    ``GuestRam``, which tells the processor's code cache and the monitor of it."""

    def __contains__(self, ppn) -> bool:
        return True

    def __bool__(self) -> bool:
        return True


class GuestRam(PhysicalMemory):
    """The guest's RAM as the monitor's interpreter sees it: machine RAM from 0 to the
    guest's size, and nothing above (the monitor's region there reads as an open bus,
    as any address beyond RAM: the guest cannot reach it in big real mode either).
    Stores are reported to the processor's code cache (its translations of the page
    go, as for any store) and to the monitor (``written``: its shadow page tables,
    GDT and translation cache watch guest frames)."""

    def __init__(self, machine_mem: PhysicalMemory, size: int, written) -> None:
        super().__init__(size, backing=memoryview(machine_mem.ram)[:size])
        self.code_pages = _EveryPage()
        self.machine_mem = machine_mem
        self.written = written

    def _check_code(self, addr: int, n: int) -> None:
        super()._check_code(addr, n)                 # the interpreter's own translations
        mm = self.machine_mem
        mm._check_code(addr, n)
        if mm.dirty is not None:
            mm.dirty.update(range(addr >> PAGE_SHIFT, ((addr + n - 1) >> PAGE_SHIFT) + 1))
        self.written(addr, n)


class _Ports:
    """The interpreter's port I/O: the guest's virtual platform (its PIC, and the devices
    it is given), as the monitor's emulated IN and OUT reach it."""

    def __init__(self, rm: "RealMode") -> None:
        self.rm = rm

    def read(self, port: int, size: int) -> int:
        return self.rm.mon.platform.read(port, size)

    def write(self, port: int, size: int, value: int) -> None:
        rm = self.rm
        rm.mon.platform.write(port, size, value)
        rm.cpu.state.intr = rm.mon.platform.intr      # (an EOI, a mask: the line moves)
        if rm.mon.machine.stop is not None or rm.mon.cpu.stop_requested:
            rm.cpu.request_stop()                    # (the guest shut the machine down)


def _plain_vm86(seg: Segment, stack_or_code: bool) -> bool:
    """Can virtual-8086 mode stand for this real-mode segment register?  Its base is the
    selector's paragraph, its limit at least 64 KiB (a larger one faults beyond 64 KiB
    in virtual-8086 mode, and the interpreter then does the access), expand-up, and for
    CS and SS 16-bit (a B bit makes SP a 32-bit ESP)."""
    if seg.base != seg.selector << 4 or seg.limit < VM86_LIMIT or seg.attr & ATTR_UNUSABLE:
        return False
    if not seg.attr & 8 and seg.attr & 4:            # expand-down data
        return False
    return not (stack_or_code and seg.attr & ATTR_DB)


class RealMode:
    """The guest's real-address mode (module doc); one per monitor."""

    STATE = ("active", "engaged", "caches", "in_vm86", "halted")
    WIRING = ("mon",)
    TRANSIENT = ("cpu", "ram", "code_snap", "yielded")

    def __init__(self, mon) -> None:
        self.mon = mon
        self.active = False          # the guest's CR0.PE is clear (or it is on its way back)
        # active, or about to be: the guest cleared PE, or (binary translation) jumped to
        # kernel code the monitor cannot run itself (``Monitor.direct_cs``)
        self.engaged = False
        # the guest's six segment registers (selector, base, limit, attributes), valid
        # while ``active``; the selectors and bases of a virtual-8086 frame override
        # them while ``in_vm86`` (its code loads segment registers without a trap)
        self.caches: list[list[int]] = []
        self.in_vm86 = False
        self.halted = False          # it executed HLT where virtual-8086 mode cannot run it
        self.cpu: Cpu | None = None
        self.ram: GuestRam | None = None
        self.code_snap: dict[int, bytes] = {}
        self.yielded = False         # ``run`` gave the processor back mid-way

    # -- the lifecycle protocol ---------------------------------------------------------
    def get_state(self) -> dict:
        return {"active": self.active, "engaged": self.engaged, "caches": [list(c) for c in self.caches],
                "in_vm86": self.in_vm86, "halted": self.halted}

    def set_state(self, state: dict) -> None:
        self.active = bool(state["active"])
        self.engaged = bool(state["engaged"])
        self.caches = [list(c) for c in state["caches"]]
        self.in_vm86 = bool(state["in_vm86"])
        self.halted = bool(state["halted"])

    # -- the interpreter -------------------------------------------------------------------
    def interpreter(self) -> Cpu:
        if self.cpu is None:
            mon = self.mon
            self.ram = GuestRam(mon.mem, mon.guest_ram, mon.guest_written)
            cpu = Cpu(self.ram, _Ports(self))
            # its slices end at block boundaries (the bound is a clock's look, not an
            # instruction the guest can tell)
            cpu.exact = False
            cpu.connect_interrupt_controller(self._acknowledge)
            # the guest's virtual devices at their addresses (its local APIC through the
            # guest's APIC bus: the running virtual processor's), as its code reaches them
            # outside real mode (an SMP trampoline runs on to its protected-mode code here)
            mmio = mon.platform.mmio
            for base, size, dev in (mmio.virtual if mmio is not None else ()):
                if base >= self.ram.size:
                    self.ram.add_mmio(base, size, dev)
            self.cpu = cpu
        return self.cpu

    def _acknowledge(self) -> int | None:
        """The interpreter's INTA cycle: the guest's virtual interrupt controller."""
        platform = self.mon.platform
        vector = platform.acknowledge()[1]
        self.cpu.state.intr = platform.intr
        return vector

    def _revalidate(self) -> None:
        """The processor ran the guest since the interpreter last did: its translations of
        pages that changed meanwhile go (stores of virtual-8086 code are not reported to
        it)."""
        cache, ram = self.cpu.cache, self.ram.ram
        for ppn in list(cache.by_page):
            a = ppn << PAGE_SHIFT
            if self.code_snap.get(ppn) != ram[a:a + PAGE_SIZE]:
                cache.page_written(ppn)
        self.code_snap = {}

    def _snapshot(self) -> None:
        ram = self.ram.ram
        self.code_snap = {ppn: bytes(ram[ppn << PAGE_SHIFT:(ppn + 1) << PAGE_SHIFT])
                          for ppn in self.cpu.cache.by_page}

    # -- the guest's state: frame <-> interpreter ------------------------------------------
    def load(self, f, eip: int | None = None) -> None:
        """The guest's state, from the frame and the virtual CPU, into the interpreter."""
        mon = self.mon
        v, st = mon.vcpu, mon.cpu.state
        c = self.interpreter()
        s = c.state
        if self.in_vm86 and f.vm86:
            # the real processor ran it in virtual-8086 mode: the selectors (and so the
            # bases) it loaded are in the frame; limits and attributes stay (real mode)
            for i, sel in ((ES, st.segs[ES].selector), (CS, f.cs), (SS, f.ss),
                           (DS, st.segs[DS].selector), (FS, st.segs[FS].selector),
                           (GS, st.segs[GS].selector)):
                self.caches[i][0], self.caches[i][1] = sel & 0xFFFF, (sel & 0xFFFF) << 4
        self.in_vm86 = False
        s.regs[:] = st.regs
        s.eip = f.eip if eip is None else eip
        s.set_eflags(v.eflags_view(f.eflags) & ~VM)
        s.segs[:] = [Segment(*cache) for cache in self.caches]
        s.cr0, s.cr2, s.cr3, s.cr4 = v.cr0, v.cr2, v.cr3, v.cr4
        s.gdtr.base, s.gdtr.limit = v.gdt_base, v.gdt_limit
        s.idtr.base, s.idtr.limit = v.idt_base, v.idt_limit
        s.ldtr = Segment(v.ldtr, v.ldt_base, v.ldt_limit, ATTR_P | 0x2)
        s.tr = Segment(v.tr, v.tr_base, v.tr_limit, ATTR_P | 0xB)
        s.fpu = st.fpu                           # (the guest's x87 and SSE state is live)
        s.icount, s.tsc_offset = st.icount, st.tsc_offset + v.tsc_offset
        s.halted = s.interrupt_shadow = s.intr = s.nmi_pending = False
        vapic = mon.platform.vapic
        c.apic = vapic.apic if vapic is not None else None     # (its MSRs, CPUID's APIC ID)
        c.stop_requested = False
        c.mmu.flush()
        c.mode_changed()
        self._revalidate()

    def store(self, f) -> None:
        """The interpreter's state back: the virtual CPU, and the frame -- virtual-8086
        mode standing for real mode, or kernel code in protected mode."""
        mon = self.mon
        v, st = mon.vcpu, mon.cpu.state
        s = self.cpu.state
        self._snapshot()
        self._retire()
        st.regs[:] = s.regs
        if (s.gdtr.base, s.gdtr.limit) != (v.gdt_base, v.gdt_limit):
            mon.load_gdt(s.gdtr.base, s.gdtr.limit)
        v.idt_base, v.idt_limit = s.idtr.base, s.idtr.limit
        if s.ldtr.selector != v.ldtr:             # (LLDT, LTR: in the PE stretch only)
            mon.ldt.load(s.ldtr.selector)
        if s.tr.selector != v.tr:
            v.tr, v.tr_base, v.tr_limit = s.tr.selector, s.tr.base, s.tr.limit
        v.cr2 = s.cr2
        for n in (4, 3, 0):         # (the processor checked each write: these are its values)
            if getattr(s, f"cr{n}") != getattr(v, f"cr{n}"):
                mon.set_cr(n, getattr(s, f"cr{n}"))
        g = s.get_eflags()
        v.vif, v.iopl = bool(g & IF), (g & IOPL_MASK) >> 12
        v.cpl = 0
        self.caches = [[x.selector, x.base, x.limit, x.attr] for x in s.segs]
        if s.cr0 & CR0_PE and self._protected_ready():
            self._to_protected(f, g)
        else:
            f.eip, f.cs, f.ss = s.eip, s.segs[CS].selector, s.segs[SS].selector
            f.eflags = mon.real_eflags(g) | VM
            for i in DATA_SEGS:
                st.segs[i] = vm86_segment(s.segs[i].selector)
            mon.cpu.mode_changed()
            self.in_vm86 = self.runnable()
            if self.yielded and not self.in_vm86:
                self._fence(f)
        self.yielded = False
        if s.interrupt_shadow:
            mon.new_shadow = True            # (STI, MOV SS: the next instruction first)
        self.halted = s.halted
        if s.halted:
            mon.halt(f)

    def _retire(self) -> None:
        """The instructions the interpreter retired are the guest's: virtual time moves."""
        mon = self.mon
        retired = self.cpu.state.icount - mon.cpu.state.icount
        if retired > 0:
            mon.cpu.retire(retired)
            mon.stats["interpreted instructions"] += retired

    # -- when virtual-8086 mode, or protected mode, can take over ------------------------
    def runnable(self) -> bool:
        s = self.cpu.state
        if s.cr0 & CR0_PE:
            return self._protected_ready()
        if s.eip > VM86_LIMIT:
            return False
        segs = s.segs
        return all(_plain_vm86(segs[i], i in (CS, SS)) for i in range(6))

    def _descriptor_segment(self, sel: int) -> Segment | None:
        try:
            raw = self.mon.guest_descriptor(sel)
        except (GuestPageFault, GuestBadFrame):
            return None
        return Descriptor(raw, 0).segment(sel) if raw else None

    def _protected_ready(self) -> bool:
        """Back in protected mode for good: CS a ring-0 code segment of the guest's tables
        and every other register what its selector's descriptor gives (or null), so the
        monitor's ring compression can stand for them."""
        s = self.cpu.state
        if s.eflags & VM:
            return False
        for i, seg in enumerate(s.segs):
            if i != CS and i != SS and not seg.selector & 0xFFFC and seg.attr & ATTR_UNUSABLE:
                continue
            d = self._descriptor_segment(seg.selector) if seg.selector & 0xFFFC else None
            if d is None or (d.base, d.limit, d.attr | 1) != (seg.base, seg.limit, seg.attr | 1):
                return False
            if i == CS and (not d.is_code or d.dpl or seg.selector & 3 or
                            not self.mon.direct_cs(seg)):
                return False
        return True

    def _to_protected(self, f, g: int) -> None:
        """The guest is a protected-mode kernel again: the frame it resumes with is kernel
        code's (``Monitor._takeover`` moves a booted guest the same way)."""
        mon = self.mon
        v, st, s = mon.vcpu, mon.cpu.state, self.cpu.state
        cs, ss = s.segs[CS].selector, s.segs[SS].selector
        v.cs, v.ss = cs & ~3, ss
        for i in DATA_SEGS:
            sel = s.segs[i].selector
            raw = mon.guest_descriptor(sel) if sel & 0xFFFC else None
            real = D.compress(raw) if raw else 0
            st.segs[i] = Descriptor(real | ACCESSED, 0).segment(sel) if real else null_segment(sel)
        f.cs = mon.kernel_cs(v.cs)
        f.eip = mon.kernel_entry(s.eip)
        f.ss = (ss & ~3) | 1
        f.eflags = mon.real_eflags(g)
        mon.reloaded(f.cs, f.ss)
        mon.cpu.mode_changed()
        self.active = self.engaged = False
        self.caches = []
        mon.stats["interpreter exits"] += 1

    # -- entries -----------------------------------------------------------------------------
    def enter(self, f) -> None:
        """The guest's MOV CR0 (emulated) cleared PE: its caches are what its descriptors
        gave them, and it goes on in real mode after the instruction."""
        mon = self.mon
        if mon.gm.translated:
            raise MonitorStop(f"{mon.name}: the guest left protected mode; real mode is not "
                              "virtualized for a domain whose memory is not contiguous")
        v, st = mon.vcpu, mon.cpu.state
        caches = []
        for i in range(6):
            sel = v.cs if i == CS else v.ss if i == SS else st.segs[i].selector
            seg = self._descriptor_segment(sel) if sel & 0xFFFC else None
            if seg is None:
                seg = st.segs[i] if i in DATA_SEGS else Segment(sel, 0, 0xFFFF, ATTR_P | ATTR_S | 0xB)
            caches.append([seg.selector, seg.base, seg.limit, seg.attr])
        self.caches = caches
        self.active = self.engaged = True
        self.in_vm86 = False
        mon.stats["interpreter entries"] += 1
        self.load(f, mon.guest_eip(f))
        self.run(f)
        self.store(f)

    def trapped(self, f, vector: int) -> None:
        """An exception from virtual-8086 mode standing for real mode (every vector but a
        shadow #PF and #DB): the interpreter executes the instruction again, by real
        mode's rules -- it completes, or raises real mode's own exception, delivered
        through the IVT."""
        mon = self.mon
        mon.traps[f"real mode ({vector})"] += 1
        self.load(f)
        self.cpu.step()
        self.run(f)
        self.store(f)

    def deliver(self, f, vector: int, soft: bool, ret: int) -> None:
        """An interrupt or exception for the guest in real mode: through its IVT (the
        processor's delivery, with its double-fault rules)."""
        self.load(f)
        c = self.cpu
        try:
            transfers.deliver(c, vector, None, soft, ret)
        except CpuFault as e:
            c.deliver_exception(e)
        c.state.halted = False
        self.mon.stats["reflected"] += 1
        self.mon.delivered = True
        self.store(f)

    def settle(self, f) -> None:
        """Before the guest resumes: in real mode, it must resume where virtual-8086 mode
        (or protected mode) can run it; until then the interpreter runs it."""
        mon = self.mon
        if not self.active:
            if not mon.vcpu.cr0 & CR0_PE or self.engaged:
                self.enter(f)
            return
        if self.in_vm86 or self.halted or mon.machine.stop is not None:
            return
        self.load(f)
        self.run(f)
        self.store(f)

    def run(self, f) -> None:
        """Interpret until virtual-8086 mode or protected mode can take over, the guest
        halts, the machine stops, or the processor's time slice is spent (its bound: the
        next timer, the machine's own slice): then the machine runs its timers and takes
        its interrupts as for any guest code, and the guest comes back here (``_fence``)."""
        mon, c = self.mon, self.cpu
        s = c.state
        n = 1
        first = True
        while not self.runnable():
            if mon.machine.stop is not None or mon.cpu.stop_requested:
                return
            self._retire()
            s.intr = mon.platform.intr
            if s.halted and not (s.intr and s.eflags & IF):
                return                       # (the real CPU waits: ``Monitor.halt``)
            left = mon.cpu.bound - mon.cpu.state.icount
            if left <= 0 and not first and s.eip <= VM86_LIMIT:
                self.yielded = True
                return
            first = False
            c.run(s.icount + max(1, min(n, left)))
            n = min(2 * n, SLICE)

    def _fence(self, f) -> None:
        """The guest resumes in virtual-8086 mode where virtual-8086 mode cannot run it
        (its time slice was spent): the page its first fetch there reads is taken out
        of the shadow, so that fetch faults (#PF) and the monitor goes on interpreting
        before a single instruction runs with the wrong segment bases."""
        lin = (f.cs << 4) + (f.eip & VM86_LIMIT)
        for page in {lin & ~0xFFF, (lin + 15) & ~0xFFF}:
            self.mon.shadow.invalidate(page)

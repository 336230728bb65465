"""The monitor core shared by trap-and-emulate and binary translation.

A ``Monitor`` takes over a machine on which a Multiboot guest has just been
loaded.  It builds the hypervisor region (real GDT, IDT, TSS, stack, page
tables) in the top 4 MiB of the address space, moves the guest's boot state
into the virtual CPU, and restarts the guest de-privileged (its ring 0 runs at
ring 1) on shadow page tables.  From then on the monitor runs only when the
hardware transfers control to it through its IDT: every vector's gate leads to
a native entry point (ring-0 software in Python, see ``ringvisor.hw.native``).

What happens there is the chapter's section 2.1: a fault the guest caused for
itself is *reflected* into the guest's own IDT; a fault the monitor caused (a
privileged instruction at ring 1, a shadow page-table miss) is handled and the
guest resumes, none the wiser; a hardware interrupt becomes a virtual interrupt,
delivered when the guest's virtual IF allows.

Subclasses decide how the guest kernel's code runs (``kernel_entry``) and how
its addresses look (``guest_eip``).
"""

from __future__ import annotations

import struct
from collections import Counter

import iced_x86 as ix

from ringvisor.errors import ConfigError
from ringvisor.hw.faults import DB, GP, HAS_ERROR_CODE, NAMES, SS as SS_FAULT, TS, UD, CpuFault
from ringvisor.hw.machine import Stop
from ringvisor.hw.segments import Descriptor, null_segment
from ringvisor.hw.state import CR0_PE, AC, IOPL_MASK, NT, VM

from . import descriptors as D
from . import layout as L
from . import state as S
from . import vm86
from .debug import DR6_B, GuestDebug
from .delivery import Delivery
from .errors import GuestFault, MonitorStop
from .frame import Frame
from .gdt import ACCESSED, GuestGdt
from .guestcr import GuestControlRegisters
from .guestmem import GuestBadFrame, GuestMemory, GuestPageFault
from .guestview import GuestViewHooks
from .ldt import GuestLdt
from .pagefault import ShadowFaults
from .platform import VirtualPlatform
from .realmode import RealMode
from .region import build_region
from .returns import GuestReturns
from .segcut import cut_access
from .shadow import ShadowPaging
from .softint import quick_int, refused
from .stepping import Stepping
from .vcpu import IF, VirtualCpu

USER_IO = {ix.Mnemonic.IN, ix.Mnemonic.OUT, ix.Mnemonic.INSB, ix.Mnemonic.INSW,
           ix.Mnemonic.INSD, ix.Mnemonic.OUTSB, ix.Mnemonic.OUTSW, ix.Mnemonic.OUTSD,
           ix.Mnemonic.CLI, ix.Mnemonic.STI}
# what else user code may do that the real processor refuses: SYSENTER (the real
# IA32_SYSENTER_CS is 0), RDTSC and RDTSCP (the real CR4.TSD, set for a guest whose TSC
# was written, when the guest's own is clear), CPUID (faulting, with several virtual
# processors: ``vcpus.py``)
USER_EMULATED = {ix.Mnemonic.SYSENTER, ix.Mnemonic.RDTSC, ix.Mnemonic.RDTSCP, ix.Mnemonic.CPUID}


# the exceptions from virtual-8086 mode standing for the guest's real mode that the
# monitor's interpreter takes (the instruction executed again by real mode's rules):
# all but #DB (a trap: the guest's single step or breakpoint, or the monitor's step),
# NMI and #MC (not the instruction's), and #PF (a shadow fill: the guest has no paging)
REAL_MODE_TRAPS = frozenset(range(32)) - {DB, 2, 14, 18}



class Monitor(Delivery, Stepping, GuestViewHooks, GuestDebug, ShadowFaults, GuestControlRegisters,
              GuestReturns):
    name = "monitor"
    # the lifecycle protocol (vmm/state.py: what each attribute is)
    state_name = "monitor"
    state_version = 6        # 2: the virtual local APIC (vapic.py); 3: the LDT; 4: virtual NMIs;
    #                          5: real-address mode (realmode.py); 6: the GDT's rounds (gdt.py)
    virtual_apic = True                  # the guest gets a local APIC (not para-virtualized)
    pae = True                           # the guest may use PAE paging (shadowed: shadow.py)
    nmi_blocking = True                  # the guest's IRETs reach the monitor (``emulate.e_iret``)
    # the DPL-1 gates of the real IDT through which the guest's ring 1 calls the monitor
    # (the hand-off takes their ``int n`` straight to it: ``_handoff``)
    SOFT_GATES = (L.CALLOUT, L.CHAIN)
    # the real CS is the guest kernel's own selector at ring 1 (``kernel_cs``), which its far
    # JMPs and CALLs load without a trap: the virtual CS is read back from it at each entry
    # where it changed (``kernel_cs_loaded``)
    cs_in_frame = False
    # a guest that clears CR0.PE runs on in real-address mode (``realmode``)
    real_mode = True
    STATE = ("vcpu", "platform", "shadow", "gdt", "ldt", "step_state", "shadow_at", "guest_halted",
             "traps", "emulated", "stats", "watchpoints", "real")
    WIRING = ("machine", "cpu", "mem", "guest_ram", "base", "gm", "vcpus")
    TRANSIENT = ("frame", "halting", "delivered", "new_shadow", "step",   # (step: step_state)
                 "db_hits", "db_owed", "_handoff_from")

    def __init__(self, machine, guest_ram: int, *, base: int | None = None,
                 shadow_pool: list[int] | None = None) -> None:
        """``base``: where the hypervisor region is (by default just above the guest's RAM,
        which starts at 0); ``shadow_pool``: the machine frames for this guest's shadow
        page tables (by default the region's pool).  A hypervisor running many guests
        passes both: one region for all, frames from its allocator for each."""
        self.machine = machine
        self.cpu = machine.cpu
        self.mem = machine.mem
        self.guest_ram = guest_ram
        self.base = guest_ram if base is None else base     # the monitor's physical base
        if self.mem.size < self.base + L.MONITOR_RAM:
            raise ValueError("the machine has no room for the monitor")
        self.vcpu = VirtualCpu()
        self.gm = GuestMemory(self.mem, self.vcpu, guest_ram)
        self.gm.written_hook = self.guest_written
        self.gm.pdptes = lambda: self.vcpu.pdpte
        self.platform = VirtualPlatform(machine.bus, machine.pic,
                                        machine if self.virtual_apic else None, self.name)
        if self.platform.vapic is not None:
            self.platform.vapic.vcpu = self.vcpu
        self.shadow = ShadowPaging(self.cpu, self.mem, self.base, frames=shadow_pool)
        self.gdt = GuestGdt(self)
        self.ldt = GuestLdt(self)
        self.real = RealMode(self)         # the guest's real-address mode, when it is in it
        self.gm.use_tlb(self.cpu.mmu, self.shadow)
        self.traps: Counter[str] = Counter()
        self.emulated: Counter[str] = Counter()
        self.stats = Counter()
        self.frame: Frame | None = None
        self.halting = False             # the guest executed HLT with IF set ...
        self.guest_halted = False        # ... and the real CPU waits in it
        self.vcpus = None                # several virtual processors (``vcpus.py``)

    # -- building the hypervisor region ------------------------------------------------
    def install(self) -> None:
        """Lay out the region and move the freshly booted guest onto the virtual CPU."""
        build_region(self.mem, self.base)
        self.attach()
        self._takeover()

    def attach(self) -> None:
        """Bind the monitor's entry points on the machine.  A restored VM comes this way
        only: its region, its tables and the guest's state all come from the image."""
        self.cpu.native.bind(self.base + L.ENTRY, L.ENTRY_SIZE, self._entry, f"{self.name} monitor")
        self.cpu.native.handoff = self._handoff
        self._handoff_from = (0, None)

    def get_state(self) -> dict:
        self._one_vcpu("saved")
        return S.get_attrs(self)

    def _one_vcpu(self, what: str) -> None:
        if self.vcpus is not None:
            raise ConfigError(f"{self.name}: a VM with several virtual processors cannot be "
                              f"{what} (only --mode native saves one with --smp)")

    def set_state(self, state: dict) -> None:
        self._one_vcpu("restored into")
        # an older image lacks what was added since (version 2: the LDT; 3: a waiting
        # virtual NMI, its blocking): as a fresh monitor has it -- no LDT, no NMI
        state = {**S.get_attrs(self), **state}
        S.set_attrs(self, state)
        self.cpu.tlb_flush()

    def _takeover(self) -> None:
        cpu, st, v = self.cpu, self.cpu.state, self.vcpu
        v.cr0, v.cr3, v.cr4 = st.cr0, st.cr3, st.cr4
        v.pdpte[:] = st.pdpte
        v.gdt_base, v.gdt_limit = st.gdtr.base, st.gdtr.limit
        v.idt_base, v.idt_limit = st.idtr.base, st.idtr.limit
        v.vif = bool(st.eflags & IF)
        v.iopl = (st.eflags >> 12) & 3
        v.cs, v.ss = st.segs[1].selector, st.segs[2].selector
        # from now on the physical PICs deliver to the monitor's vectors; the guest's
        # PIC is the virtual one, in the state the firmware left the real one in
        self.platform.take_over()
        # the real processor state: the monitor's tables, the shadow tables
        cpu.load_descriptor_tables((L.MLIN + L.GDT, L.GDT_ENTRIES * 8 - 1),
                                   (L.MLIN + L.IDT, 256 * 8 - 1))
        self.real_control()
        self.switch_shadow()
        self.load_gdt(v.gdt_base, v.gdt_limit)
        if st.ldtr.selector & 0xFFFC:       # the loader's LDT, as LDTR caches it
            v.ldtr, v.ldt_base, v.ldt_limit = st.ldtr.selector, st.ldtr.base, st.ldtr.limit
            self.ldt.reload()
        self.ldt.install()
        seg = cpu.segmentation
        st.tr = seg.read_descriptor(L.SEL_MTSS).segment(L.SEL_MTSS)
        # restart the guest at ring 1 through a real IRET from the monitor's ring 0; its
        # data segments keep what the loader loaded, as the guest's GDT has it compressed
        eip, esp, eflags = st.eip, st.regs[4], cpu.get_eflags()
        for i in (0, 3, 4, 5):
            sel = st.segs[i].selector
            if sel & 0xFFFC:
                raw = self.guest_descriptor(sel)
                real = D.compress(raw) if raw is not None else 0
                st.segs[i] = Descriptor(real | ACCESSED, 0).segment(sel) if real \
                    else null_segment(sel)
        st.segs[1] = seg.read_descriptor(L.SEL_MCODE).segment(L.SEL_MCODE)
        st.segs[2] = seg.read_descriptor(L.SEL_MDATA).segment(L.SEL_MDATA)
        cpu.mode_changed()
        ret_cs = self.kernel_cs(v.cs)
        ret_eip = self.kernel_entry(eip)
        top = L.MLIN + L.STACK_TOP - 20
        self.mem.write(self.base + L.STACK_TOP - 20, struct.pack(
            "<5I", ret_eip, ret_cs, self.real_eflags(eflags), esp, v.ss | 1))
        st.regs[4] = top
        undo = self.unpoison(ret_cs, v.ss | 1)
        cpu.iret()
        self.repoison(undo)
        v.cpl = 0
        self.load_debug()

    # -- the guest's descriptor tables -------------------------------------------------
    def load_gdt(self, base: int, limit: int) -> None:
        """LGDT: rebuild the guest part of the real GDT from the guest's (ring compression)."""
        self.gdt.hold()
        self.vcpu.gdt_base, self.vcpu.gdt_limit = base, limit
        self.gdt.reload()
        self.stats["gdt_loads"] += 1

    def guest_descriptor(self, sel: int) -> int | None:
        """The guest's raw descriptor for ``sel`` (None if outside its GDT or LDT, or in
        the slots the real GDT keeps for the monitor's own descriptors)."""
        if sel & 4:
            return self.ldt.entry(sel)
        if (sel | 7) > self.vcpu.gdt_limit or sel >> 3 >= L.FIRST_RESERVED:
            return None
        return int.from_bytes(self.guest_gdt_bytes(sel & ~7, 8), "little")

    def guest_desc(self, sel: int, vector: int = GP, ext: int = 0) -> Descriptor:
        """The guest's descriptor for a non-null ``sel``, read as the processor reads it:
        outside the table, ``vector``(selector)."""
        raw = self.guest_descriptor(sel)
        if raw is None:
            raise GuestFault(vector, (sel & 0xFFFC) | ext)
        return Descriptor(raw, (self.table_of(sel).table()[0] + (sel & ~7)) & 0xFFFFFFFF)

    def table_of(self, sel: int) -> GuestGdt:
        """The real table (with its bookkeeping) that ``sel`` indexes."""
        return self.ldt if sel & 4 else self.gdt

    def reloaded(self, *sels: int) -> None:
        """The monitor loaded these (real) selectors into CS or SS for the guest (``gdt``)."""
        for sel in sels:
            self.table_of(sel).reloaded(sel)

    def unpoison(self, *sels: int) -> tuple[list, list]:
        """The entries of ``sels`` in place for one real IRET (``gdt``); what to undo."""
        return self.gdt.unpoison(*sels), self.ldt.unpoison(*sels)

    def repoison(self, undo: tuple[list, list]) -> None:
        self.gdt.repoison(undo[0])
        self.ldt.repoison(undo[1])

    def guest_gdt_bytes(self, offset: int, n: int) -> bytes:
        """Bytes of the guest's GDT (where its GDTR points)."""
        return self.gm.read(self.vcpu.gdt_base + offset, n)

    def real_descriptor_base(self, sel: int) -> int:
        """The base of the segment the guest has loaded with ``sel`` (CS, SS)."""
        table = self.table_of(sel)
        held = table.held.get(sel)
        raw = int.from_bytes(held if held is not None else
                             self.mem.read(table.real + (sel & ~7), 8), "little")
        if not raw and sel >> 3 < table.MAX:
            try:                                           # poisoned (``gdt``)
                raw = self.guest_descriptor(sel) or 0
            except (GuestPageFault, GuestBadFrame):
                pass
        return D.base_of(raw)

    # -- entries ------------------------------------------------------------------------------
    def _entry(self, cpu, f: Frame | None = None) -> None:
        vapic = self.platform.vapic
        if vapic is None:
            self.resume(self.handle(cpu, f))
            return
        vapic.inside = True
        try:
            f = self.handle(cpu, f)
        finally:
            vapic.inside = False
        self.resume(f)

    def _handoff(self, cpu, vector: int, err: int | None, soft: bool):
        """The hardware's hand-off (``hw.native``): an exception the guest raised, or a
        callout its translated code made, comes straight to ``_handed``, without a
        frame pushed through the TSS stack and read back.  Only while the real tables
        are the monitor's own, whose gates take it without a fault: every vector's is
        an interrupt gate to ``SEL_MCODE`` (DPL 0, so a software ``int n`` from the
        guest is a #GP(n, IDT) instead, raised here and handed off as such; the gates
        of ``SOFT_GATES``, DPL 1), and its TSS's ring-0 stack is ``SEL_MDATA``; anything
        else takes the architectural path."""
        st = cpu.state
        cpl = cpu.cpl
        if (cpl == 0 or cpu.mode.vm86 or st.idtr.base != L.MLIN + L.IDT
                or st.gdtr.base != L.MLIN + L.GDT or st.tr.selector != L.SEL_MTSS):
            return None
        if soft:
            if cpl > 1 or vector not in self.SOFT_GATES:
                # the gate's DPL (0; the soft gates' 1) is below the CPL (SDM Vol. 2 INT
                # n), whether or not the vector is inside the IDT's limit (all 256 are):
                # from user mode, the #GP's entry is ``_handed_int``'s to take
                if cpl == 3 and self.quick_ints:
                    self._handoff_from = (vector, st.eip)
                    return self._handed_int
                raise CpuFault(GP, vector * 8 + 2)
        elif (err is None) == (vector in HAS_ERROR_CODE):
            return None
        self._handoff_from = (vector, err)
        return self._handed

    def _handed(self, cpu) -> None:
        """What the gate, the native entry and ``resume``'s IRET do, without the frame
        on the monitor's stack and without the monitor's ring 0: the guest's state
        becomes the ``Frame`` directly, the CPU keeps it while the monitor works (the
        monitor reads the guest's registers, never its own CS, SS or EFLAGS), and
        ``resume``'s IRET executes as the monitor's ring 0 would, on the values it
        holds (``Frame.resume``)."""
        vector, err = self._handoff_from
        self._entry(cpu, Frame.taken(cpu, self.base, vector, err))

    # a user ``int n`` delivered in the hand-off where the entry has nothing else to do
    # (``softint``); False: every one a whole entry (its #GP's)
    quick_ints = True
    quick_kind = 0           # (``softint``: 1, binary translation's; 2, para-virtualization's)

    def _handed_int(self, cpu) -> None:
        """A user ``int n`` handed off (EIP past it, counted as retired, for now): its real
        gate's #GP(n * 8 + 2) taken as the hand-off takes a fault (``Cpu.hand_off``'s
        counts), then delivered in ``softint.quick_int``, or else a whole entry."""
        vector, at = self._handoff_from
        st = cpu.state
        st.icount -= 1                       # (the INT faulted: the #GP's entry counts one)
        fault = refused(vector)
        cpu.stats["exceptions"] += 1
        cpu.exceptions.append((at, fault))
        if quick_int(self, cpu, vector, at):
            return
        st.eip = at
        self._handoff_from = (GP, fault.error_code)
        self._handed(cpu)

    def quick_code(self, sel: int, cd: int) -> tuple[int, int | None] | None:
        """For ``softint``: the real CS of a handler in guest code selector ``sel``
        (descriptor bytes ``cd``) and the code base it needs (None: any), where
        ``kernel_cs`` would give it with nothing else to do; None otherwise."""
        return sel | 1, None

    def handle(self, cpu, f: Frame | None = None) -> Frame:
        """An entry from the guest through the real IDT: do what it asks, deliver what
        is pending; the frame to resume it with (``f``: taken by the hand-off)."""
        if f is None:
            vector = (cpu.state.eip - (L.MLIN + L.ENTRY)) // 8
            f = Frame(cpu, self.base, vector in HAS_ERROR_CODE)
        else:
            vector = f.vector                       # (the guest's ESP is in ESP already)
        self.frame = f
        v = self.vcpu
        v.cpl = 3 if f.user else v.cs & 3 if self.rings12 else 0   # (0-2: ``enter_ring``)
        if self.cs_in_frame and not f.user and f.cs != v.cs | 1:
            self.kernel_cs_loaded(f)
        self.halting = self.delivered = False
        was_halted, self.guest_halted = self.guest_halted, False
        here = (f.cs, f.eip)
        # a fault of the instruction right after a MOV SS or POP SS entered: what it does
        # here decides what becomes of the data breakpoints they held (``held_debug``)
        (at, held), cpu.dropped_db = cpu.dropped_db, (0, 0)
        # (it entered now -- the delivery counts one -- not at some entry before: a user
        # INT n the hand-off delivers itself, ``softint``, never comes this way)
        if held and 0 <= cpu.state.icount - at <= 1:
            try:            # (translated code is not the guest's: no INT n is seen there)
                length = 0 if self.in_tc(f) else self.fetch(f).len
            except GuestPageFault:
                length = 0
            held = (held, self.guest_eip(f), length)
        else:
            held = None
        covered = self.shadow_entry(f)
        # (in virtual-8086 mode CS and SS hold paragraphs, no descriptor of either table)
        cs, ss = (None, None) if f.vm86 else (f.cs, f.ss)
        self.gdt.at_entry(cs, ss)
        self.ldt.at_entry(cs, ss)
        try:
            if self.step is None or not self.step_entry(vector, f):
                self.dispatch(vector, f)
            elif vector == DB and self.cpu.state.dr[6] & DR6_B:
                self.real_debug_exception(f)      # the step was the monitor's, the hit is not
            if self.real.engaged or not v.cr0 & CR0_PE:
                self.real.settle(f)               # (it left protected mode: ``realmode``)
            if held:
                self.held_debug(f, here, *held)
            self.deliver_debug(f)
            if not self.shadowed(f, covered, here):
                self.deliver_interrupts(f)
            if was_halted and not self.delivered and (f.cs, f.eip) == here:
                # woken by an interrupt the guest does not take: it is still in its HLT
                self.halting = True
            self.step_exit(f)
            if self.real.active:
                self.real.settle(f)               # (an interrupt's handler, say)
        except GuestBadFrame as e:
            raise MonitorStop(f"{self.name}: {e}") from None
        except GuestPageFault as e:
            # a guest #PF no emulation path turned into a reflected fault: never a crash
            raise MonitorStop(f"{self.name}: unhandled {e} at eip={self.guest_eip(f):#010x}") from None
        if self.vcpus is not None:
            self.vcpus.schedule(f)
        self.before_resume(f)
        return f

    def resume(self, f: Frame) -> None:
        """Back to the guest with a real IRET through ``f`` (the CPU halted in it if the
        guest is waiting in HLT)."""
        cpu = self.cpu
        self.real_control()
        undo = self.unpoison(*(() if f.vm86 else (f.cs, f.ss)))
        try:
            f.resume()
        except CpuFault as e:
            # the real IRET refused the frame (a selector or EIP the guest chose that the
            # real GDT does not hold): the fault must never enter the monitor itself
            raise MonitorStop(f"{self.name}: cannot resume the guest at {f.cs:#06x}:{f.eip:#010x} "
                              f"({e})") from None
        finally:
            self.repoison(undo)
        if self.halting:
            # the real HLT: the CPU waits at ring 1 with interrupts on for the next one
            self.guest_halted = True
            cpu.halt()

    def dispatch(self, vector: int, f: Frame) -> None:
        # (an exception's vector is no interrupt's: the real PICs', IO-APIC's and local
        # APIC's vectors are the region's, from 0x50 up)
        if vector >= 32 and self.platform.physical_irq(vector):
            self.traps["interrupt"] += 1
        elif self.real.active and f.vm86 and vector in REAL_MODE_TRAPS:
            self.real.trapped(f, vector)          # real mode's instruction or exception
        elif vector == 13 and f.err == 0 and f.vm86:
            vm86.general_protection(self, f)
        elif vector == 14:
            self.page_fault(f)
        elif vector == 13:
            self.general_protection(f)
        elif vector in (L.CALLOUT, L.CHAIN):
            self.callout(f, vector)
        elif vector == DB:
            self.real_debug_exception(f)
        elif vector == UD and not f.user and self.vcpu.cpl == 0 and self.access_control(f):
            pass
        elif vector == TS and f.eflags & NT and self.code_at(f).mnemonic == ix.Mnemonic.IRETD:
            # IRET with NT set returns to a task; the real TSS the hardware looked in is
            # the monitor's: the guest's back link decides
            from .emulate import emulate
            emulate(self, f, self.fetch(f), f.eip)
        elif vector == SS_FAULT and f.err == 0 and cut_access(self, f):
            pass
        else:
            self.traps[NAMES.get(vector, f"vector {vector:#x}")] += 1
            self.deliver(f, vector, f.err, False, self.guest_eip(f))

    # -- hooks for the execution strategy -------------------------------------------------
    def kernel_entry(self, eip: int) -> int:
        """The real EIP at which guest kernel code at ``eip`` runs."""
        return eip

    def kernel_cs(self, sel: int) -> int:
        """The real CS selector for guest kernel code selector ``sel``."""
        return sel | 1

    def direct_cs(self, cs) -> bool:
        """Can guest kernel code with this CS cache run as the monitor runs kernel code
        (else the monitor's interpreter runs it: ``realmode``)?"""
        return True

    @staticmethod
    def in_tc(f: Frame) -> bool:
        """Is the frame in translated code (binary translation's ring-1 segment)?  Never
        in virtual-8086 mode, whose CS is a paragraph that may have the same value."""
        return f.cs == L.SEL_TCODE and not f.eflags & VM

    def kernel_cs_view(self, f: Frame) -> int:
        """The CS selector the guest sees in a frame pushed for its kernel code: the one
        it loaded, RPL 0, as the hardware pushes it (under trapemu the handler's IRET to
        it then traps: a return to RPL 0 from the real CPL 1 is #GP)."""
        return self.vcpu.cs

    def guest_eip(self, f: Frame) -> int:
        """The guest EIP corresponding to the frame's (real) EIP."""
        return f.eip

    def before_resume(self, f: Frame) -> None:
        """The last word before the guest resumes at the frame."""

    def callout(self, f: Frame, vector: int) -> None:
        # only translated code raises these; anything else asked for a software interrupt
        self.soft_interrupt_after(f, vector, 2)

    def frame_code_base(self, f: Frame) -> int:
        """The base of the guest's code segment at the frame (a paragraph in virtual-8086
        mode)."""
        return f.cs << 4 if f.vm86 else self.real_descriptor_base(f.cs)

    def fetch(self, f: Frame) -> ix.Instruction:
        """The guest instruction at the frame's CS:EIP (a second page only if readable)."""
        lin = (self.frame_code_base(f) + f.eip) & 0xFFFFFFFF
        first = min(15, 0x1000 - (lin & 0xFFF))
        data = self.gm.read(lin, first, f.user)
        if first < 15:
            try:
                data += self.gm.read((lin + first) & 0xFFFFFFFF, 15 - first, f.user)
            except GuestPageFault:
                pass
        return ix.Decoder(16 if f.vm86 else 32, data, ip=f.eip).decode()

    def access_control(self, f: Frame) -> bool:
        """STAC/CLAC in the guest kernel: #UD at the real ring 1 (CPL > 0), allowed at the
        guest's CPL 0 (SDM Vol. 2 STAC, CLAC); EFLAGS.AC in the frame is the guest's."""
        ins = self.code_at(f)
        if ins.mnemonic not in (ix.Mnemonic.STAC, ix.Mnemonic.CLAC):
            return False
        f.eflags = f.eflags | AC if ins.mnemonic == ix.Mnemonic.STAC else f.eflags & ~AC
        f.eip = (f.eip + ins.len) & 0xFFFFFFFF
        self.emulated["stac" if ins.mnemonic == ix.Mnemonic.STAC else "clac"] += 1
        return True

    def code_at(self, f: Frame) -> ix.Instruction:
        """The instruction the real CPU executes at the frame's CS:EIP (binary translation:
        a copy in the translation cache)."""
        return self.fetch(f)

    def general_protection(self, f: Frame) -> None:
        err = f.err or 0
        if err & 3 == 2 and not self.in_tc(f):
            # INT n through a gate of lower privilege: every real gate but the callouts
            # is DPL 0, so every software interrupt the guest executes itself arrives
            # here (the guest's own gate decides)
            self.soft_interrupt(f, err >> 3, self.soft_interrupt_length(f, err >> 3))
            return
        if err & 0xFFFC and not err & 3:
            # a segment load on a real GDT or LDT entry the monitor keeps poisoned (``gdt``)
            todo = self.table_of(err).load_fault(err)
            if todo == "retry":
                self.traps["#GP (stale descriptor)"] += 1
                return
            if todo == "step":
                self.traps["#GP (first load of a descriptor)"] += 1
                self.open_entry(f, err)
                return
        self.privileged_fault(f, err)

    def privileged_fault(self, f: Frame, err: int) -> None:
        """A #GP that is not a software interrupt: the guest's own, by default -- except
        the port I/O and CLI/STI of user code the guest's IOPL or I/O bitmap allows (the
        real IOPL is 0, so that every port access traps), and SYSENTER (the real
        IA32_SYSENTER_CS is 0: the guest's is on the virtual CPU)."""
        if f.user and err & 0xFFFC and not err & 3:
            # a far CALL/JMP through a call gate or to a task: system descriptors never
            # reach the real GDT (``emulate.e_far_task``)
            from .emulate import e_far_task, emulate
            ins = self.fetch(f)
            if ins.mnemonic in (ix.Mnemonic.CALL, ix.Mnemonic.JMP) and \
                    emulate(self, f, ins, f.eip, ({ins.mnemonic: e_far_task},)) is not None:
                self.traps["#GP (far transfer)"] += 1
                return
        if f.user and err == 0:
            from .emulate import NEXT, emulate, ix_name
            ins = self.fetch(f)
            if ins.mnemonic in USER_IO or ins.mnemonic in USER_EMULATED:
                self.traps[f"#GP (user {ix_name(ins)})" if ins.mnemonic in USER_EMULATED
                           else "#GP (user I/O)"] += 1
                if emulate(self, f, ins, f.eip) == NEXT:
                    f.eip = (f.eip + ins.len) & 0xFFFFFFFF
                return
        if err == 0 and cut_access(self, f):
            return
        self.traps["#GP (guest)"] += 1
        self.deliver(f, 13, err, False, self.guest_eip(f))

    def guest_written(self, phys: int, n: int) -> None:
        """The monitor wrote guest memory on the guest's behalf."""
        self.shadow.written(phys, n)
        self.gdt.written(phys, n)
        self.ldt.written(phys, n)

    # -- flags ---------------------------------------------------------------------------------
    @staticmethod
    def real_eflags(guest: int) -> int:
        """The real EFLAGS for guest code: interrupts always on, IOPL 0 (so that every
        port access, CLI and STI trap), no VM; TF, NT and RF are the guest's."""
        return (guest & ~(IOPL_MASK | VM)) | IF | 2

    def guest_tsc(self) -> int:
        """The guest's time-stamp counter: the real one, moved by its WRMSRs to it (a
        guest that wrote it reads it only through RDTSC's trap: ``real_control``)."""
        return (self.cpu.tsc() + self.vcpu.tsc_offset) & 0xFFFFFFFFFFFFFFFF

    def stop(self, stop: Stop) -> None:
        """The guest is done (it shut down, or halted for good): the run ends."""
        self.machine.stop = stop
        self.cpu.request_stop()

    def halt(self, f: Frame) -> None:
        if not self.vcpu.vif and self.vcpus is None:
            self.stop(Stop("halted", 0, f"the guest halted with interrupts disabled "
                                        f"at eip={self.guest_eip(f):#010x} ({self.name})"))
        elif not (self.vcpu.vif and self.interrupt_waiting()):
            # (with several processors, one halted with IF clear waits for an NMI, INIT or
            # SIPI while the others run: ``vcpus.py``)
            self.halting = True
        self.stats["halts"] += 1

    # -- reports ----------------------------------------------------------------------------
    def report(self) -> dict:
        out = {"traps": dict(self.traps), "emulated": dict(self.emulated)}
        out.update(self.stats)
        out.update(self.shadow.stats)
        out.update(self.gdt.stats)
        out.update(self.ldt.stats)
        out["io"] = self.platform.stats["io"]
        out["physical_irqs"] = self.platform.stats["irqs"]
        if self.vcpus is not None:
            out["vcpus"] = self.vcpus.report()
        return out

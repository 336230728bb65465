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

from ringvisor.hw.faults import HAS_ERROR_CODE, NAMES, CpuFault, TripleFault, UnsupportedFeature
from ringvisor.hw.machine import Stop

from . import descriptors as D
from . import layout as L
from . import state as S
from .frame import Frame
from .guestmem import GuestBadFrame, GuestMemory, GuestPageFault
from .platform import VirtualPlatform
from .shadow import NO_PAGING, ShadowPaging
from .vcpu import CR0_PG, CR4_PSE, IF, VirtualCpu

TF, NT, RF, VM, AC, ID = 1 << 8, 1 << 14, 1 << 16, 1 << 17, 1 << 18, 1 << 21
IOPL_MASK = 3 << 12
ARITH = 0x8D5 | 0x400 | TF          # CF PF AF ZF SF OF, DF, TF


class MonitorStop(UnsupportedFeature):
    """The monitor stops the virtual machine (the guest did something it cannot allow)."""


class Monitor:
    name = "monitor"
    # the lifecycle protocol (vmm/state.py: what each attribute is)
    state_name = "monitor"
    state_version = 1
    STATE = ("vcpu", "platform", "shadow", "stepping", "traps", "emulated", "stats")
    WIRING = ("machine", "cpu", "mem", "guest_ram", "base", "gm")
    TRANSIENT = ("frame", "sti_shadow", "halting")

    def __init__(self, machine, guest_ram: int) -> None:
        self.machine = machine
        self.cpu = machine.cpu
        self.mem = machine.mem
        self.guest_ram = guest_ram
        self.base = guest_ram                    # the monitor's physical base
        if self.mem.size < guest_ram + L.MONITOR_RAM:
            raise ValueError("the machine has no room for the monitor")
        self.vcpu = VirtualCpu()
        self.gm = GuestMemory(self.mem, self.vcpu, guest_ram)
        self.gm.written_hook = self.guest_written
        self.platform = VirtualPlatform(machine.bus)
        self.shadow = ShadowPaging(self.cpu, self.mem, self.base)
        self.traps: Counter[str] = Counter()
        self.emulated: Counter[str] = Counter()
        self.stats = Counter()
        self.frame: Frame | None = None
        self.sti_shadow = False          # the guest just set IF with STI
        self.stepping: tuple | None = None   # a table store being single-stepped (step_store)
        self.halting = False             # the guest executed HLT with IF set

    # -- building the hypervisor region ------------------------------------------------
    def install(self) -> None:
        """Lay out the region and move the freshly booted guest onto the virtual CPU."""
        mem, b = self.mem, self.base
        mem.write(b, bytes(L.MAPPED))
        # the region's page table: MLIN + off -> base + off, supervisor
        pt = b"".join(struct.pack("<I", (b + off) | 0x63) for off in range(0, L.MAPPED, 0x1000))
        mem.write(b + L.MONITOR_PT, pt)
        mem.write(b + L.VOID, b"\xFF" * 0x1000)
        # IDT: interrupt gates to the native entry points; only the callout vectors
        # can be raised by software (from ring 1, i.e. translated code)
        idt = bytearray()
        for v in range(256):
            off = L.MLIN + L.ENTRY + 8 * v
            dpl = 1 if v in (L.CALLOUT, L.CHAIN) else 0
            access = 0x8E | dpl << 5
            idt += struct.pack("<HHBBH", off & 0xFFFF, L.SEL_MCODE, 0, access, off >> 16)
        mem.write(b + L.IDT, bytes(idt))
        # TSS: ring-0 stack = the monitor's; no I/O bitmap (all port I/O traps)
        tss = bytearray(104)
        struct.pack_into("<II", tss, 4, L.MLIN + L.STACK_TOP, L.SEL_MDATA)
        struct.pack_into("<H", tss, 102, 104)
        mem.write(b + L.TSS, bytes(tss))
        for sel, raw in D.monitor_descriptors().items():
            mem.write(b + L.GDT + sel, struct.pack("<Q", raw))
        mem.write(b + L.GDT + L.SEL_MTSS, struct.pack("<Q", D.tss_descriptor(L.MLIN + L.TSS, 103)))
        self.attach()
        self._takeover()

    def attach(self) -> None:
        """Bind the monitor's entry points on the machine.  A restored VM comes this way
        only: its region, its tables and the guest's state all come from the image."""
        self.cpu.native.bind(self.base + L.ENTRY, L.ENTRY_SIZE, self._entry, f"{self.name} monitor")

    def get_state(self) -> dict:
        return S.get_attrs(self)

    def set_state(self, state: dict) -> None:
        S.set_attrs(self, state)
        self.cpu.tlb_flush()

    def _takeover(self) -> None:
        cpu, st, v = self.cpu, self.cpu.state, self.vcpu
        v.cr0, v.cr3, v.cr4 = st.cr0, st.cr3, st.cr4
        v.gdt_base, v.gdt_limit = st.gdtr.base, st.gdtr.limit
        v.idt_base, v.idt_limit = st.idtr.base, st.idtr.limit
        v.vif = bool(st.eflags & IF)
        v.iopl = (st.eflags >> 12) & 3
        v.cs, v.ss = st.segs[1].selector, st.segs[2].selector
        self.load_gdt()
        # the real processor state: the monitor's tables, the shadow tables
        st.gdtr.base, st.gdtr.limit = L.MLIN + L.GDT, L.GDT_ENTRIES * 8 - 1
        st.idtr.base, st.idtr.limit = L.MLIN + L.IDT, 256 * 8 - 1
        st.cr0 = 0x80010031            # PG, WP, NE, ET, PE
        st.cr4 = 0
        self.shadow.switch(self.shadow_key())
        seg = cpu.segmentation
        st.tr = seg.read_descriptor(L.SEL_MTSS).segment(L.SEL_MTSS)
        # restart the guest at ring 1 through a real IRET from the monitor's ring 0
        eip, esp, eflags = st.eip, st.regs[4], cpu.get_eflags()
        for i in (0, 3, 4, 5):
            sel = st.segs[i].selector
            if sel:
                st.segs[i] = seg.read_descriptor(sel).segment(sel | 1) if sel >> 3 < L.FIRST_RESERVED \
                    else st.segs[i]
        st.segs[1] = seg.read_descriptor(L.SEL_MCODE).segment(L.SEL_MCODE)
        st.segs[2] = seg.read_descriptor(L.SEL_MDATA).segment(L.SEL_MDATA)
        cpu.mode_changed()
        ret_cs = self.kernel_cs(v.cs)
        ret_eip = self.kernel_entry(eip)
        top = L.MLIN + L.STACK_TOP - 20
        self.mem.write(self.base + L.STACK_TOP - 20, struct.pack(
            "<5I", ret_eip, ret_cs, self.real_eflags(eflags), esp, v.ss | 1))
        st.regs[4] = top
        cpu.iret()
        v.cpl = 0

    # -- the guest's descriptor tables -------------------------------------------------
    def load_gdt(self) -> None:
        """Rebuild the guest part of the real GDT from the guest's (ring compression)."""
        v = self.vcpu
        n = min((v.gdt_limit + 1) // 8, L.FIRST_RESERVED)
        try:
            table = self.guest_gdt_bytes(0, n * 8)
        except (GuestPageFault, GuestBadFrame):
            table = b""
        real = D.build_gdt(table)
        self.mem.write(self.base + L.GDT, real + bytes(L.FIRST_RESERVED * 8 - len(real)))
        self.stats["gdt_loads"] += 1

    def guest_descriptor(self, sel: int) -> int | None:
        """The guest's raw descriptor for ``sel`` (None if outside its GDT, or in the
        slots the real GDT keeps for the monitor's own descriptors)."""
        v = self.vcpu
        if sel & 4 or (sel | 7) > v.gdt_limit or sel >> 3 >= L.FIRST_RESERVED:
            return None
        return int.from_bytes(self.guest_gdt_bytes(sel & ~7, 8), "little")

    def guest_gdt_bytes(self, offset: int, n: int) -> bytes:
        """Bytes of the guest's GDT (where its GDTR points)."""
        return self.gm.read(self.vcpu.gdt_base + offset, n)

    def real_descriptor_base(self, sel: int) -> int:
        raw = self.mem.read32(self.base + L.GDT + (sel & ~7)) | \
            self.mem.read32(self.base + L.GDT + (sel & ~7) + 4) << 32
        return D._fields(raw)[0]

    # -- entries ------------------------------------------------------------------------------
    def _entry(self, cpu) -> None:
        vector = (cpu.state.eip - (L.MLIN + L.ENTRY)) // 8
        f = Frame(cpu, self.base, vector in HAS_ERROR_CODE)
        self.frame = f
        self.vcpu.cpl = 3 if f.user else 0
        self.sti_shadow = self.halting = False
        try:
            if self.stepping is not None and self.end_step(f) and vector == 1:
                pass                     # our own single step: the store is done
            else:
                self.dispatch(vector, f)
            if self.vcpu.pending:
                if self.sti_shadow:
                    self.skip_halt_after_sti(f)
                self.deliver_pending(f)
        except GuestBadFrame as e:
            raise MonitorStop(f"{self.name}: {e}") from None
        except GuestPageFault as e:
            # a guest #PF no emulation path turned into a reflected fault: never a crash
            raise MonitorStop(f"{self.name}: unhandled {e} at eip={self.guest_eip(f):#010x}") from None
        try:
            f.resume()
        except CpuFault as e:
            # the real IRET refused the frame (a selector or EIP the guest chose that the
            # real GDT does not hold): the fault must never enter the monitor itself
            raise MonitorStop(f"{self.name}: cannot resume the guest at {f.cs:#06x}:{f.eip:#010x} "
                              f"({e})") from None
        if self.halting:
            # the real HLT: the CPU waits at ring 1 with interrupts on for the next one
            cpu.state.halted = True
            cpu.limit = 0

    def dispatch(self, vector: int, f: Frame) -> None:
        gvec = self.platform.guest_vector(vector)
        if gvec is not None:
            self.traps["interrupt"] += 1
            self.virtual_interrupt(f, gvec)
        elif vector == 14:
            self.page_fault(f)
        elif vector == 13:
            self.general_protection(f)
        elif vector in (L.CALLOUT, L.CHAIN):
            self.callout(f, vector)
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

    def kernel_cs_view(self, f: Frame) -> int:
        """The CS selector the guest sees in a frame pushed for its kernel code."""
        return f.cs

    def guest_eip(self, f: Frame) -> int:
        """The guest EIP corresponding to the frame's (real) EIP."""
        return f.eip

    def callout(self, f: Frame, vector: int) -> None:
        # only translated code raises these; anything else asked for a software interrupt
        self.soft_interrupt(f, vector, 2)

    def fetch(self, f: Frame) -> ix.Instruction:
        """The guest instruction at the frame's CS:EIP (a second page only if readable)."""
        lin = (self.real_descriptor_base(f.cs) + f.eip) & 0xFFFFFFFF
        first = min(15, 0x1000 - (lin & 0xFFF))
        data = self.gm.read(lin, first, f.user)
        if first < 15:
            try:
                data += self.gm.read((lin + first) & 0xFFFFFFFF, 15 - first, f.user)
            except GuestPageFault:
                pass
        return ix.Decoder(32, data, ip=f.eip).decode()

    def general_protection(self, f: Frame) -> None:
        err = f.err or 0
        if err & 3 == 2 and f.cs != L.SEL_TCODE:
            # INT n through a gate of lower privilege: every real gate but the callouts
            # is DPL 0, so every software interrupt the guest executes itself arrives
            # here (the guest's own gate decides)
            self.soft_interrupt(f, err >> 3, self.fetch(f).len)
            return
        self.privileged_fault(f, err)

    def privileged_fault(self, f: Frame, err: int) -> None:
        """A #GP that is not a software interrupt: the guest's own, by default."""
        self.traps["#GP (guest)"] += 1
        self.deliver(f, 13, err, False, self.guest_eip(f))

    def guest_written(self, phys: int, n: int) -> None:
        """The monitor wrote guest memory on the guest's behalf."""
        self.shadow.written(phys, n)

    # -- flags ---------------------------------------------------------------------------------
    @staticmethod
    def real_eflags(guest: int) -> int:
        """The real EFLAGS for guest code: interrupts always on, IOPL 0, no TF/NT."""
        return (guest & ~(IOPL_MASK | NT | VM | RF)) | IF | 2

    # -- reflecting exceptions and interrupts into the guest ----------------------------------
    def soft_interrupt(self, f: Frame, vector: int, length: int) -> None:
        """``int n`` executed by the guest (it trapped: every real gate but the callouts is DPL 0)."""
        self.traps[f"int {vector:#x}"] += 1
        self.deliver(f, vector, None, True, (self.guest_eip(f) + length) & 0xFFFFFFFF)

    def deliver(self, f: Frame, vector: int, err: int | None, soft: bool, ret: int) -> None:
        """Enter the guest's handler for ``vector`` as the hardware would have (SDM 6.12)."""
        first = (vector, err)
        for _ in range(3):
            try:
                self._deliver(f, vector, err, soft, ret)
                return
            except GuestPageFault as e:
                self.vcpu.cr2 = e.address
                nv, ne = 14, e.error_code
            except GuestFault as e:
                nv, ne = e.vector, e.error_code
            if vector == 8:
                raise TripleFault(f"the guest faulted ({NAMES.get(nv, nv)}) delivering #DF "
                                  f"under {self.name}; first: vector {first[0]}")
            contributory = {0, 10, 11, 12, 13}
            if (vector in contributory and nv in contributory) or (vector == 14 and nv in contributory | {14}):
                vector, err = 8, 0
            else:
                vector, err = nv, ne
            soft = False
        raise TripleFault(f"guest exception delivery loops under {self.name}")

    def _deliver(self, f: Frame, vector: int, err: int | None, soft: bool, ret: int) -> None:
        sel, offset, interrupt_gate = self.guest_gate(vector, soft)
        self.enter_guest_handler(f, sel, offset, interrupt_gate, err, ret, 0 if soft else 1)

    def guest_gate(self, vector: int, soft: bool) -> tuple[int, int, bool]:
        """The guest's handler for ``vector``: (code selector, offset, clears IF), with the
        faults the hardware raises while reading its gate."""
        v = self.vcpu
        ext = 0 if soft else 1
        if vector * 8 + 7 > v.idt_limit:
            raise GuestFault(13, vector * 8 + 2 + ext)
        raw = int.from_bytes(self.gm.read(v.idt_base + vector * 8, 8), "little")
        access = (raw >> 40) & 0xFF
        gtype = access & 0x1F
        dpl = (access >> 5) & 3
        if gtype == 0x05 and access & 0x80:
            raise MonitorStop(f"{self.name}: a task gate in the guest IDT (vector {vector:#x})")
        if gtype not in (0x0E, 0x0F):
            raise GuestFault(13, vector * 8 + 2 + ext)
        if soft and dpl < v.cpl:
            raise GuestFault(13, vector * 8 + 2)
        if not access & 0x80:
            raise GuestFault(11, vector * 8 + 2 + ext)
        sel = (raw >> 16) & 0xFFFF
        offset = (raw & 0xFFFF) | ((raw >> 48) & 0xFFFF) << 16
        return sel, offset, gtype == 0x0E

    def enter_guest_handler(self, f: Frame, sel: int, offset: int, interrupt_gate: bool,
                            err: int | None, ret: int, ext: int) -> None:
        """Push the frame the hardware would (switching to the guest kernel's stack from
        user mode) and continue at ``sel:offset`` in the guest kernel."""
        v = self.vcpu
        target = self.guest_descriptor(sel)
        if target is None or not (target >> 44) & 1 or not (target >> 43) & 1:
            raise GuestFault(13, (sel & 0xFFFC) | ext)
        tdpl = (target >> 45) & 3
        if tdpl != 0:
            raise MonitorStop(f"{self.name}: a guest handler at {sel:#06x}:{offset:#010x} runs "
                              f"at ring {tdpl} (only ring-0 handlers are virtualized)")
        if not (target >> 47) & 1:
            raise GuestFault(11, (sel & 0xFFFC) | ext)
        geflags = v.eflags_view(f.eflags)
        tail = [] if err is None else [err]
        if v.cpl == 3:
            ss0, esp0 = self.kernel_stack(ext)
            vals = [f.ss, self.cpu.state.regs[4], geflags, f.cs, ret] + tail
            ss_real, esp, ss_guest = (ss0 & ~3) | 1, esp0, ss0 & ~3
        else:
            vals = [geflags, self.kernel_cs_view(f), ret] + tail
            ss_real, esp, ss_guest = f.ss, self.cpu.state.regs[4], v.ss
        esp = (esp - 4 * len(vals)) & 0xFFFFFFFF
        ss_base = self.real_descriptor_base(ss_real)
        self.gm.write((ss_base + esp) & 0xFFFFFFFF, struct.pack(f"<{len(vals)}I", *reversed(vals)))
        # committed: the guest is in its handler
        self.stats["reflected"] += 1
        self.cpu.state.regs[4] = esp
        f.ss = ss_real
        f.cs = self.kernel_cs(sel)
        f.eip = self.kernel_entry(offset)
        f.eflags = self.real_eflags(f.eflags) & ~TF
        if interrupt_gate:
            v.vif = False
        v.cpl = 0
        v.cs, v.ss = sel & ~3, ss_guest

    def kernel_stack(self, ext: int) -> tuple[int, int]:
        """(SS, ESP) for entering the guest kernel from user mode: its TSS's ring-0 stack."""
        v = self.vcpu
        if v.tr_limit < 11:
            raise GuestFault(10, (v.tr & 0xFFFC) | ext)
        esp0 = self.gm.read32(v.tr_base + 4)
        ss0 = self.gm.read_u(v.tr_base + 8, 2)
        if not ss0 & ~3:
            raise GuestFault(10, ext)
        return ss0, esp0

    # -- virtual interrupts --------------------------------------------------------------
    def virtual_interrupt(self, f: Frame, gvec: int) -> None:
        v = self.vcpu
        v.pending.append(gvec)
        self.deliver_pending(f)

    def deliver_pending(self, f: Frame) -> None:
        """Deliver a waiting virtual interrupt if the guest's IF allows it."""
        v = self.vcpu
        if v.pending and v.vif:
            gvec = v.pending.pop(0)
            self.stats["virtual_interrupts"] += 1
            v.halted = False
            self.deliver(f, gvec, None, False, self.guest_eip(f))

    def skip_halt_after_sti(self, f: Frame) -> None:
        """``sti; hlt``: the STI shadow keeps the interrupt out until HLT has run, so the
        interrupt returns *after* the HLT (taking it before would lose the wakeup)."""
        g = self.guest_eip(f)
        try:
            op = self.gm.read(self.real_descriptor_base(f.cs) + g if self.vcpu.cpl == 3 else g, 1)
        except GuestPageFault:
            return
        if op == b"\xF4":
            f.eip = self.kernel_entry((g + 1) & 0xFFFFFFFF)
            self.stats["sti_hlt"] += 1

    def halt(self, f: Frame) -> None:
        if not self.vcpu.vif:
            self.machine.stop = Stop("halted", 0, f"the guest halted with interrupts disabled "
                                                  f"at eip={self.guest_eip(f):#010x} ({self.name})")
            self.cpu.request_stop()
        elif not self.vcpu.pending:
            self.halting = True
        self.stats["halts"] += 1

    # -- segment registers and returns ------------------------------------------------
    def load_sreg(self, i: int, sel: int) -> None:
        """The guest loads segment register ``i`` (0 ES .. 5 GS) with ``sel``."""
        v = self.vcpu
        if i == 1:
            raise GuestFault(6, None)
        raw = self.guest_descriptor(sel) if sel & ~3 else None
        if i == 2:
            if raw is None:
                raise GuestFault(13, sel & 0xFFFC)
            dpl = (raw >> 45) & 3
            writable_data = (raw >> 44) & 1 and not (raw >> 43) & 1 and (raw >> 41) & 1
            if sel & 3 != v.cpl or dpl != v.cpl or not writable_data:
                raise GuestFault(13, sel & 0xFFFC)
            if not (raw >> 47) & 1:
                raise GuestFault(12, sel & 0xFFFC)
            if not self.mem.read32(self.base + L.GDT + (sel & ~7) + 4) & 0x8000:
                raise GuestFault(13, sel & 0xFFFC)     # refused by ring compression
            self.frame.ss = (sel & ~3) | (1 if v.cpl == 0 else 3)
            v.ss = sel
            return
        if sel & ~3 and raw is None:
            raise GuestFault(13, sel & 0xFFFC)
        try:
            self.cpu.segmentation.load(i, sel)
        except Exception:
            raise GuestFault(13, sel & 0xFFFC) from None

    def set_guest_eflags(self, f: Frame, value: int, size: int = 4) -> None:
        """POPF/IRET at (virtual) CPL 0: every flag the guest may set for real, IF and
        IOPL on the virtual CPU."""
        v = self.vcpu
        mask = ARITH | NT | AC | ID
        if size == 2:
            mask &= 0xFFFF
        f.eflags = self.real_eflags((f.eflags & ~mask) | (value & mask))
        if v.cpl == 0:
            v.iopl = (value & IOPL_MASK) >> 12
        if v.cpl <= v.iopl:
            v.vif = bool(value & IF)

    def return_to_kernel(self, f: Frame, eip: int, cs: int) -> None:
        raw = self.guest_descriptor(cs)
        if raw is None or not (raw >> 43) & 1 or (raw >> 45) & 3 != 0:
            raise GuestFault(13, cs & 0xFFFC)
        f.cs = self.kernel_cs(cs)
        f.eip = self.kernel_entry(eip)
        self.vcpu.cs = cs & ~3
        self.vcpu.cpl = 0

    def return_to_user(self, f: Frame, eip: int, cs: int, eflags: int | None, esp: int,
                       ss: int) -> None:
        for sel, code in ((cs, True), (ss, False)):
            raw = self.guest_descriptor(sel)
            if raw is None or (raw >> 45) & 3 != 3 or bool((raw >> 43) & 1) != code \
                    or not (raw >> 44) & 1:
                raise GuestFault(13, sel & 0xFFFC)
            if not (raw >> 47) & 1:
                raise GuestFault(11 if code else 12, sel & 0xFFFC)
        if eflags is not None:
            self.set_guest_eflags(f, eflags)
        f.cs, f.eip, f.ss = cs, eip, ss
        self.cpu.state.regs[4] = esp
        self.vcpu.cpl = 3

    # -- shadow paging -----------------------------------------------------------------------
    def page_fault(self, f: Frame) -> None:
        st = self.cpu.state
        lin, err = st.cr2, f.err
        write, user = bool(err & 2), bool(err & 4)
        if lin >= L.MLIN:
            # the guest reached for the hypervisor region: as if nothing were mapped there
            self.traps["#PF (guest)"] += 1
            self.vcpu.cr2 = lin
            self.deliver(f, 14, err & ~1, False, self.guest_eip(f))
            return
        try:
            m = self.gm.translate(lin, write, user)
        except GuestPageFault as e:
            self.traps["#PF (guest)"] += 1
            self.vcpu.cr2 = e.address
            self.deliver(f, 14, e.error_code, False, self.guest_eip(f))
            return
        self.traps["#PF (shadow)"] += 1
        frame = m.phys & ~0xFFF
        if frame >= self.guest_ram:
            raise MonitorStop(f"{self.name}: the guest mapped linear {lin:#010x} to physical "
                              f"{frame:#x}, beyond its {self.guest_ram >> 20} MiB")
        ppn = frame >> 12
        # a store into a table its own mapping comes from (the live page directory, a
        # self-mapped table): unprotecting cannot let it through, as the fill that
        # follows protects the frame again
        own_table = ppn in {a >> 12 for a in (m.pde_addr, m.pte_addr) if a is not None}
        if write and self.shadow.is_protected(ppn) and not (own_table and m.writable):
            self.protected_write(f, ppn)
        elif write and err & 1 and not own_table:
            self.shadow.stats["dirty_faults"] += 1
        self.shadow.install(lin, frame, m.user, m.writable and (m.dirty or write),
                            m.pde_addr, m.pte_addr)
        if write and m.writable and self.shadow.is_protected(ppn):
            self.step_store(f, lin, frame)

    def step_store(self, f: Frame, lin: int, frame: int) -> None:
        """Let one guest store into a write-protected table through, single-stepped.

        The page is made writable for one instruction, with the trap flag set and
        interrupts held off; the #DB after it (or whatever else ends the step) lands in
        ``end_step``, which compares the table with its copy and drops the shadow
        entries of exactly the slots that changed."""
        self.stats["single-stepped table stores"] += 1
        self.stepping = (lin, frame, self.mem.read(frame, 0x1000), f.eflags & (TF | IF))
        self.shadow.set_writable(lin, True)
        f.eflags = (f.eflags | TF) & ~IF

    def end_step(self, f: Frame) -> bool:
        """Close a single-stepped table store; True if this entry is its #DB."""
        lin, frame, before, flags = self.stepping
        self.stepping = None
        self.shadow.set_writable(lin, False)
        after = self.mem.read(frame, 0x1000)
        if after != before:
            for off in range(0, 0x1000, 4):
                if after[off:off + 4] != before[off:off + 4]:
                    self.shadow.written(frame + off, 4)
        ours = not flags & TF
        f.eflags = (f.eflags & ~(TF | IF)) | flags
        if ours:
            self.cpu.state.dr[6] &= ~0x4000          # BS: the step was the monitor's
        return ours

    def protected_write(self, f: Frame, ppn: int) -> None:
        """The guest stores to a frame the monitor keeps read-only."""
        if self.shadow.is_table(ppn):
            self.traps["#PF (page table written)"] += 1
            self.shadow.write_fault(ppn)

    def shadow_key(self) -> int:
        """Which shadow directory stands for the guest's current address space."""
        v = self.vcpu
        return v.cr3 >> 12 if v.paging else NO_PAGING

    # -- control registers -----------------------------------------------------------------
    def set_cr(self, n: int, value: int) -> None:
        v = self.vcpu
        if n == 0:
            if not value & 1:
                raise MonitorStop(f"{self.name}: the guest left protected mode (real mode is "
                                  "not virtualized)")
            changed = v.cr0 ^ value
            v.cr0 = value
            if changed & (1 << 16):           # WP: what a kernel store may do changed
                self.shadow.flush()
            if changed & CR0_PG:
                self.shadow.switch(self.shadow_key())
        elif n == 2:
            v.cr2 = value
        elif n == 3:
            # every change to the guest's tables was seen (they are write-protected),
            # so the shadow of this address space, if there is one, is still right
            v.cr3 = value
            self.shadow.switch(self.shadow_key())
        elif n == 4:
            if value & ~(CR4_PSE | 0x80 | 0x4 | 0x8):
                raise GuestFault(13, 0)
            if (v.cr4 ^ value) & CR4_PSE:
                self.shadow.flush()
            v.cr4 = value
        else:
            raise GuestFault(6, None)
        self.stats[f"cr{n} writes"] += 1

    def get_cr(self, n: int) -> int:
        v = self.vcpu
        if n in (1, 5, 6, 7) or n > 7:
            raise GuestFault(6, None)
        return {0: v.cr0, 2: v.cr2, 3: v.cr3, 4: v.cr4}[n]

    def invlpg(self, lin: int) -> None:
        v = self.vcpu
        large = False
        if v.paging and v.cr4 & CR4_PSE:
            pde = self.mem.read32((v.cr3 & ~0xFFF) + (lin >> 22) * 4)
            large = pde & 0x81 == 0x81
        if large:
            self.shadow.invalidate_region(lin)
        else:
            self.shadow.invalidate(lin)

    # -- reports ----------------------------------------------------------------------------
    def report(self) -> dict:
        out = {"traps": dict(self.traps), "emulated": dict(self.emulated)}
        out.update(self.stats)
        out.update(self.shadow.stats)
        out["io"] = self.platform.stats["io"]
        return out


class GuestFault(Exception):
    """An exception the guest must see (raised while emulating on its behalf)."""

    def __init__(self, vector: int, error_code: int | None) -> None:
        super().__init__(f"vector {vector}")
        self.vector = vector
        self.error_code = error_code


"""The hypervisor's physical CPUs: what is each one's own, bringing them up, and kicking
them (Xen's ``per_cpu`` data, ``smpboot.c`` and the event-check IPI).

Each pCPU (:class:`PCpu`) has the vCPU on it (``current``: None is its idle vCPU), its
time slice, the instruction count it last charged from, and the timer that ends the
slice.  The machine's processors take turns (``hw/smp.py``); they share one timeline,
so a pCPU's own time is its own retired instructions (``PCpu.now_ns``) -- with one
processor the machine's clock, exactly as before.

Bring-up (Xen's ``__cpu_up``): the hypervisor owns the machine, so it starts the
application processors itself, as the SDM's MP protocol has it (Vol. 3 §8.4.4.1): an
INIT IPI, then a start-up IPI through the boot processor's ICR, pointing each AP at a
trampoline page below 1 MiB (below the frame allocator's first frame, so no domain
has it).  The trampoline is the hypervisor's own code, native like its entry points
(``hw/native.py``: an AP in real mode is at CPL 0): it gives the AP the hypervisor's
GDT, IDT and idle page directory, a TSS and a ring-0 stack of its own
(``own_tss``), enables its local APIC (the spurious-vector
register, as Xen's ``setup_local_APIC``) and enters its scheduler.

Kicks: a pCPU must enter the hypervisor when something changed for it (an event for
its vCPU, a woken vCPU it should run or steal, a pause, the end of its slice).  The
boot processor has the hypervisor's own interrupt line (``vmm/platform``'s
``HypervisorTimer``); an AP is sent a fixed IPI with the same vector through the
sending pCPU's local APIC ICR, as Xen's ``smp_send_event_check_mask``, and the entry
acknowledges it with an EOI.

The region's per-domain part (the real GDT's guest descriptors, the LDT, a bt
domain's translation-cache window) is one copy in machine memory, and each pCPU must
see its own vCPU's: the processors' turns are the only moments another pCPU can run,
so at each turn (``hw/smp``'s ``turn_hook``) the hypervisor puts back the incoming
pCPU's vCPU's if another pCPU's is there -- the bytes the pCPU left, kept at the turn
away, for a domain of one vCPU, else rebuilt from the guest's tables -- and flushes
that pCPU's TLB, whose entries for the region, or for a domain whose shadows another
pCPU changed, may be stale: what a pCPU sees is what per-pCPU GDTs and mappings would
give it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ringvisor.hw.devices.lapic import DM_FIXED, DM_INIT, DM_SIPI, SV_ENABLE
from ringvisor.hw.state import Segment
from ringvisor.vmm import layout as L
from ringvisor.vmm.frame import Frame, stack_top

TRAMPOLINE = 0x8000            # the APs' start-up page (SIPI vector 8)
ICR_LO, ICR_HI, SVR, EOI = 0x300, 0x310, 0xF0, 0xB0     # local APIC registers (SDM Table 10-1)
LEVEL_ASSERT = 1 << 14
SPURIOUS = 0xFF


@dataclass(eq=False)
class PCpu:
    index: int
    cpu: object                        # the machine's processor
    current: object = None             # the vCPU on it (None: idle)
    slice_end: int = 0                 # in its own time
    last_ns: int = 0                   # its own time at the last charge
    slice_timer: object = None
    online: bool = False
    smp: bool = False                  # the machine has several processors

    def now_ns(self, clock) -> int:
        """Its own time: the machine's clock on one processor, else its instructions."""
        if not self.smp:
            return clock.now_ns()
        return self.cpu.state.icount * 1_000_000_000 // clock.cpu_hz


def send_ipi(from_cpu, apic_id: int, mode: int, vector: int = 0) -> None:
    """An IPI through ``from_cpu``'s local APIC: destination, then ICR low (which sends)."""
    apic = from_cpu.apic
    apic.mmio_write(ICR_HI, 4, apic_id << 24)
    apic.mmio_write(ICR_LO, 4, vector | mode << 8 | LEVEL_ASSERT)


def start_aps(hv) -> None:
    """INIT and SIPI to every AP (from the BSP, whose turn it is), each to the trampoline."""
    bsp = hv.pcpus[0].cpu
    for pc in hv.pcpus[1:]:
        send_ipi(bsp, pc.cpu.apic.s.id, DM_INIT)
        send_ipi(bsp, pc.cpu.apic.s.id, DM_SIPI, TRAMPOLINE >> 12)


def enable_apic(cpu) -> None:
    """Software-enable the local APIC (SVR bit 8), the spurious vector 0xFF."""
    cpu.apic.mmio_write(SVR, 4, SV_ENABLE | SPURIOUS)


def kick_ap(hv, pc: PCpu) -> None:
    """The event-check IPI to AP ``pc``, from the pCPU whose turn it is."""
    send_ipi(hv.pcpus[hv.here].cpu, pc.cpu.apic.s.id, DM_FIXED, L.HV_TIMER)


def ack(pc: PCpu) -> None:
    """An AP took the kick: EOI to its local APIC."""
    pc.cpu.apic.mmio_write(EOI, 4, 0)


def move_monitor(m, cpu) -> None:
    """Domain monitor ``m`` acts on processor ``cpu`` now (its vCPU is on that pCPU): the
    registers it reads, the TLB its shadows flush and its guest accesses look up."""
    if m.cpu is cpu:
        return
    m.cpu = m.shadow.cpu = cpu
    m.gm.use_tlb(cpu.mmu, m.shadow)


def install(hv, v) -> None:
    """``v`` is on the pCPU entering or taking its turn: its state is its monitor's, on
    this processor, and the region's per-domain part is its (the real GDT's guest
    descriptors, its LDT, its domain's part of the region: ``pcpus``)."""
    m = v.dom.monitor
    m.load_vcpu(v.vcpu_id)
    move_monitor(m, hv.pcpus[hv.here].cpu)
    m.gdt.reload()                            # the real GDT: its descriptors now
    if m.vcpu.ldtr & 0xFFFC:
        m.ldt.reload()                        # the real LDT: its, if it has one
    m.ldt.install()
    m.map_region()                            # its own part of the region
    hv.region_vcpu = v
    hv.stats["region_reloads"] += 1


def _kept(v) -> bool:
    """Whether the region as ``v``'s pCPU left it may be put back as it was when the
    pCPU's turn comes again: a domain of one vCPU, which no other pCPU runs meanwhile
    -- its GDT and LDT frames are typed, so no other domain (nor the toolstack) writes
    them, and its monitor acts only on its own pCPU.  (A domain of several vCPUs is
    reinstalled from its guest tables: another of its vCPUs may have changed them.)"""
    return len(v.dom.vcpus) == 1 and not v.dom.dead


def _put_back(hv, v, saved) -> None:
    """The region as ``v``'s pCPU left it: its real GDT (with the accessed bits the
    processor set) and LDT, bytes for bytes, what ``install`` would rebuild."""
    m = v.dom.monitor
    move_monitor(m, hv.pcpus[hv.here].cpu)
    gdt, ldt = saved
    hv.mem.write(hv.base + L.GDT, gdt)
    if ldt is not None:
        hv.mem.write(hv.base + L.LDT, ldt)
    m.ldt.install()
    if v.dom.kind == "bt":
        m.map_region()              # (its translation cache's window: page-table entries)
    hv.region_vcpu = v
    hv.stats["region_put_back"] += 1


def turn(hv, cpu) -> None:
    """The processors' turn passes to ``cpu`` (``hw/smp``): the hypervisor's view and
    the region become its pCPU's (``pcpus``)."""
    hv.here = p = hv.machine.cpus.index(cpu)
    v = hv.pcpus[p].current
    if v is None or v.dom.dead:
        return
    spans = len(hv.on_cpus(v.dom)) > 1
    old = hv.region_vcpu
    if v is not old:
        saved = hv.region_saved.pop(v, None)
        if old is not None and _kept(old):
            hv.region_saved[old] = (hv.mem.read(hv.base + L.GDT, L.GDT_ENTRIES * 8),
                                    hv.mem.read(hv.base + L.LDT, L.LDT_ENTRIES * 8)
                                    if old.dom.monitor.vcpu.ldtr & 0xFFFC else None)
        if saved is not None and _kept(v):
            _put_back(hv, v, saved)
        else:
            install(hv, v)
    # its TLB: stale if another pCPU changed its domain's shadows, or the region's
    # mappings changed (a bt domain's translation-cache window); the GDT and LDT are
    # copied into the same pages, which need no flush
    if spans or (v is not old and "bt" in (v.dom.kind, old.dom.kind if old else "")):
        cpu.tlb_flush()


def own_tss(hv, p: int, tr: Segment) -> Segment:
    """Processor ``p``'s task register: its own TSS, whose ring-0 stack is its own
    (``layout.PCPU_STACK``).  Xen gives each CPU a TSS and stacks of its own, at the
    same selector of its per-CPU GDT; here the GDT is one copy, so the TSS is told
    apart by the base in the register's hidden part, as loading a per-CPU GDT's
    descriptor would leave it (SDM Vol. 3 §7.2.4).  An interrupt or trap pushes its
    frame on the stack the TSS names: with one stack for all, a processor whose turn
    ended between a delivery and its handler (an INT as the last instruction of its
    quantum, ``hw/smp``) found the frame the other processor's next entry had pushed
    over its own, and resumed its vCPU at the other one's EIP (docs/xen.md)."""
    if p == 0:
        return tr                             # (the region's TSS: build_region's)
    tss = bytearray(hv.mem.read(hv.base + L.TSS, tr.limit + 1))
    struct.pack_into("<I", tss, 4, L.MLIN + L.STACK_TOP - p * L.PCPU_STACK)    # ESP0
    hv.mem.write(hv.base + L.TSS + p * L.TSS_STRIDE, bytes(tss))
    return Segment(tr.selector, tr.base + p * L.TSS_STRIDE, tr.limit, tr.attr)


def ap_start(hv, cpu) -> None:
    """The trampoline: an AP, in real mode at CPL 0, becomes the hypervisor's pCPU."""
    from .switch import switch                 # (the switch installs through this module)
    hv.here = p = hv.machine.cpus.index(cpu)
    f = take_cpu(hv, cpu)
    enable_apic(cpu)
    hv.in_entry = True
    try:
        switch(hv, None, hv.sched.pick(None, True, p), f)
    finally:
        hv.in_entry = False


def take_cpu(hv, cpu) -> Frame:
    """The processor's tables, paging and segments the hypervisor's; a frame to return
    to whatever runs first."""
    pc = hv.pcpus[hv.machine.cpus.index(cpu)]
    st = cpu.state
    st.gdtr.base, st.gdtr.limit = L.MLIN + L.GDT, L.GDT_ENTRIES * 8 - 1
    st.idtr.base, st.idtr.limit = L.MLIN + L.IDT, 256 * 8 - 1
    st.cr0 = 0x80010031
    st.cr4 = 0
    st.cr3 = hv.idle_pd
    seg = cpu.segmentation
    st.tr = own_tss(hv, pc.index, seg.read_descriptor(L.SEL_MTSS).segment(L.SEL_MTSS))
    st.segs[1] = seg.read_descriptor(L.SEL_MCODE).segment(L.SEL_MCODE)
    st.segs[2] = seg.read_descriptor(L.SEL_MDATA).segment(L.SEL_MDATA)
    cpu.mode_changed()
    f = Frame.__new__(Frame)
    f.cpu, f.err, f.handed = cpu, None, False
    f.top = stack_top(cpu, hv.base)
    f.phys_top = hv.base + f.top - L.MLIN
    f.eip = f.cs = f.eflags = f.esp = f.ss = 0
    pc.last_ns = pc.now_ns(hv.clock)
    pc.online = True
    return f

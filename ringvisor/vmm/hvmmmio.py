"""The HVM monitor's memory-mapped devices and local APIC, under EPT (and shadow paging).

The guest has the PC's devices above its RAM as the other monitors give them
(``mmio.py``, ``vapic.py``, ``platform.py``): a virtual local APIC, IO-APIC and
HPET, and every other device page of the machine (the PCI BARs, the pc-testdev's
memory) mapped through.  What differs is how an access reaches the monitor:

* **Emulated devices.**  EPT never maps their pages, so an access is an EPT
  violation (on shadow paging, a #PF the shadow never fills: ``page_fault``).
  As KVM does (``handle_ept_violation`` -> ``x86_emulate_instruction``), the
  monitor decodes the guest's instruction at the exit's CS:EIP -- its bytes read
  through the guest's own page tables -- and performs it with the same emulators
  the other monitors use (``mmio.MMIO_EMULATORS``, on ``mmio.MmioContext``): the
  device side goes to the virtual device, a RAM side through the guest's paging.
  The context answers what the emulators ask from the VMCS instead of a trap
  frame: segment bases, CS's limit and type, CPL from SS's DPL, EFLAGS; ESP is
  in the VMCS too, so it is in the register file for the emulation's duration.
  A fault the instruction raises is injected through VM entry at the
  instruction (CR2 first for a #PF); a completed one steps past it
  (``HardwareAssisted.skip``, with the single-step trap it owes).
* **Mapped through.**  A device page of the machine's that no virtual device
  covers is mapped into EPT 1:1, uncacheable, at the first access
  (``MonitorEpt.map_device``; on shadow paging the shadow maps it, as under
  trap-and-emulate); the guest's later accesses reach the machine's device
  without an exit, as a BAR assigned to a KVM or Xen guest is.
* **The APIC's MSRs** (IA32_APIC_BASE, IA32_TSC_DEADLINE) exit through the MSR
  bitmap and go to the virtual APIC; CPUID reports the virtual APIC.
* **Interrupts.**  The virtual APIC's output is the guest's interrupt request:
  the monitor injects its highest vector on VM entry when the guest's IF and
  interruptibility allow, or asks for an interrupt-window exit
  (``HardwareAssisted.inject_pending``).  A timer expiry or IO-APIC message
  while the guest runs notifies the monitor by a self-IPI on the physical APIC
  (``vapic.py``), which exits (external-interrupt exiting).

Not emulated: a guest data breakpoint on a device page does not fire for the
emulated access (the monitor emulates it; the guest's DR7 is the processor's).
"""

from __future__ import annotations

import iced_x86 as ix

from ringvisor.hw import vmcs as V
from ringvisor.hw.ept import Q_FETCH, Q_FINAL, Q_LINEAR_VALID
from ringvisor.hw.faults import GP, PF, CpuFault, PageFault
from ringvisor.hw.identify import APIC_MSRS
from ringvisor.hw.state import CS, SS
from ringvisor.hw.translate import SREG

from .emulate import NEXT
from .errors import MonitorStop
from .guestmem import GuestPageFault
from .mmio import MMIO_EMULATORS, PAGE, MmioContext, check_emulated, is_apic

AR_DB = 1 << 14                 # the segment's D/B bit in a VMCS access-rights field


def _user(mon) -> bool:
    """The guest runs at CPL 3 (SS's DPL, which VM exit saved)."""
    return (mon.read(V.GUEST_AR + 2 * SS) >> 5) & 3 == 3


class _Flags:
    """The guest's EFLAGS, as the emulators keep them in a trap frame."""

    def __init__(self, eflags: int) -> None:
        self.eflags = eflags


class _Selector:
    __slots__ = ("selector",)

    def __init__(self, selector: int) -> None:
        self.selector = selector


class _GuestFpState:
    """What ``hw.x87`` and ``hw.sse`` read of the processor state, the guest's after a VM
    exit: CR0, CR4 and the selectors (FSTENV's FCS and FDS) from the VMCS."""

    def __init__(self, mon) -> None:
        st = mon.cpu.state
        self.fpu, self.regs = st.fpu, st.regs
        self.cr0, self.cr4 = mon.read(V.GUEST_CR0), mon.read(V.GUEST_CR4)
        self.segs = [_Selector(mon.read(V.GUEST_SEL + 2 * i)) for i in range(6)]


class HvmMmioContext(MmioContext):
    """``MmioContext`` with the guest's state from the VMCS."""

    @property
    def user(self) -> bool:
        return _user(self.mon)

    def watch(self, lin: int, size: int, write: bool) -> None:
        """(No data breakpoints on emulated accesses: see the module's note.)"""

    def seg_base(self, sreg: int) -> int:
        return self.mon.read(V.GUEST_BASE + 2 * SREG[sreg])

    def fp_state(self):
        """The guest's CR0, CR4 and selectors from the VMCS (the host's are loaded), its
        registers and FPU the processor's."""
        return _GuestFpState(self.mon)

    def code_segment(self, off: int, size: int, write: bool) -> int:
        """A data access through CS (SDM Vol. 3 §5.5): readable, within the limit, never
        written."""
        m = self.mon
        if write or not m.read(V.GUEST_AR + 2 * CS) & 2 or off + size - 1 > m.read(V.GUEST_LIMIT + 2 * CS):
            raise CpuFault(GP, 0)
        return (m.read(V.GUEST_BASE + 2 * CS) + off) & 0xFFFFFFFF


def fetch(mon) -> ix.Instruction:
    """The guest's instruction at CS:EIP, through its own paging (a second page only if
    readable); decoded 16- or 32-bit as CS's D bit says."""
    eip = mon.read(V.GUEST_RIP)
    lin = (mon.read(V.GUEST_BASE + 2 * CS) + eip) & 0xFFFFFFFF
    user = _user(mon)
    first = min(15, 0x1000 - (lin & 0xFFF))
    data = mon.gm.read(lin, first, user)
    if first < 15:
        try:
            data += mon.gm.read((lin + first) & 0xFFFFFFFF, 15 - first, user)
        except GuestPageFault:
            pass
    bits = 32 if mon.read(V.GUEST_AR + 2 * CS) & AR_DB else 16
    return ix.Decoder(bits, data, ip=eip).decode()


def ept_device_access(mon, gpa: int, q: int) -> bool:
    """An EPT violation at ``gpa`` above the guest's RAM, with exit qualification ``q``:
    ``device_access``.  An access the instruction did not make itself cannot be emulated
    by performing the instruction: a walk of guest page tables kept in a device page
    (the qualification's "final translation" bit clear, SDM Vol. 3C Table 27-7), or the
    delivery of an event (the IDT-vectoring information valid) -- either stops the VM
    with one line, unless the page is mapped through (then the processor retries it)."""
    mmio = mon.platform.mmio
    if mmio.owns(gpa & PAGE) and not mmio.passes_through(gpa & PAGE) and not q & Q_FETCH:
        what = ""
        if q & Q_LINEAR_VALID and not q & Q_FINAL:
            what = "a walk of its page tables"
        elif mon.read(V.IDT_VECTORING_INFO) & V.INTR_VALID:
            what = "an event's delivery"
        if what:
            raise MonitorStop(f"hvm: {what} reached the device page at {gpa & PAGE:#x} "
                              f"(eip={mon.read(V.GUEST_RIP):#010x}): only the accesses of an "
                              f"instruction's operands are emulated there")
    return device_access(mon, gpa, bool(q & Q_FETCH), mon.eptmap.map_device)


def device_access(mon, gpa: int, fetch_: bool, map_through) -> bool:
    """An access to guest-physical ``gpa`` above the guest's RAM: map a pass-through
    device's page (``map_through(frame)``: into EPT, or the shadow), or emulate the
    instruction on the virtual device.  False if no device the monitors give is there,
    or the guest fetched code from it (the caller stops)."""
    mmio = mon.platform.mmio
    frame = gpa & PAGE
    if not mmio.owns(frame) or fetch_:
        return False
    if mmio.passes_through(frame):
        map_through(frame)
        mon.stats["device pages mapped"] += 1
        return True
    emulate_access(mon, frame)
    return True


def emulate_access(mon, frame: int) -> None:
    """Decode and perform the guest's instruction on the device page at ``frame``."""
    apic = is_apic(frame)
    ins = fetch(mon)
    check_emulated(mon.name, ins, frame)
    regs = mon.cpu.state.regs
    host_esp, regs[4] = regs[4], mon.read(V.GUEST_RSP)
    f = _Flags(mon.read(V.GUEST_RFLAGS))
    result = None
    try:
        result = MMIO_EMULATORS[ins.mnemonic](HvmMmioContext(mon, f, ins, ins.ip))
    except GuestPageFault as e:
        mon.cpu.state.cr2 = e.address          # (CR2 is the guest's: an exit leaves it)
        mon.inject_exception(PF, e.error_code)
    except CpuFault as e:
        if isinstance(e, PageFault):
            mon.cpu.state.cr2 = e.address
        mon.inject_exception(e.vector, e.error_code)
    finally:
        mon.write(V.GUEST_RSP, regs[4])
        regs[4] = host_esp
    mon.write(V.GUEST_RFLAGS, f.eflags)
    if result == NEXT:
        mon.skip(ins.len)
    mon.stats["apic_accesses" if apic else "mmio_accesses"] += 1
    mon.platform.vapic.check()


def apic_msr(mon, write: bool) -> bool:
    """RDMSR/WRMSR of the local APIC's MSRs, on the virtual APIC; False for another MSR."""
    regs = mon.cpu.state.regs
    n = regs[1]
    if n not in APIC_MSRS:
        return False
    apic = mon.platform.vapic.apic
    if not write:
        value = apic.read_msr(n)
        regs[0], regs[2] = value & 0xFFFFFFFF, value >> 32
    elif not apic.write_msr(n, regs[0] | regs[2] << 32):
        mon.inject_exception(GP, 0)
        return True
    mon.platform.vapic.check()
    mon.skip()
    return True

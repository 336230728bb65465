"""Hardware-assisted virtualization (the chapter's section 3.2): a VT-x hypervisor.

The processor itself gains a mode for guests.  This monitor is the software at
VMX root operation: it turns VMX on (VMXON), describes the guest in a VMCS and
enters it with VMLAUNCH; the unmodified guest kernel then runs at ring 0 in VMX
non-root operation, on its own GDT, IDT and TSS.  Nothing is de-privileged and
nothing is translated: the sensitive instructions that defeat trap-and-emulate
on x86 (POPF, PUSHF, SGDT, SMSW, MOV from CS...) simply do what they do natively,
and those the monitor must see cause VM exits, configured in the VMCS:

- the CR0 bits of paging and protection and every CR4 write (guest/host masks;
  reads come from the read shadows without an exit); CR3 loads and stores under
  shadow paging, and under EPT while the guest's paging is off;
- with EPT (the default, ``hvmept.py``) nothing else of paging: the guest's CR3
  is the real one, its page faults and INVLPGs stay in the guest, and the monitor
  maps guest-physical memory on EPT violations;
- without EPT (``--no-ept``, the first generation of VT-x): #PF (the exception
  bitmap) and INVLPG, for the shadow page tables -- the real CR3 is a shadow
  directory filled from the guest's tables (``shadow.py``, as under
  trap-and-emulate);
- CPUID (the VMX feature is hidden: no nested virtualization), HLT,
  port I/O (every port: the devices are the machine's, the PIC the guest sees is
  a virtual one, ``platform.py``), the VMX MSRs and instructions;
- external interrupts, acknowledged on exit: a physical interrupt becomes an edge
  on the virtual PIC, and the monitor injects the guest's vector on VM entry when
  the guest's IF allows, or asks for an interrupt-window exit;
- the PC's memory-mapped devices (``hvmmmio.py``): an access to the page of the
  guest's virtual local APIC, IO-APIC or HPET (never mapped) is emulated, another
  device page of the machine's is mapped through; RDMSR/WRMSR of the APIC's MSRs.

The monitor runs in Python at HOST_RIP (a native entry, ``hw/native.py``) with
the host state of the VMCS; the guest's general registers are in the register
file, as hardware leaves them.  Every exit is counted by its basic reason.
"""

from __future__ import annotations

import struct
from collections import Counter

import iced_x86 as ix

from ringvisor.hw.boot.rom import RomRegion
from ringvisor.hw.faults import DB, MF, NAMES, NMI, PF
from ringvisor.hw.identify import APIC_MSRS
from ringvisor.hw.machine import Stop
from ringvisor.hw.segments import LDT, TSS16_AVAIL, TSS16_BUSY, TSS32_AVAIL, TSS32_BUSY
from ringvisor.hw.state import (ATTR_DB, ATTR_G, ATTR_P, ATTR_S, ATTR_UNUSABLE, CR0_ET,
                                CR0_NE, CR0_PE, CR0_PG, CR0_WP, CR4_DE, CR4_PAE, CR4_PGE, CR4_PSE,
                                CR4_VMXE, IF, REG_NAMES, SEG_NAMES)
from ringvisor.hw import vmcs as V
from ringvisor.hw.vmcs import EXIT_REASONS

from . import layout as L, state as S
from .errors import MonitorStop
from .guestmem import GuestBadFrame, GuestMemory, GuestPageFault
from .hvmept import MonitorEpt
from .region import build_region
from .platform import VirtualPlatform
from .shadow import ShadowPaging, address_space
from .vcpu import VirtualCpu

# CR0 bits the host owns: PE and PG (real paging is always on, on the shadow tables),
# NE and WP (what a fixed-1 bit and the shadow's write protection need)
CR0_OWNED = CR0_PE | CR0_NE | CR0_WP | CR0_PG
CR0_HOST = CR0_PE | CR0_NE | CR0_WP | CR0_PG | CR0_ET
# the shadow tables are 32-bit, with 4 KiB pages (a PAE guest's are shadowed into them)
CR4_GUEST_REAL = ~(CR4_PSE | CR4_PGE | CR4_PAE) & 0xFFFFFFFF
# under EPT the guest's own tables are the real ones: the host owns only PE, NE and PG
# (fixed 1 in VMX operation: a guest with paging off runs on the EPT identity map)
CR0_OWNED_EPT = CR0_PE | CR0_NE | CR0_PG
CR3_EXITING = V.CPU_CR3_LOAD | V.CPU_CR3_STORE
IO_STRING_SLICE = 4096
TF, DR6_BS = 1 << 8, 1 << 14
STRING_IO = 1 << 4


def entry_attr(i: int, attr: int) -> int:
    """The access rights VM entry is given for the guest's segment register ``i`` (ES..GS,
    LDTR, TR) as the hand-off or RESET left it: what the checks of SDM Vol. 3C §26.3.1.2
    require of a cache the guest can never observe, and nothing else.

    - ES..GS usable: the accessed bit set (loading a segment sets it; RESET's caches have
      it, a loader's may not -- KVM sets it too, vmx.c ``__vmx_set_segment``);
    - LDTR: usable only as an LDT (type 2, S clear, present), else unusable -- RESET's is
      "present, R/W" (Table 9-1), which this machine holds as an LDT of limit FFFF (82H);
      nothing reads LDTR until an LLDT or a selector with TI set in protected mode;
    - TR: must be usable, a *busy* TSS (type 3 or 11, S clear, present) even for an
      unrestricted guest in real mode: an available TSS becomes busy (what LTR leaves),
      anything else a busy 32-bit TSS (8BH, KVM's ``vmx_vcpu_reset``).  RESET's TR here
      is 8BH already, QEMU's too, so the reset state enters unchanged; in real mode no
      instruction reads TR (no task switch, no I/O bitmap, no stack switch), and LTR
      replaces the whole cache before protected mode can."""
    system = not attr & (ATTR_UNUSABLE | ATTR_S)
    if i < 6:
        return attr | 1 if not attr & ATTR_UNUSABLE and attr & ATTR_S else attr
    if i == 6:
        return attr if system and attr & ATTR_P and attr & 0xF == LDT else ATTR_UNUSABLE
    if system and attr & ATTR_P and attr & 0xF in (TSS16_BUSY, TSS32_BUSY):
        return attr
    if system and attr & 0xF in (TSS16_AVAIL, TSS32_AVAIL):
        return attr | ATTR_P | 2
    return attr & ATTR_G | ATTR_P | TSS32_BUSY   # (G kept: it must agree with the limit)


class HardwareAssisted:
    name = "hvm"
    # the lifecycle protocol (vmm/state.py).  The VMCS, VMX operation and the guest's
    # registers are the CPU's (its section: hw/vmx.py); the host page directory, the MSR
    # bitmap, the VMXON and VMCS regions and the shadow tables are in the monitor's region
    # of machine memory; what is left is the monitor's own bookkeeping
    state_name = "monitor"
    state_version = 2                          # 2: ``ept``, EPT or shadow paging
    STATE = ("vcpu", "shadow", "platform", "exits", "stats", "step_page", "ept", "nmi",
             "fpu_step")
    WIRING = ("machine", "cpu", "mem", "vmx", "guest_ram", "base", "gm", "eptmap")

    def __init__(self, machine, guest_ram: int, ept: bool = True) -> None:
        self.machine = machine
        self.cpu = machine.cpu
        self.mem = machine.mem
        self.vmx = machine.cpu.vmx
        self.guest_ram = guest_ram
        self.base = guest_ram
        if self.mem.size < self.base + L.MONITOR_RAM:
            raise ValueError("the machine has no room for the monitor")
        self.vcpu = VirtualCpu()               # the CR0/CR3/CR4 the guest believes it has
        self.gm = GuestMemory(self.mem, self.vcpu, guest_ram)
        self.shadow = ShadowPaging(self.cpu, self.mem, self.base, region=False)
        self.gm.written_hook = self.shadow.written
        # a PAE guest's PDPTEs: as VM exit saved them under EPT (SDM Vol. 3C §27.3.4); on
        # shadow tables, the virtual CPU's, loaded where the monitor emulates the MOV
        self.gm.pdptes = lambda: [self.read(V.GUEST_PDPTE + 2 * i) & 0xFFFFFFFF |
                                  self.read(V.GUEST_PDPTE + 2 * i + 1) << 32 for i in range(4)] \
            if self.ept else self.vcpu.pdpte
        # the PC's devices: a virtual local APIC, IO-APIC and HPET, the machine's other
        # device pages mapped through (``hvmmmio.py``)
        self.platform = VirtualPlatform(machine.bus, machine.pic, machine, self.name)
        self.exits: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.step_page = None                  # (page, frame, its bytes) opened for one store (MTF)
        self.ept = ept                         # EPT (hvmept.py), or shadow page tables
        self.eptmap = MonitorEpt(self.mem, self.base, guest_ram)
        self.nmi = False                       # a virtual NMI waits for the guest
        self.fpu_step = False                  # a waiting x87 instruction runs under MTF (NE=0)

    # -- VMX operations: the monitor's instructions ---------------------------------------
    def _ok(self, status: int, what: str) -> None:
        if status:
            err = "VMfailInvalid" if status < 0 else f"VMfailValid({status})"
            raise MonitorStop(f"hvm: {what} failed: {err}")

    def write(self, field: int, value: int) -> None:
        self._ok(self.vmx.vmwrite(field, value), f"VMWRITE {field:#06x}")

    def read(self, field: int) -> int:
        status, value = self.vmx.vmread(field)
        self._ok(status, f"VMREAD {field:#06x}")
        return value

    # -- taking over the freshly booted guest ------------------------------------------------
    def install(self) -> None:
        boot = self.cpu.state.to_dict()
        build_region(self.mem, self.base)
        self.attach()
        pd = self.base + L.HVM_HOST_PD
        self.mem.write(pd, b"".join(struct.pack("<I", i << 22 | 0x83) for i in range(1024)))
        self.mem.write(self.base + L.HVM_MSR_BITMAP, bytes(4096))
        if self.ept:
            self.eptmap.build()
            for start, end, dev in self.mem.mmio_regions():
                if isinstance(dev, RomRegion):     # run --bios: the ROM's copy at 4 GiB
                    self.eptmap.map_rom(start, end)
        self.platform.take_over()
        self._become_host(pd)
        self._vmcs_setup(boot)
        self.write(V.GUEST_RIP, boot["eip"])
        self.inject_pending()
        self._ok(self.vmx.vmlaunch(), "VMLAUNCH")
        if not self.cpu.nonroot:
            self.exit(self.cpu)                   # a VM-entry failure: reported there

    def attach(self) -> None:
        self.cpu.native.bind(self.base + L.ENTRY, 8, self.exit, "hvm monitor (VM exits)")

    def _become_host(self, pd: int) -> None:
        """The processor state of the hypervisor at VMX root: flat ring 0 on the region's
        GDT, paging on its 1:1 map, CR4.VMXE, VMX enabled by IA32_FEATURE_CONTROL (as
        firmware leaves it), then VMXON."""
        cpu, st = self.cpu, self.cpu.state
        st.cr0 = CR0_HOST
        st.cr4 = CR4_PSE | CR4_VMXE
        st.cr3 = pd
        st.msrs[V.MSR_FEATURE_CONTROL] = V.FC_LOCK | V.FC_VMX_OUTSIDE_SMX
        st.gdtr.base, st.gdtr.limit = self.base + L.GDT, L.GDT_ENTRIES * 8 - 1
        st.idtr.base, st.idtr.limit = self.base + L.IDT, 256 * 8 - 1
        seg = cpu.segmentation
        st.segs[1] = seg.read_descriptor(L.SEL_MCODE).segment(L.SEL_MCODE)
        for i in (0, 2, 3, 4, 5):
            st.segs[i] = seg.read_descriptor(L.SEL_MDATA).segment(L.SEL_MDATA)
        st.tr = seg.read_descriptor(L.SEL_MTSS).segment(L.SEL_MTSS)
        cpu.tlb_flush()
        cpu.mode_changed()
        for off in (L.HVM_VMXON, L.HVM_VMCS):
            self.mem.write32(self.base + off, V.VMCS_REVISION)
        self._ok(self.vmx.vmxon(self.base + L.HVM_VMXON), "VMXON")
        self._ok(self.vmx.vmclear(self.base + L.HVM_VMCS), "VMCLEAR")
        self._ok(self.vmx.vmptrld(self.base + L.HVM_VMCS), "VMPTRLD")

    def _controls(self, msr: int, want: int) -> int:
        cap = self.vmx.capability(msr)
        ctl = (want | cap) & (cap >> 32)
        if ctl & want != want:
            raise MonitorStop(f"hvm: the processor lacks VMX controls {want & ~ctl:#x} (MSR {msr:#x})")
        return ctl

    def _vmcs_setup(self, boot: dict) -> None:
        w, st, b = self.write, self.cpu.state, self.base
        w(V.PIN_CONTROLS, self._controls(V.MSR_VMX_TRUE_PINBASED,
                                         V.PIN_EXT_INT | V.PIN_NMI | V.PIN_VIRTUAL_NMI))
        paging = 0 if self.ept else V.CPU_INVLPG | CR3_EXITING   # (EPT: CR3 exits while unpaged)
        w(V.CPU_CONTROLS, self._controls(V.MSR_VMX_TRUE_PROCBASED,
                                         V.CPU_HLT | paging | V.CPU_IO | V.CPU_MSR_BITMAPS |
                                         V.CPU_SECONDARY))
        w(V.CPU_CONTROLS2, self._controls(V.MSR_VMX_PROCBASED_CTLS2,
                                          V.CPU2_RDTSCP | (V.CPU2_EPT | V.CPU2_UNRESTRICTED
                                                           if self.ept else 0)))
        w(V.EXIT_CONTROLS, self._controls(V.MSR_VMX_TRUE_EXIT, V.EXIT_ACK_INT))
        w(V.ENTRY_CONTROLS, self._controls(V.MSR_VMX_TRUE_ENTRY, V.ENTRY_LOAD_DEBUG))
        if self.ept:
            w(V.EPTP, self.eptmap.eptp)
        w(V.MSR_BITMAP, b + L.HVM_MSR_BITMAP)
        # the VMX MSRs are not the guest's (no nested VMX): reading or writing them exits
        bm = bytearray(4096)
        # and the local APIC's are the virtual APIC's (``hvmmmio.apic_msr``)
        for n in [V.MSR_FEATURE_CONTROL, *APIC_MSRS] + list(range(V.MSR_VMX_BASIC, V.MSR_VMX_TRUE_ENTRY + 1)):
            for off in (0, 2048):
                bm[off + (n >> 3)] |= 1 << (n & 7)
        self.mem.write(b + L.HVM_MSR_BITMAP, bytes(bm))
        w(V.VMCS_LINK, 0xFFFFFFFF)
        w(V.VMCS_LINK + 1, 0xFFFFFFFF)
        # host state: what the processor holds now
        w(V.HOST_CR0, st.cr0)
        w(V.HOST_CR3, st.cr3)
        w(V.HOST_CR4, st.cr4)
        for i, s in enumerate(st.segs):
            w(V.HOST_SEL + 2 * i, s.selector)
        w(V.HOST_SEL + 12, st.tr.selector)
        w(V.HOST_TR_BASE, st.tr.base)
        w(V.HOST_GDTR_BASE, st.gdtr.base)
        w(V.HOST_IDTR_BASE, st.idtr.base)
        w(V.HOST_RSP, b + L.STACK_TOP)
        w(V.HOST_RIP, b + L.ENTRY)
        # guest state: the machine as the loader left it, paging off (on the 1:1 shadow, or
        # under EPT on the identity map)
        v = self.vcpu
        v.cr0, v.cr3, v.cr4 = boot["cr0"], boot["cr3"], boot["cr4"]
        w(V.CR0_MASK, self._cr0_owned)
        w(V.CR4_MASK, 0xFFFFFFFF)
        self._set_cr0_views()
        self._set_cr4_views()
        self._paging_changed()
        segs = boot["segs"] + [boot["ldtr"], boot["tr"]]
        for i, s in enumerate(segs):
            w(V.GUEST_SEL + 2 * i, s["selector"])
            w(V.GUEST_BASE + 2 * i, s["base"])
            w(V.GUEST_LIMIT + 2 * i, s["limit"])
            w(V.GUEST_AR + 2 * i, entry_attr(i, s["attr"]))
        w(V.GUEST_GDTR_BASE, boot["gdtr"]["base"])
        w(V.GUEST_GDTR_LIMIT, boot["gdtr"]["limit"])
        w(V.GUEST_IDTR_BASE, boot["idtr"]["base"])
        w(V.GUEST_IDTR_LIMIT, boot["idtr"]["limit"])
        w(V.GUEST_DR7, boot["dr"][7])
        w(V.GUEST_RSP, boot["regs"][4])
        w(V.GUEST_RFLAGS, boot["eflags"])
        msrs = {int(k): v for k, v in boot["msrs"].items()}
        w(V.GUEST_SYSENTER_CS, msrs.get(0x174, 0))
        w(V.GUEST_SYSENTER_ESP, msrs.get(0x175, 0))
        w(V.GUEST_SYSENTER_EIP, msrs.get(0x176, 0))
        # the guest's general registers are in the register file (the boot state's)
        st.regs[:] = boot["regs"]

    # -- the control registers: what the guest believes, what the processor holds --------------
    @property
    def _cr0_owned(self) -> int:
        return CR0_OWNED_EPT if self.ept else CR0_OWNED

    def _set_cr0_views(self) -> None:
        v = self.vcpu
        owned = self._cr0_owned
        self.write(V.CR0_SHADOW, v.cr0)
        # #PF for the shadow tables; #MF while the guest's NE is clear: the processor's NE
        # is fixed to 1 in VMX operation (SDM Vol. 3C §23.8), so its x87 errors must become
        # the PC's FERR# (``hvmexits.fpu_error``), as the guest believes NE clear gives
        self.write(V.EXCEPTION_BITMAP, (0 if self.ept else 1 << PF) |
                   (0 if v.cr0 & CR0_NE else 1 << MF))
        host = CR0_HOST
        if self.ept and not v.cr0 & CR0_PE:
            # an unrestricted guest (SDM Vol. 3C §26.3.1.1) in real mode: PE and PG
            # really clear, guest-physical addresses straight into EPT
            host &= ~(CR0_PE | CR0_PG)
        self.write(V.GUEST_CR0, (v.cr0 & ~owned) | (host & owned) | CR0_ET)

    def _set_cr4_views(self) -> None:
        v = self.vcpu
        if self.ept:                           # the guest's own, PSE for the identity map
            real = v.cr4 if v.paging else (v.cr4 & ~CR4_PAE) | CR4_PSE
        else:
            real = v.cr4 & CR4_GUEST_REAL
        self.write(V.CR4_SHADOW, v.cr4)
        self.write(V.GUEST_CR4, real | CR4_VMXE)

    def _paging_changed(self) -> None:
        """The guest's CR3 or CR0.PG changed: the real CR3 follows (the shadow directory
        for it; under EPT the guest's own, or the identity map with CR3 exits while its
        paging is off)."""
        if not self.ept:
            self.shadow.switch(*address_space(self.vcpu))
            self.write(V.GUEST_CR3, self.shadow.cr3)
            return
        v = self.vcpu
        self._set_cr4_views()                  # (PSE for the identity map, or the guest's)
        self.write(V.GUEST_CR3, v.cr3 if v.paging else self.eptmap.idmap)
        ctl = self.read(V.CPU_CONTROLS) & ~CR3_EXITING
        self.write(V.CPU_CONTROLS, ctl | (0 if v.paging else CR3_EXITING))

    def sync_vcpu(self) -> None:
        """Under EPT the guest loads CR3 and writes the CR0 bits it owns without an exit:
        what it believes is what the processor holds (in non-root operation) or the VMCS
        (at an exit)."""
        if not self.ept or self.vmx.current is None:
            return
        if self.cpu.nonroot:
            cr0, cr3 = self.cpu.state.cr0, self.cpu.state.cr3
        else:
            cr0, cr3 = self.read(V.GUEST_CR0), self.read(V.GUEST_CR3)
        v = self.vcpu
        v.cr0 = (v.cr0 & CR0_OWNED_EPT) | (cr0 & ~CR0_OWNED_EPT)
        if v.paging:
            v.cr3 = cr3

    # -- VM exits ------------------------------------------------------------------------------
    def exit(self, cpu) -> None:
        """HOST_RIP: one VM exit, handled; then VMRESUME.  A stop of the monitor's reports
        the guest's state, not the host's the processor now holds (``guest_report``)."""
        try:
            self._exit()
        except MonitorStop as e:
            self.stop(Stop("unsupported", 3, f"stopped: {e}\n{self.guest_report()}"))

    def _exit(self) -> None:
        reason = self.read(V.EXIT_REASON)
        basic = reason & 0xFFFF
        name = EXIT_REASONS.get(basic, str(basic))
        self.exits[name] += 1
        if reason & V.EXIT_ENTRY_FAILURE:
            raise MonitorStop(f"hvm: VM entry failed: {name} (qualification "
                              f"{self.read(V.EXIT_QUALIFICATION):#x})")
        self.write(V.ENTRY_INTR_INFO, 0)
        self.sync_vcpu()
        if not (basic == V.EXIT_TASK_SWITCH and
                self.read(V.EXIT_QUALIFICATION) >> 30 == V.TS_SOURCE_IDT):
            self._requeue()                   # (a task gate's event: the switch takes it)
        handler = HANDLERS.get(basic)
        if handler is None:
            raise MonitorStop(f"hvm: unexpected VM exit: {name} at eip={self.read(V.GUEST_RIP):#010x}")
        vapic = self.platform.vapic
        vapic.inside = True                   # (what it raises now is injected before entry)
        try:
            handler(self)
            if self.machine.stop is not None:
                return
            self.inject_pending()
        except (GuestBadFrame, GuestPageFault) as e:
            raise MonitorStop(f"hvm: {e} at eip={self.read(V.GUEST_RIP):#010x}") from None
        finally:
            vapic.inside = False
        self._ok(self.vmx.vmresume(), "VMRESUME")

    def _requeue(self) -> None:
        """An exit during event delivery: deliver the event again on the next entry (SDM
        Vol. 3C §27.2.4: a VMM re-injects what the IDT-vectoring information holds)."""
        idt = self.read(V.IDT_VECTORING_INFO)
        if not idt & V.INTR_VALID:
            return
        self.write(V.ENTRY_INTR_INFO, idt & ~0x1000)
        if (idt >> 8) & 7 == V.INTR_NMI:
            # the NMI was not delivered: the virtual-NMI blocking its delivery began goes
            # (KVM's __vmx_complete_interrupts), or VM entry refuses to inject it
            self.write(V.GUEST_INTERRUPTIBILITY, self.read(V.GUEST_INTERRUPTIBILITY) & ~V.BLOCK_NMI)
        if idt & V.INTR_ERROR_VALID:
            self.write(V.ENTRY_EXCEPTION_ERROR, self.read(V.IDT_VECTORING_ERROR))
        self.write(V.ENTRY_INSTRUCTION_LEN, self.read(V.EXIT_INSTRUCTION_LEN))
        self.stats["events re-injected"] += 1

    def skip(self, length: int | None = None, hits: int = 0) -> None:
        """The exiting instruction (``length`` bytes, or the exit's instruction length) is
        done: the guest continues after it, with the single-step trap it owes if the
        guest's TF is set (SDM Vol. 3 §17.3.1.4) and the breakpoints it matched (``hits``:
        DR6's B0-B3, an emulated port I/O's I/O breakpoints: ``io_breakpoints``)."""
        if length is None:
            length = self.read(V.EXIT_INSTRUCTION_LEN)
        self.write(V.GUEST_RIP, (self.read(V.GUEST_RIP) + length) & 0xFFFFFFFF)
        # (its interrupt shadow, if any, ends with it; blocking by NMI stays)
        self.write(V.GUEST_INTERRUPTIBILITY,
                   self.read(V.GUEST_INTERRUPTIBILITY) & ~(V.BLOCK_STI | V.BLOCK_MOV_SS))
        tf = self.read(V.GUEST_RFLAGS) & TF
        # data breakpoints a MOV SS or POP SS right before it matched, held until now
        # (the exit saved them in the pending debug exceptions): they go with its #DB
        held = self.read(V.GUEST_PENDING_DBG) & 0xF
        if held:
            self.write(V.GUEST_PENDING_DBG, 0)
            hits |= held
        if tf or hits:
            dr = self.cpu.state.dr                 # DR6 is the guest's (a VM exit leaves it)
            if hits:
                dr[6] = (dr[6] & ~0xF) | hits
            if tf:
                dr[6] |= DR6_BS
            self.inject_exception(DB)

    def io_breakpoints(self, port: int, size: int) -> int:
        """The guest's I/O breakpoints (DR7 R/W = 10 under its CR4.DE) that an access to
        ``size`` ports at ``port`` matches: its DR6 B bits (SDM Vol. 3 §17.2.5)."""
        dr7 = self.read(V.GUEST_DR7)
        if not dr7 & 0xFF or not self.vcpu.cr4 & CR4_DE:
            return 0
        hits = 0
        for i in range(4):
            if (dr7 >> (2 * i)) & 3 and (dr7 >> (16 + 4 * i)) & 3 == 2:
                length = (1, 2, 8, 4)[(dr7 >> (18 + 4 * i)) & 3]
                lo = self.cpu.state.dr[i] & ~(length - 1) & 0xFFFF
                if port <= lo + length - 1 and lo <= port + size - 1:
                    hits |= 1 << i
        return hits

    def inject_exception(self, vector: int, err: int | None = None) -> None:
        """Reflect an exception into the guest (the double-fault rules against an event
        being re-delivered, SDM Vol. 3 Table 6-5)."""
        pending = self.read(V.ENTRY_INTR_INFO)
        if pending & V.INTR_VALID and (pending >> 8) & 7 == V.INTR_HW_EXCEPTION and \
                (pending & 0xFF) in (0, 10, 11, 12, 13, 14) and vector in (0, 10, 11, 12, 13, 14) \
                and not ((pending & 0xFF) != 14 and vector == 14):
            vector, err = 8, 0
        info = V.INTR_VALID | V.INTR_HW_EXCEPTION << 8 | vector
        if not self.vcpu.cr0 & CR0_PE:
            err = None                         # real mode pushes no error code (§26.2.1.3)
        if err is not None:
            info |= V.INTR_ERROR_VALID
            self.write(V.ENTRY_EXCEPTION_ERROR, err)
        self.write(V.ENTRY_INTR_INFO, info)
        self.stats[f"{NAMES.get(vector, vector)} reflected"] += 1

    def inject_pending(self) -> None:
        """A virtual NMI, then a virtual interrupt, the guest can take now is injected;
        otherwise an NMI-window or interrupt-window exit is asked for."""
        ctl = self.read(V.CPU_CONTROLS) & ~(V.CPU_INTR_WINDOW | V.CPU_NMI_WINDOW)
        vapic = self.platform.vapic
        if vapic.nmi:                          # the virtual APIC's (an NMI IPI, LINT1, an LVT)
            vapic.nmi, self.nmi = False, True
        if self.fpu_step:
            # the waiting instruction FERR# interrupted runs first (its MTF exit comes
            # next): the IRQ 13 it raised is taken after it, as on the bare PC
            self.write(V.CPU_CONTROLS, ctl)
            return
        if self.nmi:
            if not self.read(V.ENTRY_INTR_INFO) & V.INTR_VALID and not \
                    self.read(V.GUEST_INTERRUPTIBILITY) & (V.BLOCK_MOV_SS | V.BLOCK_NMI):
                self.write(V.ENTRY_INTR_INFO, V.INTR_VALID | V.INTR_NMI << 8 | NMI)
                self.write(V.GUEST_ACTIVITY, 0)
                self.nmi = False
                self.stats["NMIs injected"] += 1
            else:
                ctl |= V.CPU_NMI_WINDOW
        if self.platform.intr:
            if not self.read(V.ENTRY_INTR_INFO) & V.INTR_VALID and \
                    self.read(V.GUEST_RFLAGS) & IF and not self.read(V.GUEST_INTERRUPTIBILITY) & 3:
                _, vector = self.platform.acknowledge()
                if vector is not None:        # (None: the request went away, its TPR rose)
                    self.write(V.ENTRY_INTR_INFO, V.INTR_VALID | V.INTR_EXTERNAL << 8 | vector)
                    self.write(V.GUEST_ACTIVITY, 0)
                    self.stats["interrupts injected"] += 1
            else:
                ctl |= V.CPU_INTR_WINDOW
        self.write(V.CPU_CONTROLS, ctl)

    # -- what the guest view asks (``guestview.HvmView``) ---------------------------------------
    def at_guest_boundary(self) -> bool:
        """In non-root operation, not inside the one store an MTF window lets through."""
        return self.cpu.nonroot and self.step_page is None

    def guest_written(self, phys: int, n: int) -> None:
        """A debugger wrote guest memory: shadow entries those bytes defined are dropped."""
        if not self.ept:
            self.shadow.written(phys, n)

    # -- reports -----------------------------------------------------------------------------
    def report(self) -> dict:
        out = {"exits": dict(self.exits)}
        out.update(self.stats)
        out["paging"] = "EPT" if self.ept else "shadow page tables"
        if not self.ept:
            out.update(self.shadow.stats)
        out["io"] = self.platform.stats["io"]
        out["physical_irqs"] = self.platform.stats["irqs"]
        return out

    def guest_report(self) -> str:
        """The guest's state at the VM exit that stopped it, for the crash report: the exit,
        the guest-state area of the VMCS (its general registers are the register file's,
        SDM Vol. 3C §27.5), its control registers as it believes them (the read shadows),
        and the instructions at its CS:EIP through its own paging."""
        r, st = self.read, self.cpu.state
        self.sync_vcpu()
        v = self.vcpu
        reason = r(V.EXIT_REASON)
        name = EXIT_REASONS.get(reason & 0xFFFF, str(reason & 0xFFFF))
        failed = " (VM-entry failure)" if reason & V.EXIT_ENTRY_FAILURE else ""
        eip, cs32 = r(V.GUEST_RIP), bool(r(V.GUEST_AR + 2 * 1) & ATTR_DB)
        regs = list(st.regs)
        regs[4] = r(V.GUEST_RSP)
        sel = [r(V.GUEST_SEL + 2 * i) for i in range(8)]
        mode = "protected" if v.cr0 & CR0_PE else "real-address"
        lines = [f"  VM exit: {name}{failed} (reason {reason & 0xFFFF}, qualification "
                 f"{r(V.EXIT_QUALIFICATION):#x}); the guest, in {mode} mode:",
                 "  " + " ".join(f"{n}={regs[i]:08x}" for i, n in enumerate(REG_NAMES)),
                 f"  eip={eip:08x} eflags={r(V.GUEST_RFLAGS):08x} "
                 f"cpl={r(V.GUEST_AR + 2 * 2) >> 5 & 3} cr0={v.cr0:08x} cr2={st.cr2:08x} "
                 f"cr3={v.cr3:08x} cr4={v.cr4:08x}",
                 "  " + " ".join(f"{n}={sel[i]:04x}" for i, n in enumerate(SEG_NAMES)) +
                 f" gdt={r(V.GUEST_GDTR_BASE):08x}/{r(V.GUEST_GDTR_LIMIT):x} "
                 f"idt={r(V.GUEST_IDTR_BASE):08x}/{r(V.GUEST_IDTR_LIMIT):x} "
                 f"ldtr={sel[6]:04x} tr={sel[7]:04x}",
                 "  instructions at eip:"]
        lin = (r(V.GUEST_BASE + 2 * 1) + eip) & 0xFFFFFFFF
        code = bytearray()
        for a in range(lin, lin + 45):            # (up to where its paging or RAM ends)
            try:
                code += self.mem.read(self.gm.peek(a & 0xFFFFFFFF), 1)
            except (GuestBadFrame, GuestPageFault):
                break
        if not code:
            lines.append(f"    {eip:08x}: <not in the guest's RAM>")
        for n, ins in enumerate(ix.Decoder(32 if cs32 else 16, code, ip=eip)):
            lines.append(f"    {ins.ip:08x}: {ins}")
            if n == 2 or ins.flow_control != ix.FlowControl.NEXT:
                break
        return "\n".join(lines)

    def stop(self, stop: Stop) -> None:
        self.machine.stop = stop
        self.cpu.request_stop()

    def get_state(self) -> dict:
        return S.get_attrs(self)

    def set_state(self, state: dict) -> None:
        # (version 1: shadow paging only; then no NMIs, no x87 step)
        state = {"ept": False, "nmi": False, "fpu_step": False, **state}
        S.set_attrs(self, state)
        step = self.step_page                 # (a VM saved between an MTF entry and its exit)
        if step is not None:
            page, frame, before = step
            self.step_page = (int(page), int(frame), None if before is None else bytes(before))
        self.cpu.tlb_flush()


from .hvmexits import HANDLERS  # noqa: E402  (one handler per basic exit reason)
from . import hvmtasks  # noqa: E402,F401  (exit reason 9: the guest's task switches)

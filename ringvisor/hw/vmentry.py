"""VM entry and the state a VM exit moves: the checks of SDM §26.2-26.3, loading the
guest (§26.3.2) and injecting an event (§26.6), saving the guest (§27.3) and
loading the host (§27.5).

A check on the controls or the host-state area that fails is a VMfailValid with
error 7 or 8 (the processor state is unchanged); a check on the guest-state area
that fails is a VM exit with basic reason 33 and the entry-failure bit (§26.8).
"""

from __future__ import annotations

import struct

from . import transfers
from .realmode import VM86_ATTR
from .ept import eptp_valid
from .faults import DB, CpuFault, UnsupportedFeature
from .pae import PDPTE_RESERVED, read_pdptes
from .identify import msr_write_ok
from .state import (CR0_PE, CR0_PG, CR4_PAE, ATTR_DB, ATTR_G, ATTR_P, ATTR_S, ATTR_UNUSABLE, IF, MSR_SYSENTER_CS,
                    MSR_SYSENTER_EIP, MSR_SYSENTER_ESP, MSR_TSC, VM, Segment)
from .vmcs import (CPU2_UNRESTRICTED, BLOCK_MOV_SS, BLOCK_NMI, CPU_NMI_WINDOW, PIN_NMI, PIN_VIRTUAL_NMI,
                   CAPABILITY_MSRS, CPU2_EPT, CPU_CONTROLS, CPU_CONTROLS2, EPTP, CPU_IO_BITMAPS, CPU_MSR_BITMAPS,
                   CPU_INTR_WINDOW, CPU_MTF, CPU_SECONDARY, CPU_TSC_OFFSET, CR0_FIXED0, CR0_FIXED1, CR3_TARGET_COUNT, CR4_FIXED0,
                   ENTRY_CONTROLS, ENTRY_EXCEPTION_ERROR, ENTRY_INSTRUCTION_LEN, ENTRY_INTR_INFO,
                   ENTRY_LOAD_DEBUG, ENTRY_MSR_LOAD_ADDR, ENTRY_MSR_LOAD_COUNT, ERR_BAD_CONTROLS,
                   ERR_BAD_HOST, EXIT_ACK_INT, EXIT_BAD_MSR_LOAD, EXIT_CONTROLS, EXIT_MSR_LOAD_ADDR,
                   EXIT_MSR_LOAD_COUNT, EXIT_MSR_STORE_ADDR, EXIT_MSR_STORE_COUNT,
                   GUEST_ACTIVITY, GUEST_AR, GUEST_PDPTE, GUEST_BASE, GUEST_CR0, GUEST_CR3, GUEST_CR4,
                   GUEST_DR7, GUEST_GDTR_BASE, GUEST_GDTR_LIMIT, GUEST_IDTR_BASE,
                   GUEST_IDTR_LIMIT, GUEST_INTERRUPTIBILITY, GUEST_LIMIT, GUEST_PENDING_DBG,
                   GUEST_RFLAGS, GUEST_RIP, GUEST_RSP, GUEST_SEL, GUEST_SYSENTER_CS,
                   GUEST_SYSENTER_EIP, GUEST_SYSENTER_ESP, HOST_CR0, HOST_CR3, HOST_CR4,
                   HOST_FS_BASE, HOST_GDTR_BASE, HOST_GS_BASE, HOST_IDTR_BASE, HOST_RIP,
                   HOST_RSP, HOST_SEL, HOST_SYSENTER_CS, HOST_SYSENTER_EIP, HOST_SYSENTER_ESP,
                   HOST_TR_BASE, INTR_ERROR_VALID, INTR_EXTERNAL, INTR_HW_EXCEPTION, INTR_NMI,
                   INTR_PRIV_SOFT_EXC, INTR_SOFT_EXC, INTR_SOFT_INT, INTR_VALID, IO_BITMAP_A,
                   IO_BITMAP_B, MSR_BITMAP, MSR_VMX_PROCBASED_CTLS2,
                   MSR_VMX_TRUE_ENTRY, MSR_VMX_TRUE_EXIT, MSR_VMX_TRUE_PINBASED,
                   MSR_VMX_TRUE_PROCBASED, PIN_CONTROLS, TSC_OFFSET, VMCS_LINK, VMCS_REVISION)

HAS_ERROR = frozenset({8, 10, 11, 12, 13, 14, 17})
AR_RESERVED = 0xFFFE0F00            # access-rights bits 11:8 and 31:17 (SDM §26.3.1.2)
RFLAGS_RESERVED = 0xFFC08028        # bits 31:22, 15, 5, 3 must be 0; bit 1 must be 1
QUAL_LINK = 4                       # exit qualification of a bad VMCS link pointer (§26.8)
QUAL_PDPTE = 2                      # ... of PDPTEs loaded from the guest's CR3 with a reserved bit


def ept_on(r) -> bool:
    """Is "enable EPT" set (the secondary controls active)?"""
    return bool(r(CPU_CONTROLS) & CPU_SECONDARY and r(CPU_CONTROLS2) & CPU2_EPT)


def guest_pdptes(vmx) -> list[int] | None:
    """The PDPTEs VM entry gives a guest with PAE paging (§26.3.2.4): under EPT the VMCS
    fields (§26.3.1.6 checks them), else a load from the guest's CR3 (physical); None if
    a present one sets a reserved bit; [] without PAE paging."""
    r = vmx.vmcs.fields.__getitem__
    if not (r(GUEST_CR0) & CR0_PG and r(GUEST_CR4) & CR4_PAE):
        return []
    if ept_on(r):
        out = [r(GUEST_PDPTE + 2 * i) for i in range(4)]
        return None if any(e & 1 and e & PDPTE_RESERVED for e in out) else out
    return read_pdptes(lambda a: vmx.cpu.mem.read32(a) | vmx.cpu.mem.read32(a + 4) << 32,
                       r(GUEST_CR3))
ES, CS, SS, DS, FS, GS, LDTR, TR = range(8)


def _allowed(value: int, msr: int) -> bool:
    cap = CAPABILITY_MSRS[msr]
    return (value & cap) == (cap & 0xFFFFFFFF) and not value & ~(cap >> 32)


# -- §26.2.1: the VM-execution, VM-exit and VM-entry control fields -------------------------
def check_controls(vmx) -> int:
    r = vmx.vmcs.fields.__getitem__      # (whole fields: a 64-bit one with both halves)
    proc = r(CPU_CONTROLS)
    if not (_allowed(r(PIN_CONTROLS), MSR_VMX_TRUE_PINBASED) and
            _allowed(proc, MSR_VMX_TRUE_PROCBASED) and
            (not proc & CPU_SECONDARY or _allowed(r(CPU_CONTROLS2), MSR_VMX_PROCBASED_CTLS2)) and
            _allowed(r(EXIT_CONTROLS), MSR_VMX_TRUE_EXIT) and
            _allowed(r(ENTRY_CONTROLS), MSR_VMX_TRUE_ENTRY)):
        return ERR_BAD_CONTROLS
    if r(CR3_TARGET_COUNT) > 4:
        return ERR_BAD_CONTROLS
    # virtual NMIs need NMI exiting, and NMI-window exiting needs virtual NMIs (§26.2.1.1)
    pin = r(PIN_CONTROLS)
    if pin & PIN_VIRTUAL_NMI and not pin & PIN_NMI or \
            proc & CPU_NMI_WINDOW and not pin & PIN_VIRTUAL_NMI:
        return ERR_BAD_CONTROLS
    if proc & CPU_SECONDARY and r(CPU_CONTROLS2) & CPU2_EPT and not eptp_valid(r(EPTP)):
        return ERR_BAD_CONTROLS
    # "unrestricted guest" needs "enable EPT" (§26.2.1.1)
    if proc & CPU_SECONDARY and r(CPU_CONTROLS2) & CPU2_UNRESTRICTED and \
            not r(CPU_CONTROLS2) & CPU2_EPT:
        return ERR_BAD_CONTROLS
    if proc & CPU_IO_BITMAPS and (vmx._bad_address(r(IO_BITMAP_A)) or vmx._bad_address(r(IO_BITMAP_B))):
        return ERR_BAD_CONTROLS
    if proc & CPU_MSR_BITMAPS and vmx._bad_address(r(MSR_BITMAP)):
        return ERR_BAD_CONTROLS
    for count, addr in ((EXIT_MSR_STORE_COUNT, EXIT_MSR_STORE_ADDR), (EXIT_MSR_LOAD_COUNT, EXIT_MSR_LOAD_ADDR),
                        (ENTRY_MSR_LOAD_COUNT, ENTRY_MSR_LOAD_ADDR)):
        n = r(count)
        if n and (r(addr) & 0xF or r(addr) + 16 * n - 1 >> 32):
            return ERR_BAD_CONTROLS
    info = r(ENTRY_INTR_INFO)
    if info & INTR_VALID:
        vector, typ = info & 0xFF, (info >> 8) & 7
        if typ in (1, 7) or info & 0x7FFFF000:
            return ERR_BAD_CONTROLS
        if typ == INTR_NMI and vector != 2 or typ == INTR_HW_EXCEPTION and vector > 31:
            return ERR_BAD_CONTROLS
        # an error code with exactly the hardware exceptions that push one, and only in
        # protected mode: with "unrestricted guest" CR0.PE may be clear (§26.2.1.3)
        if bool(info & INTR_ERROR_VALID) != (typ == INTR_HW_EXCEPTION and vector in HAS_ERROR
                                             and bool(r(GUEST_CR0) & CR0_PE)):
            return ERR_BAD_CONTROLS
        if info & INTR_ERROR_VALID and r(ENTRY_EXCEPTION_ERROR) >> 16:
            return ERR_BAD_CONTROLS
        if typ in (INTR_SOFT_INT, INTR_PRIV_SOFT_EXC, INTR_SOFT_EXC) and \
                not 1 <= r(ENTRY_INSTRUCTION_LEN) <= 15:
            return ERR_BAD_CONTROLS
    return 0


# -- §26.2.2-26.2.4: the host-state area --------------------------------------------------------
def check_host(vmx) -> int:
    from .vmx import cr4_fixed1
    r = vmx.vmcs.fields.__getitem__      # (whole fields: a 64-bit one with both halves)
    cr0, cr4 = r(HOST_CR0), r(HOST_CR4)
    if (cr0 & CR0_FIXED0) != CR0_FIXED0 or cr0 & ~CR0_FIXED1 or \
            (cr4 & CR4_FIXED0) != CR4_FIXED0 or cr4 & ~cr4_fixed1():
        return ERR_BAD_HOST
    sels = [r(HOST_SEL + 2 * i) for i in range(7)]
    if any(s & 7 for s in sels):                 # RPL and TI of every host selector are 0
        return ERR_BAD_HOST
    es, cs, ss, ds, fs, gs, tr = sels
    if not cs or not tr or not ss:               # (a 32-bit host: SS cannot be null)
        return ERR_BAD_HOST
    return 0


# -- §26.3.1: the guest-state area ----------------------------------------------------------------
def _segment(r, i: int) -> Segment:
    return Segment(r(GUEST_SEL + 2 * i), r(GUEST_BASE + 2 * i), r(GUEST_LIMIT + 2 * i), r(GUEST_AR + 2 * i))


def _limit_ok(s: Segment) -> bool:
    """G must be 1 if any of limit bits 31:20 is 1, and 0 if any of bits 11:0 is 0."""
    g = bool(s.attr & ATTR_G)
    if s.limit & 0xFFF != 0xFFF and g:
        return False
    return not (s.limit >> 20 and not g)


def _usable_ok(s: Segment) -> bool:
    return s.attr & ATTR_P and not s.attr & AR_RESERVED and _limit_ok(s)


def check_guest(vmx) -> int | None:
    """None if the guest state may be loaded, else the exit qualification of the failure."""
    from .vmx import cr4_fixed1
    r = vmx.vmcs.fields.__getitem__      # (whole fields: a 64-bit one with both halves)
    cr0, cr4 = r(GUEST_CR0), r(GUEST_CR4)
    # §26.3.1.1: under "unrestricted guest" PE and PG are not checked against
    # IA32_VMX_CR0_FIXED0; PG set needs PE set whatever the controls
    unrestricted = vmx.unrestricted()
    fixed0 = CR0_FIXED0 & ~(CR0_PE | CR0_PG) if unrestricted else CR0_FIXED0
    if (cr0 & fixed0) != fixed0 or cr0 & ~CR0_FIXED1 or \
            (cr4 & CR4_FIXED0) != CR4_FIXED0 or cr4 & ~cr4_fixed1() or \
            cr0 & CR0_PG and not cr0 & CR0_PE:
        return 0
    fl = r(GUEST_RFLAGS)
    if fl & RFLAGS_RESERVED or not fl & 2:
        return 0
    info = r(ENTRY_INTR_INFO)
    injecting = bool(info & INTR_VALID)
    ext = injecting and (info >> 8) & 7 == INTR_EXTERNAL
    if ext and not fl & IF:
        return 0
    segs = [_segment(r, i) for i in range(8)]
    cs, tr, ldtr = segs[CS], segs[TR], segs[LDTR]
    if tr.selector & 4 or tr.attr & ATTR_UNUSABLE or tr.attr & ATTR_S or \
            tr.type not in (3, 11) or not _usable_ok(tr):
        return 0
    if not ldtr.attr & ATTR_UNUSABLE and (ldtr.selector & 4 or ldtr.attr & ATTR_S or
                                          ldtr.type != 2 or not _usable_ok(ldtr)):
        return 0
    if fl & VM:
        # a virtual-8086 guest: each of the six segment registers as IRET to VM86 loads
        # it -- base selector * 16, limit FFFFH, access rights F3H (SDM Vol. 3C §26.3.1.2)
        if any(s.base != s.selector << 4 or s.limit != 0xFFFF or s.attr != VM86_ATTR
               for s in segs[:6]):
            return 0
    elif segments_bad(segs, unrestricted, bool(cr0 & CR0_PE)):
        return 0
    if r(GUEST_GDTR_LIMIT) >> 16 or r(GUEST_IDTR_LIMIT) >> 16:
        return 0
    return _check_activity(vmx, r, fl, segs[SS], info, injecting, ext)


def segments_bad(segs, unrestricted: bool, pe: bool) -> bool:
    """The checks on CS, SS, DS, ES, FS and GS of a guest that will not be virtual-8086
    (§26.3.1.2).  "Unrestricted guest" relaxes four of them, for the segment caches real
    mode leaves (its segment loads change only selector and base): CS may be read/write
    accessed data (type 3, then DPL 0), SS.RPL need not equal CS.RPL nor SS.DPL its RPL,
    and DS-GS DPL may be below their RPL.  SS.DPL (the CPL) is 0 with CR0.PE clear."""
    cs, ss = segs[CS], segs[SS]
    if cs.attr & ATTR_UNUSABLE or not cs.attr & ATTR_S or not _usable_ok(cs) or \
            cs.type not in ((3, 9, 11, 13, 15) if unrestricted else (9, 11, 13, 15)):
        return True
    if cs.type == 3 and cs.dpl != 0 or cs.type in (9, 11) and cs.dpl != ss.dpl or \
            cs.type in (13, 15) and cs.dpl > ss.dpl:
        return True
    if not unrestricted and (ss.selector & 3 != cs.selector & 3 or ss.dpl != ss.selector & 3):
        return True
    if ss.dpl != 0 and (cs.type == 3 or not pe):
        return True
    if not ss.attr & ATTR_UNUSABLE and (ss.type not in (3, 7) or not ss.attr & ATTR_S or
                                        not _usable_ok(ss)):
        return True
    for i in (ES, DS, FS, GS):
        s = segs[i]
        if s.attr & ATTR_UNUSABLE:
            continue
        if not s.type & 1 or (s.type & 8 and not s.type & 2) or not s.attr & ATTR_S or \
                not _usable_ok(s) or (not unrestricted and s.type < 12 and s.dpl < s.selector & 3):
            return True
    return False


def _check_activity(vmx, r, fl, ss, info, injecting, ext) -> int | None:
    """The activity and interruptibility state and the VMCS link pointer (§26.3.1.5)."""
    act, intr = r(GUEST_ACTIVITY), r(GUEST_INTERRUPTIBILITY)
    if act > 1 or act == 1 and ss.dpl != 0:
        return 0
    if act == 1 and injecting and not ((info >> 8) & 7 in (INTR_EXTERNAL, INTR_NMI) or
                                       (info >> 8) & 7 == INTR_HW_EXCEPTION and info & 0xFF in (1, 18)):
        return 0
    if intr >> 5 or intr & 3 == 3 or (intr & 1 and not fl & IF) or (ext and intr & 3):
        return 0
    # an NMI is injected only without MOV-SS blocking, and with virtual NMIs only without
    # (virtual-)NMI blocking (§26.3.1.5)
    if injecting and (info >> 8) & 7 == INTR_NMI and (
            intr & BLOCK_MOV_SS or r(PIN_CONTROLS) & PIN_VIRTUAL_NMI and intr & BLOCK_NMI):
        return 0
    link = r(VMCS_LINK)
    if link != 0xFFFFFFFFFFFFFFFF and (vmx._bad_address(link) or
                                       vmx.cpu.mem.read32(link) != VMCS_REVISION):
        return QUAL_LINK
    if guest_pdptes(vmx) is None:
        return 0 if ept_on(r) else QUAL_PDPTE
    return None


# -- loading the guest, injecting, saving it, loading the host -------------------------------
def _msr_list(vmx, addr: int, count: int):
    mem = vmx.cpu.mem
    for i in range(count):
        index, _, value = struct.unpack("<IIQ", mem.read(addr + 16 * i, 16))
        yield i, index, value


def _wrmsr(cpu, index: int, value: int) -> bool:
    if index == MSR_TSC:
        cpu.state.tsc_offset = value - cpu.tsc_base()
        return True
    if msr_write_ok(index, value):
        cpu.state.msrs[index] = value
        return True
    return False


def enter(vmx, resume: bool) -> None:
    cpu, st, r = vmx.cpu, vmx.cpu.state, vmx.vmcs.fields.__getitem__
    st.cr0, st.cr3, st.cr4 = r(GUEST_CR0), r(GUEST_CR3), r(GUEST_CR4)
    pdptes = guest_pdptes(vmx)           # (checked by check_guest)
    if pdptes:
        st.pdpte[:] = pdptes
    if r(ENTRY_CONTROLS) & ENTRY_LOAD_DEBUG:
        st.dr[7] = (r(GUEST_DR7) & 0xFFFF2BFF) | 0x400
    st.msrs[MSR_SYSENTER_CS] = r(GUEST_SYSENTER_CS)
    st.msrs[MSR_SYSENTER_ESP] = r(GUEST_SYSENTER_ESP)
    st.msrs[MSR_SYSENTER_EIP] = r(GUEST_SYSENTER_EIP)
    for i in range(6):
        st.segs[i] = _segment(r, i)
    st.ldtr, st.tr = _segment(r, LDTR), _segment(r, TR)
    st.gdtr = type(st.gdtr)(r(GUEST_GDTR_BASE), r(GUEST_GDTR_LIMIT))
    st.idtr = type(st.idtr)(r(GUEST_IDTR_BASE), r(GUEST_IDTR_LIMIT))
    st.regs[4] = r(GUEST_RSP)
    st.eip = r(GUEST_RIP)
    cpu.set_eflags(r(GUEST_RFLAGS))
    st.interrupt_shadow = bool(r(GUEST_INTERRUPTIBILITY) & 3)
    # blocking by MOV SS holds the pending debug exceptions' B0-B3 until after the next
    # instruction (§26.6.3, as MOV SS does); without it they are delivered after the entry
    # (below), unless an event is injected (which loses them, as a fault does natively)
    st.stack_shadow = bool(r(GUEST_INTERRUPTIBILITY) & 2)
    pending = r(GUEST_PENDING_DBG) & 0x400F      # B0-B3, BS
    st.pending_db = pending & 0xF if st.stack_shadow else 0
    # NMIs (§24.6.1, §26.6.1): with "virtual NMIs" the interruptibility state's blocking
    # by NMI is virtual-NMI blocking, and physical NMIs keep their own; otherwise it is
    # the processor's blocking of NMIs
    pin = r(PIN_CONTROLS)
    vmx.nmi_exits, vmx.vnmi = bool(pin & PIN_NMI), bool(pin & PIN_VIRTUAL_NMI)
    blocked = bool(r(GUEST_INTERRUPTIBILITY) & BLOCK_NMI)
    if vmx.vnmi:
        vmx.vnmi_blocked = blocked
    else:
        st.nmi_blocked = blocked
    st.halted = r(GUEST_ACTIVITY) == 1
    # §26.4: the VM-entry MSR-load area, after the guest state; a failure is a VM exit
    # with reason 34 and the (1-based) entry number as its qualification
    for i, index, value in _msr_list(vmx, r(ENTRY_MSR_LOAD_ADDR), r(ENTRY_MSR_LOAD_COUNT)):
        if not _wrmsr(cpu, index, value):
            vmx.entry_failure(EXIT_BAD_MSR_LOAD, i + 1)
            return
    vmx.vmcs.launched = True
    proc = r(CPU_CONTROLS)
    cpu.vmx_tsc = r(TSC_OFFSET) if proc & CPU_TSC_OFFSET else 0
    if cpu.vmx_tsc >> 63:
        cpu.vmx_tsc -= 1 << 64
    cpu.nonroot = True
    cpu.intr_exits = bool(r(PIN_CONTROLS) & 1)
    vmx.mtf = bool(proc & CPU_MTF)
    vmx.window = bool(proc & CPU_INTR_WINDOW)
    vmx.nmi_window = bool(proc & CPU_NMI_WINDOW)
    vmx.ack = bool(r(EXIT_CONTROLS) & EXIT_ACK_INT)
    vmx.load_ept()
    cpu.update_debug()                   # DR7 and the TLB (no VPID: §28.4.3.3); ends the dispatch loop
    info = r(ENTRY_INTR_INFO)
    if info & INTR_VALID:
        inject(vmx, info)
    elif pending and not st.stack_shadow:
        # the trap of the instruction before the exit, owed to the guest: a #DB with DR6's
        # B0-B3 (and BS) as the field says (§26.6.3)
        st.dr[6] = (st.dr[6] & ~0xF) | pending
        cpu.deliver_exception(CpuFault(DB, None, trap=True))


def inject(vmx, info: int) -> None:
    """Deliver the event of the VM-entry interruption-information field through the
    guest's IDT, as if it had occurred right after the entry (SDM §26.6.1)."""
    cpu, st, r = vmx.cpu, vmx.cpu.state, vmx.vmcs.fields.__getitem__
    vector, typ = info & 0xFF, (info >> 8) & 7
    err = r(ENTRY_EXCEPTION_ERROR) if info & INTR_ERROR_VALID else None
    ilen = r(ENTRY_INSTRUCTION_LEN)
    soft = typ in (INTR_SOFT_INT, INTR_SOFT_EXC)    # the gate's DPL is checked against CPL
    ret = (st.eip + ilen) & 0xFFFFFFFF if typ in (INTR_SOFT_INT, INTR_PRIV_SOFT_EXC, INTR_SOFT_EXC) else st.eip
    st.halted = False
    if typ == INTR_NMI:                  # an injected NMI blocks NMIs until the guest's IRET
        vmx.block_nmi()
    vmx.event = (vector, typ, err, ilen)
    try:
        transfers.deliver(cpu, vector, err, soft, ret)
        vmx.event = None
    except CpuFault as f:
        cpu.deliver_exception(f)


def save_guest(vmx, rip: int) -> None:
    cpu, st, w = vmx.cpu, vmx.cpu.state, vmx.vmcs.fields.__setitem__   # (values within the fields' widths)
    w(GUEST_CR0, st.cr0)
    w(GUEST_CR3, st.cr3)
    w(GUEST_CR4, st.cr4)
    w(GUEST_DR7, st.dr[7])
    if cpu.mmu.ept is not None and st.cr0 & CR0_PG and st.cr4 & CR4_PAE:
        for i in range(4):               # §27.3.4: under EPT the PDPTEs are saved
            w(GUEST_PDPTE + 2 * i, st.pdpte[i])
    for i, s in enumerate(list(st.segs) + [st.ldtr, st.tr]):
        w(GUEST_SEL + 2 * i, s.selector)
        w(GUEST_BASE + 2 * i, s.base)
        w(GUEST_LIMIT + 2 * i, s.limit)
        w(GUEST_AR + 2 * i, s.attr)
    w(GUEST_GDTR_BASE, st.gdtr.base)
    w(GUEST_GDTR_LIMIT, st.gdtr.limit)
    w(GUEST_IDTR_BASE, st.idtr.base)
    w(GUEST_IDTR_LIMIT, st.idtr.limit)
    w(GUEST_RSP, st.regs[4])
    w(GUEST_RIP, rip)
    w(GUEST_RFLAGS, cpu.get_eflags())
    w(GUEST_SYSENTER_CS, st.msrs.get(MSR_SYSENTER_CS, 0))
    w(GUEST_SYSENTER_ESP, st.msrs.get(MSR_SYSENTER_ESP, 0))
    w(GUEST_SYSENTER_EIP, st.msrs.get(MSR_SYSENTER_EIP, 0))
    # blocking by STI (IF was set by it) or by MOV SS (SDM Table 24-3)
    w(GUEST_INTERRUPTIBILITY, ((2 if st.stack_shadow or not st.eflags & IF else 1)
                               if st.interrupt_shadow else 0) |
      (BLOCK_NMI if (vmx.vnmi_blocked if vmx.vnmi else st.nmi_blocked) else 0))
    w(GUEST_ACTIVITY, 1 if st.halted else 0)
    # the data breakpoints a MOV SS or POP SS matched, held (B0-B3, and bit 12: an enabled
    # breakpoint among them, §24.4.2 Table 24-4)
    w(GUEST_PENDING_DBG, st.pending_db | 0x1000 if st.pending_db else 0)
    for i, index, _ in _msr_list(vmx, vmx.read(EXIT_MSR_STORE_ADDR), vmx.read(EXIT_MSR_STORE_COUNT)):
        value = cpu.tsc() if index == MSR_TSC else st.msrs.get(index, 0)
        cpu.mem.write(vmx.read(EXIT_MSR_STORE_ADDR) + 16 * i + 8, struct.pack("<Q", value))


def _host_segment(sel: int, base: int, code: bool) -> Segment:
    if not sel:
        return Segment(0, 0, 0, ATTR_UNUSABLE)
    return Segment(sel, base, 0xFFFFFFFF, ATTR_P | ATTR_S | ATTR_DB | ATTR_G | (0xB if code else 0x3))


def load_host(vmx) -> None:
    """The host-state area becomes the processor state (SDM §27.5): flat segments, RFLAGS
    2, DR7 400H, LDTR unusable, GDTR/IDTR limits FFFFH."""
    cpu, st, r = vmx.cpu, vmx.cpu.state, vmx.vmcs.fields.__getitem__
    st.cr0, st.cr3, st.cr4 = r(HOST_CR0), r(HOST_CR3), r(HOST_CR4)
    st.dr[7] = 0x400
    st.msrs[MSR_SYSENTER_CS] = r(HOST_SYSENTER_CS)
    st.msrs[MSR_SYSENTER_ESP] = r(HOST_SYSENTER_ESP)
    st.msrs[MSR_SYSENTER_EIP] = r(HOST_SYSENTER_EIP)
    bases = (0, 0, 0, 0, r(HOST_FS_BASE), r(HOST_GS_BASE))
    for i in range(6):
        st.segs[i] = _host_segment(r(HOST_SEL + 2 * i), bases[i], i == 1)
    st.tr = Segment(r(HOST_SEL + 12), r(HOST_TR_BASE), 0x67, ATTR_P | 0xB)
    st.ldtr = Segment(0, 0, 0, ATTR_UNUSABLE)
    st.gdtr = type(st.gdtr)(r(HOST_GDTR_BASE), 0xFFFF)
    st.idtr = type(st.idtr)(r(HOST_IDTR_BASE), 0xFFFF)
    st.regs[4] = r(HOST_RSP)
    st.eip = r(HOST_RIP)
    cpu.set_eflags(2)
    st.interrupt_shadow = st.stack_shadow = False
    st.pending_db = 0                    # (the guest's are in the VMCS: ``save_guest``)
    st.halted = False
    cpu.nonroot = False
    cpu.intr_exits = False
    cpu.vmx_tsc = 0
    cpu.mmu.ept = None
    if st.cr0 & CR0_PG and st.cr4 & CR4_PAE:
        pdptes = cpu.mmu.pdptes(st.cr3)  # §27.5.4: the host's, from its CR3
        if pdptes is None:
            raise UnsupportedFeature("a VMX abort (the host's PDPTEs set reserved bits) is not modelled")
        st.pdpte[:] = pdptes
    vmx.mtf = False
    vmx.event = None
    for _, index, value in _msr_list(vmx, r(EXIT_MSR_LOAD_ADDR), r(EXIT_MSR_LOAD_COUNT)):
        _wrmsr(cpu, index, value)        # (a failure would be a VMX abort: not modelled)
    cpu.update_debug()

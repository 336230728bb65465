"""VMX: the processor's virtual-machine extensions (Intel SDM Vol. 3C, chapters 23-31).

VMXON puts the processor in VMX root operation; VMLAUNCH/VMRESUME enter a guest
(VMX non-root operation) after the checks of SDM §26.1-26.3; a VM exit (§27)
saves the guest's state in the current VMCS, records why, and loads the host's.
Field encodings, capability MSRs and numbers are in ``vmcs.py``.

Non-root operation costs integer code nothing: nothing in translated code asks
which mode it runs in.  Exits come only from the places the processor already
leaves translated code for — helpers (``intercept``, called by ``run_helper``
before a helper runs in non-root operation), exception and interrupt delivery
(``Cpu.deliver_exception``, ``Cpu.deliver_interrupt``) and the run loop's
instruction boundary (``at_boundary``: external-interrupt, interrupt-window and
monitor-trap-flag exits).

The general registers are not part of the VMCS (SDM §27.3, §27.5): at a VM exit
they still hold the guest's values, and the host's software saves them itself.
A host written in Python runs at HOST_RIP as ring-0 code (``hw/native.py``) and
calls the same operations the instructions perform (``vmwrite``, ``vmresume``...),
with the same checks and the same status (0 VMsucceed, -1 VMfailInvalid, n > 0
VMfailValid(n)).

EPT (the "enable EPT" secondary control, INVEPT) is in ``ept.py``: VM entry gives the
MMU the EPT of the EPTP (``load_ept``), and a violation or misconfiguration the walk
raises becomes a VM exit here (``ept_exit``).

Not modelled: the VMX-preemption timer, VPID,
SMM and the dual-monitor treatment, and 64-bit hosts and guests (this is an IA-32
processor).  A guest with RFLAGS.VM set enters virtual-8086 mode (``vmentry``).
"""

from __future__ import annotations

from collections import Counter

import iced_x86 as ix

from .ept import INVEPT_ALL, INVEPT_SINGLE, Ept, EptExit, eptp_valid
from .pae import ADDR
from .faults import GP, NMI, PF, DB, UD, CpuFault
from .state import ARITH_FLAGS, CF, CR0_PE, CR0_PG, IF, VM, ZF
from .system import get_reg, helper, read_mem, read_op, require_cpl0, write_mem, write_op
from .vmcs import (CAPABILITY_MSRS, CR0_FIXED0, CR0_FIXED1,
                   CR0_MASK, CR0_SHADOW, CR4_FIXED0, CR4_MASK, CR4_SHADOW, ENTRY_INTR_INFO,
                   ERR_READ_ONLY_FIELD, ERR_UNSUPPORTED_FIELD,
                   ERR_VMCALL_ROOT, ERR_VMCLEAR_ADDR, ERR_VMCLEAR_VMXON, ERR_VMLAUNCH_NOT_CLEAR,
                   ERR_VMPTRLD_ADDR, ERR_VMPTRLD_REVISION, ERR_VMPTRLD_VMXON,
                   ERR_VMRESUME_NOT_LAUNCHED, ERR_VMXON_IN_ROOT, EXCEPTION_BITMAP,
                   EXIT_BAD_GUEST, EXIT_ENTRY_FAILURE, EXIT_EXCEPTION, EXIT_EXT_INT,
                   EXIT_INSTRUCTION_LEN, EXIT_INTR_ERROR, EXIT_INTR_INFO, EXIT_INTR_WINDOW,
                   EXIT_MTF, EXIT_NMI_WINDOW, EXIT_QUALIFICATION, EXIT_REASON, EXIT_REASONS,
                   EXIT_VMCALL, INTR_NMI,
                   FC_LOCK, FC_VMX_OUTSIDE_SMX, GUEST_LINEAR_ADDR, IDT_VECTORING_ERROR,
                   IDT_VECTORING_INFO, INTR_ERROR_VALID, INTR_EXTERNAL, INTR_HW_EXCEPTION,
                   INTR_PRIV_SOFT_EXC, INTR_SOFT_EXC, INTR_SOFT_INT, INTR_VALID,
                   MSR_FEATURE_CONTROL, MSR_VMX_CR4_FIXED1, PF_ERROR_MASK, PF_ERROR_MATCH,
                   VM_INSTRUCTION_ERROR, VMCS_REVISION, VMCS_SIZE,
                   Vmcs, is_read_only, supported)
from . import vmcs as V

M = ix.Mnemonic
OK = ix.OpKind
ALL_ONES = 0xFFFFFFFFFFFFFFFF
NO_VMCS = None


def cr4_fixed1() -> int:
    from .controlregs import CR4_SUPPORTED
    return CR4_SUPPORTED | V.CR4_VMXE


class Vmx:
    """The VMX state of one logical processor (SDM §23-24)."""

    def __init__(self, cpu) -> None:
        self.cpu = cpu
        self.on = False                 # in VMX operation
        self.vmxon_ptr = 0
        self.current: int | None = NO_VMCS
        self.cache: dict[int, Vmcs] = {}          # active VMCSs, by physical address
        self.event = None               # (vector, type, error, length) being delivered in non-root
        self.mtf = False
        # controls the run loop tests at each block boundary, read at VM entry
        self.window = self.ack = False
        # NMIs (SDM Vol. 3C §24.6.1, §25.3): NMI exiting, virtual NMIs and the guest's
        # virtual-NMI blocking, NMI-window exiting (read at VM entry)
        self.nmi_exits = self.vnmi = self.vnmi_blocked = self.nmi_window = False
        self.exits: Counter[str] = Counter()     # VM exits by basic reason
        # the EPT hierarchies in use, by PML4 address, with their cached guest-physical
        # mappings (kept across VM entries and exits until INVEPT, SDM Vol. 3C §28.4)
        self.epts: dict[int, Ept] = {}

    @property
    def vmcs(self) -> Vmcs:
        return self.cache[self.current]

    def read(self, enc: int) -> int:
        return self.vmcs.read(enc)

    def _w(self, enc: int, value: int) -> None:
        self.vmcs.write(enc, value)

    # -- the capability MSRs (RDMSR/WRMSR in ``identify``) -------------------------------
    @staticmethod
    def capability(n: int) -> int | None:
        if n == MSR_VMX_CR4_FIXED1:
            return cr4_fixed1()
        return CAPABILITY_MSRS.get(n)

    # -- status (SDM §30.2: VMsucceed, VMfailInvalid, VMfailValid) -------------------------
    def _fail(self, err: int) -> int:
        """VMfail(err): VMfailValid with the error recorded if there is a current VMCS."""
        if self.current is NO_VMCS:
            return -1
        self._w(VM_INSTRUCTION_ERROR, err)
        return err

    def set_status(self, status: int) -> None:
        """The arithmetic flags an instruction's status leaves (CF for VMfailInvalid, ZF for
        VMfailValid, all clear for VMsucceed)."""
        self.cpu.set_eflags(CF if status < 0 else ZF if status > 0 else 0, ARITH_FLAGS)

    @staticmethod
    def _bad_address(addr: int) -> bool:
        return bool(addr & 0xFFF) or addr >> 32 != 0    # 4-KiB aligned, within 32 bits

    def _common(self) -> None:
        """The checks every VMX instruction but VMXON makes first (SDM Vol. 3C ch. 30)."""
        cpu = self.cpu
        if not self.on or not cpu.state.cr0 & CR0_PE or cpu.state.eflags & VM:
            raise CpuFault(UD)
        require_cpl0(cpu)

    # -- the instructions, as operations ------------------------------------------------
    def vmxon(self, addr: int) -> int:
        cpu, st = self.cpu, self.cpu.state
        if self.on:
            require_cpl0(cpu)
            return self._fail(ERR_VMXON_IN_ROOT)
        require_cpl0(cpu)
        fc = st.msrs.get(MSR_FEATURE_CONTROL, 0)
        if (st.cr0 & CR0_FIXED0) != CR0_FIXED0 or st.cr0 & ~CR0_FIXED1 or \
                (st.cr4 & CR4_FIXED0) != CR4_FIXED0 or st.cr4 & ~cr4_fixed1() or \
                not fc & FC_LOCK or not fc & FC_VMX_OUTSIDE_SMX:
            raise CpuFault(GP, 0)
        if self._bad_address(addr) or cpu.mem.read32(addr) != VMCS_REVISION:
            return -1
        self.on, self.vmxon_ptr, self.current = True, addr, NO_VMCS
        return 0

    def vmxoff(self) -> int:
        self._common()
        self.on = False
        return 0

    def vmclear(self, addr: int) -> int:
        self._common()
        if self._bad_address(addr):
            return self._fail(ERR_VMCLEAR_ADDR)
        if addr == self.vmxon_ptr:
            return self._fail(ERR_VMCLEAR_VMXON)
        mem = self.cpu.mem
        vmcs = self.cache.pop(addr, None) or Vmcs.unpack(mem.read(addr, VMCS_SIZE))
        vmcs.launched = False
        mem.write(addr, vmcs.pack(mem.read32(addr)))
        if addr == self.current:
            self.current = NO_VMCS
        return 0

    def vmptrld(self, addr: int) -> int:
        self._common()
        if self._bad_address(addr):
            return self._fail(ERR_VMPTRLD_ADDR)
        if addr == self.vmxon_ptr:
            return self._fail(ERR_VMPTRLD_VMXON)
        if self.cpu.mem.read32(addr) != VMCS_REVISION:     # (bit 31, a shadow VMCS: not supported)
            return self._fail(ERR_VMPTRLD_REVISION)
        if addr not in self.cache:
            self.cache[addr] = Vmcs.unpack(self.cpu.mem.read(addr, VMCS_SIZE))
        self.current = addr
        return 0

    def vmptrst(self) -> int:
        self._common()
        return ALL_ONES if self.current is NO_VMCS else self.current

    def vmread(self, enc: int) -> tuple[int, int]:
        """(status, value)."""
        self._common()
        if self.current is NO_VMCS:
            return -1, 0
        if not supported(enc):
            return self._fail(ERR_UNSUPPORTED_FIELD), 0
        return 0, self.read(enc)

    def vmwrite(self, enc: int, value: int) -> int:
        self._common()
        if self.current is NO_VMCS:
            return -1
        if not supported(enc):
            return self._fail(ERR_UNSUPPORTED_FIELD)
        if is_read_only(enc):
            return self._fail(ERR_READ_ONLY_FIELD)
        self._w(enc, value)
        return 0

    def vmcall(self) -> int:
        self._common()
        return self._fail(ERR_VMCALL_ROOT)      # (no dual-monitor treatment)

    def vmlaunch(self, resume: bool = False) -> int:
        """VM entry (SDM §26).  0: the guest runs (or a VM-entry failure exit happened)."""
        self._common()
        if self.current is NO_VMCS:
            return -1
        vmcs = self.vmcs
        if not resume and vmcs.launched:
            return self._fail(ERR_VMLAUNCH_NOT_CLEAR)
        if resume and not vmcs.launched:
            return self._fail(ERR_VMRESUME_NOT_LAUNCHED)
        from .vmentry import check_controls, check_guest, check_host, enter
        err = check_controls(self) or check_host(self)
        if err:
            return self._fail(err)
        qual = check_guest(self)
        if qual is not None:
            self.entry_failure(EXIT_BAD_GUEST, qual)
            return 0
        enter(self, resume)
        return 0

    def vmresume(self) -> int:
        return self.vmlaunch(resume=True)

    def invept(self, typ: int, eptp: int) -> int:
        """INVEPT (SDM Vol. 3C ch. 30): single-context (the mappings of one EPTP, which
        must pass VM entry's EPTP checks) or all-context; any other type is VMfail(28).
        Guest-physical and combined mappings both go."""
        self._common()
        if typ == INVEPT_SINGLE and eptp_valid(eptp):
            self.epts.pop(eptp & ADDR, None)
        elif typ == INVEPT_ALL:
            self.epts.clear()
        else:
            return self._fail(V.ERR_INVEPT_OPERAND)
        self.cpu.tlb_flush()
        return 0

    def load_ept(self) -> None:
        """VM entry: the MMU translates guest-physical addresses through the EPTP's
        hierarchy, if "enable EPT" is set (``ept.py``)."""
        r = self.vmcs.fields.__getitem__
        ept = None
        if r(V.CPU_CONTROLS) & V.CPU_SECONDARY and r(V.CPU_CONTROLS2) & V.CPU2_EPT:
            pml4 = r(V.EPTP) & ADDR
            ept = self.epts.get(pml4)
            if ept is None:
                ept = self.epts[pml4] = Ept(self.cpu.mem, pml4)
        self.cpu.mmu.ept = ept

    def entry_failure(self, reason: int, qual: int) -> None:
        """A VM entry that fails after the processor state was checked: a VM exit, the
        guest state not saved (SDM §26.8)."""
        self._w(EXIT_REASON, reason | EXIT_ENTRY_FAILURE)
        self._w(EXIT_QUALIFICATION, qual)
        self.exits[EXIT_REASONS[reason]] += 1
        from .vmentry import load_host
        load_host(self)

    # -- VM exits -----------------------------------------------------------------------
    def exit(self, reason: int, qual: int = 0, ilen: int = 0, intr_info: int = 0,
             intr_err: int | None = None, rip: int | None = None, linear: int | None = None) -> None:
        """A VM exit (SDM §27): record it, save the guest, load the host."""
        from .vmentry import load_host, save_guest
        w = self._w
        w(EXIT_REASON, reason)
        w(EXIT_QUALIFICATION, qual)
        w(EXIT_INSTRUCTION_LEN, ilen)
        w(EXIT_INTR_INFO, intr_info)
        if intr_err is not None:
            w(EXIT_INTR_ERROR, intr_err)
        ev, self.event = self.event, None
        if ev is not None:                  # the exit happened while delivering an event
            vector, typ, err, evlen = ev
            w(IDT_VECTORING_INFO, INTR_VALID | typ << 8 | vector | (INTR_ERROR_VALID if err is not None else 0))
            if err is not None:
                w(IDT_VECTORING_ERROR, err)
            if typ in (INTR_SOFT_INT, INTR_PRIV_SOFT_EXC, INTR_SOFT_EXC):
                w(EXIT_INSTRUCTION_LEN, evlen)
        else:
            w(IDT_VECTORING_INFO, 0)
        if linear is not None:
            w(GUEST_LINEAR_ADDR, linear)
        w(ENTRY_INTR_INFO, self.read(ENTRY_INTR_INFO) & ~INTR_VALID)   # SDM §27.2.4... cleared
        name = EXIT_REASONS.get(reason, str(reason))
        self.exits[name] += 1
        st = self.cpu.state
        rip = st.eip if rip is None else rip
        if self.cpu.trace:
            real = "" if st.cr0 & CR0_PE else " (real mode)"
            self.cpu.trace(f"[{st.icount}] VM exit: {name}, qualification {qual:#x}, "
                           f"at eip={rip:#010x}{real}\n")
        save_guest(self, rip)
        load_host(self)

    def ept_exit(self, fault: EptExit) -> None:
        """An EPT violation or misconfiguration (SDM Vol. 3C §28.3.3): the guest-physical
        address, and for a violation the qualification and the guest-linear address."""
        self._w(V.GUEST_PHYS_ADDR, fault.gpa)
        self.exit(fault.reason, fault.qualification, linear=fault.linear)

    # -- exits from the places the processor already leaves translated code -------------------
    def at_boundary(self) -> bool:
        """Between instructions in non-root operation: MTF, interrupt-window and
        external-interrupt exits.  True if the guest left.  (The controls it needs were
        read at VM entry: the guest cannot change the VMCS.)"""
        cpu, st = self.cpu, self.cpu.state
        if self.mtf:
            self.mtf = False
            cpu.step()
            if cpu.nonroot:
                self.exit(EXIT_MTF)
            return True
        if st.nmi_pending and not st.nmi_blocked and self.nmi_exits:
            # an NMI exits ("exception or NMI", type 2, vector 2) instead of reaching the
            # guest's IDT; NMIs stay blocked after it, until the host's IRET (§27.2.2)
            st.nmi_pending = st.halted = False
            self.exit(EXIT_EXCEPTION, intr_info=INTR_VALID | INTR_NMI << 8 | NMI)
            st.nmi_blocked = True
            return True
        if self.nmi_window and not self.vnmi_blocked:
            self.exit(EXIT_NMI_WINDOW)         # (§25.2: no virtual-NMI blocking, no MOV SS)
            return True
        if self.window and st.eflags & IF:
            self.exit(EXIT_INTR_WINDOW)
            return True
        if st.intr and cpu.intr_exits:
            info = 0
            if self.ack:
                info = INTR_VALID | INTR_EXTERNAL << 8 | (cpu.acknowledge() & 0xFF)
            self.exit(EXIT_EXT_INT, intr_info=info)
            return True
        return False

    def exception_exits(self, fault: CpuFault, during) -> bool:
        """Does ``fault`` cause a VM exit (exception bitmap; #PF error-code mask/match,
        SDM §25.2)?  If so, exit, with ``during`` as the IDT-vectoring information."""
        vector = fault.vector
        hit = bool(self.read(EXCEPTION_BITMAP) >> vector & 1) if vector < 32 else False
        err = fault.error_code
        if vector == PF:
            hit = hit == ((err & self.read(PF_ERROR_MASK)) == self.read(PF_ERROR_MATCH))
        if not hit:
            return False
        typ = INTR_HW_EXCEPTION
        qual = 0
        if vector == PF:
            qual = fault.address              # CR2 is not loaded (SDM §27.1)
        elif vector == DB:
            qual = self.cpu.state.dr[6] & 0x600F
        info = INTR_VALID | typ << 8 | vector | (INTR_ERROR_VALID if err is not None else 0)
        self.event = during
        self.exit(EXIT_EXCEPTION, qual, intr_info=info, intr_err=err)
        return True

    def block_nmi(self) -> None:
        """An NMI delivered in non-root operation blocks NMIs: the virtual ones with
        "virtual NMIs", else the processor's (SDM Vol. 3C §26.6.1.2, Vol. 3 §6.7.1)."""
        if self.vnmi:
            self.vnmi_blocked = True
        else:
            self.cpu.state.nmi_blocked = True

    def iret_unblocks(self) -> bool:
        """IRET in non-root operation: with NMI exiting it leaves the processor's NMI
        blocking alone, and with virtual NMIs it ends virtual-NMI blocking (§25.3).  Whether
        the VMX rules decided (else IRET ends NMI blocking as usual)."""
        if not self.nmi_exits:
            return False
        if self.vnmi:
            self.vnmi_blocked = False
            if self.nmi_window:
                self.cpu.limit = 0             # (an NMI-window exit is due at the boundary)
        return True

    def intercept(self, ins: ix.Instruction) -> int | None:
        """A helper instruction in non-root operation: its VM exit, or its shadowed
        result, or None to execute it as usual.  Faults the SDM gives priority over the
        exit (privilege, #UD; §25.1.1) are raised first."""
        fn = INTERCEPTS.get(ins.mnemonic)
        return None if fn is None else fn(self, ins)

    def instruction_exit(self, ins, reason: int, qual: int = 0, linear: int | None = None) -> int:
        self.exit(reason, qual, ins.len, rip=ins.ip32, linear=linear)
        return self.cpu.state.eip

    def unrestricted(self) -> bool:
        """The current VMCS has "unrestricted guest" (secondary control bit 7, SDM Vol. 3C
        §26.8) in force: its guest may run with CR0.PE and CR0.PG clear."""
        if self.current is NO_VMCS:
            return False
        r = self.vmcs.fields.get
        return bool(r(V.CPU_CONTROLS, 0) & V.CPU_SECONDARY and
                    r(V.CPU_CONTROLS2, 0) & V.CPU2_UNRESTRICTED)

    def cr0_fixed(self) -> int:
        """The CR0 bits MOV to CR0 must leave set in VMX operation (§23.8): PE, NE and PG;
        in non-root operation under unrestricted guest PE and PG may be cleared (§26.8,
        the footnote to §23.8) -- NE stays fixed."""
        from .controlregs import VMX_CR0_FIXED
        if self.cpu.nonroot and self.unrestricted():
            return VMX_CR0_FIXED & ~(CR0_PE | CR0_PG)
        return VMX_CR0_FIXED

    def guest_cr(self, n: int) -> int:
        """What MOV from CR0/CR4 and SMSW read in non-root operation: the read shadow for
        the bits the host owns (SDM §25.3)."""
        real = self.cpu.state.cr0 if n == 0 else self.cpu.state.cr4
        mask = self.read(CR0_MASK if n == 0 else CR4_MASK)
        return (real & ~mask | self.read(CR0_SHADOW if n == 0 else CR4_SHADOW) & mask) & 0xFFFFFFFF

    # -- state (the lifecycle protocol: part of the CPU's section, ``Cpu.get_state``) -----------
    def report(self) -> dict:
        return {"vmx_on": self.on, "vmx_exits": dict(self.exits)}

    def get_state(self) -> dict:
        """VMX operation as data: VMXON and its region, the current-VMCS pointer, every
        active VMCS (its fields and launch state: the processor's copy, which VMCLEAR
        alone writes back to memory, SDM Vol. 3C §24.11.1), root or non-root operation,
        and what VM entry read from the controls for the run loop (MTF, interrupt window,
        acknowledge on exit, external-interrupt exiting, the TSC offset in force)."""
        cpu = self.cpu
        return {
            "on": self.on, "vmxon_ptr": self.vmxon_ptr, "current": self.current,
            "vmcs": {addr: {"fields": dict(v.fields), "launched": v.launched}
                     for addr, v in self.cache.items()},
            "event": None if self.event is None else list(self.event),
            "nonroot": cpu.nonroot, "mtf": self.mtf, "window": self.window, "ack": self.ack,
            "nmi": [self.nmi_exits, self.vnmi, self.vnmi_blocked, self.nmi_window],
            "intr_exits": cpu.intr_exits, "tsc_offset": cpu.vmx_tsc,
            "exits": dict(self.exits),
        }

    def set_state(self, state: dict | None) -> None:
        """Load :meth:`get_state`'s data (``None``: an image from before VMX was saved,
        whose processor was never in VMX operation)."""
        state = state or {"on": False, "vmxon_ptr": 0, "current": None, "vmcs": {},
                          "event": None, "nonroot": False, "mtf": False, "window": False,
                          "ack": False, "intr_exits": False, "tsc_offset": 0, "exits": {}}
        cache = {}
        for addr, v in state["vmcs"].items():
            fields = {int(enc): int(val) for enc, val in v["fields"].items()}
            if int(addr) & 0xFFF or any(enc not in V.FIELDS for enc in fields):
                raise ValueError(f"a VMCS at {addr!r} with fields this processor does not have")
            cache[int(addr)] = Vmcs(fields, bool(v["launched"]))
        current = state["current"]
        if current is not None and int(current) not in cache:
            raise ValueError(f"the current VMCS {current!r} is not an active one")
        nonroot = bool(state["nonroot"])
        if nonroot and (current is None or not state["on"]):
            raise ValueError("non-root operation without VMX operation and a current VMCS")
        event = state["event"]
        if event is not None:
            vector, typ, err, ilen = event
            event = (int(vector), int(typ), None if err is None else int(err), int(ilen))
        self.on, self.vmxon_ptr = bool(state["on"]), int(state["vmxon_ptr"])
        self.cache = cache
        self.current = NO_VMCS if current is None else int(current)
        self.event = event
        self.mtf, self.window, self.ack = bool(state["mtf"]), bool(state["window"]), bool(state["ack"])
        # (saved before the NMI controls were modelled: none in force)
        self.nmi_exits, self.vnmi, self.vnmi_blocked, self.nmi_window = (
            bool(x) for x in state.get("nmi", [False] * 4))
        self.exits = Counter(state["exits"])
        cpu = self.cpu
        cpu.nonroot, cpu.intr_exits = nonroot, bool(state["intr_exits"])
        cpu.vmx_tsc = int(state["tsc_offset"])
        self.epts = {}                   # (cached guest-physical mappings: walked again)
        if nonroot:
            self.load_ept()
        else:
            cpu.mmu.ept = None


# -- the instructions -------------------------------------------------------------------------
def _m64(cpu, ins) -> int:
    if ins.op0_kind != OK.MEMORY:
        raise CpuFault(UD)
    return read_mem(cpu, ins, 4) | read_mem(cpu, ins, 4, 4) << 32


def _done(cpu, ins, status: int) -> int:
    cpu.vmx.set_status(status)
    return ins.next_ip32


@helper(M.VMXON)
def h_vmxon(cpu, ins) -> int:
    st = cpu.state
    if not st.cr0 & CR0_PE or not st.cr4 & V.CR4_VMXE or st.eflags & VM:
        raise CpuFault(UD)
    if cpu.vmx.on:
        return _done(cpu, ins, cpu.vmx.vmxon(0))
    require_cpl0(cpu)
    return _done(cpu, ins, cpu.vmx.vmxon(_m64(cpu, ins)))


@helper(M.VMXOFF)
def h_vmxoff(cpu, ins) -> int:
    return _done(cpu, ins, cpu.vmx.vmxoff())


@helper(M.VMCLEAR)
def h_vmclear(cpu, ins) -> int:
    cpu.vmx._common()
    return _done(cpu, ins, cpu.vmx.vmclear(_m64(cpu, ins)))


@helper(M.VMPTRLD)
def h_vmptrld(cpu, ins) -> int:
    cpu.vmx._common()
    return _done(cpu, ins, cpu.vmx.vmptrld(_m64(cpu, ins)))


@helper(M.VMPTRST)
def h_vmptrst(cpu, ins) -> int:
    ptr = cpu.vmx.vmptrst()
    write_mem(cpu, ins, 4, ptr & 0xFFFFFFFF)
    write_mem(cpu, ins, 4, ptr >> 32, 4)
    return _done(cpu, ins, 0)


@helper(M.VMREAD)
def h_vmread(cpu, ins) -> int:
    cpu.vmx._common()
    status, value = cpu.vmx.vmread(get_reg(cpu, ins.op1_register))
    if status == 0:
        write_op(cpu, ins, 0, 4, value & 0xFFFFFFFF)
    return _done(cpu, ins, status)


@helper(M.VMWRITE)
def h_vmwrite(cpu, ins) -> int:
    cpu.vmx._common()
    value = read_op(cpu, ins, 1, 4)
    return _done(cpu, ins, cpu.vmx.vmwrite(get_reg(cpu, ins.op0_register), value))


@helper(M.VMLAUNCH, M.VMRESUME)
def h_vmlaunch(cpu, ins) -> int:
    status = cpu.vmx.vmlaunch(resume=ins.mnemonic == M.VMRESUME)
    if status == 0:
        return cpu.state.eip           # the guest's RIP, or the host's after a failed entry
    return _done(cpu, ins, status)


@helper(M.VMCALL)
def h_vmcall(cpu, ins) -> int:
    return _done(cpu, ins, cpu.vmx.vmcall())


@helper(M.INVEPT)
def h_invept(cpu, ins) -> int:
    cpu.vmx._common()
    if ins.op1_kind != OK.MEMORY:
        raise CpuFault(UD)
    typ = get_reg(cpu, ins.op0_register)
    # the descriptor's bits 63:0 are the EPTP (bits 127:64 are reserved)
    eptp = read_mem(cpu, ins, 4) | read_mem(cpu, ins, 4, 4) << 32
    return _done(cpu, ins, cpu.vmx.invept(typ, eptp))


VMX_REASONS = {M.VMCALL: EXIT_VMCALL, M.VMCLEAR: 19, M.VMLAUNCH: 20, M.VMPTRLD: 21,
               M.VMPTRST: 22, M.VMREAD: 23, M.VMRESUME: 24, M.VMWRITE: 25, M.VMXOFF: 26,
               M.VMXON: 27, M.INVEPT: V.EXIT_INVEPT}
from .vmexits import INTERCEPTS  # noqa: E402  (the non-root behaviour of each instruction)

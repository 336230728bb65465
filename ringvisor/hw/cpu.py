"""The IA-32 processor: state, flags, mode, and the execution loop.

``run`` executes translated blocks until the instruction budget is spent, an
interrupt must be taken, or the CPU halts.  Interrupts are recognised between
blocks: a device raising its line (through the PIC) sets ``limit`` to zero,
which ends the current dispatch loop at the next block boundary.  Faults
unwind out of a block with the state precise at the faulting instruction and
are delivered here, with the double- and triple-fault rules of SDM Vol. 3
Table 6-5.
"""

from __future__ import annotations

from collections import deque

from .codecache import CodeCache, SmcRestart
from .faults import (CONTRIBUTORY, DB, DF, HAS_ERROR_CODE, PF, CpuFault, PageFault, TripleFault,
                     VmExitFault)
from .vmcs import EXIT_TRIPLE_FAULT
from .hostdebug import KINDS, PAGE, HostDebug
from .memory import PhysicalMemory
from .mmu import Mmu
from .native import NativeRegions
from .segments import Segmentation, is_flat
from .state import CR0_PE, CR0_PG, CR0_TRANSLATION, CR4_DE, CR4_TRANSLATION, CS, DS, DF as DF_FLAG, IF, RF, SS, TF, VM, CpuState
from .clock import TSC_PER_CYCLE
from . import identify  # noqa: F401  (files CPUID, RDTSC(P), RDMSR/WRMSR among the helpers)
from . import controlregs, desctables, portio  # noqa: F401  (file theirs among the helpers)
from .controlregs import DR7_GD
from .system import run_helper
from . import transfers
from .translate import USER_CUT_MIN, Mode
from .vmx import Vmx


def current_privilege_level(st: CpuState) -> int:
    """The CPL: 0 in real mode (SDM Vol. 3 §9.1), 3 in virtual-8086 mode (§20.2), and
    otherwise the DPL held in the SS descriptor cache (§5.5: the CPL is the DPL of the
    code segment being executed, which every transfer that changes it copies into SS;
    KVM's vmx_get_cpl reads it there).  Not CS's RPL: right after MOV CR0 sets PE the
    selector is still a real-mode paragraph number, and the CPL stays 0 until a far
    transfer loads CS (QEMU keeps it in hflags, unchanged by the switch)."""
    if not st.cr0 & CR0_PE:
        return 0
    if st.eflags & VM:
        return 3
    return st.segs[SS].dpl


class Cpu:
    def __init__(self, mem: PhysicalMemory, bus, engine: str = "jit",
                 max_block: int = 48, keep_source: bool = False) -> None:
        if engine not in ("jit", "interp"):
            raise ValueError(f"unknown engine {engine!r}")
        self.engine = engine
        self.state = CpuState()
        self.mem = mem
        self.bus = bus
        self.mmu = Mmu(mem, self.state)
        self.native = NativeRegions()     # ring-0 software written in Python (native.py)
        # a measuring probe on RDTSC (a logic analyser, not part of the machine):
        # called with each value the guest reads, so host time can be taken at the
        # very instructions that bracket a guest's own measurement
        self.tsc_probe = None
        self.segmentation = Segmentation(self)
        self.cpl = 0
        self.limit = 0
        # stop exactly at ``run``'s bound: blocks never run past it (the last few
        # instructions before it are executed one at a time), so what happens at a
        # bound -- a timer firing, a save -- is at one instruction whatever the
        # engine and whatever blocks the code cache holds (QEMU's icount mode does
        # the same: it retranslates a block that would overrun the budget)
        self.exact = True
        self.bound = 0                    # run's bound (shorten() may bring it forward)
        self.stop_requested = False       # a device asked the machine to stop (debug exit, reset)
        self.acknowledge = lambda: 0      # the INTA cycle: returns the vector (None: nothing)
        # (CS selector, EIP) -> what the x87 records as its last instruction's pointer
        # (None: the real ones; a binary translator maps its code back to the guest's)
        self.fpu_origin = None
        # FERR#, the x87's error output (CR0.NE=0): the PC routes it to IRQ 13 unless the
        # chipset holds IGNNE# (set by a write to port 0xF0, see devices/coprocessor.py)
        self.ferr_line = lambda level: None
        self.ignne = False
        self.deliveries = 0               # gate transfers so far (transfers.deliver counts them)
        self.apic = None                  # the local APIC (devices/lapic.py), if the PC has one
        self.on_init = None               # INIT received: the machine puts the CPU in wait-for-SIPI
        self.on_startup = None            # SIPI received (the vector): the machine starts the CPU
        self.debug_active = False         # DR7 enables a breakpoint: execute one instruction at a time
        # MOV SS and POP SS hold the debug traps they raise until after the next instruction
        # (SDM Vol. 3 §6.8.3): set while the instruction that holds them executes (the
        # data breakpoints they matched are held in ``state.pending_db``)
        self.holds_debug = False
        # the B0-B3 a fault of the instruction right after them dropped (a monitor that
        # emulates that instruction still owes them: vmm/debug.py ``held_debug``)
        self.dropped_db = (0, 0)          # (the instruction count it faulted at, B0-B3)
        self.exec_breakpoints: list[tuple[int, int]] = []
        self.io_breakpoints: list[tuple[int, int, int]] = []   # (DRn, first port, last port)
        self.host = HostDebug()           # the host debugger's breakpoints (hostdebug.py)
        # recent (eip, exception: a CpuFault or its text), for crash reports
        self.exceptions = deque(maxlen=12)
        self.stats = {"exceptions": 0, "interrupts": 0, "smc_restarts": 0}
        self.trace = None                 # a callable taking text: translations, traps, interrupts
        self.cache = CodeCache(self, 1 if engine == "interp" else max_block, keep_source)
        # VMX (hw/vmx.py): in non-root operation helpers, faults and interrupts may exit
        self.vmx = Vmx(self)
        self.nonroot = False
        self.intr_exits = False           # external interrupts exit, whatever the guest's IF
        self.vmx_tsc = 0                  # the VMCS's TSC offset while a guest runs
        # the machine's cycle counter (hw/clock.py), which the time-stamp counter follows;
        # without a machine, the instructions this CPU retired
        self.cycles = None
        self.mmu.smc_hook = self.cache.check_smc
        self.mode = Mode(0, True, True, False, 0)
        self._modes: dict[tuple, tuple[Mode, int, bool]] = {}
        self.mode_changed()

    # -- flags (kept in the state: state.py) ---------------------------------------------
    def arith_flags(self) -> int:
        return self.state.arith_flags()

    def get_eflags(self) -> int:
        return self.state.get_eflags()

    def set_eflags(self, value: int, mask: int = 0xFFFFFFFF) -> None:
        self.state.set_eflags(value, mask)

    @property
    def intr(self) -> bool:
        """The INTR line (state.intr)."""
        return self.state.intr

    @property
    def interrupt_shadow(self) -> bool:
        return self.state.interrupt_shadow

    # -- state (the lifecycle protocol: ringvisor.lifecycle) --------------------------
    state_name = "cpu"
    state_version = 2                     # 2: the VMX state (``vmx``: Vmx.get_state)

    def get_state(self) -> dict:
        return {**self.state.to_dict(), "vmx": self.vmx.get_state()}

    def set_state(self, state: dict) -> None:
        """Load a saved state; everything derived from the old one is dropped."""
        state = dict(state)
        vmx = state.pop("vmx", None)      # (version 1: no VMX operation)
        self.state.load(state)
        self.vmx.set_state(vmx)
        self.stop_requested = False
        self.cache.flush()
        self.update_debug()               # breakpoints from DR7; flushes the TLB
        self.mode_changed()

    # -- mode ----------------------------------------------------------------------------
    def mode_changed(self) -> None:
        """Recompute the mode bits after anything that may change them; ends the dispatch loop."""
        st = self.state
        es, cs, ss, ds, fs, gs = st.segs
        mmu = self.mmu
        # everything the mode, the CPL and the segmentation's rules are computed from (a
        # kernel switches between a few modes: each is computed once): CR0.PE, EFLAGS.VM
        # and SS's DPL give the CPL
        sig = (st.cr0 & (CR0_PE | CR0_PG), st.eflags & (VM | DF_FLAG), not mmu.watch,
               mmu.host is None, cs.base, cs.limit, cs.attr, es.base, es.limit, es.attr,
               ss.base, ss.limit, ss.attr, ds.base, ds.limit, ds.attr, fs.base, fs.limit,
               fs.attr, gs.base, gs.limit, gs.attr)
        hit = self._modes.get(sig)
        if hit is None:
            real = not st.cr0 & CR0_PE
            self.cpl = current_privilege_level(st)
            # virtual-8086 mode loads and checks segments as real mode does (SDM Vol. 3
            # §20.1.1: base = selector * 16, no descriptors)
            hit = (self._compute_mode(), self.cpl, real or (bool(st.eflags & VM) and not real))
            if len(self._modes) > 256:
                self._modes.clear()
            self._modes[sig] = hit
        self.mode, self.cpl, self.segmentation.real = hit
        self.limit = 0

    def _compute_mode(self) -> Mode:
        st = self.state
        # segments that need no base and no type checks: base 0, usable, writable,
        # expand-up, all with one limit (4 GiB, or the DS limit a monitor cut short)
        ds = st.segs[DS]
        ds_limit = ds.limit if is_flat(ds, any_limit=True) else 0xFFFFFFFF
        if self.cpl == 3 and USER_CUT_MIN <= ds_limit != 0xFFFFFFFF and not st.eflags & VM:
            # (before any block of this mode runs: it checks the limit only on a TLB miss)
            self.mmu.lower_user_ceiling(ds_limit)
        flat = 0
        for i, s in enumerate(st.segs):
            if s.limit == ds_limit and is_flat(s, any_limit=True):
                flat |= 1 << i
        cs = st.segs[CS]
        # direct: loads and stores index RAM by linear address -- which is the physical one
        # only with paging off and no EPT: a VMX guest with EPT and paging off ("unrestricted
        # guest" real mode) reaches guest-physical addresses, which EPT translates (its
        # violations are the host's; beyond the guest's RAM lies the host's memory)
        direct = not st.cr0 & CR0_PG and not self.mmu.watch and self.mmu.host is None \
            and self.mmu.ept is None
        return Mode(self.cpl, cs.big, st.segs[SS].big, bool(st.eflags & DF_FLAG), flat,
                    cs.base, cs.limit, ds_limit, direct, not st.cr0 & CR0_PE,
                    bool(st.eflags & VM) and bool(st.cr0 & CR0_PE))

    def update_debug(self) -> None:
        """DR0-DR3/DR7 changed: recompute the breakpoints (SDM Vol. 3 §17.2)."""
        st = self.state
        dr7 = st.dr[7]
        execs, watch, ports = [], [], []
        for i in range(4):
            if not (dr7 >> (2 * i)) & 3:
                continue
            rw = (dr7 >> (16 + 4 * i)) & 3
            length = (1, 2, 8, 4)[(dr7 >> (18 + 4 * i)) & 3]
            addr = st.dr[i] & ~(length - 1) & 0xFFFFFFFF
            if rw == 0:
                execs.append((i, st.dr[i]))
            elif rw in (1, 3):
                watch.append((i, addr, addr + length - 1, rw == 1))
            elif st.cr4 & CR4_DE:
                # an I/O breakpoint (R/W = 10 with CR4.DE; undefined without it): a trap
                # after an IN, OUT, INS or OUTS touching its ports (SDM Vol. 3 §17.2.5)
                ports.append((i, addr & 0xFFFF, (addr & 0xFFFF) + length - 1))
        self.exec_breakpoints = execs
        self.io_breakpoints = ports
        self.mmu.watch = watch
        self.mmu.watch_pages = {a & 0xFFFFF000 for _, a, e, _ in watch} | \
            {e & 0xFFFFF000 for _, a, e, _ in watch} | self.host.watch_pages()
        self.mmu.host = self.host if self.host.watchpoints else None
        self.debug_active = bool(execs or watch or ports or self.host.watchpoints or self.host.break_next)
        self.tlb_flush()
        self.mode_changed()           # data breakpoints end direct RAM loads (Mode.direct)

    def host_debug_changed(self) -> None:
        """The host debugger's breakpoints or watchpoints changed (hostdebug.py)."""
        # blocks of a page that now holds a breakpoint must not run from the jump cache
        self.cache.flush_jump_cache()
        self.update_debug()

    def open_interrupt_shadow(self, stack: bool = False) -> None:
        """STI (from IF=0), MOV SS and POP SS (``stack``): the next instruction runs before
        any interrupt; after MOV SS and POP SS, before any debug trap too (SDM Vol. 3
        §6.8.3: the single-step trap and data breakpoints wait for the instruction
        boundary after the next instruction; STI holds interrupts only, as QEMU does)."""
        self.state.interrupt_shadow = True
        self.state.stack_shadow = stack
        self.holds_debug = stack
        self.limit = 0                    # so the run loop single-steps that instruction

    def shorten(self, icount: int) -> None:
        """End the current ``run`` at ``icount`` if that is sooner (a device armed a timer
        that falls due before the bound the machine gave)."""
        if icount < self.bound:
            self.bound = max(icount, self.state.icount + 1)
            self.limit = 0

    def request_stop(self) -> None:
        """End ``run`` at the next block boundary (the current instruction completes)."""
        self.stop_requested = True
        self.limit = 0

    # -- the interface monitors drive the processor through ----------------------------------
    # (DESIGN.md, "The boundary between monitors and the CPU": a monitor never sets an
    # engine field; vmm/kvm.py drives a KVM vCPU through the same operations, as QEMU's
    # accelerators implement one set of CPU ops)
    def retire(self, n: int) -> None:
        """``n`` instructions the ring-0 software running now executed for the guest by
        other means (a monitor's interpreter, ``vmm/realmode.py``) took the processor's
        time: the instruction count, and the virtual clock that follows it, move on; the
        current ``run`` ends at its bound as usual."""
        self.state.icount += n
        self.limit = 0

    def halt(self) -> None:
        """HLT: the processor waits for an interrupt (or NMI/reset); ``run`` returns."""
        self.state.halted = True
        self.limit = 0

    def load_cr3(self, value: int) -> None:
        """MOV to CR3: a new page-directory base; the TLB goes (SDM Vol. 3 §4.10.4.1)."""
        self.state.cr3 = value & 0xFFFFFFFF
        self.tlb_flush()

    def load_control(self, cr0: int, cr4: int) -> None:
        """MOV to CR0 and to CR4 (a monitor sets the real ones it runs its guest with): the
        TLB goes when a bit that governs translation changes, as MOV to CR does
        (``CR0_TRANSLATION``, ``CR4_TRANSLATION``) -- so that, e.g., a guest's new SMEP
        applies to pages it already fetched from."""
        st = self.state
        changed = (st.cr0 ^ cr0) & CR0_TRANSLATION or (st.cr4 ^ cr4) & CR4_TRANSLATION
        st.cr0, st.cr4 = cr0, cr4
        if changed:
            self.tlb_flush()

    def load_descriptor_tables(self, gdt: tuple[int, int], idt: tuple[int, int]) -> None:
        """LGDT and LIDT: (base, limit) of each."""
        st = self.state
        st.gdtr.base, st.gdtr.limit = gdt
        st.idtr.base, st.idtr.limit = idt

    def connect_interrupt_controller(self, acknowledge) -> None:
        """Who answers the INTA cycle with a vector (the PIC, or a monitor in front of it)."""
        self.acknowledge = acknowledge

    def connect_fpu_origin(self, origin) -> None:
        """Who says which guest instruction x87 code at (CS, EIP) stands for, for the
        last-instruction pointer FSTENV, FSAVE and FXSAVE store (None: itself)."""
        self.fpu_origin = origin

    def tlb_flush(self) -> None:
        self.mmu.flush()
        self.cache.flush_jump_cache()
        self.limit = 0

    def invlpg(self, lin: int) -> None:
        self.mmu.invlpg(lin)
        self.cache.flush_jump_cache()

    def iret(self, frame: tuple[int, int, int, int, int] | None = None,
             ring0: bool = False) -> None:
        """Execute a 32-bit IRET (for native handlers returning to their caller).
        ``frame``: the five values at SS:ESP (EIP, CS, EFLAGS, ESP, SS), for a handler
        that holds them: the same IRET, without reading back what it just wrote to
        its own stack (whose reads cannot fault).  ``ring0``: the handler was handed
        the entry (native.py) and the CPU still holds the state it was taken in; the
        IRET executes as at CPL 0 with NT clear, where the gate would have put it (a
        return to an outer ring, not to virtual-8086 mode: ``frame`` is required)."""
        transfers.iret(self, 4, None, frame, ring0)

    def assert_ferr(self) -> None:
        """A waiting x87 instruction found an unmasked exception pending with CR0.NE=0."""
        if not self.ignne:
            self.ferr_line(True)

    def ferr_clear(self) -> None:
        """The exception flags were cleared: FERR# goes inactive, and the chipset drops IGNNE#."""
        self.ferr_line(False)
        self.ignne = False

    def tsc_base(self) -> int:
        """What the time-stamp counter counts: the machine's cycles (``TSC_PER_CYCLE``
        ticks each), which go on while the processor is halted (SDM Vol. 3 §17.17: the
        TSC increments at a constant rate, HLT or not), and which every processor of the
        machine shares."""
        return (self.state.icount if self.cycles is None else self.cycles()) * TSC_PER_CYCLE

    def tsc(self) -> int:
        return (self.tsc_base() + self.state.tsc_offset + self.vmx_tsc) & 0xFFFFFFFFFFFFFFFF

    def _run_helper(self, ins) -> int:
        return run_helper(self, ins)

    # -- interrupts -------------------------------------------------------------------------
    def set_intr(self, level: bool) -> None:
        """The PIC's INTR output changed."""
        self.state.intr = level
        if level:
            self.irq_check()

    def irq_check(self) -> None:
        if self.state.intr and self.state.eflags & IF or self.nonroot:
            self.limit = 0                # (non-root: an interrupt-window exit may be due)

    def raise_nmi(self) -> None:
        """The NMI input (from the local APIC: LINT1, an NMI IPI)."""
        self.state.nmi_pending = True
        self.limit = 0

    def init(self) -> None:
        """An INIT message (SDM Vol. 3 §8.4.3): the machine resets the processor."""
        if self.on_init is not None:
            self.on_init(self)

    def startup(self, vector: int) -> None:
        """A start-up IPI: a processor in wait-for-SIPI starts at vector << 12, in real mode."""
        if self.on_startup is not None:
            self.on_startup(self, vector)

    def deliver_nmi(self) -> None:
        """Vector 2, then NMIs blocked until the next IRET (SDM Vol. 3 §6.7.1)."""
        st = self.state
        st.nmi_pending = False
        st.nmi_blocked = True
        st.halted = False
        self.stats["interrupts"] += 1
        if self.trace:
            self.trace(f"[{st.icount}] NMI at eip={st.eip:#010x}\n")
        try:
            transfers.deliver(self, 2, None, False, st.eip)
        except CpuFault as f:
            self.deliver_exception(f)

    def deliver_exception(self, fault: CpuFault) -> None:
        """Deliver a fault or trap raised by an instruction, with the double-fault rules."""
        if self.nonroot:
            if isinstance(fault, VmExitFault):
                fault.take(self.vmx)                  # (EPT, SDM Vol. 3C §28.3.3; task switch, §25.4.2)
                return
            try:
                self._deliver_exception(fault)
            except TripleFault:
                self.vmx.exit(EXIT_TRIPLE_FAULT)      # (SDM Vol. 3C §25.2)
            return
        if self.native.handoff is None or not self.hand_off_fault(fault):
            self._deliver_exception(fault)

    def hand_off_fault(self, fault: CpuFault, checked: bool = False) -> bool:
        """Offer the delivery of ``fault`` (raised by the instruction at EIP) to the
        native handler's owner (native.py's hand-off); whether it took it."""
        err = fault.error_code
        if fault.vector in HAS_ERROR_CODE and err is None:
            err = 0
        return self.hand_off(fault.vector, err, False, self.state.eip, fault, checked)

    def hand_off(self, vector: int, err: int | None, soft: bool, return_eip: int,
                 fault: CpuFault | None = None, checked: bool = False) -> bool:
        """Offer a gate delivery to the native handler's owner (native.py's hand-off);
        whether it took it.  ``return_eip``: the EIP the frame would hold (the faulting
        instruction's, or for INT n the next one's, whose retirement the block counts
        when the helper returns); ``checked``: ``may_hand_off`` allowed it already."""
        retired = 1 if soft else 0
        if not checked and not self.may_hand_off(retired):
            return False
        handler = self.native.handoff(self, vector, err, soft)
        if handler is None:
            return False
        # what the long way counts: the exception (and CR2), the gate transfer, the
        # INT n retired before its delivery's handler runs, and the native entry's
        # instruction (codecache's ``_native_entry``)
        st = self.state
        if fault is not None:
            self.stats["exceptions"] += 1
            fault.__traceback__ = None         # (kept, to be named only in a crash report)
            self.exceptions.append((st.eip, fault))
            if isinstance(fault, PageFault):
                st.cr2 = fault.address
        self.deliveries += 1
        st.icount += 1 + retired
        st.eip = return_eip
        handler(self)          # (which leaves the mode current, as its IRET does)
        st.icount -= retired
        return True

    def may_hand_off(self, retired: int = 0) -> bool:
        """Would a gate delivery now be followed at once by its handler's first
        instruction, with nothing observable between (native.py's hand-off)?  Not
        while anything watches or steps (tracing, TF, DR7, the host debugger), an NMI
        waits, an interrupt shadow holds, or the run ends before the handler's entry
        (``retired``: instructions that retire before it).  (INTR cannot come
        between: a hand-off is only for interrupt gates, which clear IF.)"""
        st = self.state
        host = self.host
        return (self.trace is None and not st.eflags & TF and not self.debug_active
                and not self.mmu.watch and self.mmu.host is None and not host.breakpoints
                and not host.break_next and not host.stepping and host.event is None
                and not st.nmi_pending and not st.interrupt_shadow and not self.stop_requested
                and st.icount + retired < self.bound and not self.nonroot)

    def _deliver_exception(self, fault: CpuFault) -> None:
        st = self.state
        self.stats["exceptions"] += 1
        first = fault
        vmx = self.vmx
        # in VMX non-root operation: the event whose delivery raised the fault (its
        # IDT-vectoring information if an exit follows), and the exception bitmap
        during = vmx.event if self.nonroot else None
        for _ in range(4):
            if self.nonroot:
                if vmx.exception_exits(first, during):
                    return
                during = (first.vector, 6 if first.soft else 3, first.error_code, 0)
                if first.vector in HAS_ERROR_CODE and first.error_code is None:
                    during = (first.vector, 3, 0, 0)
                vmx.event = during
            self.exceptions.append((st.eip, str(first)))
            if self.trace:
                self.trace(f"[{st.icount}] exception {first} at eip={st.eip:#010x} cpl={self.cpl}\n")
            if isinstance(first, PageFault):
                st.cr2 = first.address
            elif first.vector == DB:
                st.dr[7] &= ~DR7_GD      # so the handler may use DR0-DR7 (SDM Vol. 3 §17.2.4)
            err = first.error_code
            if first.vector in HAS_ERROR_CODE and err is None:
                err = 0
            try:
                transfers.deliver(self, first.vector, err, first.soft, st.eip)
                vmx.event = None
                return
            except CpuFault as second:
                if isinstance(second, VmExitFault):
                    second.take(vmx)              # with ``first`` as the IDT-vectoring information
                    return
                if second.in_new_task:
                    # delivery switched tasks, and the new task faulted: a new event there
                    first = second
                    continue
                a, b = first.vector, second.vector
                if a == DF:
                    raise TripleFault(f"{second} while delivering #DF") from None
                if (a in CONTRIBUTORY and b in CONTRIBUTORY) or \
                        (a == PF and (b == PF or b in CONTRIBUTORY)):
                    self.exceptions.append((st.eip, f"{second} during {first}"))
                    if isinstance(second, PageFault):
                        st.cr2 = second.address
                    first = CpuFault(DF, 0)
                    continue
                first = second
        raise TripleFault("exception delivery loops")

    def deliver_interrupt(self) -> None:
        st = self.state
        vector = self.acknowledge()
        if vector is None:                # the request went away (an APIC's priority changed)
            return
        self.stats["interrupts"] += 1
        if self.trace:
            self.trace(f"[{st.icount}] interrupt vector {vector:#x} at eip={st.eip:#010x}\n")
        st.halted = False
        if self.nonroot:
            self.vmx.event = (vector & 0xFF, 0, None, 0)   # an external interrupt (IDT-vectoring)
        try:
            transfers.deliver(self, vector, None, False, st.eip)
            self.vmx.event = None
        except CpuFault as f:
            self.deliver_exception(f)

    # -- execution ---------------------------------------------------------------------------
    def step(self) -> None:
        """Execute exactly one instruction (delivering any fault it raises).

        Single-step (TF) and the debug registers are checked here, so the run
        loop comes this way whenever either is active.
        """
        st = self.state
        tf = st.eflags & TF
        host = self.host
        if host.armed and host.hit((self.mode.cs_base + st.eip) & 0xFFFFFFFF, st.icount):
            self.limit = 0                # stopped before the instruction, for the debugger
            return
        # after MOV SS or POP SS the next instruction's instruction breakpoint is not taken
        # (SDM Vol. 3 §17.3.1.1: "POP SS/MOV SS will inhibit such interrupts")
        stack = st.stack_shadow
        if self.exec_breakpoints and not st.eflags & RF and not stack:
            lin = (self.mode.cs_base + st.eip) & 0xFFFFFFFF
            hits = 0
            for i, addr in self.exec_breakpoints:
                if addr == lin:
                    hits |= 1 << i
            if hits:   # an instruction breakpoint is a fault: before the instruction runs
                st.dr[6] = (st.dr[6] & ~0xF) | hits
                self.deliver_exception(CpuFault(DB))
                return
        self.mmu.watch_hits = 0
        deliveries = self.deliveries
        nonroot = self.nonroot
        if tf or self.debug_active:
            # a budget of one: a REP string instruction runs one iteration and stays
            # at itself while iterations remain, so the single-step and data
            # breakpoint traps come after each iteration (SDM Vol. 3 §17.3.1)
            self.limit = st.icount + 1
        # RF spares the instruction it was set for, and is cleared when that instruction
        # completes -- unless the instruction loaded it (IRET, a task switch: SDM Vol. 3
        # §17.3.1.1).  Until then it is in EFLAGS: an INT n, a fault or a task switch of
        # this instruction saves it (as QEMU does; a fault delivered clears it)
        rf = st.eflags & RF
        rf_loads = st.rf_loads
        self.holds_debug = False
        st.stack_shadow = False
        try:
            fn = self.cache.lookup(st.eip, self.mode, single=True)
            st.eip = fn()
        except CpuFault as f:
            if stack and not isinstance(f, SmcRestart):
                # a fault in the instruction after MOV SS or POP SS: the debug traps they
                # held are dropped (as the hardware does: Linux's selftests/x86/mov_ss_trap.c)
                self.dropped_db, st.pending_db = (st.icount, st.pending_db), 0
            if host.event is not None and host.event.kind in KINDS:
                # a host watchpoint stops after an access that completed, as a data
                # breakpoint's trap comes after its instruction (SDM Vol. 3 §17.3.1.2): an
                # instruction that faults made none (its retry will), and the DR7 hits
                # above are dropped the same way
                host.event = None
            if isinstance(f, SmcRestart):
                st.stack_shadow = stack       # (the instruction starts again)
                return
            self.deliver_exception(f)
            return
        if rf and st.rf_loads == rf_loads:
            st.eflags &= ~RF
        if self.nonroot != nonroot:
            # a VM exit (the instruction did not complete: the host owes the guest its
            # trap, SDM Vol. 3C §27.1) or a VM entry: nothing more to report here
            return
        if self.deliveries != deliveries:
            # INT n, INT3, INTO: the gate cleared TF and the handler's first
            # instruction is next; the single-step trap comes after the IRET's
            # successor instead (SDM Vol. 3 §17.3.1.4, and QEMU)
            tf = 0
        hits = self.mmu.watch_hits | st.pending_db
        if self.holds_debug:
            # MOV SS, POP SS: no trap before the next instruction has run (its single
            # step, if TF is still set then, is the one #DB; B0-B3 matched here go with it;
            # an INT n, INT3 or INTO enters its handler first, ICEBP's #DB takes them)
            self.holds_debug = False
            st.pending_db = hits
            return
        st.pending_db = 0
        if hits or tf:
            if hits:   # a data breakpoint is a trap: after the access
                st.dr[6] = (st.dr[6] & ~0xF) | hits
            if tf:
                st.dr[6] |= 0x4000
            self.deliver_exception(CpuFault(DB, None, trap=True))

    def run(self, until: int) -> None:
        """Execute until ``icount >= until`` (or an earlier bound :meth:`shorten` sets)
        or the CPU halts."""
        self.bound = until
        st = self.state
        cache = self.cache
        # a block runs whole once entered, so it may only start this far before ``until``
        # (a REP string instruction, which retires one per iteration, ends its block)
        slack = cache.max_insns if self.exact and cache.max_insns > 1 else 0
        host = self.host
        while st.icount < self.bound and not self.stop_requested and host.event is None:
            until = self.bound
            if st.interrupt_shadow:
                st.interrupt_shadow = False
                self.limit = until            # (a string instruction stops at the bound)
                self.step()
                continue
            if self.nonroot and self.vmx.at_boundary():
                continue                      # a VM exit: the host runs
            if st.nmi_pending and not st.nmi_blocked:
                self.deliver_nmi()
            elif st.intr and st.eflags & IF:
                self.deliver_interrupt()
            if st.halted:
                return
            if st.eflags & (TF | RF) or self.debug_active or until - st.icount <= slack or (
                    host.pages and (self.mode.cs_base + st.eip) & PAGE in host.pages):
                # (RF: one instruction runs with it, and it is cleared after that one)
                self.limit = until
                self.step()
                continue
            self.limit = until - slack
            mode = self.mode
            jc = cache.jump.setdefault(mode.key, {})
            eip = st.eip
            try:
                while st.icount < self.limit:
                    fn = jc.get(eip)
                    if fn is None:
                        st.eip = eip
                        fn = cache.lookup(eip, mode)
                    eip = fn()
                st.eip = eip
            except SmcRestart:
                self.stats["smc_restarts"] += 1
                self.step()
            except CpuFault as f:
                if f.trap:
                    st.eip = eip
                self.deliver_exception(f)

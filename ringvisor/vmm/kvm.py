"""``--mode kvm``: the PC with the host's real CPU under Linux KVM, and ringvisor's devices.

QEMU's structure (``accel/kvm``, ``kernel_irqchip=off``): KVM runs the guest
on the processor, and the host process serves every exit with the same Python
devices the emulated PC has -- the 8259A pair, the 8254, the UARTs, CMOS,
isa-debug-exit -- on the same port bus and the same memory.  The machine is an
ordinary :class:`~ringvisor.hw.machine.Machine` whose RAM is an anonymous
mmap that KVM maps as memory slot 0, and whose run loop is ``KVM_RUN``
instead of the translator:

    exit            served by
    IO              the port bus (string I/O: ``count`` accesses in the page)
    MMIO            the memory's MMIO regions (RAM is all in the slot)
    HLT             the CPU halts: time skips to the next timer, as on the
                    emulated PC, or the run ends when nothing can wake it
    IRQ_WINDOW_OPEN the CPU's INTR pin is up (the local APIC's output, the PIC
                    on LINT0): ``KVM_INTERRUPT`` with the vector the INTA cycle
                    gives, once the vCPU reports ``ready_for_interrupt_injection``
    INTR            the timer's signal: fire the due timers, poll the host
    SHUTDOWN        a triple fault: the run stops as on the emulated PC
    FAIL_ENTRY, INTERNAL_ERROR, others   the run stops with KVM's reason

The boot is the emulated PC's: ``boot_multiboot`` runs the firmware hand-off
and the Multiboot loader into this machine's memory and CPU state, and the
state goes to the vCPU (``KVM_SET_REGS``/``SREGS``/``FPU``/``DEBUGREGS``/
``VCPU_EVENTS``/``MSRS``) when the run starts; it comes back into
``cpu.state`` when the run ends.  Between runs ``cpu.state`` is the truth, so
a saved VM, a crash report and the debugger's view work as on the emulated CPU,
and a VM moves between the emulator and KVM (``ringvisor restore --mode``).

Time.  KVM counts no instructions, so the virtual clock follows the host's
monotonic clock while the vCPU runs (as QEMU's ``QEMU_CLOCK_VIRTUAL`` does
without icount) and skips ahead while the guest halts (unless pacing).  The
guest's TSC is the host's (KVM offsets it to start at the value the state
gives): ``[timing]`` lines are real cycles of this host's (nested) hardware,
not the emulated PC's instruction count, and the PIT fires by host time, so
*when* an interrupt lands differs from run to run.  Everything else a guest
prints is what it prints natively.  A run's limit is wall time
(``wall_limit``), not an instruction count.
"""

from __future__ import annotations

import mmap
import signal
import threading
import time
from collections import Counter

from ringvisor.errors import ConfigError
from ringvisor.hw import kvm as K
from ringvisor.hw.hostdebug import HostEvent
from ringvisor.hw.kvmdebug import KvmDebug
from ringvisor.hw.identify import CPUID_MAX_BASIC, CPUID_MAX_EXTENDED, KNOWN_MSRS, cpuid
from ringvisor.hw.machine import Machine, Stop
from ringvisor.hw.memory import PhysicalMemory
from ringvisor.hw.state import (CR0_PG, CR4_PAE, MSR_EFER, MSR_PAT, MSR_SYSENTER_CS, MSR_SYSENTER_EIP,
                                MSR_SYSENTER_ESP, MSR_TSC, MSR_TSC_AUX, REG_NAMES, SEG_NAMES,
                                FpuState, Segment)

# the MSRs the state carries that KVM keeps (EFER travels in kvm_sregs)
KVM_MSRS = (MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP, MSR_PAT, MSR_TSC_AUX)
POLL_SECONDS = 0.05          # the host's input is polled at least this often
KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1     # (sic, <linux/kvm.h>)
NO_COUNT = "--mode kvm counts no guest instructions (the host's CPU runs the guest)"
HLT = 0xF4


def cpuid_entries(apic=None) -> list[tuple[int, int, int, int, int, int, int]]:
    """The emulated PC's CPUID table (hw/identify.py) as KVM_SET_CPUID2 entries: the
    guest identifies the same processor under KVM as on the emulated CPU."""
    out = []
    for leaf in (*range(CPUID_MAX_BASIC + 1), *range(0x80000000, CPUID_MAX_EXTENDED + 1)):
        flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX if leaf == 7 else 0
        out.append((leaf, 0, flags, *cpuid(leaf, 0, apic)))
    return out


def unusable_reason() -> str | None:
    """Why ``--mode kvm`` cannot run here (one line), or None."""
    return K.unusable_reason()


class KvmMachine(Machine):
    """The PC with a KVM vCPU for its processor (see the module's doc)."""

    mode_name = "kvm"

    def __init__(self, mem_mb: int = 32, engine: str = "jit", **kw) -> None:
        if kw.get("cpus", 1) != 1:
            raise ConfigError("--mode kvm runs one vCPU: no --smp")
        try:
            self.kvm = K.KvmSystem()
        except K.KvmError as e:
            raise ConfigError(f"--mode kvm: {e.strerror}") from None
        if kw.get("ram") is None:         # (a lazy restore brings its own file mapping)
            kw["ram"] = mmap.mmap(-1, mem_mb << 20, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._ram = kw["ram"]
        super().__init__(mem_mb, engine, **kw)
        self.vm = K.KvmVm(self.kvm)
        self.vm.map_memory(0, 0, self._ram)
        self.vcpu = K.KvmVcpu(self.vm)
        self.vcpu.set_cpuid(cpuid_entries(self.cpu.apic))
        self.vcpu.unblock_signals_in_run()
        # a debugger's breakpoints, watchpoints and steps, asked of KVM (hw/kvmdebug.py)
        self.debug = KvmDebug(self.vcpu, self.mem, self.cpu.host, self.cpu.mmu.probe)
        self.exits: Counter = Counter()
        # IO exits that served a serial port (a line of console output is dozens)
        self.console_exits = 0
        self._console_ports = {u.base + i for u in self.uarts for i in range(8)}
        self.injected = 0
        self.wall_limit: float | None = None     # seconds of running, then Stop("limit")
        # virtual time: host nanoseconds spent running the vCPU
        self._ran_ns = 0
        self._entered_ns: int | None = None
        self.clock.attach(self._clock_count)

    def _clock_count(self) -> int:
        ns = self._ran_ns
        if self._entered_ns is not None:
            ns += time.monotonic_ns() - self._entered_ns
        return ns * self.clock.cpu_hz // 1_000_000_000

    def close(self) -> None:
        """Release the vCPU, the VM and /dev/kvm (the memory stays readable)."""
        if self.vcpu is not None:
            self.vcpu.close()
            self.vm.close()
            self.kvm.close()
            self.vcpu = None

    # -- the state, between cpu.state and the vCPU -------------------------------------------
    def _push_state(self) -> None:
        st, v = self.cpu.state, self.vcpu
        r = K.kvm_regs()
        for i, name in enumerate(REG_NAMES):
            setattr(r, "r" + name[1:], st.regs[i])
        r.rip, r.rflags = st.eip, st.get_eflags()
        v.set_regs(r)
        s = v.sregs()
        for i, name in enumerate(SEG_NAMES):
            _set_segment(getattr(s, name), st.segs[i])
        _set_segment(s.tr, st.tr)
        _set_segment(s.ldt, st.ldtr)
        s.gdt.base, s.gdt.limit = st.gdtr.base, st.gdtr.limit
        s.idt.base, s.idt.limit = st.idtr.base, st.idtr.limit
        s.cr0, s.cr2, s.cr3, s.cr4 = st.cr0, st.cr2, st.cr3, st.cr4
        s.efer = st.msrs.get(MSR_EFER, 0)
        for i in range(4):
            s.interrupt_bitmap[i] = 0
        v.set_sregs(s)
        if st.cr0 & CR0_PG and st.cr4 & CR4_PAE:
            # the PDPTE registers travel as they are (a PDPT edited since the last MOV to
            # CR3 must not be seen: SDM Vol. 3A §4.4.1); without KVM_CAP_SREGS2, KVM
            # loaded them from CR3 at KVM_SET_SREGS
            v.set_pdptes(st.pdpte)
        f = K.kvm_fpu()
        kf = st.fpu.to_kvm()
        for i, raw in enumerate(kf["fpr"]):
            f.fpr[i][:] = list(raw)
        for i, raw in enumerate(kf["xmm"]):
            f.xmm[i][:] = list(raw)
        f.fcw, f.fsw, f.ftwx, f.last_opcode = kf["fcw"], kf["fsw"], kf["ftwx"], kf["last_opcode"]
        f.last_ip, f.last_dp, f.mxcsr = kf["last_ip"], kf["last_dp"], kf["mxcsr"]
        v.set_fpu(f)
        v.set_sse(st.fpu.mxcsr, st.fpu.xmm)
        d = v.debugregs()
        d.db[:] = st.dr[:4]
        d.dr6, d.dr7 = st.dr[6], st.dr[7]
        v.set_debugregs(d)
        e = v.events()
        e.interrupt.shadow = 1 if st.interrupt_shadow else 0
        e.flags = K.KVM_VCPUEVENT_VALID_SHADOW
        v.set_events(e)
        msrs = {n: st.msrs[n] for n in KVM_MSRS if n in st.msrs}
        msrs[MSR_TSC] = self.cpu.tsc()
        v.set_msrs(msrs)

    def _pull_state(self) -> None:
        st, v = self.cpu.state, self.vcpu
        r, s, f, d, e = v.regs(), v.sregs(), v.fpu(), v.debugregs(), v.events()
        msrs = v.msrs([MSR_TSC, *KVM_MSRS])
        state = st.to_dict()
        state["regs"] = [getattr(r, "r" + name[1:]) & 0xFFFFFFFF for name in REG_NAMES]
        state["eip"], state["eflags"] = r.rip & 0xFFFFFFFF, r.rflags & 0xFFFFFFFF
        state["segs"] = [_segment(getattr(s, name)).to_dict() for name in SEG_NAMES]
        state["tr"], state["ldtr"] = _segment(s.tr).to_dict(), _segment(s.ldt).to_dict()
        state["gdtr"] = {"base": s.gdt.base, "limit": s.gdt.limit}
        state["idtr"] = {"base": s.idt.base, "limit": s.idt.limit}
        state["cr0"], state["cr2"], state["cr3"], state["cr4"] = (
            s.cr0 & 0xFFFFFFFF, s.cr2 & 0xFFFFFFFF, s.cr3 & 0xFFFFFFFF, s.cr4 & 0xFFFFFFFF)
        if state["cr0"] & CR0_PG and state["cr4"] & CR4_PAE:
            # KVM_GET_SREGS2's PDPTEs; without it, what a load from CR3 gives now
            state["pdpte"] = v.pdptes() or self.cpu.mmu.pdptes(state["cr3"]) or st.pdpte
        state["dr"] = [*d.db, 0, 0, d.dr6 & 0xFFFFFFFF, d.dr7 & 0xFFFFFFFF]
        state["dr"][4], state["dr"][5] = state["dr"][6], state["dr"][7]
        # (an MSR the guest never wrote stays out of the state while it holds its reset value)
        kept = {str(n): val for n, val in msrs.items() if n != MSR_TSC and
                (n in st.msrs or val != KNOWN_MSRS.get(n, 0))}
        if s.efer or MSR_EFER in st.msrs:
            kept[str(MSR_EFER)] = s.efer
        state["msrs"] = {**state["msrs"], **kept}
        state["tsc_offset"] = (msrs.get(MSR_TSC, 0) - self.cpu.tsc_base()) & 0xFFFFFFFFFFFFFFFF
        state["interrupt_shadow"] = bool(e.interrupt.shadow)
        state["fpu"] = FpuState.from_kvm({
            "fpr": [bytes(x) for x in f.fpr], "fcw": f.fcw, "fsw": f.fsw, "ftwx": f.ftwx,
            "last_opcode": f.last_opcode, "last_ip": f.last_ip, "last_dp": f.last_dp,
            "xmm": [bytes(x) for x in f.xmm], "mxcsr": f.mxcsr}).to_dict()
        sse = v.sse()
        if sse is not None:
            state["fpu"]["mxcsr"], state["fpu"]["xmm"] = sse
        self.cpu.set_state(state)

    # -- running -------------------------------------------------------------------------------
    def step(self) -> None:
        """One guest instruction for a debugger (KVM_GUESTDBG_SINGLESTEP), taking no
        interrupt and firing no timer, as on the emulated PC; a watchpoint it hits is the
        host debugger's event.  (A halted guest is woken by ``run``: guestview._wake.)"""
        if threading.current_thread() is not threading.main_thread():
            raise ConfigError("--mode kvm runs the vCPU in the main thread (its timer is a signal)")
        st = self.cpu.state
        at = self.cpu.mmu.probe((self.cpu.mode.cs_base + st.eip) & 0xFFFFFFFF)
        hlt = at is not None and self.mem.is_ram(at) and self.mem.read(at, 1)[0] == HLT
        self._push_state()
        try:
            event = self._step_once()
        finally:
            self.debug.disarm()
            self._pull_state()
        if event is not None and event.kind != "step":
            self.cpu.host.event = event
        elif event is not None and hlt:
            # a stepped HLT: VT-x KVM reports KVM_EXIT_HLT, kvm-pvm only the step's
            # trap past it -- the CPU halted all the same
            self.cpu.halt()

    def _step_once(self) -> HostEvent | None:
        """KVM_RUN with the single-step trap until the instruction is done (its IO and
        MMIO served on the way); the event that ended it (None: a HLT, or a stop)."""
        st, run = self.cpu.state, self.vcpu.run_page
        self.debug.arm(step=True)
        run.request_interrupt_window = 0
        while self.stop is None:
            if not self.vcpu.run():
                continue                       # a signal; the instruction is still to run
            reason = run.exit_reason
            self.exits[reason] += 1
            if reason == K.EXIT_DEBUG:
                event = self.debug.debug_exit(run.exit.debug, run.exit.debug.pc & 0xFFFFFFFF)
                if event is not None:
                    return event
                continue                       # the guest's own #DB or #BP, given back
            self._serve(reason, run)
            if reason in (K.EXIT_IO, K.EXIT_MMIO):
                # the instruction is done once KVM has taken the data back; on some KVMs
                # (kvm-pvm) the step's trap would only come after the next instruction
                return self._complete_exit() or HostEvent("step", self._linear_eip())
            if reason == K.EXIT_HLT or st.halted:
                return None
        return None

    def _linear_eip(self) -> int:
        return (self.cpu.mode.cs_base + self.vcpu.regs().rip) & 0xFFFFFFFF

    def _complete_exit(self) -> HostEvent | None:
        """Finish the IO or MMIO instruction the last exit left half done: KVM applies
        what we served (an IN's data, EIP past the instruction) only when KVM_RUN is
        entered again, so before anyone looks at the state it is entered with
        ``immediate_exit``, which runs no further instruction (api.rst, KVM_RUN).  A
        string instruction may need more of its data served on the way.  The
        debugger's event if the instruction's end is one (a step, a watchpoint)."""
        run = self.vcpu.run_page
        run.immediate_exit = 1
        try:
            while self.stop is None and self.vcpu.run():
                reason = run.exit_reason
                self.exits[reason] += 1
                if reason == K.EXIT_DEBUG:
                    return self.debug.debug_exit(run.exit.debug, run.exit.debug.pc & 0xFFFFFFFF)
                self._serve(reason, run)
        finally:
            run.immediate_exit = 0
        return None

    def run(self, max_instructions: int | None = None) -> Stop:
        if max_instructions is not None:
            raise ConfigError(f"{NO_COUNT}: no instruction limit")
        if threading.current_thread() is not threading.main_thread():
            raise ConfigError("--mode kvm runs the vCPU in the main thread (its timer is a signal)")
        self.pause_reason = None
        host = self.cpu.host
        host.event = None
        st = self.cpu.state
        lin = (self.cpu.mode.cs_base + st.eip) & 0xFFFFFFFF
        # (a halted CPU is not about to run the instruction at EIP: guestview._wake runs it
        # with break_next until an interrupt wakes it)
        if not st.halted and (host.break_next or lin in host.breakpoints) and host.hit(lin, st.icount):
            return Stop("paused", 0, host.event.kind)
        if not st.halted and lin in host.breakpoints:
            # resuming from a breakpoint: its instruction runs once with it lifted, as the
            # emulated CPU passes it (hostdebug.pass_once)
            self.step()
            if host.event is not None or self.stop is not None:
                return self.stop or Stop("paused", 0, host.event.kind)
        t0 = time.perf_counter()
        old_handler = signal.signal(signal.SIGALRM, _kick)
        # the timer's signal is blocked except inside KVM_RUN (KVM_SET_SIGNAL_MASK):
        # one that comes between two runs ends the next at once instead of being lost
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        self._push_state()
        try:
            self.debug.arm()
            paused = self._loop(t0)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            try:
                event = self._complete_exit()
            finally:
                self.debug.disarm()
            if self._entered_ns is not None:
                self._ran_ns += time.monotonic_ns() - self._entered_ns
                self._entered_ns = None
            _drain_alarm()
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            signal.signal(signal.SIGALRM, old_handler)
            self._pull_state()
            self.wall_seconds += time.perf_counter() - t0
        if event is not None and self.stop is None:
            self.cpu.host.event = event
            paused = Stop("paused", 0, event.kind)
        if paused is not None:
            return paused
        if self.stop.reason == "triple-fault":
            self.stop.message += "\n" + self.report()
        if self.stop.reason in ("triple-fault", "unsupported"):
            for why in K.limits().values():
                self.stop.message += f"\n  ({why})"
        return self.stop

    def _loop(self, t0: float) -> Stop | None:
        """Run until the machine stops (None) or pauses (the pause's Stop)."""
        clock, run, st = self.clock, self.vcpu.run_page, self.cpu.state
        while self.stop is None:
            if self.pause_reason is not None:
                return Stop("paused", 0, self.pause_reason)
            clock.run_due()
            self._poll_host()
            if self.stop is not None:
                break
            if self.wall_limit is not None and time.perf_counter() - t0 > self.wall_limit:
                self.stop = Stop("limit", 4, f"stopped after {self.wall_limit:g} s of wall time")
                break
            intr = st.intr                # the INTR pin: the local APIC's output (LINT0: the PIC)
            if st.halted:
                if not run.if_flag:
                    self.stop = Stop("halted", 0, "the guest halted with interrupts disabled")
                    break
                if not intr:
                    self.skip_to_next_event("the guest halted and nothing can wake it")
                    continue
            if intr and run.ready_for_interrupt_injection:
                vector = self.cpu.acknowledge()      # INTA, through the APIC to the PIC
                if vector is not None:               # (the request may have gone meanwhile)
                    self.vcpu.interrupt(vector)
                    self.injected += 1
                    st.halted = False
                    if self.cpu.host.break_next:     # a debugger's step of a halted guest
                        return self._woken()
                intr = st.intr
            run.request_interrupt_window = 1 if intr else 0
            self._arm_timer()
            self._entered_ns = time.monotonic_ns()
            entered = self.vcpu.run()
            self._ran_ns += time.monotonic_ns() - self._entered_ns
            self._entered_ns = None
            if not entered:
                # the kick stays pending (blocked again once KVM_RUN returned): eat it,
                # as QEMU's kvm_eat_signals did
                signal.sigtimedwait({signal.SIGALRM}, 0)
            reason = run.exit_reason if entered else K.EXIT_INTR
            self.exits[reason] += 1
            if reason == K.EXIT_DEBUG:
                event = self.debug.debug_exit(run.exit.debug, run.exit.debug.pc & 0xFFFFFFFF)
                if event is not None:
                    self.cpu.host.event = event
                    return Stop("paused", 0, event.kind)
                continue                          # the guest's own #DB or #BP, given back
            self._serve(reason, run)
        return None

    def _woken(self) -> Stop:
        """A debugger stepped the halted guest and an interrupt woke it: stop before the
        guest runs on (KVM delivers the interrupt when the vCPU next enters)."""
        host = self.cpu.host
        host.break_next = False
        host.event = HostEvent("step", (self.cpu.mode.cs_base + self.cpu.state.eip) & 0xFFFFFFFF)
        return Stop("paused", 0, "step")

    def _arm_timer(self) -> None:
        """Kick the vCPU (SIGALRM) at the next timer's deadline, or to poll the host."""
        clock = self.clock
        delay = POLL_SECONDS
        deadline = clock.next_deadline()
        if deadline is not None:
            delay = min(delay, (deadline - clock.cycles()) / clock.cpu_hz)
        signal.setitimer(signal.ITIMER_REAL, max(delay, 1e-5))

    def _serve(self, reason: int, run) -> None:
        if reason == K.EXIT_IO:
            io = run.exit.io
            size, port, at = io.size, io.port, io.data_offset
            page = self.vcpu.page
            if port in self._console_ports:
                self.console_exits += 1
            for _ in range(io.count):
                if io.direction == K.EXIT_IO_OUT:
                    self.bus.write(port, size, int.from_bytes(page[at:at + size], "little"))
                else:
                    page[at:at + size] = self.bus.read(port, size).to_bytes(size, "little")
                at += size
        elif reason == K.EXIT_MMIO:
            mm = run.exit.mmio
            n, addr = mm.len, mm.phys_addr
            if mm.is_write:
                value = int.from_bytes(bytes(mm.data[:n]), "little")
                for off, size in _pieces(n):
                    _WRITE[size](self.mem, addr + off, value >> (8 * off))
            else:
                value = 0
                for off, size in _pieces(n):
                    value |= _READ[size](self.mem, addr + off) << (8 * off)
                mm.data[:n] = list(value.to_bytes(n, "little"))
        elif reason == K.EXIT_HLT:
            self.cpu.halt()
        elif reason in (K.EXIT_INTR, K.EXIT_IRQ_WINDOW_OPEN):
            pass
        elif reason == K.EXIT_SHUTDOWN:
            self.stop = Stop("triple-fault", 3, "triple fault: KVM_EXIT_SHUTDOWN")
        elif reason == K.EXIT_FAIL_ENTRY:
            code = run.exit.fail_entry.hardware_entry_failure_reason
            self.stop = Stop("unsupported", 3, f"stopped: KVM could not enter the guest "
                                               f"(KVM_EXIT_FAIL_ENTRY, hardware reason {code:#x})")
        elif reason == K.EXIT_INTERNAL_ERROR:
            ie = run.exit.internal
            data = " ".join(f"{x:#x}" for x in ie.data[:min(ie.ndata, 16)])
            what = "instruction emulation failed" if ie.suberror == 1 else f"suberror {ie.suberror}"
            self.stop = Stop("unsupported", 3, f"stopped: KVM internal error: {what}"
                                               + (f" ({data})" if data else ""))
        else:
            name = K.EXIT_NAMES.get(reason, str(reason))
            self.stop = Stop("unsupported", 3, f"stopped: unexpected KVM exit {name}")

    # -- reports --------------------------------------------------------------------------
    def stats(self) -> dict:
        s = super().stats()
        s["instructions"] = None
        s["mips"] = None
        s["interrupts"] = self.injected
        s["kvm_exits"] = {K.EXIT_NAMES.get(k, str(k)).lower(): v
                          for k, v in sorted(self.exits.items())}
        return s


def _set_segment(ks, seg: Segment) -> None:
    for k, v in seg.to_kvm().items():
        setattr(ks, k, v)


def _segment(ks) -> Segment:
    return Segment.from_kvm({k: getattr(ks, k) for k in (
        "selector", "base", "limit", "type", "s", "dpl", "present", "avl", "l", "db", "g",
        "unusable")})


def _pieces(n: int) -> list[tuple[int, int]]:
    """An MMIO access of ``n`` bytes as the sized accesses the memory bus takes."""
    return [(0, n)] if n in (1, 2, 4) else [(off, 4) for off in range(0, n, 4)]


_READ = {1: PhysicalMemory.read8, 2: PhysicalMemory.read16, 4: PhysicalMemory.read32}
_WRITE = {1: PhysicalMemory.write8, 2: PhysicalMemory.write16, 4: PhysicalMemory.write32}


def _kick(signum, frame) -> None:
    """SIGALRM: nothing to do here -- its arrival ended KVM_RUN with EINTR."""


def _drain_alarm() -> None:
    """Discard a timer signal still pending (blocked) after the last run."""
    signal.sigtimedwait({signal.SIGALRM}, 0)

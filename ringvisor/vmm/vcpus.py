"""Several virtual processors under trap-and-emulate and binary translation (``--smp N``).

The structure: the monitor owns the one physical processor of its machine and
multiplexes N virtual processors on it, as a hypervisor's scheduler does.  Each
virtual processor is a *context*: what the real processor holds for it while it
runs (its general registers, data segment registers, x87/SSE state, and the
interrupt frame it resumes with -- in guest terms, so that a translation the
cache dropped meanwhile is looked up again), its virtual CPU (``vcpu.py``: CR0,
CR3, CR4, the virtual IF, descriptor-table registers, MSRs), its real-address
mode (``realmode.py``), and its virtual local APIC (``vapic.py``) on the
guest's one APIC bus.  What the processors of a PC share stays one: guest
memory, the shadow page tables (keyed by address space, ``shadow.py``: two
processors on the same CR3 run on the same shadow), the translation cache and
its self-modifying-code tracking (``tcache.py``), the virtual PIC, IO-APIC and
HPET.

Why multiplexing rather than a monitor on each processor of an N-processor
machine: the monitor's region (its GDT, TSS and stack, the shadow tables'
frames) is laid out for one processor, and a monitor per processor would need
per-processor regions and a TLB shootdown of the shadows between physical
processors; here a shadow change is seen by the next virtual processor that
runs, as the one real TLB is the only one.  It is what VMware's monitor did
for SMP guests on one host CPU, and the virtual processors' interleaving is
exactly as deterministic as the machine's own (``hw/smp.py``).

Switching is the scheduler's, at an entry into the monitor (where the guest's
state is in the frame): a virtual processor runs ``QUANTUM`` instructions of
virtual time while another is runnable, then the next runnable one in APIC ID
order gets the processor; one that halts gives it up at once.  A slice's end
is an entry like a virtual interrupt's: a timer on the machine's clock sends
the monitor's notification self-IPI (``vapic.APIC_NOTIFY``).  Nothing is
switched while the monitor single-steps an instruction or an interrupt shadow
(STI, MOV SS) holds: the next entry does it.  So a run with the same inputs
gives the same output.  With one virtual processor there is no scheduler and
nothing of this costs anything.

Start-up (SDM Vol. 3 §8.4): the application processors wait for a SIPI with
their virtual APIC in wait-for-SIPI; INIT puts one back there; a SIPI with
vector V starts it in real mode at V000:0000, which the monitor runs in
virtual-8086 mode or its interpreter (``realmode.py``), as the BSP's own real
mode.  CPUID reports each virtual processor's own APIC ID: the monitor enables
CPUID faulting on the real processor (``hw/identify.py``) and emulates it
(``emulate.e_cpuid``), as Xen does for PV guests.  An INIT to the BSP, or to the
processor that sends it, stops the run with one line.
"""

from __future__ import annotations

from dataclasses import fields

from ringvisor.hw.identify import CPUID_FAULTING, CPUID_SIGNATURE, MSR_MISC_FEATURES_ENABLES
from ringvisor.hw.machine import Stop
from ringvisor.hw.realmode import vm86_segment
from ringvisor.hw.smp import CODE_ATTR, QUANTUM
from ringvisor.hw.state import CS, EDX, MSR_TSC_AUX, VM, FpuState, Segment, reset_state

from . import layout as L
from .vapic import VirtualApic
from .vcpu import CR0_WP, CR4_PSE, VirtualCpu

DATA = (0, 3, 4, 5)                     # ES, DS, FS, GS


class Context:
    """One virtual processor: what the real processor holds for it while another runs."""

    def __init__(self, sched: "VirtualProcessors", index: int, vcpu: VirtualCpu,
                 vapic: VirtualApic) -> None:
        self.sched = sched
        self.index = index
        self.vcpu = vcpu
        self.vapic = vapic
        vapic.vcpu = vcpu
        vapic.processor = self
        self.regs = [0] * 8
        self.segs = [vm86_segment(0) for _ in DATA]
        self.fpu = FpuState()
        self.frame: tuple | None = None     # (EIP in guest terms, CS, EFLAGS, SS, in the TC)
        self.halted = False
        self.real: dict = {"active": False, "engaged": False, "caches": [], "in_vm86": False,
                           "halted": False}
        self.held: tuple[dict, dict] = ({}, {})
        self.started = index == 0
        self.instructions = self.traps = self.interrupts = 0

    # -- the processor side of its virtual APIC (``VirtualApic.processor``) --------------
    def init(self) -> None:
        self.sched.init(self)

    def startup(self, vector: int) -> None:
        self.sched.startup(self, vector)

    def runnable(self) -> bool:
        """Could it run now (a context not running: its state is here)?"""
        if self.vapic.apic.s.wait_for_sipi:
            return False
        if not self.halted:
            return True
        v, a = self.vcpu, self.vapic
        return bool(a.intr and v.vif) or (a.nmi and not v.nmi_blocked)

    def report(self) -> dict:
        return {"apic_id": self.vapic.apic.initial_id, "instructions": self.instructions,
                "traps": self.traps, "interrupts": self.interrupts, "started": self.started}


class VirtualProcessors:
    """The monitor's virtual processors and their turns on the real one (module doc)."""

    def __init__(self, mon, n: int) -> None:
        self.mon = mon
        self.clock = mon.machine.clock
        bsp = mon.platform.vapic
        self.contexts = [Context(self, 0, mon.vcpu, bsp)]
        for i in range(1, n):
            ctx = Context(self, i, VirtualCpu(), VirtualApic(mon.machine, None, L.APIC_NOTIFY,
                                                              mon.name, bsp.apic.bus, i))
            self._reset(ctx)
            self.contexts.append(ctx)
        self.current = self.contexts[0]
        bsp.apic.bus.current = bsp.apic
        self.slice_end = self.clock.cycles() + QUANTUM
        self.timer = None
        self.mark = self._counters()
        # CPUID at the guest's rings 1 and 3 faults into the monitor (module doc)
        mon.cpu.state.msrs[MSR_MISC_FEATURES_ENABLES] = CPUID_FAULTING

    # -- INIT and SIPI ---------------------------------------------------------------------
    def _reset(self, ctx: Context) -> None:
        """INIT (SDM Vol. 3 §8.4.1, Table 9-1): the reset state, waiting for a SIPI."""
        st = reset_state()
        fresh = VirtualCpu(cr0=st.cr0)
        for f in fields(VirtualCpu):
            setattr(ctx.vcpu, f.name, getattr(fresh, f.name))
        ctx.regs = list(st.regs)
        ctx.regs[EDX] = CPUID_SIGNATURE
        ctx.segs = [vm86_segment(0) for _ in DATA]
        ctx.fpu = st.fpu
        ctx.frame = None
        ctx.halted = True
        ctx.held = ({}, {})
        ctx.real = {"active": True, "engaged": True, "in_vm86": False, "halted": False,
                    "caches": [[s.selector, s.base, s.limit, s.attr] for s in st.segs]}
        ctx.vapic.nmi = False
        ctx.vapic.apic.init_reset()

    def init(self, ctx: Context) -> None:
        if ctx.index == 0 or ctx is self.current:
            what = "the bootstrap processor" if ctx.index == 0 else "the processor that sends it"
            ctx.vapic._refuse(f"an INIT IPI to {what} (the monitors restart application "
                              f"processors only)")
            return
        self._reset(ctx)

    def startup(self, ctx: Context, vector: int) -> None:
        """A SIPI: a waiting processor starts in real mode at ``vector``000:0000; one not
        waiting ignores it (§8.4.3)."""
        apic = ctx.vapic.apic
        if not apic.s.wait_for_sipi:
            return
        apic.s.wait_for_sipi = False
        cs = Segment(vector << 8, vector << 12, 0xFFFF, CODE_ATTR)
        ctx.real["caches"][CS] = [cs.selector, cs.base, cs.limit, cs.attr]
        # its segments are what virtual-8086 mode loads: it runs there at once
        ctx.real["in_vm86"] = True
        ctx.frame = (0, cs.selector, self.mon.real_eflags(2) | VM, 0, False)
        ctx.halted = False
        ctx.started = True

    # -- scheduling --------------------------------------------------------------------------
    def _counters(self) -> tuple[int, int, int]:
        mon = self.mon
        return (mon.cpu.state.icount, sum(mon.traps.values()),
                mon.stats["virtual_interrupts"] + mon.stats["virtual NMIs"])

    def _account(self) -> None:
        now = self._counters()
        ctx = self.current
        ctx.instructions += now[0] - self.mark[0]
        ctx.traps += now[1] - self.mark[1]
        ctx.interrupts += now[2] - self.mark[2]
        self.mark = now

    def _next(self) -> Context | None:
        """The next runnable context after the running one, in APIC ID order."""
        n = len(self.contexts)
        i = self.current.index
        for k in range(1, n):
            ctx = self.contexts[(i + k) % n]
            if ctx.runnable():
                return ctx
        return None

    def _arm(self) -> None:
        """While another virtual processor could run, the slice ends on time (a guest
        spinning on a lock another one holds never enters the monitor by itself)."""
        if self.timer is None and self._next() is not None:
            self.timer = self.clock.schedule(self.slice_end, self._tick)

    def _tick(self) -> None:
        """The slice is over: make the monitor look (the notification self-IPI)."""
        self.timer = None
        self.current.vapic._notify()

    def schedule(self, f) -> None:
        """At the end of an entry: go on with the running virtual processor, or switch."""
        mon = self.mon
        if mon.step is not None or mon.shadow_at is not None or mon.machine.stop is not None:
            return
        now = self.clock.cycles()
        if not mon.halting and now < self.slice_end:
            self._arm()
            return
        nxt = self._next()
        if nxt is None:
            self.slice_end = now + QUANTUM
            if mon.halting and not any(self._can_wake(c) for c in self.contexts):
                # (with IF clear everywhere no timer or IPI can end it: as natively, where
                # one processor halted so stops the run)
                mon.stop(Stop("halted", 0, f"every virtual processor halted with interrupts "
                                           f"disabled ({mon.name})"))
            return
        self._switch(f, nxt)

    def _can_wake(self, ctx: Context) -> bool:
        """Could an interrupt wake ``ctx`` (the running one: as it stands in the monitor)?"""
        if ctx is self.current:
            v = self.mon.vcpu
            return v.vif or (ctx.vapic.nmi and not v.nmi_blocked)
        if ctx.vapic.apic.s.wait_for_sipi:
            return False
        return not ctx.halted or ctx.vcpu.vif or ctx.runnable()

    def _switch(self, f, nxt: Context) -> None:
        mon = self.mon
        st = mon.cpu.state
        cur = self.current
        self._account()
        # out: the running one's state as the real processor holds it at this entry
        cur.regs = list(st.regs)
        cur.segs = [st.segs[i] for i in DATA]
        cur.fpu = st.fpu
        in_tc = mon.in_tc(f)
        cur.frame = (mon.guest_eip(f) if in_tc else f.eip, f.cs, f.eflags, f.ss, in_tc)
        cur.halted = mon.halting
        cur.real = mon.real.get_state()
        cur.held = (mon.gdt.held, mon.ldt.held)
        # in: the next one's
        self.current = nxt
        v = nxt.vcpu
        mon.vcpu = mon.gm.vcpu = v
        mon.platform.vapic = nxt.vapic
        nxt.vapic.apic.bus.current = nxt.vapic.apic
        mon.real.set_state(nxt.real)
        mon.gdt.held, mon.ldt.held = nxt.held
        st.regs[:] = nxt.regs
        for i, seg in zip(DATA, nxt.segs):
            st.segs[i] = seg
        st.fpu = nxt.fpu
        st.msrs[MSR_TSC_AUX] = v.msrs.get(MSR_TSC_AUX, 0)
        if (cur.vcpu.cr0 ^ v.cr0) & CR0_WP or (cur.vcpu.cr4 ^ v.cr4) & CR4_PSE:
            mon.shadow.flush()        # (what a shadow entry allows follows them: ``set_cr``)
        mon.switch_shadow()
        if not mon.real.active:
            # the real GDT and LDT hold the tables of the processor that loaded them last
            for table in (mon.gdt, mon.ldt):
                if table.source != table.table() or table.moved():
                    table.reload()
        mon.ldt.install()
        mon.load_debug()
        eip, f.cs, f.eflags, f.ss, in_tc = nxt.frame
        f.eip = mon.kernel_entry(eip) if in_tc else eip
        mon.cpu.mode_changed()
        mon.halting = nxt.halted
        mon.stats["vcpu switches"] += 1
        self.slice_end = self.clock.cycles() + QUANTUM
        if self.timer is not None:
            self.clock.cancel(self.timer)
            self.timer = None
        self._arm()
        # what waits for it is taken as between two of its instructions
        mon.delivered = False
        mon.deliver_interrupts(f)
        if mon.delivered:
            mon.halting = False
        if mon.real.active:
            mon.real.settle(f)
        nxt.vapic.check()

    def report(self) -> list[dict]:
        self._account()
        return [c.report() for c in self.contexts]

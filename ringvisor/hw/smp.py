"""Several processors: start-up by INIT and SIPI, and their deterministic interleaving.

The processors of a PC run at once; here they take turns.  Each runnable
processor runs a fixed *quantum* of instructions (``QUANTUM``), in the order of
their APIC IDs, then the next -- so a run with the same inputs interleaves the
same way and prints the same output, whatever the host does (QEMU's single-threaded
TCG round-robins its vCPUs the same way, with a time slice instead of a count).

Virtual time is the sum of the instructions all processors have retired (one
processor: its own count, exactly as before), so a quantum is a slice of time in
which one processor runs; timers fire between quanta, and a quantum ends early
when a device arms a timer that falls due within it.  Every processor reads the
same TSC, the machine's cycles (``Cpu.tsc_base``), plus its own TSC offset.

Start-up (SDM Vol. 3 §8.4.3, the MP initialization protocol): at power-on every
application processor (AP) waits for a start-up IPI, halted with its local APIC
in wait-for-SIPI.  An INIT IPI puts a processor back there (the BSP restarts at
the reset vector, as QEMU has it); a SIPI with vector V starts a waiting AP in
real mode at V000:0000 (CS base V << 12, EIP 0) -- the real-mode trampoline
every SMP kernel copies below 1 MiB.  A SIPI to a processor not waiting is
ignored, as the SDM says of the second SIPI of the protocol.
"""

from __future__ import annotations

from .faults import TripleFault, UnsupportedFeature
from .state import CS, EDX, IF, Segment, reset_state

MAX_CPUS = 8
QUANTUM = 4096                # instructions a processor runs before the next takes its turn
CODE_ATTR = 0x9B              # P, S, code, execute/read, accessed (SDM Table 9-1)


def runnable(cpu) -> bool:
    st = cpu.state
    return not st.halted or (st.intr and st.eflags & IF) or (st.nmi_pending and not st.nmi_blocked)


class Processors:
    """The machine's processors (``machine.cpus``; the first is the BSP) and their turns."""

    def __init__(self, machine, signature: int) -> None:
        self.m = machine
        self.signature = signature         # EDX after RESET and INIT: the CPUID signature
        self.current = machine.cpus[0]
        # where a run that stopped mid-round takes up again: the index of the processor
        # whose turn comes next, the count at which a turn cut short by the run's
        # instruction limit would have ended (None: a whole turn), the cycle of the next
        # host poll and whether a processor has run in the round, so that runs of N and
        # then M instructions interleave, poll and idle exactly as one run of N + M -- a
        # debugger, a replay or a hypervisor stepping the machine in short runs gives
        # every processor its turn
        self._resume: tuple[int, int | None, int | None, bool] = (0, None, None, False)
        # told when the turn passes to another processor (a hypervisor that keeps per-CPU
        # state in shared memory puts the incoming one's back)
        self.turn_hook = None
        for cpu in machine.cpus:
            cpu.on_init = self.init
            cpu.on_startup = self.startup
        for cpu in machine.cpus[1:]:
            cpu.set_state(self._reset_state().to_dict())
            cpu.state.halted = True         # waiting for a SIPI (its APIC says so too)

    def _reset_state(self):
        st = reset_state()
        st.regs[EDX] = self.signature
        return st

    # -- INIT and SIPI ----------------------------------------------------------------------
    def init(self, cpu) -> None:
        st = self._reset_state()
        if cpu is not self.m.cpus[0]:
            st.halted = True
        cpu.set_state(st.to_dict())
        cpu.apic.init_reset()

    def startup(self, cpu, vector: int) -> None:
        apic = cpu.apic
        if not apic.s.wait_for_sipi:
            return
        st = self._reset_state()
        st.segs[CS] = Segment(vector << 8, vector << 12, 0xFFFF, CODE_ATTR)
        st.eip = 0
        cpu.set_state(st.to_dict())
        apic.s.wait_for_sipi = False

    # -- running ------------------------------------------------------------------------------
    def shorten(self, cycle: int) -> None:
        """A timer armed for ``cycle``: the running processor's quantum ends by then."""
        cpu, clock = self.current, self.m.clock
        cpu.shorten(cpu.state.icount + cycle - clock.cycles())

    def cycles(self) -> int:
        return sum(c.state.icount for c in self.m.cpus)

    def run(self, max_instructions: int | None):
        from .machine import Stop          # (the machine imports this module)
        m, clock, cpus = self.m, self.m.clock, self.m.cpus
        limit = None if max_instructions is None else self.cycles() + max_instructions
        first, turn_end, next_poll, ran = self._resume
        if next_poll is None:
            next_poll = (self.cycles() // m.slice + 1) * m.slice
        try:
            while m.stop is None:
                if m.pause_reason is not None:
                    return Stop("paused", 0, m.pause_reason)
                for i in range(first, len(cpus)):
                    cpu = cpus[i]
                    if m.stop is not None:
                        break
                    if not runnable(cpu):
                        turn_end = None
                        continue
                    now = self.cycles()
                    if limit is not None and now >= limit:
                        self._resume = (i, turn_end, next_poll, ran)
                        m.stop = Stop("limit", 4, f"stopped after {max_instructions} instructions")
                        break
                    start = cpu.state.icount
                    full = QUANTUM if turn_end is None else max(turn_end - start, 1)
                    deadline = clock.next_deadline()
                    if deadline is not None:
                        full = min(full, max(deadline - clock.cycles(), 1))
                    budget = full if limit is None else min(full, limit - now)
                    turn_end = None
                    turn = cpu is not self.current
                    self.current = cpu
                    m.apic_bus.current = cpu.apic
                    if turn and self.turn_hook is not None:
                        self.turn_hook(cpu)
                    cpu.run(start + budget)
                    ran = True
                    clock.run_due()
                    if budget < full and cpu.state.icount == start + budget and m.stop is None:
                        # the run's limit cut this turn short: the next run finishes it
                        self._resume = (i, start + full, next_poll, True)
                        m.stop = Stop("limit", 4, f"stopped after {max_instructions} instructions")
                        break
                    self._resume = (i + 1, None, next_poll, True)
                first = 0
                if m.stop is not None:
                    break
                if self.cycles() >= next_poll:
                    next_poll = (self.cycles() // m.slice + 1) * m.slice
                    m._poll_host()
                if not ran:
                    self._idle()
                ran = False
                self._resume = (0, None, None, False)
        except TripleFault as e:
            m.stop = Stop("triple-fault", 3, f"triple fault on CPU {self.index()}: {e}\n{m.report(self.current)}")
        except UnsupportedFeature as e:
            m.stop = Stop("unsupported", 3, f"stopped on CPU {self.index()}: {e}\n{m.report(self.current)}")
        finally:
            m.apic_bus.current = cpus[0].apic
        return m.stop

    def index(self) -> int:
        return self.m.cpus.index(self.current)

    def _idle(self) -> None:
        """No processor can run: skip to the next timer, wait for the host, or stop."""
        self.m.skip_to_next_event("every processor halted and nothing can wake them")

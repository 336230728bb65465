"""The local APIC (xAPIC), one per processor, and the APIC bus between them.

Register map (offsets in the 4 KiB page at IA32_APIC_BASE, 32-bit accesses)
-----------------------------------------------------------------------------
    0x020 ID (bits 31:24)            0x030 version (RO: 0x00050014)
    0x080 TPR                        0x090 APR (RO, 0)      0x0A0 PPR (RO)
    0x0B0 EOI (WO)                   0x0D0 LDR (bits 31:24) 0x0E0 DFR (bits 31:28)
    0x0F0 spurious vector (bit 8: software enable, bit 12: no EOI broadcast)
    0x100-0x170 ISR    0x180-0x1F0 TMR    0x200-0x270 IRR   (RO, 8 x 32 bits)
    0x280 ESR (a write clears it)
    0x300 ICR low (a write sends)    0x310 ICR high (destination in bits 31:24)
    0x320 LVT timer  0x330 thermal  0x340 perf  0x350 LINT0  0x360 LINT1  0x370 error
    0x380 timer initial count        0x390 current count (RO)   0x3E0 divide configuration

Behaviour is QEMU's (hw/intc/apic.c, apic_common.c), the reference this PC is
checked against, which follows SDM Vol. 3 chapter 10 except where noted:

* Accesses narrower than 32 bits read 0 and write nothing; an unknown register
  sets ESR bit 7 (illegal register address) and reads 0.
* The timer counts at 1 GHz (QEMU's APIC bus, one tick per nanosecond of
  virtual time) divided by 2^shift, where shift comes from the divide
  configuration (0b1011: divide by 1).  One-shot fires when the count reaches 0;
  periodic reloads (period = initial count + 1 ticks).  TSC-deadline mode
  (LVT timer bits 18:17 = 10b) fires when the TSC reaches IA32_TSC_DEADLINE.
* Software-disabled (SVR bit 8 clear): nothing is delivered to the processor,
  requests stay in IRR (QEMU does not force the LVT masks the SDM describes).
* The 8259A's INT output reaches the processor while LINT0 is unmasked or the
  APIC is hardware-disabled (IA32_APIC_BASE bit 11 clear); an ExtINT request
  is taken before any APIC vector, as ExtINT ignores priorities.
* A write to the APIC page outside its registers (offset 0 or beyond 0xFFF of
  the 1 MiB window) is a message-signalled interrupt (the MSI address format:
  destination in bits 19:12, data = vector | delivery mode << 8).
* Lowest-priority delivery goes to the first APIC of the destination set
  (QEMU: no arbitration).  A level-triggered vector's EOI is broadcast to the
  IO-APIC unless SVR bit 12 is set.
* Hardware-disabling the APIC (clearing IA32_APIC_BASE bit 11) is permanent
  until reset, as QEMU has it (the SDM lets it be re-enabled, with the APIC in
  its reset state); CPUID.1:EDX.APIC then reads 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Callable

from ..state import MSR_APIC_BASE, MSR_TSC_DEADLINE
from ..clock import TSC_PER_CYCLE

APIC_DEFAULT_BASE = 0xFEE00000
APIC_WINDOW = 0x100000          # QEMU's "apic-msi" region: the registers and MSI writes
APIC_VERSION = 0x14 | (6 - 1) << 16   # an integrated APIC with six LVT entries

BASE_BSP, BASE_ENABLE = 1 << 8, 1 << 11
BASE_ADDR_MASK = 0xFFFFF000
SV_ENABLE, SV_NO_EOI_BROADCAST = 1 << 8, 1 << 12
LVT_MASKED, LVT_LEVEL, LVT_REMOTE_IRR, LVT_PENDING = 1 << 16, 1 << 15, 1 << 14, 1 << 12
LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR = range(6)
TIMER_PERIODIC, TIMER_TSC_DEADLINE = 1 << 17, 2 << 17
TIMER_MODE = 3 << 17
# delivery modes (ICR bits 10:8, LVT bits 10:8, IO-APIC redirection bits 10:8)
DM_FIXED, DM_LOWEST, DM_SMI, DM_NMI, DM_INIT, DM_SIPI, DM_EXTINT = 0, 1, 2, 4, 5, 6, 7
ESR_SEND_ILLEGAL_VECTOR, ESR_RECEIVE_ILLEGAL_VECTOR, ESR_ILLEGAL_ADDRESS = 1 << 5, 1 << 6, 1 << 7
# a read-write mask per LVT entry (SDM Vol. 3 Figure 10-8): the rest reads as 0
LVT_WRITABLE = (0x700FF, 0x107FF, 0x107FF, 0x1A7FF, 0x1A7FF, 0x100FF)
NS_PER_TICK = 1                 # QEMU's APIC bus: 1 GHz


@dataclass
class ApicState:
    """One local APIC's registers (names as in QEMU's APICCommonState)."""

    apicbase: int = APIC_DEFAULT_BASE | BASE_ENABLE
    id: int = 0
    tpr: int = 0
    spurious_vec: int = 0xFF
    log_dest: int = 0
    dest_mode: int = 0xF
    isr: int = 0                # 256-bit vectors, bit n = vector n
    tmr: int = 0
    irr: int = 0
    esr: int = 0
    icr_lo: int = 0
    icr_hi: int = 0
    lvt: list[int] = field(default_factory=lambda: [LVT_MASKED] * 6)
    initial_count: int = 0
    divide_conf: int = 0
    load_time: int = 0          # virtual ns at which the initial count was written
    tsc_deadline: int = 0
    wait_for_sipi: bool = False
    sipi_vector: int = -1       # a SIPI waiting for the processor (-1: none)
    init_pending: bool = False


def count_shift(divide_conf: int) -> int:
    """log2 of the timer's divisor (SDM Vol. 3 Figure 10-10: 0b1011 divides by 1)."""
    v = (divide_conf & 3) | ((divide_conf >> 1) & 4)
    return (v + 1) & 7


def highest(bits: int) -> int:
    """The highest vector set in a 256-bit register, or -1."""
    return bits.bit_length() - 1


class ApicBus:
    """The APIC bus: every local APIC, and who listens to EOI broadcasts (the IO-APIC).

    Interrupt messages -- IPIs from an ICR, the IO-APIC's redirections, MSIs -- are
    delivered here to the APICs their destination selects (SDM Vol. 3 §10.6.2).
    """

    state_name = "lapic"
    state_version = 1

    def __init__(self) -> None:
        self.apics: list[LocalApic] = []
        self.eoi_listeners: list[Callable[[int], None]] = []
        self.current: LocalApic | None = None     # the APIC of the processor running now

    # -- the APIC page: each processor sees its own APIC there ------------------------------
    def mmio_read(self, offset: int, size: int) -> int:
        return self.current.mmio_read(offset, size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.current.mmio_write(offset, size, value)

    # -- state: every local APIC's --------------------------------------------------------
    def get_state(self) -> list:
        return [a.get_state() for a in self.apics]

    def set_state(self, state: list) -> None:
        if len(state) != len(self.apics):
            raise ValueError(f"the saved machine has {len(state)} local APICs, this one "
                             f"{len(self.apics)}")
        for a, st in zip(self.apics, state):
            a.set_state(st)

    def destinations(self, dest: int, logical: bool) -> list["LocalApic"]:
        if not logical:
            if dest == 0xFF:
                return list(self.apics)
            return [a for a in self.apics if a.s.id == dest][:1]
        out = []
        for a in self.apics:
            s = a.s
            if s.dest_mode == 0xF:                      # flat model
                if dest & s.log_dest:
                    out.append(a)
            elif s.dest_mode == 0:                      # cluster model
                if (dest & 0xF0) == (s.log_dest & 0xF0) and dest & s.log_dest & 0x0F:
                    out.append(a)
        return out

    def deliver(self, targets: list["LocalApic"], mode: int, vector: int, level_trig: bool) -> None:
        if mode == DM_LOWEST:
            targets = targets[:1]
        elif mode not in (DM_FIXED, DM_NMI, DM_INIT, DM_SIPI, DM_SMI):
            return
        for a in targets:
            a.receive(mode, vector, level_trig)

    def message(self, dest: int, logical: bool, mode: int, vector: int, level_trig: bool) -> None:
        """An interrupt message from the IO-APIC or a device's MSI."""
        self.deliver(self.destinations(dest, logical), mode, vector, level_trig)

    def msi(self, address: int, data: int) -> None:
        """A message-signalled interrupt (the 0xFEExxxxx address format, SDM §10.11)."""
        self.message((address >> 12) & 0xFF, bool(address >> 2 & 1), (data >> 8) & 7, data & 0xFF,
                     bool(data >> 15 & 1))

    def eoi(self, vector: int) -> None:
        for listener in self.eoi_listeners:
            listener(vector)


class LocalApic:
    """A processor's local APIC.  ``cpu`` must offer ``set_intr(level)``,
    ``raise_nmi()``, ``init()``, ``startup(vector)`` and ``tsc()``; ``pic`` is the
    8259A pair whose INT output is wired to LINT0 (None on an AP)."""

    def __init__(self, cpu, clock, bus: ApicBus, apic_id: int = 0, bsp: bool = True,
                 pic=None) -> None:
        self.cpu = cpu
        self.clock = clock
        self.bus = bus
        self.pic = pic
        self.bsp = bsp
        self.initial_id = apic_id
        self.pic_level = False
        self._timer = None
        self._next_time = 0
        self.s = ApicState()
        self.reset()
        bus.apics.append(self)
        if bus.current is None:
            bus.current = self

    # -- reset ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Power-on/RESET: the base MSR at 0xFEE00000 enabled (BSP flag on the BSP)."""
        self.s = ApicState(apicbase=APIC_DEFAULT_BASE | BASE_ENABLE | (BASE_BSP if self.bsp else 0),
                           id=self.initial_id)
        self.init_reset()

    def init_reset(self) -> None:
        """What INIT resets (SDM Vol. 3 §10.4.7.3): everything but the ID and the base."""
        s = self.s
        self.s = ApicState(apicbase=s.apicbase, id=s.id, wait_for_sipi=not self.bsp)
        self._cancel_timer()
        self._update()

    # -- the base MSR --------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return bool(self.s.apicbase & BASE_ENABLE)

    @property
    def base(self) -> int:
        return self.s.apicbase & BASE_ADDR_MASK

    def read_base_msr(self) -> int:
        return self.s.apicbase

    def write_base_msr(self, value: int) -> bool:
        """WRMSR IA32_APIC_BASE; False if a reserved bit is set (#GP(0): bits 7:0, 10
        (x2APIC: not supported) and above the 36-bit physical address width)."""
        if value & ~(BASE_ADDR_MASK | BASE_BSP | BASE_ENABLE | 0xF00000000) or value & 0x4FF:
            return False
        s = self.s
        keep = s.apicbase & (BASE_BSP | BASE_ENABLE)
        s.apicbase = (value & (BASE_ADDR_MASK | 0xF00000000)) | keep
        if not value & BASE_ENABLE:
            s.apicbase &= ~BASE_ENABLE
            s.spurious_vec &= ~SV_ENABLE
        self._update()
        return True

    def read_msr(self, n: int) -> int:
        return self.s.apicbase if n == MSR_APIC_BASE else self.s.tsc_deadline

    def write_msr(self, n: int, value: int) -> bool:
        if n == MSR_APIC_BASE:
            return self.write_base_msr(value)
        self.write_tsc_deadline(value)
        return True

    # -- the processor's side ----------------------------------------------------------
    def _pending(self) -> int:
        """The vector to deliver (>0), 0 if none, -1 if masked by the processor priority."""
        s = self.s
        if not s.spurious_vec & SV_ENABLE or not s.irr:
            return 0
        irrv = highest(s.irr)
        ppr = self.ppr()
        if ppr and (irrv & 0xF0) <= (ppr & 0xF0):
            return -1
        return irrv

    def accepts_pic(self) -> bool:
        return not self.s.apicbase & BASE_ENABLE or not self.s.lvt[LVT_LINT0] & LVT_MASKED

    def _extint(self) -> bool:
        return self.pic_level and self.accepts_pic()

    def _update(self) -> None:
        self.cpu.set_intr(self._pending() > 0 or self._extint())

    def pic_output(self, level: bool) -> None:
        """The 8259A's INT output, wired to LINT0."""
        self.pic_level = level
        lvt = self.s.lvt[LVT_LINT0]
        mode = (lvt >> 8) & 7
        if level and not lvt & LVT_MASKED:
            if mode == DM_NMI:
                self.cpu.raise_nmi()
            elif mode == DM_FIXED:
                self.set_irq(lvt & 0xFF, bool(lvt & LVT_LEVEL))
        elif not level and mode == DM_FIXED and lvt & LVT_LEVEL:
            self.s.irr &= ~(1 << (lvt & 0xFF))
        self._update()

    def acknowledge(self) -> int | None:
        """The INTA cycle: an ExtINT request from the 8259A first, then the highest
        APIC vector (moved from IRR to ISR), or the spurious vector when the processor
        priority masked it meanwhile."""
        s = self.s
        if self._extint() and (s.lvt[LVT_LINT0] >> 8 & 7 == DM_EXTINT or not self.enabled):
            return self.pic.acknowledge()
        v = self._pending()
        if v == 0:
            return self.pic.acknowledge() if self._extint() else None
        if v < 0:
            return s.spurious_vec & 0xFF
        s.irr &= ~(1 << v)
        s.isr |= 1 << v
        self._update()
        return v

    def ppr(self) -> int:
        """Processor priority (SDM Vol. 3 §10.8.3.1): the TPR, or the class of the
        highest in-service vector if that is higher."""
        s = self.s
        isrv = max(highest(s.isr), 0)
        return s.tpr if s.tpr >> 4 >= isrv >> 4 else isrv & 0xF0

    def set_irq(self, vector: int, level_trig: bool) -> None:
        """Accept a fixed interrupt: the vector enters IRR (TMR says its trigger mode)."""
        s = self.s
        if vector < 16:
            s.esr |= ESR_RECEIVE_ILLEGAL_VECTOR
            self._local_error()
            return
        s.irr |= 1 << vector
        if level_trig:
            s.tmr |= 1 << vector
        else:
            s.tmr &= ~(1 << vector)
        self._update()

    def receive(self, mode: int, vector: int, level_trig: bool) -> None:
        """A message from the APIC bus."""
        if mode in (DM_FIXED, DM_LOWEST):
            self.set_irq(vector, level_trig)
        elif mode == DM_NMI:
            self.cpu.raise_nmi()
        elif mode == DM_INIT:
            self.cpu.init()
        elif mode == DM_SIPI:
            self.cpu.startup(vector)

    def eoi(self) -> None:
        s = self.s
        v = highest(s.isr)
        if v < 0:
            return
        s.isr &= ~(1 << v)
        if not s.spurious_vec & SV_NO_EOI_BROADCAST and s.tmr >> v & 1:
            self.bus.eoi(v)
        self._update()

    def _local_deliver(self, n: int) -> None:
        lvt = self.s.lvt[n]
        if lvt & LVT_MASKED:
            return
        mode = (lvt >> 8) & 7
        if mode == DM_NMI:
            self.cpu.raise_nmi()
        elif mode == DM_EXTINT:
            self._update()
        elif mode == DM_FIXED:
            self.set_irq(lvt & 0xFF, n in (LVT_LINT0, LVT_LINT1) and bool(lvt & LVT_LEVEL))

    def _local_error(self) -> None:
        if not self.s.lvt[LVT_ERROR] & LVT_MASKED:
            self._local_deliver(LVT_ERROR)

    def lint1(self) -> None:
        """An edge on LINT1 (the PC's NMI line)."""
        self._local_deliver(LVT_LINT1)

    # -- inter-processor interrupts -----------------------------------------------------
    def _send_ipi(self) -> None:
        """A write to ICR low sends (SDM Vol. 3 §10.6.1)."""
        s = self.s
        lo = s.icr_lo
        vector, mode = lo & 0xFF, (lo >> 8) & 7
        shorthand = (lo >> 18) & 3
        if shorthand == 0:
            targets = self.bus.destinations(s.icr_hi >> 24, bool(lo >> 11 & 1))
        elif shorthand == 1:
            targets = [self]
        elif shorthand == 2:
            targets = list(self.bus.apics)
        else:
            targets = [a for a in self.bus.apics if a is not self]
        if mode == DM_INIT and not lo & (1 << 14) and lo & (1 << 15):
            return                     # INIT level de-assert: only synchronises arbitration IDs
        if mode in (DM_FIXED, DM_LOWEST) and vector < 16:
            s.esr |= ESR_SEND_ILLEGAL_VECTOR
            self._local_error()
            return
        self.bus.deliver(targets, mode, vector, bool(lo >> 15 & 1))

    # -- the timer -----------------------------------------------------------------------
    def _timer_mode(self) -> int:
        return self.s.lvt[LVT_TIMER] & TIMER_MODE

    def current_count(self) -> int:
        s = self.s
        if self._timer_mode() == TIMER_TSC_DEADLINE:
            return 0
        d = (self.clock.now_ns() - s.load_time) // NS_PER_TICK >> count_shift(s.divide_conf)
        if self._timer_mode() == TIMER_PERIODIC:
            return s.initial_count - d % (s.initial_count + 1)
        return 0 if d >= s.initial_count else s.initial_count - d

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self.clock.cancel(self._timer)
            self._timer = None

    def _next_expiry(self, now_ns: int) -> int | None:
        """Virtual ns of the next expiry (QEMU's apic_next_timer), None if none."""
        s = self.s
        if s.lvt[LVT_TIMER] & LVT_MASKED:
            return None
        shift = count_shift(s.divide_conf)
        d = (now_ns - s.load_time) // NS_PER_TICK >> shift
        if self._timer_mode() == TIMER_PERIODIC:
            if not s.initial_count:
                return None
            period = s.initial_count + 1
            d = (d // period + 1) * period
        else:
            if d >= s.initial_count:
                return None
            d = s.initial_count + 1
        return s.load_time + (d << shift) * NS_PER_TICK

    def _timer_update(self, now_ns: int | None = None) -> None:
        self._cancel_timer()
        mode = self._timer_mode()
        if mode == TIMER_TSC_DEADLINE:
            if self.s.tsc_deadline and not self.s.lvt[LVT_TIMER] & LVT_MASKED:
                # TSC_PER_CYCLE ticks to a cycle of the virtual clock; a deadline is never early
                ticks = max(0, self.s.tsc_deadline - self.cpu.tsc())
                at = self.clock.cycles() + -(-ticks // TSC_PER_CYCLE)
                self._timer = self.clock.schedule(at, self._deadline_fired)
            return
        t = self._next_expiry(self.clock.now_ns() if now_ns is None else now_ns)
        if t is not None:
            self._next_time = t
            self._timer = self.clock.schedule(self.clock.ns_to_cycles(t), self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._local_deliver(LVT_TIMER)
        self._timer_update(self._next_time)

    def _deadline_fired(self) -> None:
        self._timer = None
        self.s.tsc_deadline = 0          # the deadline is consumed (SDM §10.5.4.1)
        self._local_deliver(LVT_TIMER)

    def write_tsc_deadline(self, value: int) -> None:
        self.s.tsc_deadline = value & 0xFFFFFFFFFFFFFFFF
        if self._timer_mode() == TIMER_TSC_DEADLINE:
            self._timer_update()

    # -- MMIO ----------------------------------------------------------------------------
    def mmio_read(self, offset: int, size: int) -> int:
        s = self.s
        if size != 4:
            # narrower: QEMU's apic_mem_read answers 0; wider (a MOVQ, a CMPXCHG8B): beyond
            # QEMU's valid.max_access_size 4, an invalid access that reads 0 (the SDM wants
            # aligned 32-bit accesses, §10.4.1; tests/hwguests/mmiosplit)
            return 0
        index = (offset >> 4) & 0xFF
        if index == 0x02:
            return s.id << 24
        if index == 0x03:
            return APIC_VERSION
        if index == 0x08:
            return s.tpr
        if index in (0x09, 0x0B):
            return 0
        if index == 0x0A:
            return self.ppr()
        if index == 0x0D:
            return s.log_dest << 24
        if index == 0x0E:
            return (s.dest_mode << 28) | 0x0FFFFFFF
        if index == 0x0F:
            return s.spurious_vec
        if 0x10 <= index < 0x28:
            reg = (s.isr, s.tmr, s.irr)[(index - 0x10) >> 3]
            return (reg >> (32 * (index & 7))) & 0xFFFFFFFF
        if index == 0x28:
            return s.esr
        if index == 0x30:
            return s.icr_lo
        if index == 0x31:
            return s.icr_hi
        if 0x32 <= index <= 0x37:
            return s.lvt[index - 0x32]
        if index == 0x38:
            return s.initial_count
        if index == 0x39:
            return self.current_count()
        if index == 0x3E:
            return s.divide_conf
        s.esr |= ESR_ILLEGAL_ADDRESS
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if size != 4:
            return                      # (dropped, narrower or wider: as mmio_read)
        index = (offset >> 4) & 0xFF
        if offset > 0xFFF or index == 0:
            self.bus.msi(APIC_DEFAULT_BASE + offset, value)
            return
        s = self.s
        if index == 0x02:
            s.id = value >> 24
        elif index == 0x08:
            s.tpr = value & 0xFF
            self._update()
        elif index == 0x0B:
            self.eoi()
        elif index == 0x0D:
            s.log_dest = value >> 24
        elif index == 0x0E:
            s.dest_mode = value >> 28
        elif index == 0x0F:
            s.spurious_vec = value & 0x1FF   # (bit 12 is writable only where VER bit 24 says so)
            self._update()
        elif index == 0x28:
            pass        # QEMU keeps the ESR as it is (the SDM has a write latch and clear it)
        elif index == 0x30:
            s.icr_lo = value & ~LVT_PENDING   # delivery is immediate: the status reads idle
            self._send_ipi()
        elif index == 0x31:
            s.icr_hi = value & 0xFF000000
        elif 0x32 <= index <= 0x37:
            n = index - 0x32
            old_mode = self._timer_mode()
            s.lvt[n] = value & LVT_WRITABLE[n] & ~LVT_PENDING
            if n == LVT_TIMER:
                if self._timer_mode() != old_mode:
                    # a mode change disarms the timer (SDM Vol. 3 §10.5.4.1)
                    s.tsc_deadline = 0
                self._timer_update()
            elif n == LVT_LINT0:
                self.pic_output(self.pic_level)
        elif index == 0x38:
            if self._timer_mode() == TIMER_TSC_DEADLINE:
                return                   # ignored in TSC-deadline mode (SDM §10.5.4.1)
            s.initial_count = value
            s.load_time = self.clock.now_ns()
            self._timer_update(s.load_time)
        elif index == 0x3E:
            s.divide_conf = value & 0xB
            self._timer_update()
        elif index in (0x03, 0x09, 0x0A, 0x39) or 0x10 <= index < 0x28:
            pass                         # read-only
        else:
            s.esr |= ESR_ILLEGAL_ADDRESS

    # -- state (saved by the ApicBus, with the other processors' APICs) ------------------
    def get_state(self) -> dict:
        d = asdict(self.s)
        d["pic_level"] = self.pic_level
        d["timer_at"] = self._timer.cycle if self._timer is not None and self._timer.pending else -1
        d["next_time"] = getattr(self, "_next_time", 0)
        return d

    def set_state(self, state: dict) -> None:
        names = {f.name for f in fields(ApicState)}
        d = {k: v for k, v in state.items() if k in names}
        for k, v in d.items():
            if k == "lvt":
                d[k] = [int(x) & 0xFFFFFFFF for x in v]
                if len(d[k]) != 6:
                    raise ValueError("the local APIC has six LVT entries")
            elif k in ("wait_for_sipi", "init_pending"):
                d[k] = bool(v)
            else:
                d[k] = int(v)
        self._cancel_timer()
        self.s = ApicState(**d)
        self.pic_level = bool(state.get("pic_level", False))
        self._next_time = int(state.get("next_time", 0))
        at = int(state.get("timer_at", -1))
        if at >= 0:
            fire = self._deadline_fired if self._timer_mode() == TIMER_TSC_DEADLINE else self._timer_fired
            self._timer = self.clock.schedule(at, fire)
        self.cpu.set_intr(self._pending() > 0 or self._extint())

"""MC146818 real-time clock and CMOS RAM (ports 0x70/0x71, IRQ 8).

Register map
------------
    port  dir  register
    0x70  W    index: bits 6:0 select a CMOS byte, bit 7 = NMI disable (kept,
               no effect: this machine has no NMI sources)
    0x70  R    0xFF (write-only, as in QEMU)
    0x71  R/W  the selected byte

    index  contents
    0x00   seconds        0x01  seconds alarm
    0x02   minutes        0x03  minutes alarm
    0x04   hours          0x05  hours alarm   (12-hour mode: bit 7 = PM)
    0x06   day of week (1 = Sunday)   0x07 day of month   0x08 month   0x09 year % 100
    0x0A   A: bit 7 UIP (read only), 6:4 divider (010 = running), 3:0 periodic rate
    0x0B   B: 7 SET, 6 PIE, 5 AIE, 4 UIE, 3 SQWE, 2 DM (1 = binary), 1 24/12, 0 DSE
    0x0C   C: 7 IRQF, 6 PF, 5 AF, 4 UF -- read-only, cleared by reading
    0x0D   D: 7 VRT (battery good)
    0x12   hard disk types: drive 0 in the high nibble, 1 in the low (0xF: see 0x19/0x1A)
    0x14   equipment byte: bit 1 FPU present, bit 2 PS/2 mouse
    0x15/0x16  base memory in KiB (640)
    0x17/0x18  extended memory above 1 MiB in KiB, capped at 65535 (also 0x30/0x31)
    0x19/0x1A  drive 0 / 1 extended type: 47, user-defined, its geometry at
               0x1B / 0x24: cylinders (2 bytes), heads, write precompensation
               (0xFFFF: none), control byte (0xC0, | 0x08 beyond 8 heads),
               landing zone (2 bytes: the cylinders), sectors per track
    0x32   century (also 0x37, the PS/2 century byte, set once at power-on)
    0x34/0x35  memory between 16 MiB and 4 GiB in 64 KiB units, capped at 65535
    0x38   boot order, third device (high nibble) | 1 = skip the floppy boot check
    0x39   the BIOS translation of IDE drives 0-3, 2 bits each (0 none, 1 LBA, 2 large)
    0x3D   boot order, second device (high nibble) | first (1 floppy, 2 disk, 3 CD)
    0x5B-0x5D  memory above 4 GiB in 64 KiB units
    others     plain CMOS RAM, zero at power-on

Time is ``start_time`` (seconds since the Unix epoch, UTC; default
2026-01-01 00:00:00 so runs are reproducible -- pass ``int(time.time())`` for
host time) plus the virtual time elapsed.  The time registers are computed
when read, in BCD or binary and 12- or 24-hour format as register B says;
setting SET freezes them for the guest to rewrite, clearing it starts the
clock from what was written (a time register written while running sets the
time at once, as in QEMU).  UIP reads 1 during the last 244 us before each
second's update.  Periodic, alarm and update-ended interrupts raise IRQ 8
when enabled (PIE/AIE/UIE); flags are not maintained while disabled.
Defaults (A = 0x26, B = 0x02, D = 0x80), the memory bytes, the equipment byte
and QEMU's default boot order "cad" (disk, floppy, CD) follow QEMU
(hw/rtc/mc146818rtc.c, hw/i386/pc.c pc_cmos_init), read back on QEMU 7.2; the
hard disk bytes follow pc_cmos_init_late and cmos_init_hd (set by the
firmware hand-off for the machine's IDE drives; tests/hwguests/diskfw).
"""

from __future__ import annotations

import calendar
import datetime
from typing import Callable

from ringvisor.hw.bus import IoBus
from ringvisor.hw.clock import TimerHandle, VirtualClock

DEFAULT_START = 1767225600  # 2026-01-01 00:00:00 UTC
NS = 1_000_000_000
UIP_HOLD_NS = 8 * NS // 32768  # 244 us

SEC, SEC_ALARM, MIN, MIN_ALARM, HOUR, HOUR_ALARM = 0, 1, 2, 3, 4, 5
WDAY, MDAY, MONTH, YEAR = 6, 7, 8, 9
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
CENTURY = 0x32
PS2_CENTURY = 0x37
EQUIPMENT, EQUIP_FPU, EQUIP_MOUSE = 0x14, 0x02, 0x04
BOOT_ORDER = {0x38: 0x30, 0x3D: 0x12}   # "cad": disk, floppy, CD; floppy check on
TIME_REGS = (SEC, MIN, HOUR, WDAY, MDAY, MONTH, YEAR, CENTURY)
HD_TYPES, HD_TRANSLATION, HD_TYPE_USER = 0x12, 0x39, 47
HD_PARAMS = ((0x19, 0x1B), (0x1A, 0x24))  # drive 0, 1: (extended type, geometry block)

A_UIP = 0x80
B_SET, B_PIE, B_AIE, B_UIE, B_DM, B_24H = 0x80, 0x40, 0x20, 0x10, 0x04, 0x02
C_IRQF, C_PF, C_AF, C_UF = 0x80, 0x40, 0x20, 0x10


class Cmos:
    def __init__(self, bus: IoBus, clock: VirtualClock, mem_size: int,
                 start_time: int | None = None,
                 irq_raise: Callable[[], None] = lambda: None,
                 irq_lower: Callable[[], None] = lambda: None, fpu: bool = False) -> None:
        self.clock = clock
        self.mem_size = mem_size
        self.fpu = fpu
        self.start_time = DEFAULT_START if start_time is None else int(start_time)
        self.irq_raise = irq_raise
        self.irq_lower = irq_lower
        self._periodic: TimerHandle | None = None
        self._second: TimerHandle | None = None
        self.power_on()
        bus.register(0x70, 2, self._read, self._write, "cmos", max_access=1, owner=self)

    # -- power-on and reset ---------------------------------------------------------
    def power_on(self) -> None:
        """Fresh battery: the clock at ``start_time``, CMOS RAM as QEMU fills it."""
        self.data = [0] * 128
        self.index = 0
        self.nmi_disabled = 0
        self.base_ns = self.start_time * NS - self.clock.now_ns()
        d = self.data
        d[REG_A], d[REG_B], d[REG_C], d[REG_D] = 0x26, 0x02, 0x00, 0x80
        # the equipment byte tells the truth about this machine's FPU
        d[EQUIPMENT] = EQUIP_MOUSE | (EQUIP_FPU if self.fpu else 0)
        for reg, val in BOOT_ORDER.items():
            d[reg] = val
        d[PS2_CENTURY] = self._time_regs(self.rtc_ns() // NS)[CENTURY]
        self.set_ram_size(self.mem_size, 0)
        self._reschedule()

    def set_ram_size(self, below_4g: int, above_4g: int) -> None:
        """Store the memory sizes (bytes of RAM below and above 4 GiB)."""
        d = self.data
        kib = below_4g // 1024
        base = min(kib, 640)
        ext = min(max(kib - 1024, 0), 65535)
        above16 = min(max(below_4g - (16 << 20), 0) // (64 << 10), 65535)
        high = above_4g // (64 << 10)
        d[0x15], d[0x16] = base & 0xFF, base >> 8
        d[0x17], d[0x18] = ext & 0xFF, ext >> 8
        d[0x30], d[0x31] = ext & 0xFF, ext >> 8
        d[0x34], d[0x35] = above16 & 0xFF, above16 >> 8
        d[0x5B], d[0x5C], d[0x5D] = high & 0xFF, (high >> 8) & 0xFF, (high >> 16) & 0xFF

    def set_hard_disks(self, drives) -> None:
        """The IDE drives' bytes, as QEMU's pc_cmos_init_late writes them: ``drives``
        the geometries (``cylinders``, ``heads``, ``sectors``, ``translation``) of drives
        0-3 -- primary master, slave, secondary master, slave -- None where there is none.
        Only drives 0 and 1 have a type and a geometry; all four a translation."""
        d = self.data
        drives = (list(drives) + [None] * 4)[:4]
        d[HD_TYPES] = 0
        for i, (type_reg, info) in enumerate(HD_PARAMS):
            g = drives[i]
            if g is None:
                continue
            d[HD_TYPES] |= 0xF0 >> 4 * i
            d[type_reg] = HD_TYPE_USER
            cyl = (g.cylinders & 0xFF, g.cylinders >> 8 & 0xFF)
            d[info:info + 9] = [*cyl, g.heads, 0xFF, 0xFF, 0xC0 | (g.heads > 8) << 3, *cyl,
                                g.sectors]
        d[HD_TRANSLATION] = sum(g.translation << 2 * i for i, g in enumerate(drives) if g)

    def reset(self) -> None:
        """System reset: the RTC keeps time and CMOS RAM (it has a battery);
        interrupt enables and flags are cleared, as QEMU's rtc_reset does."""
        self.data[REG_B] &= ~(B_PIE | B_AIE | 0x08)
        if self.data[REG_C] & C_IRQF:
            self.irq_lower()
        self.data[REG_C] = 0
        self._reschedule()

    # -- time ------------------------------------------------------------------------
    def rtc_ns(self) -> int:
        """Nanoseconds since the Unix epoch on the RTC's clock."""
        return self.base_ns + self.clock.now_ns()

    def _running(self) -> bool:
        return not self.data[REG_B] & B_SET and (self.data[REG_A] & 0x70) == 0x20

    def _to_reg(self, value: int) -> int:
        return value if self.data[REG_B] & B_DM else ((value // 10) << 4) | (value % 10)

    def _from_reg(self, reg: int) -> int:
        return reg if self.data[REG_B] & B_DM else (reg >> 4) * 10 + (reg & 0x0F)

    def _time_regs(self, seconds: int) -> dict[int, int]:
        t = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        if self.data[REG_B] & B_24H:
            hour = self._to_reg(t.hour)
        else:
            hour = self._to_reg(t.hour % 12 or 12) | (0x80 if t.hour >= 12 else 0)
        return {SEC: self._to_reg(t.second), MIN: self._to_reg(t.minute), HOUR: hour,
                WDAY: self._to_reg((t.weekday() + 1) % 7 + 1), MDAY: self._to_reg(t.day),
                MONTH: self._to_reg(t.month), YEAR: self._to_reg(t.year % 100),
                CENTURY: self._to_reg(t.year // 100)}

    def _snapshot(self) -> None:
        """Copy the running time into the time registers."""
        for reg, val in self._time_regs(self.rtc_ns() // NS).items():
            self.data[reg] = val

    def _set_time_from_regs(self) -> None:
        d = self.data
        hour_reg = d[HOUR]
        hour = self._from_reg(hour_reg & 0x7F)
        if not d[REG_B] & B_24H:
            hour = hour % 12 + (12 if hour_reg & 0x80 else 0)
        try:
            t = datetime.datetime(self._from_reg(d[CENTURY]) * 100 + self._from_reg(d[YEAR]),
                                  self._from_reg(d[MONTH]), self._from_reg(d[MDAY]), hour,
                                  self._from_reg(d[MIN]), self._from_reg(d[SEC]))
        except ValueError:
            return  # nonsense written: the clock keeps its old time
        self.base_ns = calendar.timegm(t.timetuple()) * NS - self.clock.now_ns()

    def _uip(self) -> bool:
        return self._running() and self.rtc_ns() % NS >= NS - UIP_HOLD_NS

    # -- interrupts ------------------------------------------------------------------
    def _set_flags(self, flags: int) -> None:
        """Raise C flags; PF/AF/UF share bit positions with PIE/AIE/UIE in B."""
        d = self.data
        d[REG_C] |= flags
        if flags & d[REG_B] & (B_PIE | B_AIE | B_UIE) and not d[REG_C] & C_IRQF:
            d[REG_C] |= C_IRQF
            self.irq_raise()

    def _periodic_ticks(self) -> int | None:
        """The periodic interrupt's period in 32768 Hz divider ticks."""
        rate = self.data[REG_A] & 0x0F
        if rate == 0:
            return None
        if rate <= 2:  # rates 1 and 2 repeat 8 and 9 (3.9 ms, 7.8 ms)
            rate += 7
        return 1 << (rate - 1)

    def _at(self, rtc_ns: int) -> int:
        """The clock cycle at which the RTC reads ``rtc_ns``."""
        return self.clock.ns_to_cycles(rtc_ns - self.base_ns)

    def _schedule_periodic(self) -> None:
        period = self._periodic_ticks()
        if period and self.data[REG_B] & B_PIE and self._running():
            # the divider chain is aligned with the seconds: count ticks from the
            # current second, take the next multiple of the period
            now = self.rtc_ns()
            second = now - now % NS
            ticks = (now - second) * 32768 // NS
            nxt = (ticks // period + 1) * period
            at = second + -(-nxt * NS // 32768)
            self._periodic = self.clock.schedule(self._at(at), self._on_periodic)

    def _schedule_second(self) -> None:
        if self.data[REG_B] & (B_AIE | B_UIE) and self._running():
            nxt = (self.rtc_ns() // NS + 1) * NS
            self._second = self.clock.schedule(self._at(nxt), self._on_second)

    def _reschedule(self) -> None:
        self.clock.cancel(self._periodic)
        self.clock.cancel(self._second)
        self._periodic = self._second = None
        self._schedule_periodic()
        self._schedule_second()

    def _on_periodic(self) -> None:
        self._set_flags(C_PF)
        self._schedule_periodic()

    def _on_second(self) -> None:
        flags = C_UF
        now = self._time_regs(self.rtc_ns() // NS)
        d = self.data
        if all(d[alarm] >= 0xC0 or d[alarm] == now[reg]
               for alarm, reg in ((SEC_ALARM, SEC), (MIN_ALARM, MIN), (HOUR_ALARM, HOUR))):
            flags |= C_AF
        self._set_flags(flags)
        self._schedule_second()

    # -- ports ---------------------------------------------------------------------------
    def _read(self, port: int, size: int) -> int:
        if port == 0x70:
            return 0xFF
        i = self.index
        d = self.data
        if i in TIME_REGS and self._running():
            return self._time_regs(self.rtc_ns() // NS)[i]
        if i == REG_A:
            return (d[REG_A] & 0x7F) | (A_UIP if self._uip() else 0)
        if i == REG_C:
            ret = d[REG_C]
            d[REG_C] = 0
            if ret & C_IRQF:
                self.irq_lower()
            return ret
        return d[i]

    def _write(self, port: int, size: int, val: int) -> None:
        val &= 0xFF
        if port == 0x70:
            self.index = val & 0x7F
            self.nmi_disabled = val >> 7
            return
        i = self.index
        d = self.data
        if i in TIME_REGS:
            if self._running():
                self._snapshot()
                d[i] = val
                self._set_time_from_regs()
                self._reschedule()
            else:
                d[i] = val
        elif i == REG_A:
            d[REG_A] = val & 0x7F
            self._reschedule()
        elif i == REG_B:
            old = d[REG_B]
            if val & B_SET and not old & B_SET:
                self._snapshot()  # freeze: the guest now edits these
                val &= ~B_UIE
            d[REG_B] = val
            if old & B_SET and not val & B_SET:
                self._set_time_from_regs()
            self._reschedule()
        elif i in (REG_C, REG_D):
            pass  # read-only
        else:
            d[i] = val

    # -- state -----------------------------------------------------------------------------
    state_name = "cmos"
    state_version = 1

    def get_state(self) -> dict:
        return {"data": list(self.data), "index": self.index,
                "nmi_disabled": self.nmi_disabled, "base_ns": self.base_ns}

    def set_state(self, state: dict) -> None:
        self.data = [int(b) & 0xFF for b in state["data"]]
        self.index = int(state["index"]) & 0x7F
        self.nmi_disabled = int(state["nmi_disabled"])
        self.base_ns = int(state["base_ns"])
        self._reschedule()

"""Intel 8254 programmable interval timer, plus the PC's port 0x61.

Register map
------------
    port  dir  register
    0x40  R/W  channel 0 counter (output drives IRQ 0)
    0x41  R/W  channel 1 counter (DRAM refresh on old PCs; free running here)
    0x42  R/W  channel 2 counter (PC speaker; gate = port 0x61 bit 0)
    0x43  W    control word:
                 bits 7:6  SC  channel 0-2, 3 = read-back command
                 bits 5:4  RW  0 = counter latch, 1 = LSB, 2 = MSB, 3 = LSB then MSB
                 bits 3:1  M   mode 0-5 (6, 7 are aliases of 2, 3)
                 bit  0    BCD (accepted and reported; counting is binary)
               read-back: bit 5 = 0 latch count, bit 4 = 0 latch status,
                 bits 3:1 select channels 2..0
               status byte: OUT(7) NULL(6) RW(5:4) M(3:1) BCD(0)
    0x61  R/W  System Control Port B: bit 0 gate 2, bit 1 speaker data (R/W);
               bit 4 refresh toggle (flips on every read, as in QEMU's pcspk),
               bit 5 channel 2 OUT (read only)

The input clock is 1.193182 MHz, mapped onto virtual time.  A counter's state
is its reload value and the cycle it was loaded; the count and the OUT pin are
computed from the elapsed time when somebody looks (QEMU's i8254 model,
hw/timer/i8254_common.c, whose output functions we follow so that IRQ 0 comes
at the same ticks).  Only channel 0 has a timer, scheduled for its next OUT
transition; nothing ticks per instruction.

    mode 0  interrupt on terminal count: OUT low, high after `count` ticks
    mode 1  hardware one-shot (started at load here: gate 1/5 edge restarts)
    mode 2  rate generator: rising edge every `count` ticks
    mode 3  square wave: high for ceil(count/2), low for floor(count/2)
    mode 4  software strobe, mode 5 hardware strobe: one-tick pulse at `count`
A reload value of 0 means 65536.  After reset every channel is in mode 3 with
count 65536 and channel 0 is running (IRQ 0 at 18.2 Hz), as in QEMU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Callable

from ringvisor.hw.bus import IoBus
from ringvisor.hw.clock import TimerHandle, VirtualClock

PIT_HZ = 1_193_182

RW_LATCH, RW_LSB, RW_MSB, RW_WORD0, RW_WORD1 = 0, 1, 2, 3, 4


@dataclass
class PitChannelState:
    count: int = 0x10000        # reload value, 1..65536
    latched_count: int = 0
    count_latched: int = 0      # 0, or the RW mode the latch is read with
    status_latched: int = 0
    status: int = 0
    read_state: int = 0
    write_state: int = 0
    write_latch: int = 0
    rw_mode: int = 0
    mode: int = 3               # as programmed (0-7)
    bcd: int = 0
    gate: int = 1
    null_count: int = 0
    load_cycle: int = 0         # clock cycle the count was loaded
    out_level: int = 0          # last level driven on the output line (channel 0)


class Pit8254:
    """Three counters on ports 0x40-0x43, channel 2 gate/OUT on port 0x61."""

    def __init__(self, bus: IoBus, clock: VirtualClock,
                 irq0_raise: Callable[[], None], irq0_lower: Callable[[], None]) -> None:
        self.clock = clock
        self.irq0_raise = irq0_raise
        self.irq0_lower = irq0_lower
        self.channels = [PitChannelState() for _ in range(3)]
        self.speaker_data = 0
        self.refresh_toggle = 0
        self._timer: TimerHandle | None = None
        self._timer_cycle: int | None = None
        bus.register(0x40, 4, self._io_read, self._io_write, "pit", max_access=1, owner=self)
        bus.register(0x61, 1, self._port61_read, self._port61_write, "port61", max_access=1, owner=self)
        self.reset()

    # -- time arithmetic ------------------------------------------------------
    def _ticks(self, ch: PitChannelState, cycle: int) -> int:
        """PIT input clock ticks since the channel was loaded."""
        return max(0, cycle - ch.load_cycle) * PIT_HZ // self.clock.cpu_hz

    def _tick_cycle(self, ch: PitChannelState, ticks: int) -> int:
        """First clock cycle at which ``ticks`` ticks have elapsed."""
        return ch.load_cycle + -(-ticks * self.clock.cpu_hz // PIT_HZ)

    @staticmethod
    def _mode(ch: PitChannelState) -> int:
        return ch.mode - 4 if ch.mode >= 6 else ch.mode

    def _get_count(self, ch: PitChannelState, cycle: int) -> int:
        d = self._ticks(ch, cycle)
        mode = self._mode(ch)
        if mode in (0, 1, 4, 5):
            return (ch.count - d) & 0xFFFF
        if mode == 3:
            return ch.count - ((2 * d) % ch.count)
        return ch.count - (d % ch.count)

    def _get_out(self, ch: PitChannelState, cycle: int) -> int:
        d = self._ticks(ch, cycle)
        mode = self._mode(ch)
        if mode == 0:
            return int(d >= ch.count)
        if mode == 1:
            return int(d < ch.count)
        if mode == 2:
            return int(d % ch.count == 0 and d != 0)
        if mode == 3:
            return int(d % ch.count < (ch.count + 1) >> 1)
        return int(d == ch.count)  # modes 4, 5

    def _next_transition(self, ch: PitChannelState, cycle: int) -> int | None:
        """Cycle of the next OUT change after ``cycle``, or None."""
        d = self._ticks(ch, cycle)
        mode, count = self._mode(ch), ch.count
        if mode in (0, 1):
            if d >= count:
                return None
            nxt = count
        elif mode == 2:
            base = d - d % count
            if d == base and d != 0:
                nxt = d + 1  # the one-tick pulse ends
            else:
                nxt = base + count  # the next pulse (a rising edge) begins
        elif mode == 3:
            base = d - d % count
            half = (count + 1) >> 1
            nxt = base + half if d - base < half else base + count
        else:  # 4, 5
            if d < count:
                nxt = count
            elif d == count:
                nxt = count + 1
            else:
                return None
        at = self._tick_cycle(ch, nxt)
        return at if at > cycle else cycle + 1

    # -- channel 0 -> IRQ 0 ---------------------------------------------------
    def _drive_irq0(self, cycle: int) -> None:
        ch = self.channels[0]
        level = self._get_out(ch, cycle)
        if level != ch.out_level:
            ch.out_level = level
            (self.irq0_raise if level else self.irq0_lower)()

    def _irq_timer_update(self, cycle: int, drive: bool = True) -> None:
        ch = self.channels[0]
        if drive:
            self._drive_irq0(cycle)
        self.clock.cancel(self._timer)
        self._timer = None
        nxt = self._next_transition(ch, cycle)
        self._timer_cycle = nxt
        if nxt is not None:
            self._timer = self.clock.schedule(nxt, self._on_timer)

    def _on_timer(self) -> None:
        # evaluate at the transition we scheduled for, not "now": a late
        # callback must not skip an edge or drift the period
        self._timer = None
        self._irq_timer_update(self._timer_cycle)

    # -- programming ----------------------------------------------------------
    def _load_count(self, idx: int, val: int) -> None:
        ch = self.channels[idx]
        ch.count = val or 0x10000
        ch.load_cycle = self.clock.cycles()
        ch.null_count = 0
        if idx == 0:
            self._irq_timer_update(ch.load_cycle)

    def _latch_count(self, ch: PitChannelState) -> None:
        if not ch.count_latched:  # a second latch before reading is ignored
            ch.latched_count = self._get_count(ch, self.clock.cycles()) & 0xFFFF
            ch.count_latched = ch.rw_mode

    def set_gate(self, idx: int, level: int) -> None:
        ch = self.channels[idx]
        level = 1 if level else 0
        if self._mode(ch) in (1, 2, 3, 5) and ch.gate < level:
            ch.load_cycle = self.clock.cycles()  # restart on the rising edge
            if idx == 0:
                self._irq_timer_update(ch.load_cycle)
        ch.gate = level

    def _io_write(self, port: int, size: int, val: int) -> None:
        addr = port - 0x40
        val &= 0xFF
        if addr == 3:
            sel = val >> 6
            if sel == 3:  # read-back
                now = self.clock.cycles()
                for i, ch in enumerate(self.channels):
                    if not val & (2 << i):
                        continue
                    if not val & 0x20:
                        self._latch_count(ch)
                    if not val & 0x10 and not ch.status_latched:
                        ch.status = ((self._get_out(ch, now) << 7) | (ch.null_count << 6)
                                     | (ch.rw_mode << 4) | (ch.mode << 1) | ch.bcd)
                        ch.status_latched = 1
                return
            ch = self.channels[sel]
            access = (val >> 4) & 3
            if access == RW_LATCH:
                self._latch_count(ch)
            else:
                ch.rw_mode = ch.read_state = ch.write_state = access
                ch.mode = (val >> 1) & 7
                ch.bcd = val & 1
                ch.null_count = 1
            return
        ch = self.channels[addr]
        if ch.write_state == RW_MSB:
            self._load_count(addr, val << 8)
        elif ch.write_state == RW_WORD0:
            ch.write_latch = val
            ch.write_state = RW_WORD1
        elif ch.write_state == RW_WORD1:
            self._load_count(addr, ch.write_latch | (val << 8))
            ch.write_state = RW_WORD0
        else:  # RW_LSB (and the never-programmed state 0)
            self._load_count(addr, val)

    def _io_read(self, port: int, size: int) -> int:
        addr = port - 0x40
        if addr == 3:
            return 0xFF  # the control register is write-only
        ch = self.channels[addr]
        if ch.status_latched:
            ch.status_latched = 0
            return ch.status
        if ch.count_latched:
            if ch.count_latched == RW_MSB:
                ch.count_latched = 0
                return (ch.latched_count >> 8) & 0xFF
            if ch.count_latched == RW_WORD0:
                ch.count_latched = RW_MSB
                return ch.latched_count & 0xFF
            ch.count_latched = 0
            return ch.latched_count & 0xFF
        count = self._get_count(ch, self.clock.cycles())
        if ch.read_state == RW_MSB:
            return (count >> 8) & 0xFF
        if ch.read_state == RW_WORD0:
            ch.read_state = RW_WORD1
            return count & 0xFF
        if ch.read_state == RW_WORD1:
            ch.read_state = RW_WORD0
            return (count >> 8) & 0xFF
        return count & 0xFF

    # -- port 0x61 ------------------------------------------------------------
    def _port61_read(self, port: int, size: int) -> int:
        ch2 = self.channels[2]
        self.refresh_toggle ^= 1
        out = self._get_out(ch2, self.clock.cycles())
        return ch2.gate | (self.speaker_data << 1) | (self.refresh_toggle << 4) | (out << 5)

    def _port61_write(self, port: int, size: int, val: int) -> None:
        self.speaker_data = (val >> 1) & 1
        self.set_gate(2, val & 1)

    # -- introspection -----------------------------------------------------------
    def out(self, idx: int) -> int:
        """The OUT pin of channel ``idx`` now."""
        return self._get_out(self.channels[idx], self.clock.cycles())

    def count(self, idx: int) -> int:
        """The current counting element of channel ``idx`` (no latching)."""
        return self._get_count(self.channels[idx], self.clock.cycles())

    # -- reset and state ---------------------------------------------------------
    def reset(self) -> None:
        now = self.clock.cycles()
        if self.channels[0].out_level:
            self.irq0_lower()
        self.channels = [PitChannelState(gate=int(i != 2), load_cycle=now) for i in range(3)]
        self.speaker_data = 0
        self.refresh_toggle = 0
        # QEMU does not drive the line at reset: it stays low until the first
        # transition, so the first IRQ 0 edge comes one full period later
        self._irq_timer_update(now, drive=False)

    state_name = "pit"
    state_version = 1

    def get_state(self) -> dict:
        return {"channels": [asdict(ch) for ch in self.channels],
                "speaker_data": self.speaker_data,
                "refresh_toggle": self.refresh_toggle}

    def set_state(self, state: dict) -> None:
        names = {f.name for f in fields(PitChannelState)}
        self.channels = [PitChannelState(**{k: int(v) for k, v in ch.items() if k in names})
                         for ch in state["channels"]]
        self.speaker_data = int(state["speaker_data"])
        self.refresh_toggle = int(state["refresh_toggle"])
        self._irq_timer_update(self.clock.cycles(), drive=False)

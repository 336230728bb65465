"""The PC's ways to reset itself: the 8042's reset line, port 0x92, port 0xCF9.

Register map
------------
    port   dir  register
    0x60   R    8042 output buffer: the reply to the last command (or the last
                byte again if it has been read); clears OBF
    0x60   W    data byte for a command that takes one (0x60, 0xD1), else
                keyboard data, ignored (there is no keyboard)
    0x64   R    8042 status: bit 0 OBF (output buffer full), bit 1 IBF (always
                0: we never busy), bit 2 system flag (1: POST passed), bit 3
                command/data (1: as QEMU leaves it), bit 4 keyboard not inhibited
    0x64   W    8042 command:
                  0x20 read command byte      0x60 write command byte
                  0xAA self test -> 0x55      0xAB interface test -> 0x00
                  0xD0 read output port       0xD1 write output port (bit 0 = 0 resets)
                  0xDD / 0xDF A20 off / on    0xFE pulse reset (0xF0-0xFF: even = reset)
    0x92   R/W  System Control Port A: bit 0 going 0 -> 1 resets (fast reset),
                bit 1 A20 gate; reads return what was written
    0xCF9  R/W  Reset Control Register (PIIX): writing bit 2 = 1 resets
                (0x06 hard, 0x04/0x0E likewise); bit 1 (reset type) reads back

A20 is always enabled in this machine: the A20 bits are remembered for reads
but never mask address line 20.  The reset paths call ``on_reset()``; the
machine decides what a reset means (normally: reset the CPU and devices).
Following QEMU (hw/input/pckbd.c, hw/i386/pc.c port92, hw/isa/piix.c).
"""

from __future__ import annotations

from typing import Callable

from ringvisor.hw.bus import IoBus

STAT_OBF, STAT_SYS, STAT_CMD, STAT_UNLOCKED = 0x01, 0x04, 0x08, 0x10


class ResetControl:
    def __init__(self, bus: IoBus, on_reset: Callable[[], None], cf9: bool = True) -> None:
        self.on_reset = on_reset
        self.reset()
        bus.register(0x60, 1, self._read60, self._write60, "i8042-data", max_access=1, owner=self)
        bus.register(0x64, 1, self._read64, self._write64, "i8042-cmd", max_access=1, owner=self)
        bus.register(0x92, 1, self._read92, self._write92, "port92", max_access=1, owner=self)
        if cf9:
            bus.register(0xCF9, 1, self._readcf9, self._writecf9, "reset-cf9", max_access=1, owner=self)

    def reset(self) -> None:
        # as QEMU's i8042 is after SeaBIOS's self test: 0x1C
        self.status = STAT_UNLOCKED | STAT_CMD | STAT_SYS
        self.out_byte = 0
        self.pending_cmd = 0     # command waiting for its data byte on port 0x60
        self.cmd_byte = 0x61     # translate, system flag, keyboard interrupt on
        self.output_port = 0x03  # bit 0: not in reset, bit 1: A20 on
        self.port92 = 0x02       # A20 on
        self.rcr = 0

    def _reply(self, byte: int) -> None:
        self.out_byte = byte & 0xFF
        self.status |= STAT_OBF

    def _pulse_reset(self) -> None:
        self.on_reset()

    # -- 8042 ----------------------------------------------------------------------
    def _read60(self, port: int, size: int) -> int:
        self.status &= ~STAT_OBF
        return self.out_byte

    def _write60(self, port: int, size: int, val: int) -> None:
        cmd, self.pending_cmd = self.pending_cmd, 0
        if cmd == 0x60:
            self.cmd_byte = val & 0xFF
        elif cmd == 0xD1:
            self.output_port = val & 0xFF
            if not val & 1:
                self._pulse_reset()

    def _read64(self, port: int, size: int) -> int:
        return self.status

    def _write64(self, port: int, size: int, val: int) -> None:
        val &= 0xFF
        if 0xF0 <= val <= 0xFF:  # pulse output port bits 3:0 low; bit 0 is reset
            if not val & 1:
                self._pulse_reset()
        elif val == 0x20:
            self._reply(self.cmd_byte)
        elif val in (0x60, 0xD1):
            self.pending_cmd = val
        elif val == 0xAA:
            self._reply(0x55)
        elif val == 0xAB:
            self._reply(0x00)
        elif val == 0xD0:
            self._reply(self.output_port)
        elif val == 0xDD:
            self.output_port &= ~0x02
        elif val == 0xDF:
            self.output_port |= 0x02

    # -- port 0x92 -------------------------------------------------------------------
    def _read92(self, port: int, size: int) -> int:
        return self.port92

    def _write92(self, port: int, size: int, val: int) -> None:
        old = self.port92
        self.port92 = val & 0xFF
        if val & 1 and not old & 1:  # a rising edge of bit 0
            self._pulse_reset()

    # -- port 0xCF9 ---------------------------------------------------------------------
    def _readcf9(self, port: int, size: int) -> int:
        return self.rcr

    def _writecf9(self, port: int, size: int, val: int) -> None:
        self.rcr = val & 0x02
        if val & 0x04:
            self._pulse_reset()

    # -- state ---------------------------------------------------------------------------
    state_name = "reset"
    state_version = 1

    def get_state(self) -> dict:
        return {k: getattr(self, k) for k in
                ("status", "out_byte", "pending_cmd", "cmd_byte", "output_port", "port92", "rcr")}

    def set_state(self, state: dict) -> None:
        for k, v in state.items():
            if k in ("status", "out_byte", "pending_cmd", "cmd_byte", "output_port", "port92", "rcr"):
                setattr(self, k, int(v))

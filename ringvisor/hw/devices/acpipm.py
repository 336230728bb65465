"""The PIIX4's ACPI power management registers, where QEMU's PC (and its FADT) puts them.

Register map (I/O ports)
------------------------
    0x600  PM1a status (16, write 1 to clear)     0x602  PM1a enable (16)
    0x604  PM1a control (16): bit 0 SCI_EN, bits 12:10 SLP_TYP, bit 13 SLP_EN (WO)
    0x608  PM timer (32, RO): 3.579545 MHz, 24 bits (the FADT's TMR_VAL_EXT is clear)
    0xAFE0 GPE0 status (16, write 1 to clear)     0xAFE2 GPE0 enable (16)
    0xB2   APM control: 0xF1 sets SCI_EN (ACPI mode), 0xF0 clears it
    0xB3   APM status (a scratch byte)

Sleeping with SLP_TYP 0 (the \\_S5 QEMU's DSDT gives) powers the machine off, as
QEMU's piix4 does; other sleep types are not modelled and are ignored.  The timer
is virtual time: ticks = ns * 3579545 / 10^9.
"""

from __future__ import annotations

from ringvisor.hw.bus import IoBus

PM_BASE, GPE0_BASE, APM_CNT = 0x600, 0xAFE0, 0xB2
PM_TIMER_HZ = 3_579_545
SCI_EN, SLP_EN, SLP_TYP_SHIFT = 1, 1 << 13, 10
PM1_STS_TMR = 1                 # the timer's bit 23 toggled (not signalled here: status only)
ACPI_ENABLE, ACPI_DISABLE = 0xF1, 0xF0


class AcpiPm:
    state_name = "acpi-pm"
    state_version = 1

    def __init__(self, bus: IoBus, clock, on_poweroff) -> None:
        self.clock = clock
        self.on_poweroff = on_poweroff
        self.pm1_sts = self.pm1_en = self.pm1_cnt = 0
        self.gpe_sts = self.gpe_en = 0
        self.apm_sts = 0
        bus.register(PM_BASE, 12, self._read, self._write, "acpi-pm", max_access=4, owner=self)
        bus.register(GPE0_BASE, 4, self._gpe_read, self._gpe_write, "acpi-gpe0", max_access=2,
                     owner=self)
        bus.register(APM_CNT, 2, self._apm_read, self._apm_write, "apm", max_access=1, owner=self)

    def timer(self) -> int:
        return self.clock.now_ns() * PM_TIMER_HZ // 1_000_000_000 & 0xFFFFFF

    # -- ports -----------------------------------------------------------------------------
    def _read(self, port: int, size: int) -> int:
        off = port - PM_BASE
        if off >= 8:
            return self.timer() >> (8 * (off - 8))
        regs = self.pm1_sts | self.pm1_en << 16 | self.pm1_cnt << 32
        return regs >> (8 * off)

    def _write(self, port: int, size: int, value: int) -> None:
        off = port - PM_BASE
        if off >= 8:
            return                          # the timer is read-only
        mask = ((1 << (8 * size)) - 1) << (8 * off)
        value <<= 8 * off
        if mask & 0xFFFF:
            self.pm1_sts &= ~(value & mask & 0xFFFF)
        if mask & 0xFFFF0000:
            self.pm1_en = (self.pm1_en & ~(mask >> 16) | value >> 16) & 0xFFFF
        if mask & 0xFFFF00000000:
            cnt = (self.pm1_cnt & ~(mask >> 32) | value >> 32) & 0xFFFF
            self.pm1_cnt = cnt & ~SLP_EN
            if cnt & SLP_EN and (cnt >> SLP_TYP_SHIFT) & 7 == 0:
                self.on_poweroff()

    def _gpe_read(self, port: int, size: int) -> int:
        return (self.gpe_sts | self.gpe_en << 16) >> (8 * (port - GPE0_BASE))

    def _gpe_write(self, port: int, size: int, value: int) -> None:
        off = port - GPE0_BASE
        for i in range(size):
            b, o = (value >> (8 * i)) & 0xFF, off + i
            if o < 2:
                self.gpe_sts &= ~(b << (8 * o))
            else:
                self.gpe_en = self.gpe_en & ~(0xFF << (8 * (o - 2))) | b << (8 * (o - 2))

    def _apm_read(self, port: int, size: int) -> int:
        return 0 if port == APM_CNT else self.apm_sts

    def _apm_write(self, port: int, size: int, value: int) -> None:
        if port == APM_CNT:
            if value == ACPI_ENABLE:
                self.pm1_cnt |= SCI_EN
            elif value == ACPI_DISABLE:
                self.pm1_cnt &= ~SCI_EN
        else:
            self.apm_sts = value

    # -- state -----------------------------------------------------------------------------
    def get_state(self) -> dict:
        return {"pm1_sts": self.pm1_sts, "pm1_en": self.pm1_en, "pm1_cnt": self.pm1_cnt,
                "gpe_sts": self.gpe_sts, "gpe_en": self.gpe_en, "apm_sts": self.apm_sts}

    def set_state(self, state: dict) -> None:
        for k in ("pm1_sts", "pm1_en", "pm1_cnt", "gpe_sts", "gpe_en"):
            setattr(self, k, int(state[k]) & 0xFFFF)
        self.apm_sts = int(state["apm_sts"]) & 0xFF

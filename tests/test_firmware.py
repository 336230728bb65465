"""The firmware interfaces of QEMU's PC as a ``-kernel`` image finds them.

``tests/hwguests/firmware`` reads fw_cfg, walks the ACPI tables from the RSDP the
standard scan finds, reads the PM timer, enumerates PCI bus 0, runs the pci-testdev's
tests, raises a pc-testdev interrupt line into the IO-APIC and fires the HPET's
timer 0 (one-shot, periodic).  The lines below are what QEMU 7.2 prints (with
``-device pc-testdev -device pci-testdev``, which ringvisor's PC always has); every
table's checksum is checked by the guest itself (ACPI 5.2.6: the bytes sum to 0).
"""

from __future__ import annotations

import functools

import pytest

from hwtests import MEM_MB, build_kernel, output_lines, run_platform
from ringvisor.hw.boot import acpi
from ringvisor.hw.machine import Machine

QEMU_DEVICES = ["-device", "pc-testdev", "-device", "pci-testdev"]

EXPECTED = [
    'firmware: start',
    'fw_cfg signature: QEMU',
    'fw_cfg id: 3',
    'nb_cpus: 1',
    'max_cpus: 1',
    'ram_size: 0 2000000',
    'nographic: 0',
    'irq0 override: 1',
    'past the end: 0',
    'unknown key: 0',
    'file etc/acpi/rsdp: found=1 size=20 checksum ok=0',
    'file etc/e820: found=1 size=20 entry 000000000+002000000 type 1',
    'rsdp: in F segment=1 oem=BOCHS  revision=0',
    'rsdt: RSDT rev=1 checksum ok=1 oem=BOCHS  table=BXPC     oemrev=1 creator=BXPC creatorrev=1',
    '  table FACP len=116 rev=1 checksum ok=1',
    '  table APIC len=120 rev=1 checksum ok=1',
    '  table HPET len=56 rev=1 checksum ok=1',
    '  table WAET len=40 rev=1 checksum ok=1',
    'fadt: sci=9 smi_cmd=b2 enable=f1 disable=f0 pm1a_evt=600 pm1a_cnt=604 pm_tmr=608 gpe0=afe0',
    'fadt: pm1_evt_len=4 pm1_cnt_len=2 pm_tmr_len=4 gpe0_len=4 flags=80a5 iapc_boot_arch=0',
    'dsdt: DSDT checksum ok=1',
    'facs: FACS len=64',
    'pm timer counting=1',
    'madt: lapic=fee00000 flags=1',
    '  cpu uid=0 apic=0 flags=1',
    '  ioapic id=0 addr=fec00000 gsi_base=0',
    '  override bus=0 irq=0 gsi=2 flags=0',
    '  override bus=0 irq=5 gsi=5 flags=d',
    '  override bus=0 irq=9 gsi=9 flags=d',
    '  override bus=0 irq=10 gsi=10 flags=d',
    '  override bus=0 irq=11 gsi=11 flags=d',
    '  lapic nmi uid=ff flags=0 lint=1',
    'hpet table: id=8086a201 addr space=0 addr=fed00000 number=0 min_tick=0 flags=0',
    'hpet: cap=8086a201 period=10000000 config=0',
    'hpet counter: stopped=1 counting=1',
    'hpet timer0: cap=4.30 timer2: cap=30',
    'pci 00.0 id=12378086 class=06000002 hdr=00000000 cmd=00000103 irq=00000000 sub=11001af4',
    'pci 01.0 id=70008086 class=06010000 hdr=00800000 cmd=02000103 irq=00000000 sub=11001af4',
    'pci 01.1 id=70108086 class=01018000 hdr=00000000 cmd=02800103 irq=00000000 sub=11001af4',
    '   bar4=0000c101',
    'pci 01.3 id=71138086 class=06800003 hdr=00000000 cmd=02800103 irq=00000109 sub=11001af4',
    'pci 02.0 id=00051b36 class=00ff0000 hdr=00000000 cmd=00000103 irq=00000000 sub=11001af4',
    '   bar0=febff000',
    '   bar1=0000c001',
    'pci host 0x40=00000000',
    'pci host 0x58 (pam)=11111000',
    'piix3 0x60 (pirq)=0b0b0a0a',
    'piix4pm 0x40 (pmbase)=00000601',
    'piix4pm 0x80 (pmregmisc)=00000001',
    'cf8 readback=80000b80',
    'testdev 0xe0=12345678 byte=56',
    'pci-testdev mmio test 0: width=1 off=2048 data=fa count 0->16 name=mmio-no-eventfd portio: off=131 count=16',
    'pci-testdev mmio test 1: width=1 off=2049 data=ce count 0->0 name=mmio-wildcard-eventfd portio: off=132 count=0',
    'pci-testdev mmio test 2: width=1 off=2050 data=fa count 0->0 name=mmio-datamatch-eventfd portio: off=133 count=0',
    'testdev line 10 high: vector 0x71 hits=1 redir10 in handler=c071',
    'after eoi: redir10=8071',
    'hpet one-shot: fired=1 counter past comparator=1',
    'hpet periodic: 4 more, timer0 config=43c',
    'firmware: done',
]


@functools.lru_cache(maxsize=None)
def _run(platform: str) -> tuple[str, int]:
    image = build_kernel("firmware")
    if platform == "qemu":
        from ringvisor.tools.qemu import run_qemu
        r = run_qemu(image, mem_mb=MEM_MB, extra_args=QEMU_DEVICES, timeout=30)
        return r.output.decode("latin-1").replace("\r\n", "\n"), r.guest_exit_code
    return run_platform(platform, image)


@pytest.mark.parametrize("platform", [pytest.param("qemu", marks=pytest.mark.qemu), "jit"])
def test_firmware_guest(platform):
    out, code = _run(platform)
    assert output_lines(out) == EXPECTED, out
    assert code == 0


def test_tables_sum_to_zero_and_list_every_cpu():
    """Each table's bytes sum to 0 (ACPI 5.2.6); the MADT has one enabled processor
    entry per CPU, the IO-APIC and QEMU's five overrides."""
    blob, rsdp = acpi.build(0x100000, 4)
    assert sum(rsdp) & 0xFF == 0
    m = Machine(2)
    m.mem.write(0x100000, blob)
    madt = acpi.madt(4)
    assert sum(madt) & 0xFF == 0 and len(madt) == 44 + 4 * 8 + 12 + 5 * 10 + 6
    assert [madt[44 + 8 * i + 3] for i in range(4)] == [0, 1, 2, 3]
    unsealed, raw = acpi.build(0, 1, sealed=False)
    assert raw[8] == 0 and unsealed[64 + 9] == 0          # QEMU's loader sums them


def test_acpi_poweroff():
    """SLP_TYP 0 with SLP_EN in PM1a_CNT is S5 (QEMU's \\_S5): the machine stops, status 0."""
    m = Machine(2)
    m.mem.write(0x1000, bytes([0x66, 0xBA, 0x04, 0x06,             # mov dx, 0x604
                               0x66, 0xB8, 0x00, 0x20,             # mov ax, 0x2000 (SLP_EN)
                               0x66, 0xEF,                         # out dx, ax
                               0xEB, 0xFE]))
    st = m.cpu.state
    from ringvisor.hw.state import Segment
    for i in range(6):
        st.segs[i] = Segment(0x08 if i == 1 else 0x10, 0, 0xFFFFFFFF, 0xC09B if i == 1 else 0xC093)
    st.cr0, st.eip = 1, 0x1000
    m.cpu.mode_changed()
    stop = m.run(1000)
    assert stop.reason == "poweroff" and stop.status == 0

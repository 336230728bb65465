"""The firmware interfaces of QEMU's PC as a ``-kernel`` image finds them.

``tests/hwguests/firmware`` reads fw_cfg, walks the ACPI tables from the RSDP the
standard scan finds, reads the PM timer, enumerates PCI bus 0, runs the pci-testdev's
tests, raises a pc-testdev interrupt line into the IO-APIC and fires the HPET's
timer 0 (one-shot, periodic).  Under the monitors ``trapemu`` and ``bt`` the same
kernel meets a virtual IO-APIC and HPET, and the pci-testdev's BAR mapped through
(``ringvisor/vmm/mmio.py``).  The lines below are what QEMU 7.2 prints (with
``-device pc-testdev -device pci-testdev``, which ringvisor's PC always has); every
table's checksum is checked by the guest itself (ACPI 5.2.6: the bytes sum to 0).
"""

from __future__ import annotations

import functools

import pytest

from hwtests import EMULATOR_MAX_INSTRUCTIONS, MEM_MB, PC_MONITORS, build_kernel, device_pages_mapped, monitor_output, output_lines, run_monitor, run_platform
from ringvisor.hw.boot import acpi
from ringvisor.hw.devices.pci import PciTestDev
from ringvisor.hw.machine import Machine, read_image
from ringvisor.lifecycle import stream
from ringvisor.lifecycle.vm import VmInfo, capture, restore
from ringvisor.vmm.runner import attach_monitor, create_vm

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
    'testdev line 14 high over the eoi: vector 0x72 hits=2 redir14=8072',
    'hpet one-shot: fired=1 counter past comparator=1',
    'hpet periodic: 4 more, timer0 config=43c',
    'firmware: done',
]


@functools.lru_cache(maxsize=None)
def _vm(mode: str):
    return run_monitor(mode, build_kernel("firmware"))


@functools.lru_cache(maxsize=None)
def _run(platform: str) -> tuple[str, int]:
    image = build_kernel("firmware")
    if platform in PC_MONITORS:
        return monitor_output(_vm(platform))
    if platform == "qemu":
        from ringvisor.tools.qemu import run_qemu
        r = run_qemu(image, mem_mb=MEM_MB, extra_args=QEMU_DEVICES, timeout=30)
        return r.output.decode("latin-1").replace("\r\n", "\n"), r.guest_exit_code
    return run_platform(platform, image)


@pytest.mark.parametrize("platform", [pytest.param("qemu", marks=pytest.mark.qemu), "jit", *PC_MONITORS])
def test_firmware_guest(platform):
    out, code = _run(platform)
    assert output_lines(out) == EXPECTED, out
    assert code == 0
    if platform in PC_MONITORS:
        # the guest's HPET was the monitor's virtual one (it counted and fired; the
        # machine's never ran), and the pci-testdev's BAR was mapped into the shadow
        # (under hvm, into EPT) once, after which the guest's stores reached the machine's own device without
        # a trap (its counters show the 16 writes of the guest's MMIO test)
        mon, m = _vm(platform).monitor, _vm(platform).machine
        assert m.hpet.counter() == 0 and not m.hpet.s.config & 1
        assert mon.platform.vhpet.counter() > 0 and mon.platform.vhpet.s.period[0] == 50_000
        assert device_pages_mapped(mon) == 1
        testdev = [f for f in m.pci.functions.values() if isinstance(f, PciTestDev)][0]
        assert testdev.counts[0] == 16


def test_save_and_restore_under_a_monitor_keep_the_virtual_ioapic_and_hpet():
    """A VM saved under binary translation while the guest's HPET timer runs periodic
    through its virtual IO-APIC restores with both (the timer armed, the redirection
    entry programmed) and goes on to the output of the run that was not saved."""
    out = bytearray()
    m, mon = create_vm(read_image(build_kernel("firmware")), "bt", output=out.extend)
    hpet = mon.platform.vhpet
    while hpet._timers[0] is None or not hpet.s.timer_config[0] & 8 or hpet.s.period[0] != 50_000:
        m.stop = None
        assert m.run(500).reason == "limit"     # until timer 0 runs periodic
    assert mon.platform.vioapic.s.redir[2] & 0x1FFFF == 0x72          # pin 2, edge, unmasked
    image = stream.pack_image(capture(m, mon, VmInfo(description="mmio")))
    before = bytes(out)
    m.stop = None
    m.run(EMULATOR_MAX_INSTRUCTIONS)
    r, rmon, _ = restore(stream.read_sections(image, "x"), attach_monitor, "jit", None, "x")
    saved = rmon.platform
    assert saved.vioapic.s.redir[2] & 0x1FFFF == 0x72 and saved.vhpet._timers[0] is not None
    more = bytearray()
    r.output = more.extend
    r.uart.output = r._serial_out
    r.run(EMULATOR_MAX_INSTRUCTIONS)
    assert bytes(out) == before + bytes(more) and b"firmware: done" in more


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

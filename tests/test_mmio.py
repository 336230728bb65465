"""The instruction forms a kernel uses on memory-mapped device registers, natively, on QEMU
and under the monitors, which trap every access to the IO-APIC's, the HPET's and the
local APIC's pages and emulate it on a virtual device (``ringvisor/vmm/mmio.py``).

``tests/hwguests/mmio`` reads and writes the HPET's timer 2 comparator (halted counter,
timer disabled) with MOV, MOVZX/MOVSX (of the IO-APIC's index register: QEMU's HPET
answers sub-dword reads with 0), the ALU read-modify-writes with their flags (SDM Vol. 2,
each instruction's "Flags Affected"), CMP, TEST, ADD from it, XCHG, MOVS/STOS/LODS between
RAM and devices, a REP MOVS that faults part-way (the registers show the elements moved,
the #PF is at the instruction: SDM Vol. 2 REP), and reads where nothing decodes.
"""

from __future__ import annotations

import functools

import pytest

from hwtests import PC_MONITORS, build_kernel, device_page_traps, monitor_output, output_lines, run_monitor, run_platform

EXPECTED = [
    "mmio: start",
    "mov: cap=8086a201 period=10000000",
    "movzx: byte=fe word=fe movsx: byte=fffffffe word=fe",
    "add: 00000010 flags=001",
    "or: 12345678 flags=004",
    "and: 0f000f00 flags=004",
    "xor: 00000000 flags=044",
    "sub: fffffffe flags=091",
    "inc: 80000000 flags=894",
    "dec: ffffffff flags=094",
    "neg: ffffffff flags=095",
    "not: f0f0f0f0",
    "cmp: 00000003 flags=095",
    "test: 000000f0 flags=044",
    "add from it: 32 xchg: old=22 now=abcd",
    "rep movsl from it: 8086a201 00989680 esi=+8 edi=+8 ecx=0",
    "movsl to it: 600df00d",
    "movsl device to device: 8086a201",
    "stosl: 00005105 lodsl: 00005105",
    "rep movsl fault: vector=14 err=2 cr2=400000 at mark=1 ecx=2 esi=+8 edi=400000 copied=00989680",
    "ioapic version: 00170020 apic version: 00050014",
    # a level input only the IO-APIC has (the pc-testdev's line 17): remote IRR in the
    # handler; still high at the first EOI, delivered again (82093AA); under the
    # monitors it is held for the guest on the machine's IO-APIC (vmm/platform.py)
    "gsi 17 level: hits=2 redir17 in handler=c079",
    "after eoi: redir17=8079",
    # where nothing decodes the PC's bus reads all ones (no device claims the cycle) and
    # drops the write, as ringvisor's machine does (hw/memory.py) and the monitors with it
    "open bus: hpet+0x800=ffffffff fed01000=ffffffff",
    "written: ffffffff",
    "mmio: done",
]
# the lines that cannot be the same on QEMU: its unassigned-memory accesses read 0
# (QEMU's unassigned_mem_read), not the PC's all ones; and QEMU 7.2's pc-testdev raises
# no interrupt for lines above 15 (seen: no delivery), where ringvisor's machine wires
# them to IO-APIC inputs 16-23 (hw/devices/testdev.py) -- the monitors are checked
# against the machine there
ON_QEMU = {"gsi 17 level: hits=2 redir17 in handler=c079": "gsi 17 level: hits=0 redir17 in handler=0",
           "open bus: hpet+0x800=ffffffff fed01000=ffffffff": "open bus: hpet+0x800=00000000 fed01000=00000000",
           "written: ffffffff": "written: 00000000"}


@functools.lru_cache(maxsize=None)
def _vm(mode: str):
    return run_monitor(mode, build_kernel("mmio"))


@pytest.mark.parametrize("platform", [pytest.param("qemu", marks=pytest.mark.qemu), "jit", *PC_MONITORS])
def test_mmio_guest(platform):
    if platform in PC_MONITORS:
        out, code = monitor_output(_vm(platform))
    else:
        out, code = run_platform(platform, build_kernel("mmio"))
    expected = [ON_QEMU.get(line, line) for line in EXPECTED] if platform == "qemu" else EXPECTED
    assert output_lines(out) == expected, out
    assert code == 0


@pytest.mark.parametrize("platform", [pytest.param("qemu", marks=pytest.mark.qemu), "jit", *PC_MONITORS])
def test_x87_quadwords_on_device_pages(platform):
    """FILD and FISTP of a quadword, on the HPET and across RAM and the pc-testdev's memory
    (misaligned): cut as MOVQ's accesses are, on QEMU 7.2 as on the PC; x87, MMX and SSE
    arithmetic with an operand on the HPET (FADD m32, FILD m32, FCOMP m32, FSTP m64, a
    FLD m64 across RAM|HPET, ADDSS, CVTTSS2SI, CVTSI2SD, COMISS, MULSS, MOVSS, PMADDWD).
    Under the monitors each is the hardware's own x87/SIMD function run on the device
    (vmm/mmio.DeviceCpu); before, the run stopped at the FILD with one line."""
    from hwtests import kernel_named
    out, code = run_platform(platform, build_kernel("mmiosplit"), cmdline="x87=1",
                             qemu_args=kernel_named("mmiosplit").qemu_args)
    lines = output_lines(out)
    assert [ln for ln in lines if ln.startswith("q fild")] == SPLIT_X87, out
    assert [ln for ln in lines if ln.startswith(("x87 dev", "sse dev"))] == DEVICE_FP, out
    assert [ln.split("ram|mem ")[1] for ln in lines if ln.startswith("q cmpxchg8b")] == \
        ["z=0 000001234589abcd apic z=1 0000000000000000 tpr=00"]
    assert code == 0
    if platform in PC_MONITORS:
        # each access to a device page was one trap (under hvm an EPT violation) and one
        # emulated instruction; nothing reached the machine's HPET (its comparator is the
        # reset value still)
        r = _vm(platform)
        mon = r.monitor
        assert device_page_traps(mon) == mon.stats["mmio_accesses"] + mon.stats["apic_accesses"]
        assert mon.stats["mmio_accesses"] >= 40
        assert r.machine.hpet.s.comparator[2] == (1 << 64) - 1
        # line 17 (the pc-testdev's, the guest's own device) went to the guest's virtual
        # IO-APIC directly: the machine's pin is as the monitor programmed it at takeover
        # (level, at its vector, unmasked) and nothing is held
        assert r.machine.ioapic.s.redir[17] & 0x1FFFF == 0x8000 | 0x61 and not mon.platform.held


def test_a_platform_saved_before_the_virtual_ioapic_and_hpet_restores():
    """A monitor state saved before the monitors had a virtual IO-APIC and HPET (no
    "vioapic"/"vhpet" in its platform) loads, keeping the ones the monitor was built
    with (on a restore: copies of the machine's own, as at a takeover)."""
    from ringvisor.hw.machine import read_image
    from ringvisor.vmm.runner import create_vm
    m, mon = create_vm(read_image(build_kernel("mmio")), "trapemu", output=lambda b: None)
    p = mon.platform
    old = {k: v for k, v in p.get_state().items() if k not in ("vioapic", "vhpet")}
    p.vioapic.s.redir[2] = 0x72
    p.vhpet.mmio_write(0x10, 4, 1)
    p.set_state(old)
    assert p.vioapic.s.redir[2] == 0x72 and p.vhpet.s.config == 1   # (kept: nothing saved)


def test_an_hvm_platform_saved_before_hvm_had_the_devices_restores():
    """Under hvm a platform saved before the monitor gave the guest the PC's devices holds
    None for them: it loads, keeping the ones the monitor was built with."""
    from ringvisor.hw.machine import read_image
    from ringvisor.vmm.runner import create_vm
    m, mon = create_vm(read_image(build_kernel("mmio")), "hvm", output=lambda b: None)
    p = mon.platform
    old = {**p.get_state(), "vapic": None, "vioapic": None, "vhpet": None}
    p.vioapic.s.redir[2] = 0x72
    p.set_state(old)
    assert p.vioapic.s.redir[2] == 0x72 and p.vapic.apic is not None


def test_hvm_maps_device_pages_into_ept_from_its_three_tables():
    """A page mapped through goes into EPT 1:1, uncacheable, from the device page tables;
    a fourth 2-MByte region of device pages stops the VM with one line, and so does an
    access to an emulated page that an instruction's operand did not make."""
    from ringvisor.hw.machine import read_image
    from ringvisor.vmm.errors import MonitorStop
    from ringvisor.vmm.runner import create_vm
    m, mon = create_vm(read_image(build_kernel("mmio")), "hvm", output=lambda b: None)
    ept = mon.eptmap
    for frame in (0xFEBFF000, 0xFF000000, 0xF0000000):
        assert not ept.mapped(frame)
        ept.map_device(frame)
        assert ept.mapped(frame) and not ept.mapped(frame + 0x1000)
    ept.map_device(0xFEBFE000)                        # (a region it has a table for)
    assert ept.mapped(0xFEBFE000)
    with pytest.raises(MonitorStop, match="more than 3 2-MByte regions"):
        ept.map_device(0xE0000000)
    # a walk of guest page tables kept in an emulated device's page is no instruction's
    # operand: one line, not a wrong emulation (pass-through pages are mapped, retried)
    from ringvisor.hw.ept import Q_LINEAR_VALID, Q_READ
    from ringvisor.vmm.hvmmmio import ept_device_access
    with pytest.raises(MonitorStop, match="a walk of its page tables reached the device page at 0xfee00000"):
        ept_device_access(mon, 0xFEE00020, Q_READ | Q_LINEAR_VALID)
    assert ept_device_access(mon, 0xFEBFF010, Q_READ | Q_LINEAR_VALID)


def test_mmio_guest_under_hvm_on_shadow_page_tables():
    """Without EPT (``--no-ept``) the shadow never maps a virtual device's page either:
    each access is a #PF exit, emulated with the same emulators, and the guest prints
    what it prints natively (the BAR-less guest: its pages are all emulated)."""
    from pathlib import Path
    from ringvisor.vmm.runner import run_vm
    from hwtests import EMULATOR_MAX_INSTRUCTIONS
    r = run_vm(Path(build_kernel("mmio")), "hvm", max_instructions=EMULATOR_MAX_INSTRUCTIONS,
               quiet=True, ept=False)
    out, code = monitor_output(r)
    assert output_lines(out) == EXPECTED, out
    assert code == 0
    mon = r.monitor
    assert mon.report()["paging"] == "shadow page tables" and "EPT violation" not in mon.exits
    assert mon.stats["mmio_accesses"] >= 40 and mon.stats["apic_accesses"] > 0


# tests/hwguests/mmiosplit: misaligned and page-straddling device accesses, as QEMU cuts
# them (hw/memory.split_load, split_store: two aligned loads put together; a store byte by
# byte), each piece answered by what decodes it -- the HPET and the local APIC ignore
# pieces narrower than 32 bits, the IO-APIC's window answers only 32-bit reads; lines
# printed by qemu-system-i386 7.2 (the SDM leaves the cut to the platform: Vol. 3 §11.3)
SPLIT_EXPECTED = [
    "mmiosplit: start",
    "hpet: +1=808086a2 +2=96808086 +3=98968080 +6=00000098 w+1=0000 w+3=0000 w+4=0000",
    "hpet stores: cmp2=11223344 ffffffff",
    "apic: +32=00140005 +2e=00140000 +31=14000500 w+30=0000",
    "apic stores: tpr=00 30",
    "ioapic: +e=00200000 +f=17002000 w+10=0000 sel=01 sel=10",
    "ram|hpet: a201a0b0 86a201a0 01a0b0c0 w=00a0",
    "  stored: ram=7788c0d0 hpet=8086a201",
    "ioapic|ram: c1d10000 d1000000 w=d100",
    "  stored: ram=a1010203 sel=10",
    "ram|apic: 0000a2b2 w=00a2 stored: ram=7766c2d2",
    "ram|testmem: 0201a3b3 01a3b3c3 stored: ram=aab3c3d3 mem=04ddccbb",
    "testmem|nothing: stored 22110b0a, loaded ff22110b",
    "pcitest|ioapic: 003e0000 00003e00 stored: sel=00 hdr=00000100",
    # quadwords (MMX MOVQ, CMPXCHG8B): an aligned one is the HPET's own 64-bit access,
    # two doublewords on the IO-APIC (low first), invalid on the local APIC (beyond its
    # 32 bits: reads 0, a write dropped); a misaligned one two aligned quadwords put
    # together, or bytes stored one by one (dropped by the HPET, which takes no byte)
    "q hpet: +0=009896808086a201 +4=0000000000989680 +1=00009896808086a2 +6=0000000000000098",
    "q hpet stores: 55667788 11223344 55667788 11223344 55667788 11223344",
    "q apic: +30=0000000000000000 +2c=0000000000000000 +32=0000000000000000",
    "q ioapic: +0=0000000000000001 +10=0000000000170020 +c=0017002000000000 sel=02",
    "q ram|hpet: -4=8086a2017788c0d0 -2=96808086a2017788 -7=017788c0d0a0b0c0",
    "q testmem: 0a0b0c0d 01020304 1d000000 141a1b1c 00111213 +9=00010203040a0b0c "
    "+13=111213141a1b1c1d",
    "q ram|testmem: -4=0435363738313233 -3=0004353637383132 ram=34b3c3d3 mem=04353637",
    "q testmem|nothing: -4=ffffffff0d0c0b0a -6=ffff0d0c0b0a0000 stored 4243440a",
    "q cmpxchg8b: z=1 0089abcdef012345 mem=fef00d67 c0ffeeca 00000000 z=0 00c0ffeecafef00d "
    "hpet z=0 009896808086a201 cap=8086a201 ram|mem z=0 0000043536373831 "
    "apic z=1 0000000000000000 tpr=00",
    "q pcitest|ioapic: -4=0000003e00000000 -1=0000000000003e00",
    # 16 bytes (SSE MOVDQU): two quadword accesses, the low one first, each cut as above
    "o hpet: +100=ffffffffffffffff0000000400000030 +f8=00000004000000300000000000000000 "
    "+104=00000000ffffffffffffffff00000004",
    "o hpet stores: 11111111 22222222 11111111 22222222 ram=99999999 aaaaaaaa "
    "apic: +30=00000000000000000000000000000000 ioapic: +0=00000000000000000000000000000001",
    "o ram|hpet: -8=009896808086a201aaaaaaaa99999999 -5=000000009896808086a201aaaaaaaa99",
    "mmiosplit: done",
]


# the piece where nothing decodes reads all ones on the PC's bus, 0 on QEMU (as above)
SPLIT_ON_QEMU = {"testmem|nothing: stored 22110b0a, loaded ff22110b":
                 "testmem|nothing: stored 22110b0a, loaded 0022110b",
                 "q testmem|nothing: -4=ffffffff0d0c0b0a -6=ffff0d0c0b0a0000 stored 4243440a":
                 "q testmem|nothing: -4=000000000d0c0b0a -6=00000d0c0b0a0000 stored 4243440a"}

# x87 quadword loads and stores (FILD, FISTP) on device pages; the CMPXCHG8B line then
# finds FISTP's bytes across the RAM|pc-testdev boundary
SPLIT_X87 = [
    "q fild: hpet=009896808086a201 +4=0000000000989680 fistp=54321000 fedcba76 00000000 "
    "ram=abcdef33 mem=01234589",
]
# x87, MMX and SSE arithmetic with a device operand (printed by qemu-system-i386 7.2)
DEVICE_FP = [
    "x87 dev: fadds=40a487ee fildl=40000000 fcomps sw=0000 fstpl=400921fb54442d18 "
    "ram|hpet fldl=8086a201aaaaaaaa",
    "sse dev: addss=40600000 cvttss2si=1 cvtsi2sd=401c000000000000 comiss zf=0 mulss=40a80000 "
    "movss=40a80000 pmaddwd=00000005 00000009",
]


@pytest.mark.parametrize("platform", [pytest.param("qemu", marks=pytest.mark.qemu), "jit", *PC_MONITORS])
def test_misaligned_and_straddling_device_accesses(platform):
    """Under the monitors a straddling access faults on the device's page and is emulated
    in pieces (vmm/mmio.MmioContext); before, the half in RAM stopped the run."""
    from hwtests import kernel_named
    out, code = run_platform(platform, build_kernel("mmiosplit"),
                             qemu_args=kernel_named("mmiosplit").qemu_args)
    expected = [SPLIT_ON_QEMU.get(line, line) for line in SPLIT_EXPECTED] if platform == "qemu" \
        else SPLIT_EXPECTED
    assert output_lines(out) == expected, out
    assert code == 0

"""PAE paging (SDM Vol. 3A §4.4) on the bare PC.

The ``pae`` guest (tests/hwguests/pae) prints the same lines on ``qemu-system-i386
-kernel`` and on ringvisor's two engines, but for one rule where QEMU's TCG is not the
hardware: a reserved-bit #PF sets P (bit 0) with RSVD (bit 3) -- "the P flag is 0 if
there is no translation ... because the P flag was 0 in one of the paging-structure
entries" (§4.7), and a reserved bit is only checked in a present entry; real processors
(and KVM) report 0x9 where QEMU's excp_helper.c reports 0x8.  The PDPTE registers
(§4.4.1) are checked below on ringvisor alone: QEMU's TCG reads the PDPT at every walk
and never raises #GP for a bad PDPTE.  The walk itself (which entries fault, CR2, the
data, the A/D bits written) is cross-checked against unicorn with random PDE/PTE flags.
"""

from __future__ import annotations

import pytest

from hwtests import build_kernel, guest_lines
from ringvisor.hw.faults import GP, CpuFault, PageFault
from ringvisor.hw.machine import Machine
from ringvisor.hw.state import CR0_PE, CR0_PG, CR4_PAE, CpuState
from ringvisor.hw.controlregs import write_cr


def _rsvd(what: str, err: int, cr2: int, platform: str) -> str:
    # err: P|RSVD plus W/U of the access; QEMU's TCG leaves P out (see above)
    return f"{what}: #14 err={err & ~1 if platform == 'qemu' else err:#x} eip=+0 cr2={cr2:#x}"


def expected(platform: str) -> list[str]:
    return [
        "pae: start",
        "cpuid.1:edx.pae=1",                       # CPUID.1:EDX bit 6 (qemu32 has it)
        "cr0.pg=1 cr4.pae=1 cr3=0x310020",         # CR3 bits 31:5 hold the PDPT (Figure 4-7)
        # §4.8: A in every entry the walk uses, D in the entry that maps the page on a
        # write; a PDE that references a page table has no D (bit 6 ignored).  A/D are
        # written in the low dword of the 64-bit entry; the high dword is untouched.
        "4K pte before: 0x003 pde: 0x003",
        "4K read: 0xa0a0a0a0 pte: 0x023 pde: 0x023",
        "4K write: phys=0x12345678 pte: 0x063 pde: 0x023",
        "pte high dword after A/D: 0x0",
        # a PDE with PS maps 2 MiB (bits 35:21 of the address, §4.4.2, Table 4-9)
        "2M pde before: 0x083",
        "2M read: 0xc4c4c4c4 pde: 0x0a3",
        "2M write: phys 0xd02000=0x44444444 pde: 0x0e3",
        # the PAT bit (12 of a 2 MiB PDE, 7 of a PTE), PCD and PWT are not reserved
        "2M PAT bit: 0x10101010; PAT/PCD/PWT 4K: 0xa3a3a3a3",
        "rep outsb from a PAE page",
        # a not-present entry at any level: P=0 in the error code, W/R of the access
        "read not-present PTE: #14 err=0x0 eip=+0 cr2=0x40001008",
        "write not-present PTE: #14 err=0x2 eip=+0 cr2=0x4000100c",
        "read not-present PDE: #14 err=0x0 eip=+0 cr2=0x40c00000",
        "read not-present PDPTE: #14 err=0x0 eip=+0 cr2=0x80000010",
        "write not-present PDPTE: #14 err=0x2 eip=+0 cr2=0xc0000020",
        # reserved bits (§4.4.2): 62:MAXPHYADDR (36), 20:13 of a 2 MiB PDE, XD (63)
        # without EFER.NXE -- #PF with RSVD, and the entry's A bit is not set
        _rsvd("read PTE bit 40", 0x9, 0x40002004, platform),
        _rsvd("write PTE bit 40", 0xB, 0x40002008, platform),
        _rsvd("read 2M PDE bit 13", 0x9, 0x40400000, platform),
        _rsvd("read PTE XD without NXE", 0x9, 0x40007000, platform),
        _rsvd("user read PTE bit 40", 0xD, 0x40002000, platform),
        "rsvd pte untouched: 0x003",
        # CR0.WP (§4.6.1): WP=1 faults (P|W), nothing written; WP=0 writes and sets D
        "WP=1 supervisor write to read-only page: #14 err=0x3 eip=+0 cr2=0x40003008",
        "  value=0x0 pte: 0x001",
        "WP=0 supervisor write to read-only page: no exception",
        "  value=0x66666666 pte: 0x061",
        # U/S and R/W are the AND over the PDE and the PTE (§4.6.1; PDPTEs have neither)
        "user read, PDE U=0 PTE U=1: #14 err=0x5 eip=+0 cr2=0x40600010",
        "user write, PDE R/W=0 PTE R/W=1: #14 err=0x7 eip=+0 cr2=0x40800010",
        "user read, PDE R/W=0 PTE R/W=1: no exception",
        "  value=0x77777777",
        # §4.4.1: MOV CR3, and MOV CR4 changing PGE, load the PDPTEs again
        "PDPTE 2 after MOV CR3: 0xfeedf00d",
        "PDPTE 3 after MOV CR4 (PGE=1): 0xfeedf00d",
        "PDPTE 3 cleared, MOV CR4: #14 err=0x0 eip=+0 cr2=0xc0000100",
        # a store into code on a PAE-mapped page, directly and through an alias, runs
        # the new code at the next call (§8.1.3)
        "smc: 0x11111111 0x22222222 0x33333333",
        "paging off: cr0=0x11 cr4=0x0",
        "pae: done",
    ]


@pytest.fixture(scope="module")
def image():
    return build_kernel("pae")


@pytest.mark.parametrize("platform", ["qemu", "jit", "interp"])
def test_pae_guest(image, platform):
    lines, code = guest_lines(platform, image)
    assert lines == expected(platform)
    assert code == 0


# the pdptes=1 part, after "PDPTE 3 cleared, MOV CR4" (§4.4.1; ringvisor only, see above)
EXPECTED_PDPTES = [
    # the PDPTE register still holds PDPTE 2: an INVLPG flushes the TLB, not it
    "PDPTE 2 cleared, INVLPG only: 0xfeedf00d",
    # a present PDPTE with bit 1 set (Table 4-8): #GP(0) at the MOV, nothing loaded
    "MOV CR3, PDPTE 2 bit 1: #13 err=0x0 eip=+0",
    "  cr3=0x310020 0x80000100: 0xfeedf00d",
    "MOV CR4 (PGE), PDPTE 2 bit 1: #13 err=0x0 eip=+0",
    "  cr4=0x20",
    "PDPTE 2 cleared, MOV CR3: #14 err=0x0 eip=+0 cr2=0x80000100",
]


def expected_pdptes() -> list[str]:
    lines = expected("jit")
    at = lines.index("PDPTE 3 cleared, MOV CR4: #14 err=0x0 eip=+0 cr2=0xc0000100") + 1
    return lines[:at] + EXPECTED_PDPTES + lines[at:]


@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_pdpte_registers_in_the_guest(image, engine):
    from hwtests import output_lines, run_platform
    out, code = run_platform(engine, image, cmdline="pdptes=1")
    assert output_lines(out) == expected_pdptes()
    assert code == 0


# -- the PDPTE registers, on ringvisor's CPU ---------------------------------------------
PDPT, PD, PT = 0x3020, 0x4000, 0x5000


def pae_machine() -> Machine:
    """1 MiB machine: PDPT[0] -> PD; PD[0] -> PT (PT[1]: 0x1000 -> 0x7000);
    PD[1]: 2 MiB page at 0; paging on with CR4.PAE."""
    m = Machine(1, "jit")
    mem = m.mem
    mem.write(PDPT, (PD | 1).to_bytes(8, "little") + bytes(24))
    mem.write(PD, (PT | 3).to_bytes(8, "little") + (0x83).to_bytes(8, "little"))
    mem.write(PT + 8, (0x7003).to_bytes(8, "little"))
    mem.write(0x7010, (0x5A5A5A5A).to_bytes(4, "little"))
    st = m.cpu.state
    st.cr0 |= CR0_PE
    write_cr(m.cpu, 3, PDPT)
    write_cr(m.cpu, 4, CR4_PAE)
    write_cr(m.cpu, 0, st.cr0 | CR0_PG)
    return m


def test_pdptes_load_at_mov_cr3_and_paging_enable():
    m = pae_machine()
    st, mmu = m.cpu.state, m.cpu.mmu
    assert st.pdpte == [PD | 1, 0, 0, 0]
    assert mmu.read(0x1010, 4, False) == 0x5A5A5A5A
    assert mmu.read(0x207010, 4, False) == 0x5A5A5A5A        # the 2 MiB page at 0
    # an edited PDPT is not seen until the PDPTEs load again, even after a TLB flush
    m.mem.write(PDPT, bytes(8))
    m.cpu.tlb_flush()
    assert mmu.read(0x1010, 4, False) == 0x5A5A5A5A
    write_cr(m.cpu, 3, PDPT)
    with pytest.raises(PageFault) as e:
        mmu.read(0x1010, 4, False)
    assert (e.value.address, e.value.error_code) == (0x1010, 0)


@pytest.mark.parametrize("bad", [1 << 1, 1 << 2, 1 << 5, 1 << 8, 1 << 36, 1 << 63])
def test_a_reserved_pdpte_bit_is_gp_at_the_mov(bad):
    """Table 4-8: bits 2:1, 8:5 and 63:MAXPHYADDR of a present PDPTE are reserved; the
    MOV raises #GP(0) and changes nothing (§4.4.1).  In a not-present one they are not."""
    m = pae_machine()
    st = m.cpu.state
    m.mem.write(0x6000 + 16, (PD | 1 | bad).to_bytes(8, "little"))
    with pytest.raises(CpuFault) as e:
        write_cr(m.cpu, 3, 0x6000)
    assert (e.value.vector, e.value.error_code) == (GP, 0)
    assert (st.cr3, st.pdpte) == (PDPT, [PD | 1, 0, 0, 0])
    write_cr(m.cpu, 0, st.cr0 & ~CR0_PG)
    write_cr(m.cpu, 3, 0x6000)                        # no PAE paging: nothing is loaded
    with pytest.raises(CpuFault):
        write_cr(m.cpu, 0, st.cr0 | CR0_PG)
    assert not st.cr0 & CR0_PG
    m.mem.write(0x6000 + 16, (PD | bad).to_bytes(8, "little"))   # not present
    write_cr(m.cpu, 0, st.cr0 | CR0_PG)
    assert st.pdpte == [0, 0, PD | bad, 0]


def test_reserved_bit_fault_reports_p_and_rsvd():
    m = pae_machine()
    m.mem.write(PT + 8, (0x7003 | 1 << 50).to_bytes(8, "little"))   # bits 62:36 (§4.4.2)
    m.cpu.tlb_flush()
    with pytest.raises(PageFault) as e:
        m.cpu.mmu.write(0x1000, 4, 0, False)
    assert e.value.error_code == 0xB                                  # P | W | RSVD


def test_above_4gib_is_open_bus_and_probe_walks_pae():
    """A PTE may name a frame up to bit 35: nothing answers above 4 GiB on this PC (it
    must not alias the low 4 GiB).  ``probe`` (the debugger's walk) follows PAE."""
    m = pae_machine()
    mmu = m.cpu.mmu
    m.mem.write(PT + 16, (0x100007003).to_bytes(8, "little"))       # 0x2000 -> 0x1_0000_7000
    assert mmu.read(0x2010, 4, False) == 0xFFFFFFFF
    mmu.write(0x2010, 4, 0, False)
    assert m.mem.read32(0x7010) == 0x5A5A5A5A
    assert mmu.probe(0x1010) == 0x7010
    assert mmu.probe(0x2010) == 0x100007010
    assert mmu.probe(0x203456) == 0x3456
    assert mmu.probe(0x40000000) is None


def test_pdptes_are_state():
    m = pae_machine()
    d = m.cpu.state.to_dict()
    assert d["pdpte"] == [PD | 1, 0, 0, 0]
    assert CpuState.from_dict(d).pdpte == [PD | 1, 0, 0, 0]
    with pytest.raises(ValueError):
        CpuState.from_dict({**d, "pdpte": [0]})


# -- under the monitors ----------------------------------------------------------------------
def run_under(image, mode: str, cmdline: str = "", **kw):
    from ringvisor.hw.machine import read_image
    from ringvisor.vmm import create_vm
    out = bytearray()
    m, _ = create_vm(read_image(image), mode, cmdline, 32, output=out.extend, **kw)
    stop = m.run(20_000_000)
    return out.decode("latin-1").replace("\r\n", "\n"), stop


def test_paravirt_refuses_pae_with_one_line():
    """A para-virtualized guest's page tables are the PV ABI's 32-bit ones: its request
    to set CR4.PAE stops the VM with one line naming where PAE runs."""
    from ringvisor.guests.build import image_path
    from ringvisor.hw.machine import read_image
    from ringvisor.vmm import create_vm
    from ringvisor.vmm.errors import MonitorStop
    _, mon = create_vm(read_image(image_path("kernel-pv")), "paravirt", "", 32)
    with pytest.raises(MonitorStop) as e:
        mon.set_cr(4, CR4_PAE)
    assert str(e.value) == ("paravirt: the guest set CR4.PAE: PAE paging is not virtualized "
                            "here; it runs on the bare PC and under --mode trapemu, bt, hvm "
                            "and kvm")
    assert not mon.vcpu.cr4 & CR4_PAE


@pytest.mark.parametrize("mode", ["trapemu", "bt"])
def test_shadow_paging_monitors_run_pae_guests(image, mode):
    """trapemu and bt shadow the guest's PAE tables into their 32-bit shadow page tables
    (``vmm/shadow.py``), with the PDPTE registers the guest's MOVs load (#GP(0) for a bad
    one): the guest prints what it prints on the bare PC, the pdptes=1 part included."""
    text, stop = run_under(image, mode, cmdline="pdptes=1")
    assert text.split("\n")[:-1] == expected_pdptes()
    assert stop.status == 1


def test_hvm_with_ept_runs_pae_guests(image):
    """In VMX non-root operation with EPT the guest's PAE paging is the processor's: its
    PDPTEs go through the VMCS guest PDPTE fields (SDM Vol. 3C §26.3.2.4, §27.3.4), loaded
    by the monitor when it emulates MOV CR0/CR4 (#GP(0) injected for a bad one) and by the
    CPU at a guest MOV CR3 (which does not exit)."""
    text, stop = run_under(image, "hvm", cmdline="pdptes=1")
    assert text.split("\n")[:-1] == expected_pdptes()
    assert stop.status == 1


# -- the walk against unicorn (QEMU's TCG) ------------------------------------------------
# One supervisor access through a PDE and PTE with random flags, reserved bits included,
# on both: whether it faults, CR2, the data, and the A/D bits left in the entries.
# (Unicorn hands over no #PF error code; QEMU's reserved bits 62:52 differ from the SDM's,
# so they are not drawn.)
U_PDPT, U_PD0, U_PT0, U_PD1, U_PT1, U_FRAME, U_BIG = (0x3020, 0x4000, 0x5000, 0x6000, 0x7000,
                                                     0x8000, 0x200000)
U_LIN, U_CODE = 0x40000010, 0x1000
FLAG_BITS = {"P": 1, "W": 2, "U": 4, "PWT": 8, "PCD": 0x10, "A": 0x20, "D": 0x40,
             "rsvd40": 1 << 40, "xd": 1 << 63}


def _tables(write64, pde: int, pte: int) -> None:
    write64(U_PDPT, U_PD0 | 1)
    write64(U_PDPT + 8, U_PD1 | 1)
    write64(U_PD0, U_PT0 | 0x23)
    for i in range(16):
        write64(U_PT0 + 8 * i, (i << 12) | 0x63)
    write64(U_PD1, pde)
    write64(U_PT1, pte)


def _unicorn(pde, pte, write, wp):
    import struct
    from unicorn.x86_const import UC_X86_REG_CR0, UC_X86_REG_CR2, UC_X86_REG_CR3, UC_X86_REG_CR4, \
        UC_X86_REG_EAX, UC_X86_REG_EBX
    from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, Uc
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 4 << 20)
    _tables(lambda a, v: uc.mem_write(a, struct.pack("<Q", v)), pde, pte)
    uc.mem_write(U_FRAME + 0x10, struct.pack("<I", 0x600DF00D))
    uc.mem_write(U_BIG + 0x10, struct.pack("<I", 0xB16B16))
    code = bytes.fromhex("891d10000040" if write else "a110000040") + b"\xf4"
    uc.mem_write(U_CODE, code)
    uc.reg_write(UC_X86_REG_EBX, 0x5EED)
    uc.reg_write(UC_X86_REG_CR3, U_PDPT)
    uc.reg_write(UC_X86_REG_CR4, CR4_PAE)
    uc.reg_write(UC_X86_REG_CR0, uc.reg_read(UC_X86_REG_CR0) | CR0_PG | CR0_PE | (1 << 16 if wp else 0))
    fault = []
    uc.hook_add(UC_HOOK_INTR, lambda u, n, _d: (fault.append(n), u.emu_stop()))
    uc.emu_start(U_CODE, U_CODE + len(code) - 1)
    r64 = lambda a: struct.unpack("<Q", uc.mem_read(a, 8))[0]
    data = uc.reg_read(UC_X86_REG_EAX) if not write else \
        struct.unpack("<I", uc.mem_read((U_BIG if pde & 0x80 else U_FRAME) + 0x10, 4))[0]
    return (fault == [14], uc.reg_read(UC_X86_REG_CR2) if fault else None,
            None if fault else data, r64(U_PD1), r64(U_PT1))


_MACHINE: list[Machine] = []


def _ringvisor(pde, pte, write, wp):
    if not _MACHINE:                      # one machine for every example: tables and TLB reset
        _MACHINE.append(Machine(4, "jit"))
    m = _MACHINE[0]
    _tables(lambda a, v: m.mem.write(a, v.to_bytes(8, "little")), pde, pte)
    m.mem.write(U_FRAME + 0x10, (0x600DF00D).to_bytes(4, "little"))
    m.mem.write(U_BIG + 0x10, (0xB16B16).to_bytes(4, "little"))
    st, mmu = m.cpu.state, m.cpu.mmu
    write_cr(m.cpu, 0, CR0_PE)
    write_cr(m.cpu, 3, U_PDPT)
    write_cr(m.cpu, 4, CR4_PAE)
    write_cr(m.cpu, 0, st.cr0 | CR0_PG | (1 << 16 if wp else 0))
    try:
        if write:
            mmu.write(U_LIN, 4, 0x5EED, False)
            data = m.mem.read32((U_BIG if pde & 0x80 else U_FRAME) + 0x10)
        else:
            data = mmu.read(U_LIN, 4, False)
        fault, cr2 = False, None
    except PageFault as f:
        fault, cr2, data = True, f.address, None
    r64 = lambda a: int.from_bytes(m.mem.read(a, 8), "little")
    return fault, cr2, data, r64(U_PD1), r64(U_PT1)


def _entry(draw, base: int, extra: dict) -> int:
    from hypothesis import strategies as hs
    bits = {**FLAG_BITS, **extra}
    chosen = draw(hs.sets(hs.sampled_from(sorted(bits))))
    value = base
    for name in chosen:
        value |= bits[name]
    return value


def test_pae_walk_matches_unicorn():
    from hypothesis import given, settings, strategies as hs

    @settings(max_examples=50, deadline=None, derandomize=True)
    @given(hs.data(), hs.booleans(), hs.booleans(), hs.booleans())
    def check(data, big, write, wp):
        if big:
            pde = _entry(data.draw, U_BIG | 0x80, {"PAT": 1 << 12, "rsvd13": 1 << 13})
            pte = 0
        else:
            pde = _entry(data.draw, U_PT1, {})
            pte = _entry(data.draw, U_FRAME, {"PAT": 0x80})
        assert _ringvisor(pde, pte, write, wp) == _unicorn(pde, pte, write, wp)

    check()


def test_a_task_switch_to_a_bad_pdpt_faults_in_the_new_task():
    """A task switch loads CR3 from the new TSS, and with PAE paging the PDPTEs with it
    (§4.4.1).  A reserved bit makes it #GP(0) past the commit point -- delivered in the new
    task (its TR and CR3, at its first instruction, SDM Vol. 3A §7.3 and Table 7-1) -- and
    the PDPTE registers keep what they held."""
    import struct
    from ringvisor.hw.state import ATTR_DB, ATTR_G, ATTR_P, ATTR_S, Segment
    m = Machine(1, "jit")
    w = m.mem.write
    w(0x100, bytes.fromhex("ea00000000" "2000") + b"\xf4")            # jmp far 0x20:0; hlt
    w(0x500, b"\xf4")                                                  # the #GP handler: hlt
    gdt = [0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF,
           0x00008B0020000067, 0x0000890030000067]                    # TSS A (busy), TSS B
    w(0x1000, b"".join(struct.pack("<Q", e) for e in gdt))
    w(0x4000 + 13 * 8, struct.pack("<HHHH", 0x500, 0x08, 0x8E00, 0))  # #GP: interrupt gate
    tss = bytearray(0x68)
    struct.pack_into("<III", tss, 0x1C, 0x6000, 0x600, 2)             # CR3, EIP, EFLAGS
    struct.pack_into("<I", tss, 0x38, 0x7000)                         # ESP
    struct.pack_into("<6I", tss, 0x48, 0x10, 0x08, 0x10, 0x10, 0x10, 0x10)
    w(0x3000, bytes(tss))
    w(0x5000, struct.pack("<Q", 0x8001))                              # the good PDPT
    w(0x6000, struct.pack("<Q", 0x8001 | 2))                          # bit 1: reserved
    w(0x8000, struct.pack("<Q", 0x83))                                # 2 MiB at 0
    st = m.cpu.state
    code = Segment(0x08, 0, 0xFFFFFFFF, ATTR_P | ATTR_S | ATTR_DB | ATTR_G | 0xB)
    data = Segment(0x10, 0, 0xFFFFFFFF, ATTR_P | ATTR_S | ATTR_DB | ATTR_G | 0x3)
    st.segs = [data.copy(), code, data.copy(), data.copy(), data.copy(), data.copy()]
    st.gdtr.base, st.gdtr.limit = 0x1000, 0x27
    st.idtr.base, st.idtr.limit = 0x4000, 0x7FF
    st.tr = Segment(0x18, 0x2000, 0x67, ATTR_P | 0xB)
    st.regs[4], st.eip = 0x9000, 0x100
    write_cr(m.cpu, 0, st.cr0 | CR0_PE)
    write_cr(m.cpu, 3, 0x5000)
    write_cr(m.cpu, 4, CR4_PAE)
    write_cr(m.cpu, 0, st.cr0 | CR0_PG)
    m.cpu.mode_changed()
    stop = m.run(1000)
    assert st.halted and st.eip == 0x501, stop
    assert (st.tr.selector, st.cr3, st.pdpte) == (0x20, 0x6000, [0x8001, 0, 0, 0])
    assert struct.unpack("<4I", m.mem.read(0x7000 - 16, 16)) == (0, 0x600, 0x08, 2)


# -- mappings that change, natively and under the shadow-paging monitors ---------------------
def expected_paeshadow(platform: str) -> list[str]:
    return [
        "paeshadow: start",
        "A: cr3=0x320040 0x40000000=0x11111111",     # CR3 bits 31:5: a PDPT need not be page aligned
        # §4.10.4.1: after a PTE change and INVLPG the new frame is used
        "remap, invlpg: 0x22222222",
        # a store through the page table's own mapping of itself; A on the read, D on
        # the write (§4.8), the window's own PTE dirty from the store through it
        "own window: 0x33333333 pte: 0x023 after write: 0x063 window pte: 0x063",
        "unmapped through the window: #14 err=0x0 eip=+0 cr2=0x40000000",
        "code remap: 1 2",                            # instruction fetches too (§4.10.4.1)
        "halves: 0x33333333 0xc0c0c0c0 sum=0xcfcfcfcc",
        # INVLPG of any address in a 2 MiB page invalidates all of it (§4.10.4.1, §4.10.2.3)
        "2M remap: 0xe0e0e0e0 4K half: 0x33333333 pde: 0x0a3",
        # two PDPTs in one page; a CR3 load switches; each sees the edits made to its
        # tables while the other was loaded
        "B: cr3=0x320060 0x40000000=0x55555555",
        "A after an edit on B: 0x11111111",
        "B after an edit on A: 0x44444444",
        # a task switch loads CR3 and the PDPTEs from the new TSS; its IRET, the old
        # task's (SDM Vol. 3A §4.4.1, §7.3)
        "task: cr3=0x320060 0x40000000=0x44444444 back: cr3=0x320040 0x11111111",
        "data page as a table: 0x22222222 then 0x11111111",
        "global page: 0x11111111 then 0x22222222",  # INVLPG drops a global entry too
        "32-bit: cr4=0x0 0x40000000=0x55555555",
        # the PDPTEs load when PAE paging comes back (§4.4.1): PDPT_A[1] edited meanwhile
        "PAE again: cr4=0x20 0x40000000=0x44444444",
        "PDPT restored: 0x33333333",
        "before: 0x11111111",
        _rsvd("reserved bit 40", 0x9, 0x40002000, platform),
        "paeshadow: done",
    ]


@pytest.fixture(scope="module")
def paeshadow():
    return build_kernel("paeshadow")


@pytest.mark.parametrize("platform", ["qemu", "jit"])
def test_paeshadow_guest(paeshadow, platform):
    lines, code = guest_lines(platform, paeshadow)
    assert lines == expected_paeshadow(platform)
    assert code == 0


@pytest.mark.parametrize("mode", ["trapemu", "bt"])
def test_paeshadow_guest_under_the_monitors(paeshadow, mode):
    """The same lines under trapemu and bt (with the pdptes=1 part, as on the bare PC),
    and at every entry into the monitor and before every resume, each page the real TLB
    holds is what a walk of the guest's own PAE tables gives (``test_monitor_tlb``): the
    shadow followed every change."""
    from test_monitor_tlb import _run_checked
    from ringvisor.hw.machine import read_image
    text, _ = _run_checked(read_image(str(paeshadow)), mode, "pdptes=1")
    assert text.replace("\r\n", "\n").split("\n")[:-1] == expected_paeshadow_pdptes()


# the pdptes=1 part, after the task line (ringvisor only: QEMU's TCG has no PDPTE
# registers and never raises #GP for a PDPTE)
PAESHADOW_PDPTES = (
    # §4.4.1, §7.3: the switch commits (the back link is written, CR3 loaded), then
    # #GP(0) at the new task's first instruction with the PDPTE registers unchanged
    # (0x40000000 still through A's PDPTE 1); the new task's IRET goes back
    "bad PDPT task: #GP err=0x0 at entry=1 link=0x28 cr3=0x320080 0x40000000=0x11111111 "
    "back: cr3=0x320040 0x11111111")


def expected_paeshadow_pdptes() -> list[str]:
    lines = expected_paeshadow("jit")
    at = next(i for i, line in enumerate(lines) if line.startswith("task: ")) + 1
    return lines[:at] + [PAESHADOW_PDPTES] + lines[at:]


@pytest.mark.parametrize("ept", [False, True])
def test_paeshadow_guest_under_hvm(paeshadow, ept):
    """hvm on shadow page tables (``--no-ept``, shadowed as under trapemu) and with EPT
    (the processor's own PAE walk): the same lines, the task switch to a bad PDPT
    included (CR3 loaded, the PDPTE registers kept, the new task's #GP)."""
    text, stop = run_under(paeshadow, "hvm", cmdline="pdptes=1", ept=ept)
    assert (text.split("\n")[:-1], stop.status) == (expected_paeshadow_pdptes(), 1)


def test_paeshadow_pdptes_on_the_bare_pc(paeshadow):
    from hwtests import output_lines, run_platform
    out, code = run_platform("jit", paeshadow, cmdline="pdptes=1")
    assert (output_lines(out), code) == (expected_paeshadow_pdptes(), 0)


def test_invlpg_in_a_large_page_drops_all_of_it():
    """The TLB holds a 2 MiB (or 4 MiB) page as 4 KiB entries; INVLPG of any address in
    it invalidates the whole page (SDM Vol. 3A §4.10.4.1)."""
    m = pae_machine()
    mmu = m.cpu.mmu
    m.mem.write(0x6010, (0x6B6B6B6B).to_bytes(4, "little"))
    m.mem.write(PT + 7 * 8, (0x6003).to_bytes(8, "little"))
    assert mmu.read(0x207010, 4, False) == 0x5A5A5A5A     # PD[1]: 2 MiB at 0
    m.mem.write(PD + 8, (PT | 3).to_bytes(8, "little"))   # now the page table: 0x207000 -> 0x6000
    m.cpu.invlpg(0x3FF000)                                # another 4 KiB of the old 2 MiB page
    assert mmu.read(0x207010, 4, False) == 0x6B6B6B6B


def test_a_pae_guest_under_trapemu_is_saved_and_restored(paeshadow):
    """Mid-run, with two PAE address spaces shadowed, the VM's image (the virtual CPU's
    PDPTE registers, each shadow's PDPTEs and the guest table of each half) restores to
    the same monitor state, and the restored VM prints what the original prints."""
    from ringvisor.hw.machine import read_image
    from ringvisor.lifecycle import codec, stream
    from ringvisor.lifecycle.vm import VmInfo, capture, restore
    from ringvisor.vmm import attach_monitor, create_vm
    out = bytearray()
    m, mon = create_vm(read_image(str(paeshadow)), "trapemu", "", 32, output=out.extend)
    for _ in range(1000):                          # (pause on the guest's own progress)
        if b"B after an edit on A" in out:
            break
        m.run(20_000)
        m.stop = None
    else:
        raise AssertionError(out.decode(errors="replace"))
    assert sum(r.pdptes is not None for r in mon.shadow.roots.values()) == 2
    secs = capture(m, mon, VmInfo())
    after = bytearray()
    m2, mon2, _ = restore(stream.read_sections(stream.pack_image(secs)), attach_monitor,
                          output=after.extend)
    assert codec.encode(mon2.get_state()) == codec.encode(mon.get_state())
    mark = len(out)
    for machine in (m, m2):
        assert machine.run(20_000_000).status == 1
    assert bytes(after) == bytes(out[mark:]) and b"paeshadow: done" in after


@pytest.mark.parametrize("mode", ["trapemu", "bt"])
def test_a_pdpt_beyond_guest_ram_is_gp_not_the_monitors_memory(paeshadow, mode):
    """A CR3 naming a PDPT above the guest's RAM -- where the hypervisor region lies in
    machine memory -- loads nothing from there: it reads as open bus (all ones: present
    with reserved bits), so the MOV is #GP(0) and the PDPTE registers keep their values."""
    from ringvisor.hw.machine import read_image
    from ringvisor.hw.state import CR0_PE, CR0_PG, CR4_PAE
    from ringvisor.vmm import create_vm
    from ringvisor.vmm.errors import GuestFault
    m, mon = create_vm(read_image(str(paeshadow)), mode, "", 32)
    region = mon.base + 0x1000                    # machine memory the monitor owns
    m.mem.write(region, (0x1001).to_bytes(8, "little") * 4)   # good PDPTEs, if it were read
    assert mon.gm.read_pdptes(region) is None
    before = list(mon.vcpu.pdpte)
    with pytest.raises(GuestFault) as e:
        mon.load_pdptes(CR0_PE | CR0_PG, CR4_PAE, region)
    assert (e.value.vector, e.value.error_code, mon.vcpu.pdpte) == (13, 0, before)
    m.mem.write(0x7000, (0x1001).to_bytes(8, "little") * 4)   # the same in guest RAM
    assert mon.gm.read_pdptes(0x7000) == [0x1001] * 4

"""The x87/SSE rules no reference emulator here follows, checked against the SDM itself.

QEMU (and unicorn) implement neither x87 stack faults, nor the masked and
unmasked exception responses of SDM Vol. 1 §8.5 (blocked destinations, biased
results, C1 as the round-up bit), nor #XM; each expected value below cites the
rule it comes from.  The cases run on both engines (``interp`` and ``jit``).
"""

from __future__ import annotations

import struct

import pytest

import cpuharness as H
import fpuharness as F
from fpuharness import FpCase, MEM_OPS
from ringvisor.hw import softfloat as sf

ENGINES = ("interp", "jit")
IE, DE, ZE, OE, UE, PE, SF, ES, C0, C1, C2, C3, B = (1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x100,
                                                    0x200, 0x400, 0x4000, 0x8000)
INDEFINITE = 0xFFFF_C000_0000_0000_0000
NM, MF, UD, GP, XM = 7, 16, 6, 13, 19


def ext(x: float) -> int:
    b = struct.unpack("<Q", struct.pack("<d", x))[0]
    return sf.convert(sf.L64, sf.L80, b, 0, True)[0]


def run(c: FpCase, engine: str):
    """(fault vector or None, the FNSAVE/XMM image fields, the CPU) after ``c`` on ``engine``."""
    final = F.run(c, engine)
    out = F._fields(F._out(final)) if final.fault is None else None
    return final.fault, out, H.ringvisor(engine).cpu


def fsw(out) -> int:
    return out["fsw"] & ~0x3800          # without TOP


@pytest.mark.parametrize("engine", ENGINES)
def test_stack_underflow_masked(engine):
    # §8.5.1.1: reading an empty register: IE and SF, C1 = 0; the masked response writes
    # the real indefinite to the destination
    _, out, _ = run(FpCase(body=[bytes.fromhex("d8c1")], st=[ext(1.0)]), engine)   # fadd st, st(1)
    assert fsw(out) == IE | SF
    assert out["st0"] == INDEFINITE


@pytest.mark.parametrize("engine", ENGINES)
def test_stack_overflow_masked(engine):
    # §8.5.1.1: a push onto a full stack: IE, SF and C1 = 1; ST(0) becomes the indefinite
    _, out, _ = run(FpCase(body=[bytes.fromhex("d9e8")], st=[ext(float(i)) for i in range(8)]), engine)
    assert fsw(out) == IE | SF | C1
    assert out["st0"] == INDEFINITE and (out["fsw"] >> 11) & 7 == 7


@pytest.mark.parametrize("engine", ENGINES)
def test_unmasked_invalid_keeps_operands_and_sets_es(engine):
    # §8.5.1.2: with IM = 0, FSQRT of -1 leaves ST(0) alone; ES and B are set (§8.1.3.1)
    c = FpCase(body=[bytes.fromhex("d9fa")], st=[ext(-1.0)], cw=0x037E)
    _, out, _ = run(c, engine)
    assert fsw(out) == IE | ES | B and out["st0"] == ext(-1.0)


@pytest.mark.parametrize("engine", ENGINES)
def test_pending_exception_raises_mf_at_next_waiting_instruction(engine):
    # §8.6 / Vol. 3 §6.15 int 16: with CR0.NE = 1 the next waiting x87 instruction (here
    # FADD, not only FWAIT) faults before it executes; FNSTSW, a no-wait one, does not
    c = FpCase(body=[bytes.fromhex("d9fa"), bytes.fromhex("dfe0"), bytes.fromhex("d8c0")],
               st=[ext(-1.0)], cw=0x037E, cr0=0x31)
    final = F.run(c, engine)
    assert final.fault == MF
    assert final.regs[0] & 0xFFFF == (IE | ES | B | 7 << 11)      # FNSTSW AX ran first
    body, _ = H.assemble(c.case().body, H.CODE)
    assert final.eip == H.CODE + body.index(bytes.fromhex("d8c0"), 10)


@pytest.mark.parametrize("engine", ENGINES)
def test_pending_exception_with_ne_clear_asserts_ferr(engine):
    # CR0.NE = 0 (MS-DOS compatibility, Vol. 1 Appendix D): no #MF, FERR# is asserted
    # (the PC turns it into IRQ 13); FNINIT clears it
    cpu = H.ringvisor(engine).cpu
    seen = []
    cpu.ferr_line = seen.append
    try:
        c = FpCase(body=[bytes.fromhex("d9fa"), bytes.fromhex("9b")], st=[ext(-1.0)], cw=0x037E)
        fault, _, _ = run(c, engine)
    finally:
        cpu.ferr_line = lambda level: None
    assert fault is None and True in seen


@pytest.mark.parametrize("engine", ENGINES)
def test_unmasked_overflow_stores_biased_result(engine):
    # §8.5.4: OM = 0, register destination: the exponent is divided by 2**24576
    big = 0x7FFE_8000_0000_0000_0000                      # 2**16383
    c = FpCase(body=[bytes.fromhex("d8c8")], st=[big], cw=0x0377)   # fmul st, st(0)
    _, out, _ = run(c, engine)
    assert out["st0"] == (2 * 16383 + 16383 - 24576) << 64 | 1 << 63     # 2**32766 / 2**24576
    assert fsw(out) & (OE | ES) == OE | ES


@pytest.mark.parametrize("engine", ENGINES)
def test_unmasked_overflow_to_memory_stores_nothing(engine):
    # §8.5.4: memory destination: nothing stored, the stack is not popped
    c = FpCase(body=[bytes.fromhex("d91d") + H.s32(MEM_OPS)], st=[ext(1e300)], cw=0x0377,
               mem=b"\xAA" * 4)                                   # fstp dword [m]
    final = F.run(c, engine)
    out = F._fields(F._out(final))
    assert H.ringvisor(engine).mem.ram[MEM_OPS:MEM_OPS + 4] == b"\xAA" * 4
    assert out.get("st0") == ext(1e300) and fsw(out) & OE


@pytest.mark.parametrize("engine", ENGINES)
def test_c1_is_the_round_up_bit(engine):
    # §8.1.3.3: after an inexact result C1 tells whether the significand was rounded up
    _, out, _ = run(FpCase(body=[bytes.fromhex("d8f1")], st=[ext(1.0), ext(7.0)]), engine)
    assert fsw(out) == PE                           # 1/7 = 1.001001..b * 2**-3: 64 bits, then 001..
    _, out, _ = run(FpCase(body=[bytes.fromhex("d8f1")], st=[ext(1.0), ext(3.0)]), engine)
    assert fsw(out) == PE | C1                      # 1/3 = 1.0101..b * 2**-2: then 101..: up


@pytest.mark.parametrize("engine", ENGINES)
def test_fstenv_masks_exceptions(engine):
    # Vol. 2 FSTENV: "saves the environment, and then masks all floating-point exceptions"
    c = FpCase(body=[bytes.fromhex("d935") + H.s32(MEM_OPS)], cw=0x0360)
    final = F.run(c, engine)
    assert F._fields(F._out(final))["fcw"] == 0x037F
    assert int.from_bytes(H.ringvisor(engine).mem.ram[MEM_OPS:MEM_OPS + 2], "little") == 0x0360


@pytest.mark.parametrize("engine", ENGINES)
def test_fldcw_unmasking_a_set_flag_makes_it_pending(engine):
    # Vol. 2 FLDCW: a flag set before a load that unmasks it raises at the next waiting one
    c = FpCase(body=[bytes.fromhex("d9fa"), bytes.fromhex("d92d") + H.s32(MEM_OPS),
                     bytes.fromhex("d9d0")], st=[ext(-1.0)], mem=b"\x7E\x03", cr0=0x31)
    assert F.run(c, engine).fault == MF


# --- availability: SDM Vol. 3 Table 2-2 and Table 12-1 --------------------------------------------------
TABLE_2_2 = {  # (EM, MP, TS): (x87 instruction, WAIT)
    (0, 0, 0): (None, None), (0, 0, 1): (NM, None), (0, 1, 0): (None, None), (0, 1, 1): (NM, NM),
    (1, 0, 0): (NM, None), (1, 0, 1): (NM, None), (1, 1, 0): (NM, None), (1, 1, 1): (NM, NM)}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bits", sorted(TABLE_2_2))
def test_table_2_2(engine, bits):
    em, mp, ts = bits
    cr0 = 0x11 | mp << 1 | em << 2 | ts << 3
    expect_fp, expect_wait = TABLE_2_2[bits]
    for body, expect in (([bytes.fromhex("d9e8")], expect_fp), ([bytes.fromhex("9b")], expect_wait)):
        case = H.Case(body=body, regs=[0] * 8, follow="none", cr0=cr0)
        code, _ = H.assemble(body + [b"\xF4"], H.CODE)
        assert H.ringvisor(engine).run(code, case, H.initial_image(case)).fault == expect, (bits, body)


SSE_ADDPS = bytes.fromhex("0f58c1")
MMX_PADDB = bytes.fromhex("0ffcc1")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cr0,cr4,sse,mmx", [
    (0x11, 0x200, None, None),
    (0x15, 0x200, UD, UD),      # CR0.EM: #UD for both (Table 12-1; MMX: Table 22-?)
    (0x11, 0x000, UD, None),    # CR4.OSFXSR clear: #UD for SSE, MMX unaffected
    (0x19, 0x200, NM, NM),      # CR0.TS: #NM
    (0x1B, 0x200, NM, NM),      # CR0.MP changes nothing for SSE/MMX
])
def test_table_12_1(engine, cr0, cr4, sse, mmx):
    for ins, expect in ((SSE_ADDPS, sse), (MMX_PADDB, mmx)):
        case = H.Case(body=[ins], regs=[0] * 8, follow="none", cr0=cr0, cr4=cr4)
        code, _ = H.assemble([ins, b"\xF4"], H.CODE)
        assert H.ringvisor(engine).run(code, case, H.initial_image(case)).fault == expect, ins.hex()


# --- SIMD exceptions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cr4,vector", [(0x600, XM), (0x200, UD)])
def test_unmasked_simd_exception(engine, cr4, vector):
    # Vol. 1 §11.5.2/§11.5.3: an unmasked exception leaves the destination unchanged and
    # raises #XM, or #UD when CR4.OSXMMEXCPT is clear (Vol. 3 §6.15 int 19)
    zero_div = [0x3F800000, 0] + [0] * 6                  # 1.0 / 0.0 in lane 0
    c = FpCase(body=[bytes.fromhex("f30f5ec1")], xmm=zero_div, mxcsr=0x1D80, cr4=cr4)   # ZM clear
    final = F.run(c, engine)
    assert final.fault == vector
    fpu = H.ringvisor(engine).cpu.state.fpu
    assert fpu.xmm[0] == 0x3F800000 and fpu.mxcsr & 0x3F == ZE


@pytest.mark.parametrize("engine", ENGINES)
def test_simd_denormal_flag_and_daz(engine):
    # Vol. 1 §11.5.2.2: a denormal source sets DE; with DAZ it is a zero and DE stays clear
    den = [0x00000001, 0x3F800000] + [0] * 6            # denormal + 1.0
    for mxcsr, expect in ((0x1F80, DE | PE), (0x1FC0, 0)):
        _, out, _ = run(FpCase(body=[bytes.fromhex("f30f58c1")], xmm=den, mxcsr=mxcsr), engine)
        assert out["mxcsr"] & 0x3F == expect, (mxcsr, out["mxcsr"])


# --- MMX state -----------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_mmx_state_transitions(engine):
    # Vol. 1 §9.5.1: an MMX instruction sets TOP = 0 and every tag valid, and writing MMi
    # sets bits 79:64 of Ri; EMMS empties the tags
    # (FSAVE's two-bit tags are computed from the contents, §8.1.7: hence the abridged tag)
    c = FpCase(body=[MMX_PADDB], st=[ext(1.0), ext(2.0)])
    _, out, cpu = run(c, engine)
    assert (out["fsw"] >> 11) & 7 == 0 and out["ftw"] == 0x0556     # special, or zero: 0 + 0
    f = F.run(FpCase(body=[MMX_PADDB, bytes.fromhex("0fae05") + H.s32(MEM_OPS)],
                     st=[ext(1.0), ext(2.0)]), engine)
    assert H.ringvisor(engine).mem.ram[MEM_OPS + 4] == 0xFF
    assert H.ringvisor(engine).cpu.state.fpu.st[0] >> 64 == 0xFFFF
    _, out, _ = run(FpCase(body=[MMX_PADDB, bytes.fromhex("0f77")]), engine)
    assert out["ftw"] == 0xFFFF


@pytest.mark.parametrize("engine", ENGINES)
def test_mmx_instruction_reports_pending_x87_exception(engine):
    c = FpCase(body=[bytes.fromhex("d9fa"), MMX_PADDB], st=[ext(-1.0)], cw=0x037E, cr0=0x31)
    assert F.run(c, engine).fault == MF


# --- FXSAVE / FXRSTOR / MXCSR ---------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_fxsave_layout(engine):
    # Vol. 1 Table 10-2: FCW 0, FSW 2, abridged FTW 4, MXCSR 24, MXCSR_MASK 28, ST(i) at
    # 32 + 16i, XMMi at 160 + 16i; the area must be 16-byte aligned
    c = FpCase(body=[bytes.fromhex("0fae05") + H.s32(MEM_OPS)], st=[ext(1.0), ext(2.0)],
               xmm=[0x1122334455667788_99AABBCCDDEEFF00] + [0] * 7, mxcsr=0x1F81)
    F.run(c, engine)
    img = bytes(H.ringvisor(engine).mem.ram[MEM_OPS:MEM_OPS + 288])
    g = lambda a, n: int.from_bytes(img[a:a + n], "little")
    assert g(0, 2) == 0x037F and g(2, 2) >> 11 == 6 and g(4, 1) == 0xC0
    assert g(24, 4) == 0x1F81 and g(28, 4) == 0xFFFF
    assert g(32, 10) == ext(1.0) and g(48, 10) == ext(2.0)
    assert g(160, 16) == 0x1122334455667788_99AABBCCDDEEFF00
    misaligned = FpCase(body=[bytes.fromhex("0fae05") + H.s32(MEM_OPS + 8)])
    assert F.run(misaligned, engine).fault == GP


@pytest.mark.parametrize("engine", ENGINES)
def test_mxcsr_reserved_bits(engine):
    # Vol. 2 LDMXCSR and FXRSTOR: setting a reserved MXCSR bit is #GP(0)
    c = FpCase(body=[bytes.fromhex("0fae15") + H.s32(MEM_OPS)], mem=(0x11F80).to_bytes(4, "little"))
    assert F.run(c, engine).fault == GP
    img = bytearray(512)
    img[24:28] = (0x10000).to_bytes(4, "little")
    c = FpCase(body=[bytes.fromhex("0fae0d") + H.s32(MEM_OPS)], mem=bytes(img[:16]))
    # the area lies in the data window: write the whole image through the operand block
    case = c.case()
    case.patches.append((MEM_OPS, bytes(img)))
    code, _ = H.assemble(case.body + [b"\xF4"], H.CODE)
    assert H.ringvisor(engine).run(code, case, H.initial_image(case)).fault == GP


# --- the state as data (ringvisor.lifecycle saves it with the rest of the CPU) ---------------------------
def test_fpu_state_round_trips_as_data():
    from ringvisor.hw.state import CpuState, FpuState
    from ringvisor.lifecycle.codec import decode, encode
    st = CpuState()
    f = st.fpu
    f.fcw, f.fsw, f.top, f.ftw, f.mxcsr = 0x027F, 0x80A1, 5, 0xE0, 0x1FA1
    f.st[5] = ext(3.25)
    f.st[7] = INDEFINITE
    f.xmm[3] = (1 << 128) - 1
    f.fip, f.fcs, f.fdp, f.fds, f.fop = 0x1234, 0x8, 0x5678, 0x10, 0x5D9
    back = CpuState.from_dict(decode(encode(st.to_dict())))
    assert back.fpu == f
    keep = st.fpu
    st.load(CpuState().to_dict())                  # in place: the same FpuState object
    assert st.fpu is keep and st.fpu == FpuState()
    bad = st.to_dict()
    bad["fpu"]["st"][0] = 1 << 80
    with pytest.raises(ValueError, match="st must be 8 registers of 80 bits"):
        CpuState.from_dict(bad)


def test_fpu_state_maps_onto_kvm_fpu():
    # struct kvm_fpu: fpr[] in ST(i) order as FXSAVE stores them, ftwx abridged, fsw with TOP
    from ringvisor.hw.state import FpuState
    f = FpuState(top=6, ftw=0xC0)
    f.st[6], f.st[7] = ext(1.0), ext(2.0)
    k = f.to_kvm()
    assert k["fsw"] >> 11 == 6 and k["ftwx"] == 0xC0
    assert int.from_bytes(k["fpr"][0][:10], "little") == ext(1.0)
    assert FpuState.from_kvm(k) == f

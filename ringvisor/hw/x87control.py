"""x87 control: FNINIT, FNCLEX, FLDCW and the status words, FWAIT, environments and state
images (FSTENV/FLDENV, FSAVE/FRSTOR, FXSAVE/FXRSTOR), and the WAIT-prefixed forms.

Loading a control or status word recomputes the exception summary: a flag whose
mask a new control word clears becomes pending (SDM Vol. 2 FLDCW), and FERR#
follows ES (see ``x87.signal_pending``).
"""

from __future__ import annotations

from .faults import GP, NM, CpuFault
from .state import CR0_MP, CR0_TS, CR4_OSFXSR, FpuState
from .x87 import (BUSY, CC, ES, EXC, SF, X87, Insn, M, abridge, begin, check_nm, full_tags, get,
                  linear, note, pop, read, set_status_word, signal_pending, status_word,
                  update_summary, write, x87)


# --- control ------------------------------------------------------------------------------------
def initialize(fpu: FpuState) -> None:
    """FNINIT (SDM Vol. 1 Table 8-?, FINIT): CW 037FH, SW 0, all registers empty, pointers 0."""
    fpu.fcw, fpu.fsw, fpu.top, fpu.ftw = 0x037F, 0, 0, 0
    fpu.fip = fpu.fcs = fpu.fdp = fpu.fds = fpu.fop = 0


@x87(M.FNINIT)
def fninit(cpu, d: Insn) -> None:
    fpu = begin(cpu, waiting=False)
    initialize(fpu)
    cpu.ferr_clear()


@x87(M.FNCLEX)
def fnclex(cpu, d: Insn) -> None:
    """Clear the exception flags, SF, ES and B (the condition codes are undefined: kept)."""
    fpu = begin(cpu, waiting=False)
    fpu.fsw &= ~(EXC | SF | ES | BUSY)
    cpu.ferr_clear()


@x87(M.FNOP)
def fnop(cpu, d: Insn) -> None:
    fpu = begin(cpu)
    note(fpu, cpu, d)


@x87(M.FNENI, M.FNDISI, M.FNSETPM)
def fnlegacy(cpu, d: Insn) -> None:
    """8087/287 controls that the 387 and later execute as no-ops (SDM Vol. 1 §8.3.?)."""
    begin(cpu, waiting=False)


@x87(M.FINCSTP, M.FDECSTP)
def fincstp(cpu, d: Insn) -> None:
    fpu = begin(cpu)
    fpu.top = (fpu.top + (1 if d.mnemonic == M.FINCSTP else -1)) & 7
    fpu.fsw &= ~CC                      # C1 cleared; C0 C2 C3 undefined (cleared, as QEMU)
    note(fpu, cpu, d)


@x87(M.FFREE, M.FFREEP)
def ffree(cpu, d: Insn) -> None:
    fpu = begin(cpu)
    fpu.ftw &= ~(1 << ((fpu.top + d.i) & 7))
    note(fpu, cpu, d)
    if d.mnemonic == M.FFREEP:
        pop(fpu)


@x87(M.FLDCW)
def fldcw(cpu, d: Insn, off: int) -> None:
    fpu = begin(cpu)
    fpu.fcw = read(cpu, d, off, 2) | 0x40          # bit 6 reads as 1
    update_summary(fpu)
    _ferr_follow(cpu, fpu)


@x87(M.FNSTCW)
def fnstcw(cpu, d: Insn, off: int) -> None:
    fpu = begin(cpu, waiting=False)
    write(cpu, d, off, 2, fpu.fcw)


@x87(M.FNSTSW)
def fnstsw(cpu, d: Insn, off: int = 0) -> int:
    """FNSTSW m16 or FNSTSW AX (the block writes the returned value to AX)."""
    fpu = begin(cpu, waiting=False)
    sw = status_word(fpu)
    if d.mem:
        write(cpu, d, off, 2, sw)
    return sw


def _ferr_follow(cpu, fpu: FpuState) -> None:
    if not fpu.fsw & ES:
        cpu.ferr_clear()


# --- environment and state images -----------------------------------------------------------------
def env_image(fpu: FpuState, op16: bool) -> bytes:
    """FSTENV's protected-mode image (SDM Vol. 1 Figures 8-9 and 8-10): 28 or 14 bytes."""
    cw, sw, tw = fpu.fcw, status_word(fpu), full_tags(fpu)
    if op16:
        vals = (cw, sw, tw, fpu.fip & 0xFFFF, fpu.fcs, fpu.fdp & 0xFFFF, fpu.fds)
        return b"".join(v.to_bytes(2, "little") for v in vals)
    vals = (cw, sw, tw, fpu.fip, fpu.fcs | fpu.fop << 16, fpu.fdp, fpu.fds)
    return b"".join(v.to_bytes(4, "little") for v in vals)


def load_env_image(fpu: FpuState, raw: bytes, op16: bool) -> None:
    w = 2 if op16 else 4
    v = [int.from_bytes(raw[k * w:(k + 1) * w], "little") for k in range(7)]
    fpu.fcw = v[0] & 0xFFFF | 0x40
    set_status_word(fpu, v[1] & 0xFFFF)
    fpu.ftw = abridge(v[2] & 0xFFFF)
    fpu.fip, fpu.fdp = v[3], v[5]
    fpu.fcs, fpu.fds = v[4] & 0xFFFF, v[6] & 0xFFFF
    fpu.fop = 0 if op16 else (v[4] >> 16) & 0x7FF
    update_summary(fpu)


@x87(M.FNSTENV)
def fnstenv(cpu, d: Insn, off: int) -> None:
    """Store the environment, then mask every exception (SDM Vol. 2 FSTENV)."""
    fpu = begin(cpu, waiting=False)
    image = env_image(fpu, d.op16)
    write(cpu, d, off, len(image), int.from_bytes(image, "little"))
    fpu.fcw |= EXC
    update_summary(fpu)
    _ferr_follow(cpu, fpu)


@x87(M.FLDENV)
def fldenv(cpu, d: Insn, off: int) -> None:
    fpu = begin(cpu)
    n = 14 if d.op16 else 28
    raw = read(cpu, d, off, n).to_bytes(n, "little")
    load_env_image(fpu, raw, d.op16)
    _ferr_follow(cpu, fpu)


@x87(M.FNSAVE)
def fnsave(cpu, d: Insn, off: int) -> None:
    """The environment and ST(0)..ST(7), then FNINIT (SDM Vol. 2 FSAVE)."""
    fpu = begin(cpu, waiting=False)
    image = env_image(fpu, d.op16) + b"".join(get(fpu, i).to_bytes(10, "little") for i in range(8))
    write(cpu, d, off, len(image), int.from_bytes(image, "little"))
    initialize(fpu)
    cpu.ferr_clear()


@x87(M.FRSTOR)
def frstor(cpu, d: Insn, off: int) -> None:
    fpu = begin(cpu)
    n = 14 if d.op16 else 28
    raw = read(cpu, d, off, n + 80).to_bytes(n + 80, "little")
    load_env_image(fpu, raw[:n], d.op16)
    for i in range(8):
        fpu.st[(fpu.top + i) & 7] = int.from_bytes(raw[n + 10 * i:n + 10 * i + 10], "little")
    _ferr_follow(cpu, fpu)


@x87(M.WAIT)
def fwait(cpu, d: Insn) -> None:
    """WAIT/FWAIT: #NM only when CR0.MP and CR0.TS are both set (Table 2-2); then pending ones."""
    cr0 = cpu.state.cr0
    if cr0 & CR0_MP and cr0 & CR0_TS:
        raise CpuFault(NM)
    if cpu.state.fpu.fsw & ES:
        signal_pending(cpu)


# --- FXSAVE / FXRSTOR (SDM Vol. 1 §10.5.1, Table 10-2) -----------------------------------------------
MXCSR_MASK = 0xFFFF                     # DAZ supported (SDM Vol. 1 §11.6.6)


def fxsave_image(fpu: FpuState, with_sse: bool) -> bytearray:
    img = bytearray(512)
    img[0:2] = fpu.fcw.to_bytes(2, "little")
    img[2:4] = status_word(fpu).to_bytes(2, "little")
    img[4] = fpu.ftw
    img[6:8] = fpu.fop.to_bytes(2, "little")
    img[8:12] = fpu.fip.to_bytes(4, "little")
    img[12:14] = fpu.fcs.to_bytes(2, "little")
    img[16:20] = fpu.fdp.to_bytes(4, "little")
    img[20:22] = fpu.fds.to_bytes(2, "little")
    if with_sse:
        img[24:28] = fpu.mxcsr.to_bytes(4, "little")
        img[28:32] = MXCSR_MASK.to_bytes(4, "little")
    for i in range(8):
        img[32 + 16 * i:42 + 16 * i] = get(fpu, i).to_bytes(10, "little")
    if with_sse:
        for i in range(8):
            img[160 + 16 * i:176 + 16 * i] = fpu.xmm[i].to_bytes(16, "little")
    return img


def _fx_operand(cpu, d: Insn, off: int, write_: bool) -> int:
    lin = linear(cpu, d, off, 512, write_)
    if lin & 15:
        raise CpuFault(GP, 0)          # the 512-byte area must be 16-byte aligned
    return lin


@x87(M.FXSAVE)
def fxsave(cpu, d: Insn, off: int) -> None:
    """Non-waiting.  MXCSR and XMM0-7 are saved only with CR4.OSFXSR (implementation-
    dependent without it, SDM Vol. 2 FXSAVE; QEMU then leaves that memory alone, as here)."""
    check_nm(cpu)
    fpu = cpu.state.fpu
    lin = _fx_operand(cpu, d, off, True)
    sse = bool(cpu.state.cr4 & CR4_OSFXSR)
    img = fxsave_image(fpu, sse)
    user = cpu.cpl == 3
    if sse:
        cpu.mmu.write(lin, 288, int.from_bytes(img[:288], "little"), user)
        return
    # both pieces lie in [lin, lin + 160), which crosses at most one page boundary:
    # probe both ends so that a fault comes before anything is written
    cpu.mmu.walk(lin, True, user)
    cpu.mmu.walk(lin + 159, True, user)
    cpu.mmu.write(lin, 24, int.from_bytes(img[:24], "little"), user)
    cpu.mmu.write(lin + 32, 128, int.from_bytes(img[32:160], "little"), user)


@x87(M.FXRSTOR)
def fxrstor(cpu, d: Insn, off: int) -> None:
    check_nm(cpu)
    fpu = cpu.state.fpu
    lin = _fx_operand(cpu, d, off, False)
    sse = bool(cpu.state.cr4 & CR4_OSFXSR)
    img = cpu.mmu.read(lin, 288, cpu.cpl == 3).to_bytes(288, "little")
    mxcsr = int.from_bytes(img[24:28], "little")
    if sse and mxcsr & ~MXCSR_MASK:
        raise CpuFault(GP, 0)          # reserved MXCSR bits (SDM Vol. 2 FXRSTOR)
    fpu.fcw = int.from_bytes(img[0:2], "little") | 0x40
    set_status_word(fpu, int.from_bytes(img[2:4], "little"))
    fpu.ftw = img[4]
    fpu.fop = int.from_bytes(img[6:8], "little") & 0x7FF
    fpu.fip = int.from_bytes(img[8:12], "little")
    fpu.fcs = int.from_bytes(img[12:14], "little")
    fpu.fdp = int.from_bytes(img[16:20], "little")
    fpu.fds = int.from_bytes(img[20:22], "little")
    for i in range(8):
        fpu.st[(fpu.top + i) & 7] = int.from_bytes(img[32 + 16 * i:42 + 16 * i], "little")
    if sse:
        fpu.mxcsr = mxcsr
        for i in range(8):
            fpu.xmm[i] = int.from_bytes(img[160 + 16 * i:176 + 16 * i], "little")
    update_summary(fpu)
    _ferr_follow(cpu, fpu)


def _waiting(fn):
    """FINIT, FCLEX, FSTCW, FSTSW, FSTENV, FSAVE: FWAIT then the no-wait form (SDM Vol. 2)."""
    def run(cpu, d: Insn, *args):
        fwait(cpu, d)
        return fn(cpu, d, *args)
    return run


for _w, _n in ((M.FINIT, M.FNINIT), (M.FCLEX, M.FNCLEX), (M.FSTCW, M.FNSTCW),
               (M.FSTSW, M.FNSTSW), (M.FSTENV, M.FNSTENV), (M.FSAVE, M.FNSAVE),
               (M.FENI, M.FNENI), (M.FDISI, M.FNDISI), (M.FSETPM, M.FNSETPM)):
    X87[_w] = _waiting(X87[_n])

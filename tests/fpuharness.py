"""Differential testing of the x87 and SSE units against unicorn (built on ``cpuharness``).

A case loads a whole FPU state — control word, MXCSR, up to eight x87
registers (FLD m80, which raises nothing), XMM0-XMM7 — runs the instructions
under test, and stores the state back with non-waiting instructions (FNSAVE,
STMXCSR, MOVUPS).  Both emulators run the same bytes; the general registers,
EFLAGS and memory are compared by ``cpuharness`` and the saved FPU image here,
field by field, skipping what the SDM leaves undefined and where unicorn
(QEMU 5's x87/SSE model) is known to depart from the SDM (each skip says
which rule):

* FIP/FCS/FOP/FDP/FDS: QEMU does not keep them (SDM Vol. 1 §8.1.8-9 says every
  non-control x87 instruction updates them).
* C1 after arithmetic: the SDM makes it the round-up bit (Vol. 1 §8.1.3.3);
  QEMU leaves it unchanged.  Compared only where QEMU sets it too (FXAM,
  FPREM, stack faults: ``compare_c1``).
* The exception flags (FSW bits 0-7 and 15, MXCSR bits 0-5): unicorn's QEMU 5 does
  not propagate softfloat's flags to either (QEMU 5.2 started to); the guest
  ``tests/hwguests/fpu`` checks them against qemu-system-i386 instead.
* The contents of empty x87 registers (nothing reads them architecturally).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cpuharness as H
from cpuharness import DATA, SCRATCH, Case, s32

FP_IN = DATA + 0xF000            # operand block: 8 x87 registers (16 bytes each), 8 XMM, CW, MXCSR
FP_CW = FP_IN + 0x100
FP_MXCSR = FP_IN + 0x104
FP_OUT = SCRATCH + 0x400         # FNSAVE image (108 bytes), MXCSR, XMM0-7
OUT_MXCSR = FP_OUT + 108
OUT_XMM = FP_OUT + 112
OUT_END = OUT_XMM + 128
MEM_OPS = DATA + 0x100           # where the instructions' memory operands live


@dataclass
class FpCase:
    body: list                   # instruction bytes (cpuharness assembler items)
    st: list = field(default_factory=list)      # ST(0), ST(1), ... as raw 80-bit values
    xmm: list = field(default_factory=lambda: [0] * 8)
    cw: int = 0x037F
    mxcsr: int = 0x1F80
    regs: list = field(default_factory=lambda: [0] * 8)
    eflags: int = 0x2
    mem: bytes = b""             # placed at MEM_OPS
    compare_c1: bool = False
    defined_cc: int = 0          # C0 C2 C3 bits the instruction defines ("FPU Flags Affected")
    # QUIRK: FCOMI/FUCOMI(P) clear OF SF AF (SDM Vol. 2 FCOMI); QEMU 5 leaves them as they were
    skip_eflags: int = 0
    cr0: int = 0x11               # ringvisor only: PE ET (NE clear, as the harness starts)
    cr4: int = 0x600              # ringvisor only: OSFXSR OSXMMEXCPT

    def __repr__(self) -> str:
        body, _ = H.assemble(list(self.body), H.CODE)
        xmm = [f"{i}:{v:032x}" for i, v in enumerate(self.xmm) if v]
        return (f"FpCase({H.disasm(body)} [{body.hex()}] st=[{', '.join(f'{v:020x}' for v in self.st)}] "
                f"cw={self.cw:#06x} mxcsr={self.mxcsr:#x} xmm=[{' '.join(xmm)}] eflags={self.eflags:#x}"
                f"{' mem=' + bytes(self.mem).hex() if self.mem else ''})")

    def case(self) -> Case:
        patches = [(FP_CW, self.cw.to_bytes(2, "little")), (FP_MXCSR, self.mxcsr.to_bytes(4, "little")),
                   (SETUP, _SETUP), (LOADS, _LOADS), (SAVE, _SAVE)]
        for k, v in enumerate(self.st):
            patches.append((FP_IN + 16 * k, v.to_bytes(10, "little")))
        for i, v in enumerate(self.xmm):
            patches.append((FP_IN + 0x80 + 16 * i, v.to_bytes(16, "little")))
        if self.mem:
            patches.append((MEM_OPS, bytes(self.mem)))
        regs = list(self.regs)
        regs[4] = H.STACK_TOP - 0x100
        loads = LOADS + 6 * (8 - len(self.st))   # enter at the load of ST(n-1)
        body = [_call(H.CODE, SETUP), _call(H.CODE + 5, loads)] + list(self.body)
        here = H.CODE + len(H.assemble(body, H.CODE)[0])
        body.append(_call(here, SAVE))
        return Case(body=body, regs=regs, eflags=self.eflags, patches=patches, follow="none",
                    cr0=self.cr0, cr4=self.cr4)


def _call(at: int, target: int) -> bytes:
    return b"\xE8" + s32(target - (at + 5))


# The state is loaded and saved by subroutines in the low window whose bytes never change,
# so their translations survive from case to case: only the body is translated each time.
SETUP = H.LOW + 0x8000            # FNINIT, FLDCW, LDMXCSR, XMM0-7
LOADS = H.LOW + 0x8100            # eight FLD m80 (ST(7) first), entered part-way
SAVE = H.LOW + 0x8200             # FNSAVE, STMXCSR, XMM0-7 to FP_OUT
_SETUP = (b"\xDB\xE3" + b"\xD9\x2D" + s32(FP_CW) + b"\x0F\xAE\x15" + s32(FP_MXCSR) +
          b"".join(bytes((0x0F, 0x10, 0x05 | i << 3)) + s32(FP_IN + 0x80 + 16 * i) for i in range(8)) +
          b"\xC3")
_LOADS = b"".join(b"\xDB\x2D" + s32(FP_IN + 16 * k) for k in reversed(range(8))) + b"\xC3"
_SAVE = (b"\xDD\x35" + s32(FP_OUT) + b"\x0F\xAE\x1D" + s32(OUT_MXCSR) +
         b"".join(bytes((0x0F, 0x11, 0x05 | i << 3)) + s32(OUT_XMM + 16 * i) for i in range(8)) +
         b"\xC3")


def _fields(img: bytes) -> dict:
    g = lambda a, n: int.from_bytes(img[a:a + n], "little")
    out = {"fcw": g(0, 2), "fsw": g(4, 2), "ftw": g(8, 2), "mxcsr": g(108, 4)}
    top = (out["fsw"] >> 11) & 7
    for i in range(8):
        phys = (top + i) & 7
        if (out["ftw"] >> (2 * phys)) & 3 != 3:
            out[f"st{i}"] = g(28 + 10 * i, 10)
    for i in range(8):
        out[f"xmm{i}"] = g(112 + 16 * i, 16)
    return out


def _fmt(name: str, v: int) -> str:
    width = {"fcw": 4, "fsw": 4, "ftw": 4, "mxcsr": 8}.get(name, 20 if name.startswith("st") else 32)
    return f"{v:0{width}x}"


def compare_images(ref: bytes, got: bytes, c: FpCase, label: str) -> list[str]:
    a, b = _fields(ref), _fields(got)
    errs = []
    # TOP, C1 where QEMU implements it, and the C0 C2 C3 bits the SDM defines for the body
    fsw_mask = 0x3800 | (0x200 if c.compare_c1 else 0) | (c.defined_cc & 0x4500)
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if k == "fsw" and x is not None and y is not None:
            x, y = x & fsw_mask, y & fsw_mask
        if k == "mxcsr":
            x, y = x & ~0x3F, y & ~0x3F
        if x != y:
            errs.append(f"{label}: {k} {_fmt(k, y) if y is not None else 'empty'} != unicorn "
                        f"{_fmt(k, x) if x is not None else 'empty'}")
    return errs


def _out(final: H.Final) -> bytes:
    scratch = final.mem["scratch"]
    return scratch[FP_OUT - SCRATCH:OUT_END - SCRATCH]


def _blank(final: H.Final) -> None:
    s = bytearray(final.mem["scratch"])
    s[FP_OUT - SCRATCH:OUT_END - SCRATCH] = bytes(OUT_END - FP_OUT)
    final.mem["scratch"] = bytes(s)


def run(c: FpCase, engine: str):
    case = c.case()
    img = H.initial_image(case)
    code, _ = H.assemble(case.body + [b"\xF4"], H.CODE)
    return H.ringvisor(engine).run(code, case, img)


def check(c: FpCase, engines=("interp", "jit")) -> None:
    """Run ``c`` on unicorn and ringvisor and raise :class:`cpuharness.Mismatch` on a difference."""
    case = c.case()
    img = H.initial_image(case)
    body, _ = H.assemble(case.body, H.CODE)
    code = body + b"\xF4"
    ref, undef = H.reference(code, len(body), case, img)
    errs = []
    ref_img = _out(ref)
    mask = (H.ARITH & ~undef.flags & ~c.skip_eflags) | H.DF
    for eng in engines:
        got = H.ringvisor(eng).run(code, case, img)
        if ref.fault is None and got.fault is None:
            errs += compare_images(ref_img, _out(got), c, eng)
        _blank(got)
        r = H.Final(ref.regs, ref.eip, ref.eflags, ref.fault, dict(ref.mem), ref.note)
        _blank(r)
        errs += H._cmp_final(eng, r, got, undef, mask, None)
    if errs:
        raise H.Mismatch(f"{c!r}\n" + "\n".join(errs))

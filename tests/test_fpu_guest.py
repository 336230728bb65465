"""The x87/SSE guest (tests/hwguests/fpu) on QEMU and on ringvisor.

Each part prints raw values (hex) and must print exactly what
``qemu-system-i386 -kernel`` prints (QEMU 7.2 computes the x87 and SSE flags as
the SDM does, unlike unicorn's QEMU 5).  Where QEMU departs from the SDM the
guest does not print the value (its comments say which, and
``tests/test_fpu_sdm.py`` checks those rules).  The lines below with a comment
are also checked against the SDM directly.
"""

from __future__ import annotations

import functools
import os
import shutil

import pytest

from hwtests import FPU_KERNELS, build_kernel, output_lines, run_platform
from ringvisor.tools.qemu import find_qemu

SCALE = float(os.environ.get("RINGVISOR_DIFF_SCALE", "1"))
RANDOM_CASES = max(1, int(200 * SCALE))

# (image, command line, engines besides QEMU's)
RUNS = [
    ("fpu-387", "part=0", ("jit",)),            # C with -mfpmath=387: x87 code
    ("fpu-sse2", "part=0", ("jit",)),           # C with -mfpmath=sse: scalar SSE2
    ("fpu-sse2-O3", "part=0", ("jit",)),        # -O3: packed SSE in the vectorized loops
    ("fpu-387", "part=1", ("jit",)),            # x87 instructions
    ("fpu-387", "part=2", ("jit",)),            # SSE, SSE2, MMX instructions
    ("fpu-387", "part=3", ("jit", "interp")),   # CR0/CR4 rules, #NM, #MF, FXSAVE, CPUID
    ("fpu-387", f"random={RANDOM_CASES} seed=1", ("jit",)),
]


def _need() -> None:
    if shutil.which("gcc") is None or shutil.which("ld") is None:
        pytest.skip("guest toolchain (gcc, ld) not installed")


@functools.lru_cache(maxsize=None)
def _run(image: str, cmdline: str, platform: str) -> tuple[str, int]:
    return run_platform(platform, build_kernel(image), cmdline)


@pytest.mark.qemu
@pytest.mark.parametrize("image,cmdline,engines", RUNS, ids=[f"{i}-{c.split()[0]}" for i, c, _ in RUNS])
def test_matches_qemu(image, cmdline, engines):
    _need()
    if find_qemu() is None:
        pytest.skip("qemu-system-i386 not installed")
    ref = _run(image, cmdline, "qemu")
    assert ref[1] == 0, ref[0]
    for engine in engines:
        got = _run(image, cmdline, engine)
        assert got == ref, _first_difference(image, cmdline, ref[0], got[0], engine)


def _first_difference(image: str, cmdline: str, a: str, b: str, engine: str) -> str:
    la, lb = output_lines(a), output_lines(b)
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            msg = f"line {i + 1}:\n  qemu: {x}\n  {engine}: {y}"
            if cmdline.startswith("random="):
                # a case prints a hash of its state: print that case in full on both
                case = int(x.split()[0])
                again = f"random=1 first={case} verbose=1 {cmdline.split()[1]}"
                msg += "\n" + "\n".join(f"  {p}: " + "\n  ".join(output_lines(
                    _run(image, again, p)[0])[1:3]) for p in ("qemu", engine))
            return msg
    return f"qemu printed {len(la)} lines, {engine} {len(lb)}"


def test_sdm_lines():
    """Lines whose values come from the SDM (run on ringvisor; QEMU prints the same)."""
    _need()
    out = output_lines(_run("fpu-387", "part=3", "jit")[0])
    # CPUID.01H:EDX reports the units (SDM Vol. 2 CPUID, Table 3-11)
    assert "cpuid.1: fpu=1 mmx=1 fxsr=1 sse=1 sse2=1" in out
    # Table 2-2: TS=1 -> x87 #NM; WAIT only with MP=1 too; FNSTSW (no-wait) still #NM
    i = out.index("em=0 mp=0 ts=1")
    assert out[i + 1:i + 4] == ["  fld1: #NM eip=+0", "  fwait: no exception", "  fnstsw: #NM eip=+0"]
    i = out.index("em=0 mp=1 ts=1")
    assert out[i + 2] == "  fwait: #NM eip=+0"
    # Table 12-1: CR0.EM -> #UD for SSE; CR4.OSFXSR = 0 -> #UD for SSE, MMX unaffected
    i = out.index("em=1 mp=0 ts=0")
    assert out[i + 4:i + 6] == ["  addps: #UD eip=+0", "  paddb mm: #UD eip=+0"]
    i = out.index("osfxsr=0")
    assert out[i + 1:i + 4] == ["  addps: #UD eip=+0", "  ldmxcsr: #UD eip=+0",
                                "  paddb mm: no exception"]
    # lazy FPU switching: #NM at the instruction, which runs again after CLTS (Vol. 3 §2.5)
    assert any(line.startswith("lazy switch: #NM count=1 eip=+0 ts=0 st0=4000:c90fdaa22168c235")
               for line in out)
    # CR0.NE=1: the pending ZE is reported by the next waiting instruction (Vol. 1 §8.6)
    assert any(line.startswith("#MF: ") and "count=1 eip=+0" in line for line in out)
    # FXSAVE: 16-byte alignment, MXCSR_MASK with DAZ (Vol. 1 §10.5.1, §11.6.6)
    assert "fxsave misaligned: #GP eip=+0" in out
    assert any("mask=0000ffff" in line and line.startswith("fxsave: fcw=027f") for line in out)


def test_ferr_irq13():
    """CR0.NE = 0: the PC routes FERR# to IRQ 13 (QEMU 7.2 cannot run this: it asserts).

    With ZE unmasked, 1/0 leaves the stack alone (SDM Vol. 1 §8.5.3: TOP = 6 after FLD1,
    FLDZ) and sets ZE, ES and B; FWAIT asserts FERR#, the interrupt is taken after it
    (QEMU's model of the PC: the instruction completes), the handler's port 0xF0 write
    and FNCLEX clear it, and it comes once.
    """
    _need()
    out = output_lines(_run("fpu-387", "part=3 ferr=1", "jit")[0])
    assert "FERR# IRQ 13: count=1 eip=+1 sw in handler=b084 sw after=3000" in out

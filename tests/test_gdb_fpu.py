"""gdb sees and writes the guest's x87 and SSE registers, in every mode.

The ``gdbregs`` guest (tests/hwguests/gdbregs) loads known values -- a control
word, MXCSR, four values on the x87 stack, eight XMM patterns -- passes the label
``gdbregs_loaded``, then prints what its registers hold.  Debian's gdb stops it
there and reads the registers (``info all-registers``, ``p $st0``, ``p $xmm0``:
gdb's 32bit-core.xml and 32bit-sse.xml), writes some (``set $st0 = 42``...), and
lets it run on: the guest prints gdb's values.  Undisturbed, the guest prints the
same lines on QEMU as on ringvisor.  The para-virtual kernel cannot turn SSE on
(CR4 is not its to write), so under paravirt the guest's own x87 code is stepped
instead, through a value gdb wrote.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from hwtests import build_kernel, guest_lines
from ringvisor.guests.build import image_path
from test_gdb import free_port

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")

# What the guest loads, as it prints it (SDM Vol. 1: FLDCW/LDMXCSR load what they are
# given, FLDCW's bit 6 reading as 1; FLD pushes, so TOP is 8 - 4 = 4 and R4-R7 are
# tagged valid, the full tag word 0x00ff (8.1.7); FLDPI rounds pi to nearest (8.3.8);
# 12345 and -1.5 are exact)
LOADED = """\
fcw 027f fsw 2000 ftw 00ff mxcsr 00003f80
st0 3fff:8000000000000000
st1 4000:c90fdaa22168c235
st2 400c:c0e4000000000000
st3 bfff:c000000000000000
xmm0 3f800000 40200000 c0400000 3f000000
""".splitlines() + [f"xmm{i} " + " ".join(
    "".join(f"{i:x}{j:x}" for j in range(k + 3, k - 1, -1)) for k in range(0, 16, 4))
    for i in range(1, 8)]

WRITES = [
    "set $st0 = 42",
    "set $st2 = -0.25",
    "set $xmm1.v4_int32 = {1, 2, 3, 4}",
    "set $xmm7.v2_int64 = {0x0123456789abcdef, 0x1122334455667788}",
    "set $mxcsr = 0x1f80",
    "set $fctrl = 0x37f",
    "set $mxcsr = 0x10000",          # a reserved bit (FXRSTOR would #GP): refused
]
# what the guest then finds: gdb's values (-0.25 is bffd:8..., 42 is 4004:a8...)
WRITTEN = {0: "fcw 037f fsw 2000 ftw 00ff mxcsr 00001f80",
           1: "st0 4004:a800000000000000",
           3: "st2 bffd:8000000000000000",
           6: "xmm1 00000001 00000002 00000003 00000004",
           12: "xmm7 89abcdef 01234567 55667788 11223344"}


def gdb_ex(image, port: int, commands: list[str], timeout: float = 180) -> str:
    """gdb in batch mode, one -ex per command: a command that fails (a refused write)
    does not end the session."""
    args = ["gdb", "-q", "-nx", "-batch", "-ex", "set pagination off",
            "-ex", "set tcp connect-timeout 60", "-ex", f"target remote 127.0.0.1:{port}"]
    for c in commands:
        args += ["-ex", c]
    p = subprocess.run(args + [str(image)], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    return p.stdout.decode() + p.stderr.decode()


def run_under_gdb(image, mode: str, commands: list[str]) -> tuple[str, str]:
    port = free_port()
    vm = subprocess.Popen([sys.executable, "-m", "ringvisor", "run", str(image), "--mode", mode,
                           "--gdb", f"tcp::{port}", "-S", "--serial", "stdio"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out = gdb_ex(image, port, commands)
        stdout, _ = vm.communicate(timeout=120)
    finally:
        vm.kill()
    return out, stdout.decode("latin-1").replace("\r\n", "\n")


def registers(out: str) -> dict[str, str]:
    """``info registers``' lines: name -> the first column of its value."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^(\w+)\s+(\S+)", out, re.M)}


def test_the_guest_on_qemu():
    assert guest_lines("qemu", build_kernel("gdbregs")) == (LOADED, 0)


@pytest.mark.parametrize("mode", ["native", "trapemu", "bt", "hvm"])
def test_x87_and_sse_registers(mode):
    image = build_kernel("gdbregs")
    out, guest = run_under_gdb(image, mode, [
        "info registers fctrl fstat ftag mxcsr",
        "break *gdbregs_loaded", "continue",
        "info all-registers",
        "p $st0", "p $st1", "p $st3", "p $xmm0.v4_float", "p/x $xmm3.uint128",
        "p/x $fiseg", "p/x $fop", "x/i $fioff",
        *WRITES,
        "p $st0", "p $st2", "p/x $xmm1.v4_int32", "p/x $mxcsr", "p/x $fctrl",
        "continue"])
    # at reset, before the first instruction: FNINIT's values, MXCSR's power-up value
    # (SDM Vol. 1 8.1.5-8.1.7, 10.2.3.1)
    reset = re.findall(r"^(?:fctrl|fstat|ftag|mxcsr)\s+(0x[0-9a-f]+)", out, re.M)[:4]
    assert reset == ["0x37f", "0x0", "0xffff", "0x1f80"], out
    stop = out[out.index("Breakpoint 1, "):]
    regs = registers(stop)
    assert (regs["fctrl"], regs["fstat"], regs["ftag"], regs["mxcsr"]) == \
        ("0x27f", "0x2000", "0xff", "0x3f80"), stop
    raw = re.findall(r"^st(\d)\s+.*\(raw (0x[0-9a-f]+)\)$", stop, re.M)
    assert raw == [("0", "0x3fff8000000000000000"), ("1", "0x4000c90fdaa22168c235"),
                   ("2", "0x400cc0e4000000000000"), ("3", "0xbfffc000000000000000"),
                   ("4", "0x00000000000000000000"), ("5", "0x00000000000000000000"),
                   ("6", "0x00000000000000000000"), ("7", "0x00000000000000000000")], stop
    assert "uint128 = 0x7f7e7d7c7b7a79787776757473727170}" in stop     # xmm7
    printed = re.findall(r"^\$\d+ = (.*)$", stop, re.M)
    assert printed[:5] == ["1", "3.14159265358979323851", "-1.5", "{1, 2.5, -3, 0.5}",
                           "0x3f3e3d3c3b3a39383736353433323130"], stop
    # the last x87 instruction (FCS:FIP and FOP, SDM Vol. 1 8.1.8-8.1.9) is the guest's FLD1
    # (D9 E8) in its own code segment -- not a translation's, not a ring-compressed selector
    assert printed[5:7] == ["0x8", "0x1e8"], stop
    assert re.search(r"^   0x[0-9a-f]+ <gdbregs_run\+\d+>:\tfld1$", stop, re.M), stop
    assert printed[7:] == ["42", "-0.25", "{0x1, 0x2, 0x3, 0x4}", "0x1f80", "0x37f"], stop
    assert out.count("Could not write register") == 1 and \
        'Could not write register "mxcsr"' in out, out
    expected = [WRITTEN.get(i, line) for i, line in enumerate(LOADED)]
    assert guest.splitlines() == expected, guest
    assert "exited with code 01" in out, out     # isa-debug-exit: (0 << 1) | 1


def test_x87_under_paravirt():
    """The para-virtual kernel's own x87 instructions, planted at its entry and stepped:
    FLD1, FLDPI (ST(0) = pi, ST(1) = 1, TOP 6, R6 and R7 valid), then gdb writes ST(0)
    and the guest's FADDP adds it: 1 + 42.  XMM1 and MXCSR take gdb's values."""
    image = image_path("kernel-pv")
    out, _ = run_under_gdb(image, "paravirt", [
        "set {unsigned char[6]}$pc = {0xd9, 0xe8, 0xd9, 0xeb, 0xde, 0xc1}",
        "stepi", "stepi",
        "info registers fstat ftag",
        "p $st0", "p $st1",
        "set $st0 = 42", "stepi",
        "p $st0", "info registers fstat ftag",
        "set $xmm1.v4_int32 = {1, 2, 3, 4}", "set $mxcsr = 0x3f80",
        "p/x $xmm1.v4_int32", "p/x $mxcsr",
        "p/x $fiseg", "x/i $fioff",
        "kill"])
    regs = re.findall(r"^(?:fstat|ftag)\s+(0x[0-9a-f]+)", out, re.M)
    assert regs == ["0x3000", "0xfff", "0x3800", "0x3fff"], out
    printed = re.findall(r"^\$\d+ = (.*)$", out, re.M)
    assert printed == ["3.14159265358979323851", "1", "43", "{0x1, 0x2, 0x3, 0x4}",
                       "0x3f80", "0x8"], out       # the kernel's CS as it loaded it, not RPL 1
    assert re.search(r"^   0x[0-9a-f]+ <_start\+4>:\tfaddp\s+%st,%st\(1\)$", out, re.M), out

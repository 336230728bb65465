"""Helpers for the hardware conformance guests (tests/hwguests).

Each guest is a small Multiboot kernel that prints results to COM1 and
leaves by writing a byte to port 0xf4 (0 = pass, 1 = a check inside the
guest failed, 2 = unexpected exception).  ``run_platform`` runs an image on
the reference (``qemu``) or on ringvisor's CPU (``jit`` / ``interp``) and
returns ``(serial output as text, guest exit code)``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ringvisor.guests.toolchain import CFLAGS, LDFLAGS, Target, build

GUEST_DIR = Path(__file__).resolve().parent / "hwguests"
RT_DIR = GUEST_DIR / "rt"
LINKER_SCRIPT = GUEST_DIR / "link.ld"
BUILD_DIR = Path(os.environ.get("RINGVISOR_HWGUEST_BUILD", GUEST_DIR / "build"))

PLATFORMS = ("qemu", "jit", "interp")
QEMU_TIMEOUT = 30.0                 # seconds per guest run
EMULATOR_MAX_INSTRUCTIONS = 50_000_000
MEM_MB = 32

RUNTIME_SOURCES = [RT_DIR / "boot.S", RT_DIR / "rt.c", RT_DIR / "libgcc.c"]


@dataclass(frozen=True)
class Kernel:
    """One conformance guest image."""

    name: str                       # image name, e.g. "alu-O2"
    directory: str                  # folder under tests/hwguests
    optimize: str = "-O2"
    stdin: bytes = b""
    cmdline: str = ""
    cflags: tuple[str, ...] = field(default_factory=tuple)
    # the guest's own sources compute in floating point: built without -mgeneral-regs-only,
    # with these flags (the shared runtime keeps it: it runs before CR0/CR4 allow FP)
    fp_cflags: tuple[str, ...] | None = None
    qemu_args: tuple[str, ...] = ()     # e.g. a -cpu with the features the guest tests

    def sources(self) -> list[Path]:
        own = sorted(p for p in (GUEST_DIR / self.directory).iterdir()
                     if p.suffix in (".c", ".S"))
        return RUNTIME_SOURCES + own

    def target(self) -> Target:
        own = [p for p in self.sources() if p not in RUNTIME_SOURCES]
        return Target(name=self.name, sources=self.sources(),
                      linker_script=LINKER_SCRIPT, cflags=list(self.cflags),
                      include_dirs=[RT_DIR], optimize=self.optimize,
                      fp_sources=own if self.fp_cflags is not None else [],
                      fp_cflags=list(self.fp_cflags or ()))


KERNELS: dict[str, Kernel] = {k.name: k for k in [
    Kernel("privilege", "privilege"),
    Kernel("faults", "faults"),
    Kernel("paging", "paging"),
    Kernel("pic_pit", "pic_pit"),
    Kernel("uart", "uart", stdin=b"ringvisor\n"),
    Kernel("smc", "smc"),
    Kernel("sysinsn", "sysinsn"),
    Kernel("alu-O0", "alu", optimize="-O0"),
    Kernel("alu-O2", "alu", optimize="-O2"),
    Kernel("alu-O3", "alu", optimize="-O3"),
    Kernel("cpufeat", "cpufeat", qemu_args=("-cpu", "qemu32,+smep,+umip,+rdtscp")),
]}

# The x87/SSE guest (tests/hwguests/fpu), one image per code generation; the command line
# picks the part that runs (tests/test_fpu_guest.py).
FP_FLAGS = ("-msse2", "-fno-math-errno")
FPU_KERNELS: dict[str, Kernel] = {k.name: k for k in [
    Kernel("fpu-387", "fpu", fp_cflags=FP_FLAGS + ("-mfpmath=387",)),
    Kernel("fpu-sse2", "fpu", fp_cflags=FP_FLAGS + ("-mfpmath=sse",)),
    Kernel("fpu-sse2-O3", "fpu", optimize="-O3", fp_cflags=FP_FLAGS + ("-mfpmath=sse",)),
]}

# Images that are not conformance guests (runner self-tests).
EXTRA_KERNELS: dict[str, Kernel] = {k.name: k for k in [
    Kernel("hang", "hang"),
    Kernel("hostile", "hostile"),       # attacks the monitor's region (tests/test_hostile.py)
    Kernel("com2", "com2"),             # the second serial port, with two lines (test_console.py)
]}


def _fingerprint(kernel: Kernel) -> str:
    h = hashlib.sha256()
    for part in (*CFLAGS, *LDFLAGS, kernel.optimize, *kernel.cflags, str(kernel.fp_cflags),
                 os.environ.get("RINGVISOR_CC", "gcc"), os.environ.get("RINGVISOR_LD", "ld")):
        h.update(part.encode() + b"\0")
    headers = sorted(RT_DIR.glob("*.h")) + sorted((GUEST_DIR / kernel.directory).glob("*.h"))
    for src in [*kernel.sources(), *headers, LINKER_SCRIPT]:
        h.update(src.name.encode() + b"\0" + src.read_bytes())
    return h.hexdigest()[:16]


def build_kernel(name: str) -> Path:
    """Build (or reuse a cached build of) the guest ``name``; returns the ELF path.

    Images are cached by a hash of their sources and flags, so concurrent test
    workers and repeated runs share builds.
    """
    kernel = KERNELS.get(name) or FPU_KERNELS.get(name) or EXTRA_KERNELS[name]
    out = BUILD_DIR / f"{name}-{_fingerprint(kernel)}.elf"
    if not out.exists():
        # build under a private name, then rename: safe with parallel workers
        tmp = out.with_name(f"{out.stem}.{os.getpid()}.build.elf")
        build(kernel.target(), tmp)
        os.replace(tmp, out)
    return out


def run_platform(platform: str, image: Path, cmdline: str = "",
                 stdin: bytes = b"", qemu_args: tuple[str, ...] = ()) -> tuple[str, int]:
    """Run ``image`` on ``platform`` ("qemu", "jit" or "interp").

    Returns the COM1 output (decoded as latin-1, CR LF folded to LF) and the
    guest's exit code: the byte it wrote to port 0xf4, or -1 if the machine
    stopped some other way (triple fault, instruction limit).
    """
    if platform == "qemu":
        from ringvisor.tools.qemu import run_qemu
        res = run_qemu(Path(image), cmdline=cmdline, mem_mb=MEM_MB, stdin=stdin,
                       timeout=QEMU_TIMEOUT, extra_args=qemu_args)
        out, code = res.output, res.guest_exit_code
        code = -1 if code is None else code
    elif platform in ("jit", "interp"):
        from ringvisor.hw.machine import run_image
        # run_image reports the status QEMU would exit with, (byte << 1) | 1 for a
        # write to port 0xf4; anything else means the guest stopped another way.
        out, status = run_image(Path(image), cmdline=cmdline, mem_mb=MEM_MB, stdin=stdin,
                                max_instructions=EMULATOR_MAX_INSTRUCTIONS, engine=platform)
        code = status >> 1 if status & 1 else -1
    else:
        raise ValueError(f"unknown platform {platform!r} (expected one of {PLATFORMS})")
    return out.decode("latin-1").replace("\r\n", "\n"), code


def output_lines(text: str) -> list[str]:
    """The guest's output as a list of lines (trailing empty line dropped)."""
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")

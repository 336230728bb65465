"""The foreign test kernels (tests/foreign): built, cached and run on every platform.

Each kernel in ``tests/foreign/NAME/`` has its own entry, linker script
(``NAME.ld``) and descriptor tables, and shares only the small runtime in
``tests/foreign/rt`` (console, formatter, trap stubs).  ``run`` boots one on
QEMU (``qemu-system-i386 -kernel``), on ringvisor natively (``jit`` or
``interp``) or under a monitor (``trapemu``, ``bt``) and returns the serial
output and the guest's exit code.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ringvisor.guests.toolchain import CFLAGS, LDFLAGS, Target, build

FOREIGN_DIR = Path(__file__).resolve().parent / "foreign"
RT_DIR = FOREIGN_DIR / "rt"
BUILD_DIR = Path(os.environ.get("RINGVISOR_FOREIGN_BUILD", FOREIGN_DIR / "build"))
MEM_MB = 32
MAX_INSTRUCTIONS = 40_000_000
QEMU_TIMEOUT = 30.0


def _target(name: str) -> Target:
    own = sorted(p for p in (FOREIGN_DIR / name).iterdir() if p.suffix in (".c", ".S"))
    rt = sorted(p for p in RT_DIR.iterdir() if p.suffix in (".c", ".S"))
    return Target(name=name, sources=own + rt, linker_script=FOREIGN_DIR / name / f"{name}.ld",
                  include_dirs=[RT_DIR], optimize="-O2")


def build_kernel(name: str) -> Path:
    """The ELF of foreign kernel ``name``, built once per content (shared by workers)."""
    t = _target(name)
    h = hashlib.sha256()
    for part in (*CFLAGS, *LDFLAGS, t.optimize):
        h.update(part.encode() + b"\0")
    for src in sorted([*t.sources, t.linker_script, *RT_DIR.glob("*.h"),
                       *(FOREIGN_DIR / name).glob("*.h")]):
        h.update(src.name.encode() + b"\0" + src.read_bytes())
    out = BUILD_DIR / f"{name}-{h.hexdigest()[:16]}.elf"
    if not out.exists():
        tmp = out.with_name(f"{out.stem}.{os.getpid()}.build.elf")
        build(t, tmp)
        os.replace(tmp, out)
    return out


def run(platform: str, image: Path, cmdline: str = "") -> tuple[list[str], int]:
    """(output lines, exit code) of ``image`` on ``platform``: "qemu", "jit", "interp",
    "trapemu" or "bt".  The exit code is the byte written to port 0xf4, or -1."""
    if platform == "qemu":
        from ringvisor.tools.qemu import run_qemu
        res = run_qemu(image, cmdline=cmdline, mem_mb=MEM_MB, timeout=QEMU_TIMEOUT)
        out, code = res.output, res.guest_exit_code
        code = -1 if code is None else code
    else:
        from ringvisor.vmm import run_vm
        mode, engine = (platform, "jit") if platform in ("trapemu", "bt", "hvm") else ("native", platform)
        r = run_vm(image, mode, cmdline, mem_mb=MEM_MB, max_instructions=MAX_INSTRUCTIONS,
                   engine=engine, quiet=True)
        out, code = r.output, (r.status >> 1 if r.stop.reason == "exit" else -1)
        if code == -1 and r.stop.message:
            out += f"\n[ringvisor: {r.stop.message.splitlines()[0]}]\n".encode()
    text = out.decode("latin-1").replace("\r\n", "\n")
    lines = text.split("\n")
    return (lines[:-1] if text.endswith("\n") else lines), code

"""Build 32-bit freestanding guest images with the stock gcc and ld.

Guests are compiled with ``gcc -m32 -ffreestanding -nostdlib -fno-pic -no-pie``
and linked with ``ld -m elf_i386``.  No multilib is installed on the build
machines, so guests bring their own helpers (64-bit division and the like).
``-mgeneral-regs-only`` keeps the compiler away from x87/SSE registers: a kernel
must not touch them before it has set CR0/CR4 up for them (and the teaching
kernel never does).  Sources that compute in floating point on purpose are
listed in ``Target.fp_sources`` and built without it, with ``fp_cflags``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ringvisor.errors import RingvisorError

CFLAGS = [
    "-m32", "-march=i686", "-ffreestanding", "-nostdlib", "-fno-pic", "-no-pie",
    "-fno-stack-protector", "-fno-builtin", "-mgeneral-regs-only",
    "-fno-asynchronous-unwind-tables", "-Wall",
]
LDFLAGS = ["-m", "elf_i386", "--no-warn-rwx-segments", "-z", "noexecstack"]


class BuildError(RingvisorError):
    """The guest build failed (compiler missing or a compile error)."""


@dataclass
class Target:
    """One image: its sources, linker script and extra compiler flags."""

    name: str
    sources: list[Path]
    linker_script: Path | None = None
    cflags: list[str] = field(default_factory=list)
    include_dirs: list[Path] = field(default_factory=list)
    optimize: str = "-O2"
    fp_sources: list[Path] = field(default_factory=list)    # may use x87/SSE registers
    fp_cflags: list[str] = field(default_factory=list)      # e.g. -mfpmath=387, -msse2
    ldflags: list[str] = field(default_factory=list)   # extra ld options (e.g. -Ttext=...)


def _run(cmd: list[str]) -> None:
    try:
        # (a diagnostic quotes the source: its bytes need not be UTF-8)
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    except FileNotFoundError as e:
        raise BuildError(f"guest build needs {cmd[0]!r}, which is not installed") from e
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        # the tool's own diagnostics go to stderr as it wrote them, before ringvisor's one
        # line (cli._run_command), as make shows a failing compiler's
        # the line that says what is wrong: an error, else the first that is not context
        # (gcc's "In function", ld's "in function", a warning or a note before it)
        context = ("in function", "in file included", "warning:", "note:")
        first = next((line for line in msg if "error" in line.lower()),
                     next((line for line in msg if not any(c in line.lower() for c in context)),
                          msg[0] if msg else f"exit status {proc.returncode}"))
        e = BuildError(f"{Path(cmd[0]).name} failed: {first}"
                       + ("" if len(msg) <= 1 else f" (and {len(msg) - 1} more lines above)"))
        e.diagnostics = "".join(f"{line}\n" for line in msg[:40]) if len(msg) > 1 else ""
        raise e


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new
    one, never half of either (a temporary file beside it, flushed to the disk, then
    a rename).  A name that cannot be written is a BuildError naming it (one line)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise BuildError(f"{path}: is a directory")
        if path.exists() and not path.is_file():
            with open(path, "wb") as f:   # a device or a pipe: in place, not renamed over
                f.write(data)
            return
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise BuildError(f"{path}: cannot write: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)             # mkstemp makes it private; images are shared
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise BuildError(f"{path}: cannot write: {e.strerror}") from None
        raise


def build(target: Target, out: Path) -> Path:
    """Compile and link ``target`` into the ELF file ``out`` (written atomically)."""
    gcc = os.environ.get("RINGVISOR_CC", "gcc")
    ld = os.environ.get("RINGVISOR_LD", "ld")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rv-build-") as tmp:
        objs = []
        for i, src in enumerate(target.sources):
            obj = Path(tmp) / f"{i}-{src.stem}.o"
            if src in target.fp_sources:
                cmd = [gcc, *(f for f in CFLAGS if f != "-mgeneral-regs-only"), target.optimize,
                       *target.cflags, *target.fp_cflags]
            else:
                cmd = [gcc, *CFLAGS, target.optimize, *target.cflags]
            cmd += [f"-I{d}" for d in target.include_dirs]
            cmd += ["-c", str(src), "-o", str(obj)]
            _run(cmd)
            objs.append(str(obj))
        linked = Path(tmp) / "image.elf"
        cmd = [ld, *LDFLAGS, *target.ldflags]
        if target.linker_script:
            cmd += ["-T", str(target.linker_script)]
        _run(cmd + ["-o", str(linked), *objs])
        write_atomic(out, linked.read_bytes())
    return out

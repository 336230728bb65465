"""Run a Multiboot image on ``qemu-system-i386`` (TCG), the reference platform.

Used by the hardware conformance tests (``tests/test_hw_guests.py``) to check
guest kernels against QEMU, and by ``ringvisor bench`` to time the same images
on QEMU TCG.  The guest talks to the outside world through COM1 (wired to the
process's stdin/stdout) and leaves through an ``isa-debug-exit`` device at
I/O port 0xf4: writing the byte ``v`` there makes QEMU exit with status
``(v << 1) | 1`` (see :func:`guest_exit_code`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ringvisor.errors import RingvisorError

QEMU_BINARY = "qemu-system-i386"
DEBUG_EXIT_PORT = 0xF4


class QemuError(RingvisorError):
    """QEMU is missing, refused the image, or did not finish in time."""


class QemuTimeout(QemuError):
    """The guest did not exit within the time limit (QEMU was killed)."""

    def __init__(self, image: Path, timeout: float, output: bytes) -> None:
        self.image = image
        self.timeout = timeout
        self.output = output
        tail = output[-300:].decode("latin-1")
        super().__init__(f"qemu: {image.name} did not exit within {timeout:g} s "
                         f"(killed); last serial output: {tail!r}")


@dataclass
class QemuResult:
    output: bytes          # everything the guest wrote to COM1
    exit_status: int       # QEMU's process exit status
    wall_seconds: float
    stderr: bytes = b""

    @property
    def guest_exit_code(self) -> int | None:
        """The byte the guest wrote to port 0xf4, or None if QEMU exited otherwise."""
        return guest_exit_code(self.exit_status)


def guest_exit_code(exit_status: int) -> int | None:
    """Map QEMU's exit status back to the value written to the debug-exit port.

    isa-debug-exit makes QEMU exit with ``(value << 1) | 1``; any even status
    (0 after a triple fault with ``-no-reboot``, or a QEMU error) means the
    guest did not exit through the port.
    """
    if exit_status > 0 and exit_status & 1:
        return exit_status >> 1
    return None


def find_qemu() -> str | None:
    """Path of qemu-system-i386 ($RINGVISOR_QEMU overrides), or None."""
    override = os.environ.get("RINGVISOR_QEMU")
    if override:
        return override if os.path.exists(override) or shutil.which(override) else None
    return shutil.which(QEMU_BINARY)


def qemu_command(qemu: str, image: Path, cmdline: str = "", mem_mb: int = 32,
                 extra_args: Sequence[str] = (), bios: bool = False) -> list[str]:
    """The full qemu-system-i386 command line for ``image`` (a firmware ROM with ``bios``)."""
    boot = ["-bios", str(image)] if bios else ["-kernel", str(image), "-append", cmdline]
    return [
        qemu,
        "-accel", "tcg",
        *boot,
        "-m", str(mem_mb),
        "-display", "none",
        "-serial", "stdio",
        "-monitor", "none",
        "-no-reboot",
        "-nodefaults",
        "-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04",
        *extra_args,
    ]


def run_qemu(image: Path, cmdline: str = "", mem_mb: int = 32, stdin: bytes = b"",
             timeout: float = 60, extra_args: Sequence[str] = (), bios: bool = False) -> QemuResult:
    """Boot ``image`` with ``qemu-system-i386 -kernel`` and wait for it to exit.

    ``stdin`` is fed to COM1; the guest's COM1 output is returned.  Raises
    :class:`QemuError` if QEMU is not installed and :class:`QemuTimeout` if
    the guest runs longer than ``timeout`` seconds.
    """
    qemu = find_qemu()
    if qemu is None:
        raise QemuError(f"{QEMU_BINARY} is not installed (apt-get install qemu-system-x86)")
    image = Path(image)
    if not image.is_file():
        raise QemuError(f"qemu: no such image: {image}")
    cmd = qemu_command(qemu, image, cmdline, mem_mb, extra_args, bios)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise QemuTimeout(image, timeout, out) from None
    wall = time.monotonic() - start
    status = proc.returncode
    if guest_exit_code(status) is None and not out and err:
        # QEMU itself failed (bad option, unloadable image, ...)
        lines = err.decode(errors="replace").strip().splitlines()
        raise QemuError(f"qemu failed on {image.name} (status {status}): "
                        f"{lines[0] if lines else ''}")
    return QemuResult(output=out, exit_status=status, wall_seconds=wall, stderr=err)

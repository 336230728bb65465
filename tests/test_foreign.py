"""Foreign kernels: kernels unlike the teaching kernel, on QEMU, natively and under the monitors.

Each kernel in ``tests/foreign`` (see its README) brings its own entry, link
address, GDT (odd selectors, odd places), IDT, TSS and page tables, and does
what kernels written elsewhere do: long computations before the PIC is set
up, CR0.WP clear, user-mode port I/O at IOPL 3, in-place GDT edits,
interrupts at awkward moments, faults in every segment-load and delivery
path.  The reference is ``qemu-system-i386 -kernel``: ringvisor must print
exactly what QEMU prints, natively with both engines, under binary
translation, and under trap-and-emulate -- where the kernels steer clear of
Robin & Irvine's sensitive instructions, so nothing may differ there either.
Each kernel boots once per platform.
"""

from __future__ import annotations

import functools

import pytest

from foreign import build_kernel, run
from ringvisor.tools.qemu import find_qemu

KERNELS = ["lnx", "segs", "jos", "xv6"]
PLATFORMS = ["jit", "interp", "trapemu", "bt"]


@functools.lru_cache(maxsize=None)
def reference(name: str) -> tuple[tuple[str, ...], int]:
    """QEMU's output if QEMU is installed, else the native run's (still checked against
    the monitors, and against the expected last line)."""
    image = build_kernel(name)
    out, code = run("qemu" if find_qemu() else "jit", image)
    return tuple(out), code


@pytest.mark.qemu
@pytest.mark.parametrize("name", KERNELS)
def test_qemu_runs_it_to_the_end(name):
    if find_qemu() is None:
        pytest.skip("qemu-system-i386 is not installed")
    out, code = reference(name)
    assert code == 0 and out[-1] == f"{name}: done", out


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("name", KERNELS)
def test_same_output_as_qemu(name, platform):
    ref, ref_code = reference(name)
    out, code = run(platform, build_kernel(name))
    assert out == list(ref) and code == ref_code

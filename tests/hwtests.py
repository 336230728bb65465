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
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ringvisor.guests.toolchain import CFLAGS, LDFLAGS, Target, build

GUEST_DIR = Path(__file__).resolve().parent / "hwguests"
RT_DIR = GUEST_DIR / "rt"
LINKER_SCRIPT = GUEST_DIR / "link.ld"
BUILD_DIR = Path(os.environ.get("RINGVISOR_HWGUEST_BUILD", GUEST_DIR / "build"))

PLATFORMS = ("qemu", "jit", "interp")
MONITORS = ("trapemu", "bt")            # the full-virtualization monitors, on the jit engine
# the monitors that give the guest the PC's memory-mapped devices (a virtual local APIC,
# IO-APIC and HPET, BARs mapped through): those two, and hardware assist with EPT
PC_MONITORS = (*MONITORS, "hvm")
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
    runtime: bool = True            # link the shared runtime (rt/)
    linker_script: str | None = "link.ld"   # under tests/hwguests; None: ld's default
    ldflags: tuple[str, ...] = field(default_factory=tuple)
    modules: tuple[str, ...] = field(default_factory=tuple)  # "FILE ARGS", FILE in the guest's folder
    mem_mb: int = MEM_MB
    serial_ports: int = 1           # COM1 (stdio), COM2... (nothing attached)

    def sources(self) -> list[Path]:
        own = sorted(p for p in (GUEST_DIR / self.directory).iterdir()
                     if p.suffix in (".c", ".S"))
        return (RUNTIME_SOURCES if self.runtime else []) + own

    def linker_path(self) -> Path | None:
        return GUEST_DIR / self.linker_script if self.linker_script else None

    def module_specs(self) -> list[str]:
        """The modules as QEMU's -initrd takes them: absolute file name, then arguments."""
        return [str(GUEST_DIR / self.directory / m.split(" ", 1)[0])
                + (" " + m.split(" ", 1)[1] if " " in m else "") for m in self.modules]

    def target(self) -> Target:
        own = [p for p in self.sources() if p not in RUNTIME_SOURCES]
        return Target(name=self.name, sources=self.sources(),
                      linker_script=self.linker_path(), cflags=list(self.cflags),
                      include_dirs=[RT_DIR], optimize=self.optimize, ldflags=list(self.ldflags),
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
    Kernel("smap", "smap", qemu_args=("-cpu", "qemu32,+smap")),
]}

# The x87/SSE guest (tests/hwguests/fpu), one image per code generation; the command line
# picks the part that runs (tests/test_fpu_guest.py).
FP_FLAGS = ("-msse2", "-fno-math-errno")
FPU_KERNELS: dict[str, Kernel] = {k.name: k for k in [
    Kernel("fpu-387", "fpu", fp_cflags=FP_FLAGS + ("-mfpmath=387",)),
    Kernel("fpu-sse2", "fpu", fp_cflags=FP_FLAGS + ("-mfpmath=sse",)),
    Kernel("fpu-sse2-O3", "fpu", optimize="-O3", fp_cflags=FP_FLAGS + ("-mfpmath=sse",)),
]}

# The bare PC against QEMU (tests/test_bare_pc.py): the firmware hand-off, ELF
# loading, and CPU corner cases; their expected lines are in that file.
PC_KERNELS: dict[str, Kernel] = {k.name: k for k in [
    Kernel("handoff", "handoff", runtime=False, cmdline="hand  off test",
           modules=("handoff.c first module args", "entry.S")),
    Kernel("handoff-129m-com2", "handoff", runtime=False, mem_mb=129, serial_ports=2),
    Kernel("elf-ttext", "elfload", runtime=False, linker_script=None,
           ldflags=("-Ttext=0x100000", "--defsym=__image_low=0xff000",
                    "--defsym=__image_high=_end")),
    Kernel("elf-higher-half", "elfload", runtime=False, linker_script="elfload/higher.ld",
           cflags=("-DHIGHER_HALF",)),
    Kernel("elf-segments", "elfload", runtime=False, linker_script="elfload/segments.ld",
           cflags=("-DBIG_BSS",)),
    Kernel("tfstep", "tfstep"),
    Kernel("straddle", "straddle"),
    Kernel("rmivt", "rmivt", runtime=False),
    Kernel("cr0et", "cr0et"),
    Kernel("aout-kludge", "elfload", runtime=False, linker_script="elfload/aout.ld",
           cflags=("-DAOUT",)),
]}

# Images that are not conformance guests (runner self-tests).
EXTRA_KERNELS: dict[str, Kernel] = {k.name: k for k in [
    Kernel("hang", "hang"),
    Kernel("movss", "movss"),           # debug traps held by MOV SS/POP SS, ICEBP, I/O breakpoints (test_movss_held.py)
    Kernel("pae", "pae"),               # PAE paging (test_pae.py)
    Kernel("paeshadow", "paeshadow"),   # PAE mappings that change, under the monitors (test_pae.py)
    Kernel("hostile", "hostile"),       # attacks the monitor's region (tests/test_hostile.py)
    Kernel("com2", "com2"),             # the second serial port, with two lines (test_console.py)
    Kernel("tasks", "tasks"),           # hardware task switching (test_tasks.py)
    Kernel("nmiwait", "nmiwait"),       # NMIs from the NMI input, held until IRET (test_hvm.py)
    Kernel("vm86", "vm86"),             # virtual-8086 mode and a #GP monitor (test_vm86.py)
    Kernel("vme", "vme"),               # CR4.VME and CR4.PVI (test_vm86.py)
    Kernel("apic", "apic"),             # local APIC and IO-APIC (test_apic.py)
    Kernel("smp", "smp"),               # several processors (test_smp.py)
    Kernel("smptlb", "smptlb"),         # faults, a spinlock and a TLB shootdown on them (test_smp.py)
    Kernel("firmware", "firmware"),     # fw_cfg, ACPI, HPET, PCI, QEMU's test devices (test_firmware.py)
    Kernel("vmx", "vmx"),               # VMX: QEMU's TCG has none (tests/test_vmx_guest.py)
    Kernel("gdbregs", "gdbregs"),       # x87/SSE values for a debugger (test_gdb_fpu.py)
    Kernel("apictimer", "apictimer"),   # the APIC timer natively and under the monitors (test_vapic.py)
    Kernel("mmio", "mmio"),             # MMIO instruction forms natively and under the monitors (test_mmio.py)
    # unaligned and page-straddling device accesses, cut as QEMU cuts them (test_mmio.py)
    Kernel("mmiosplit", "mmiosplit", qemu_args=("-device", "pc-testdev", "-device", "pci-testdev")),
    Kernel("irqloop", "irqloop"),       # an interrupt a store makes pending inside a loop (test_apic.py)
    Kernel("virtio", "virtio"),         # legacy virtio-pci, polled (test_virtio.py)
    Kernel("diskfw", "diskfw"),         # the firmware's report of the IDE disks (test_diskfw.py)
    Kernel("rings12", "rings12"),       # drivers at rings 1 and 2: refused by trapemu (test_monitor_guests.py)
    Kernel("ringcalls", "ringcalls"),   # gates, handlers, returns and checks at rings 1 and 2 (test_monitor_guests.py)
    Kernel("hvmreal", "hvmreal", runtime=False),  # real mode and back, under hvm's unrestricted guest (test_hvmreal.py)
    Kernel("hvmreal-beyond", "hvmreal", runtime=False, cflags=("-DBEYOND_RAM",)),  # ... reading beyond its RAM
    Kernel("realmon", "realmon", runtime=False),  # real mode under the monitors (test_realmode_monitors.py)
    # kernels written as elsewhere (tests/hwguests/osdev: no shared runtime), one program each,
    # on QEMU, natively and under trapemu and bt (test_osdev.py)
    Kernel("osdev-pse", "osdev", runtime=False, linker_script="osdev/link.ld", cflags=("-DPROG_PSE",)),
    # (QEMU counts instructions, as for tschalt: its PIT then never fires during a switch)
    Kernel("osdev-sched", "osdev", runtime=False, linker_script="osdev/link.ld",
           cflags=("-DPROG_SCHED",), qemu_args=("-icount", "shift=0,sleep=off")),
    Kernel("osdev-demand", "osdev", runtime=False, linker_script="osdev/link.ld", cflags=("-DPROG_DEMAND",)),
    # more kernels written as elsewhere, each in the manner of another author (tests/hwguests/
    # osdev2: no shared runtime, a directory each), on QEMU, natively and under trapemu and bt
    # (test_osdev2.py)
    Kernel("osdev2-jit", "osdev2/jit", runtime=False, linker_script="osdev2/jit/link.ld"),
    Kernel("osdev2-tss", "osdev2/tss", runtime=False, linker_script="osdev2/tss/link.ld"),
    Kernel("osdev2-sysenter", "osdev2/sysenter", runtime=False,
           linker_script="osdev2/sysenter/link.ld"),
    # (QEMU counts instructions, as for osdev-sched: its PIT on the same clock as the code)
    Kernel("osdev2-xv6", "osdev2/xv6", runtime=False, linker_script="osdev2/xv6/link.ld",
           qemu_args=("-icount", "shift=0,sleep=off")),
    # and more (tests/hwguests/osdev3, test_osdev3.py): also under hvm
    Kernel("osdev3-strpg", "osdev3/strpg", runtime=False, linker_script="osdev3/strpg/link.ld"),
    Kernel("osdev3-dtab", "osdev3/dtab", runtime=False, linker_script="osdev3/dtab/link.ld"),
    Kernel("osdev3-bigpg", "osdev3/bigpg", runtime=False, linker_script="osdev3/bigpg/link.ld"),
    Kernel("osdev3-cow", "osdev3/cow", runtime=False, linker_script="osdev3/cow/link.ld"),
]}

# Guests that must run under every monitor exactly as on the hardware
# (tests/test_monitor_guests.py): run natively, on QEMU, under trapemu and bt.
MONITOR_KERNELS: dict[str, Kernel] = {k.name: k for k in [
    Kernel("selfstep", "selfstep"),
    Kernel("selfpatch", "selfpatch"),
    Kernel("remap", "remap"),
    Kernel("debugreg", "debugreg"),
    Kernel("kernelisms", "kernelisms"),
    Kernel("kernelisms-sdm", "kernelisms", cflags=("-DSEGMENT_CHECKS",)),
    Kernel("ldt", "ldt"),
    Kernel("segbase", "segbase"),
    Kernel("tscwrite-sdm", "tscwrite"),     # QEMU's TCG ignores TSC writes: ringvisor only
    Kernel("gates16", "gates16"),
    Kernel("gatecache", "gatecache"),
    Kernel("gatecache-sdm", "gatecache", cflags=("-DLIMIT_CHECK",)),
    # QEMU's TSC and PIT follow the host's clock under TCG: on a loaded host a period
    # of the spinning half can stretch by the host's scheduling, so QEMU counts
    # instructions instead (-icount: the TSC and the timers on one virtual clock, HLT
    # skipping ahead to the next timer as ringvisor's clock does).
    Kernel("tschalt", "tschalt", qemu_args=("-icount", "shift=0,sleep=off")),
]}


def _fingerprint(kernel: Kernel) -> str:
    h = hashlib.sha256()
    for part in (*CFLAGS, *LDFLAGS, kernel.optimize, *kernel.cflags, str(kernel.fp_cflags),
                 *kernel.ldflags, str(kernel.linker_script), str(kernel.runtime),
                 os.environ.get("RINGVISOR_CC", "gcc"), os.environ.get("RINGVISOR_LD", "ld")):
        h.update(part.encode() + b"\0")
    headers = sorted(RT_DIR.glob("*.h")) + sorted((GUEST_DIR / kernel.directory).glob("*.h"))
    linker = [kernel.linker_path()] if kernel.linker_script else []
    for src in [*kernel.sources(), *headers, *linker]:
        h.update(src.name.encode() + b"\0" + src.read_bytes())
    return h.hexdigest()[:16]


def kernel_named(name: str) -> Kernel:
    """The guest ``name`` of any of the tables above."""
    return (KERNELS.get(name) or FPU_KERNELS.get(name) or PC_KERNELS.get(name)
            or EXTRA_KERNELS.get(name) or MONITOR_KERNELS[name])


def build_kernel(name: str) -> Path:
    """Build (or reuse a cached build of) the guest ``name``; returns the ELF path.

    Images are cached by a hash of their sources and flags, so concurrent test
    workers and repeated runs share builds.
    """
    kernel = kernel_named(name)
    out = BUILD_DIR / f"{name}-{_fingerprint(kernel)}.elf"
    if not out.exists():
        # build under a private name, then rename: safe with parallel workers
        tmp = out.with_name(f"{out.stem}.{os.getpid()}.build.elf")
        build(kernel.target(), tmp)
        os.replace(tmp, out)
    return out


def run_platform(platform: str, image: Path, cmdline: str = "", stdin: bytes = b"",
                 mem_mb: int = MEM_MB, modules: list[str] = (),
                 qemu_args: tuple[str, ...] = (), serial_ports: int = 1,
                 smp: int = 1) -> tuple[str, int]:
    """Run ``image`` on ``platform`` ("qemu", "jit" or "interp").

    Returns the COM1 output (decoded as latin-1, CR LF folded to LF) and the
    guest's exit code: the byte it wrote to port 0xf4, or -1 if the machine
    stopped some other way (triple fault, instruction limit, a monitor's stop).
    ``platform`` may also be a monitor of ``PC_MONITORS``: the guest runs under it.
    """
    if platform == "qemu":
        from ringvisor.tools.qemu import run_qemu
        extra = ["-initrd", ",".join(modules)] if modules else []
        extra += ["-serial", "null"] * (serial_ports - 1)
        extra += ["-smp", str(smp)] if smp > 1 else []
        res = run_qemu(Path(image), cmdline=cmdline, mem_mb=mem_mb, stdin=stdin,
                       timeout=QEMU_TIMEOUT, extra_args=[*extra, *qemu_args])
        out, code = res.output, res.guest_exit_code
        code = -1 if code is None else code
    elif platform in ("jit", "interp"):
        from ringvisor.hw.machine import run_image
        # run_image reports the status QEMU would exit with, (byte << 1) | 1 for a
        # write to port 0xf4; anything else means the guest stopped another way.
        out, status = run_image(Path(image), cmdline=cmdline, mem_mb=mem_mb, stdin=stdin,
                                max_instructions=EMULATOR_MAX_INSTRUCTIONS, engine=platform,
                                modules=list(modules), serial_ports=serial_ports, cpus=smp)
        code = status >> 1 if status & 1 else -1
    elif platform in PC_MONITORS:
        return monitor_output(run_monitor(platform, image, cmdline, mem_mb, stdin))
    else:
        raise ValueError(f"unknown platform {platform!r} (expected one of {PLATFORMS + PC_MONITORS})")
    return out.decode("latin-1").replace("\r\n", "\n"), code


def run_monitor(mode: str, image: Path, cmdline: str = "", mem_mb: int = MEM_MB,
                stdin: bytes = b""):
    """Run ``image`` under monitor ``mode``: the runner's VmResult (machine and monitor
    in hand, for a test to look inside)."""
    from ringvisor.vmm.runner import run_vm
    return run_vm(Path(image), mode, cmdline, mem_mb, stdin,
                  max_instructions=EMULATOR_MAX_INSTRUCTIONS, quiet=True)


def device_page_traps(mon) -> int:
    """The traps a monitor of ``PC_MONITORS`` took on the device pages it emulates (the
    APIC's and the others'): under hvm, the EPT violations that neither mapped a region
    of guest RAM nor a page mapped through."""
    if mon.name == "hvm":
        return mon.exits["EPT violation"] - mon.stats["EPT regions mapped"] - \
            mon.stats["device pages mapped"]
    return mon.traps["#PF (device page)"] + mon.traps["#PF (APIC page)"]


def device_pages_mapped(mon) -> int:
    """The device pages a monitor of ``PC_MONITORS`` mapped through (into the shadow, or EPT)."""
    return mon.stats["device pages mapped"] if mon.name == "hvm" else mon.traps["#PF (device page mapped)"]


def monitor_output(r) -> tuple[str, int]:
    """``run_platform``'s (output, exit code) of a run under a monitor; a monitor's stop
    is the output's last line, in brackets."""
    out = r.output + (f"\n[{r.stop.message.splitlines()[0]}]".encode()
                      if r.stop.reason != "exit" and r.stop.message else b"")
    code = r.status >> 1 if r.stop.reason == "exit" else -1
    return out.decode("latin-1").replace("\r\n", "\n"), code


def output_lines(text: str) -> list[str]:
    """The guest's output as a list of lines (trailing empty line dropped)."""
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def guest_lines(platform: str, image: Path) -> tuple[list[str], int]:
    """The guest's output lines and exit code on ``platform``; the test is skipped
    when the platform is QEMU and it is not installed."""
    if platform == "qemu":
        import pytest
        from ringvisor.tools.qemu import find_qemu
        if find_qemu() is None:
            pytest.skip("qemu-system-i386 is not installed")
    out, code = run_platform(platform, image)
    return output_lines(out), code


def monitor_stop_line(mode: str, image: Path) -> str:
    """Run ``image`` under monitor ``mode`` with the CLI, expecting it to stop (exit 3,
    nothing from the guest): the first line it reports on stderr."""
    r = subprocess.run([sys.executable, "-m", "ringvisor", "run", "--mode", mode, str(image)],
                       capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert (r.returncode, r.stdout) == (3, ""), r.stderr
    return [line for line in r.stderr.splitlines() if line][0]

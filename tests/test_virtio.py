"""Hardware-assisted para-virtualization: legacy virtio-pci devices (hw/devices/virtio*.py).

The reference is QEMU's virtio-blk-pci and virtio-serial-pci with ``disable-modern=on``
and a ``virtconsole``: the teaching kernel's drivers (guests/kernel/virtio.c, vblk.c,
vcons.c) must print the same and leave the same image bytes on QEMU as on ringvisor.
The register-level facts below are the virtio 1.0 specification's legacy interface
(sections 4.1.4.8, 2.4, 5.2, 5.3) and QEMU's (hw/virtio/virtio-pci.c, hw/block/virtio-blk.c).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys

import pytest

from ringvisor.guests.build import image_path
from ringvisor.hw.machine import Machine
from ringvisor.hw.devices import virtio as V
from ringvisor.vmm import run_vm

TIMING = re.compile(rb"^\[timing\].*\n", re.M)
SECTORS = 2048
VIRTIO_ARGS = ("--virtio-console",)


def blank(path, sectors=SECTORS):
    path.write_bytes(bytes(sectors * 512))
    return path


def rv_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ringvisor", "run", *args],
                          capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def native_blk(tmp_path_factory):
    """``run=blk,blk`` with a virtio disk and a virtio console, as a user types it."""
    img = blank(tmp_path_factory.mktemp("virtio") / "disk.img")
    return rv_run("kernel", "--append", "run=blk,blk", "--virtio-disk", str(img),
                  "--virtio-console"), img


def test_blk_on_virtio_matches_qemu_output_and_image(native_blk, tmp_path):
    if not shutil.which("qemu-system-i386"):
        pytest.skip("qemu-system-i386 is not installed")
    from ringvisor.tools.qemu import run_qemu
    r, img = native_blk
    q_img = blank(tmp_path / "q.img")
    console = tmp_path / "virtconsole.out"
    q = run_qemu(image_path("kernel"), cmdline="run=blk,blk", mem_mb=32, timeout=60, extra_args=(
        "-drive", f"file={q_img},format=raw,if=none,id=d0",
        "-device", "virtio-blk-pci,disable-modern=on,drive=d0",
        "-chardev", f"file,id=vc,path={console}",
        "-device", "virtio-serial-pci,disable-modern=on", "-device", "virtconsole,chardev=vc"))
    assert b"blk: generation 1 found and verified" in r.stdout, r.stderr
    # every line went through the virtio console: nothing on QEMU's COM1
    assert q.output == b""
    assert TIMING.sub(b"", r.stdout) == TIMING.sub(b"", console.read_bytes())
    assert img.read_bytes() == q_img.read_bytes()
    assert r.returncode == q.exit_status == 1             # isa-debug-exit: (0 << 1) | 1


def test_virtio_disk_prints_what_the_ata_disk_prints(native_blk, tmp_path):
    """The same workload on the emulated ATA disk and UART: the same text, the same image."""
    r, img = native_blk
    ata = blank(tmp_path / "ata.img")
    a = rv_run("kernel", "--append", "run=blk,blk", "--disk", str(ata))
    assert TIMING.sub(b"", a.stdout) == TIMING.sub(b"", r.stdout)
    assert ata.read_bytes() == img.read_bytes()


@pytest.mark.parametrize("mode", ["hvm"])
def test_blk_under_a_monitor_reads_what_native_wrote(native_blk, mode, tmp_path):
    _, img = native_blk
    disk = tmp_path / "copy.img"
    disk.write_bytes(img.read_bytes())
    r = run_vm(image_path("kernel"), mode, "run=blk", virtio_disk=str(disk), virtio_console=True)
    assert b"blk: generation 2 found and verified (40 sectors)" in r.output
    assert b"wrote generation 3, read it back" in r.output and r.status == 1
    assert r.stats["virtio-blk"]["broken"] is None and r.stats["virtio-blk"]["sectors_written"] > 0


SHELL_LINES = [f"echo line {i:02d} " + "x" * 40 for i in range(26)]
SHELL_SCRIPT = ("fault-div\n" + "".join(f"{l}\n" for l in SHELL_LINES) + "ab\x7fc\nexit 5\n").encode()


@pytest.fixture(scope="module")
def uart_shell():
    r = run_vm(image_path("kernel"), "native", stdin=SHELL_SCRIPT)
    assert r.status == 11
    return TIMING.sub(b"", r.output)


@pytest.mark.parametrize("mode", ["native", "hvm"])
def test_shell_through_the_virtio_console(uart_shell, mode):
    """More input than the kernel's 1 KiB ring at once, through the receive queue and the
    shared level-triggered INTx line (under hvm: masked on the real PIC until the guest's
    EOI): every byte arrives, the session reads as it does on the UART."""
    assert len(SHELL_SCRIPT) > 1024
    r = run_vm(image_path("kernel"), mode, stdin=SHELL_SCRIPT, virtio_console=True)
    assert TIMING.sub(b"", r.output) == uart_shell
    assert r.status == 11
    vc = r.stats["virtio-console"]
    assert vc["bytes_in"] == len(SHELL_SCRIPT) and vc["bytes_out"] == len(r.output)
    assert vc["interrupts"] > 0 and vc["broken"] is None
    if mode == "hvm":
        assert r.monitor.platform.held == 0


# -- the devices' registers, as a driver sees them ---------------------------------------------
def cfg(m, devfn, reg, size=4):
    m.bus.write(0xCF8, 4, 0x80000000 | devfn << 8 | reg & 0xFC)
    return m.bus.read(0xCFC + (reg & 3), size)


def find(m, device):
    for devfn in range(0, 256, 8):
        if cfg(m, devfn, 0) == device << 16 | 0x1AF4:
            return devfn
    raise AssertionError(f"no 1af4:{device:04x}")


@pytest.fixture
def pc(tmp_path):
    m = Machine(4)
    m.attach_virtio_disk(str(blank(tmp_path / "r.img", 64)))
    m.attach_virtio_console()
    return m


def test_pci_identity_and_bar(pc):
    """Legacy IDs (virtio 1.0 §4.1.2.1: blk 0x1001, console 0x1003, revision 0, subsystem
    device = the virtio ID); an I/O BAR sized as QEMU's (20 bytes + config, a power of 2);
    pin A routed by the PIIX3 (slot 3 -> PIRQC -> IRQ 11)."""
    blk, con = find(pc, 0x1001), find(pc, 0x1003)
    assert cfg(pc, blk, 0x2C) == 2 << 16 | 0x1AF4 and cfg(pc, con, 0x2C) == 3 << 16 | 0x1AF4
    assert cfg(pc, blk, 8) & 0xFF == 0 and cfg(pc, blk, 8) >> 8 == 0x010000
    assert cfg(pc, con, 8) >> 8 == 0x078000
    assert cfg(pc, blk, 0x3D, 1) == 1 and cfg(pc, blk, 0x3C, 1) == 11
    pc.bus.write(0xCF8, 4, 0x80000000 | blk << 8 | 0x10)
    bar = pc.bus.read(0xCFC, 4)
    pc.bus.write(0xCFC, 4, 0xFFFFFFFF)
    assert pc.bus.read(0xCFC, 4) == 0xFFFFFFC1           # 64 bytes of I/O: 20 + 24 of config
    pc.bus.write(0xCFC, 4, bar)


def ring(m, io, index, pfn):
    m.bus.write(io + V.QUEUE_SEL, 2, index)
    size = m.bus.read(io + V.QUEUE_NUM, 2)
    m.bus.write(io + V.QUEUE_PFN, 4, pfn)
    return size


def test_blk_requests_status_and_interrupt(pc):
    """A read past the capacity is IOERR, an unknown type UNSUPP (QEMU's
    virtio_blk_handle_request); a completion sets ISR bit 0 and raises IRQ 11 until the
    ISR is read (reading clears it); status 0 resets the device."""
    blk = find(pc, 0x1001)
    io = cfg(pc, blk, 0x10) & ~3
    assert pc.bus.read(io + V.CONFIG, 4) == 64 and pc.bus.read(io + V.CONFIG + 4, 4) == 0
    pc.bus.write(io + V.STATUS, 1, V.S_ACKNOWLEDGE | V.S_DRIVER)
    assert pc.bus.read(io + V.HOST_FEATURES, 4) & (1 << 9)          # FLUSH
    assert ring(pc, io, 0, 0x100) == 256 and ring(pc, io, 1, 0x200) == 0
    pc.bus.write(io + V.STATUS, 1, V.S_ACKNOWLEDGE | V.S_DRIVER | V.S_DRIVER_OK)
    base, (_, avail, used) = 0x100000, V.ring_layout(256)
    mem = pc.mem
    hdr, data, st = 0x80000, 0x81000, 0x82000
    for i, (kind, sector) in enumerate(((0, 64), (0x7F, 0), (0, 63))):
        mem.write(hdr, struct.pack("<IIQ", kind, 0, sector))
        mem.write(base, struct.pack("<QIHH", hdr, 16, V.F_NEXT, 1) +
                  struct.pack("<QIHH", data, 512, V.F_NEXT | V.F_WRITE, 2) +
                  struct.pack("<QIHH", st, 1, V.F_WRITE, 0))
        mem.write(base + avail + 4 + 2 * i, struct.pack("<H", 0))
        mem.write(base + avail + 2, struct.pack("<H", i + 1))
        pc.bus.write(io + V.QUEUE_NOTIFY, 2, 0)
        assert struct.unpack("<H", mem.read(base + used + 2, 2))[0] == i + 1
        assert mem.read(st, 1)[0] == (1, 2, 0)[i]
        assert pc.pic.slave.s.irr & 1 << 3                        # IRQ 11
        assert pc.bus.read(io + V.ISR, 1) == 1 and pc.bus.read(io + V.ISR, 1) == 0
        assert not pc.pic.slave.s.last_irr & 1 << 3
        pc.pic.slave.s.irr = 0
    pc.bus.write(io + V.STATUS, 1, 0)
    assert pc.bus.read(io + V.STATUS, 1) == 0 and pc.bus.read(io + V.QUEUE_PFN, 4) == 0


def test_a_looping_chain_breaks_the_device_until_reset(pc):
    con = find(pc, 0x1003)
    io = cfg(pc, con, 0x10) & ~3
    assert ring(pc, io, 1, 0x100) == 128
    pc.bus.write(io + V.STATUS, 1, V.S_DRIVER_OK)
    base, (_, avail, _) = 0x100000, V.ring_layout(128)
    pc.mem.write(base, struct.pack("<QIHH", 0x80000, 4, V.F_NEXT, 0))    # 0 -> 0 -> ...
    pc.mem.write(base + avail + 2, struct.pack("<H", 1))
    pc.bus.write(io + V.QUEUE_NOTIFY, 2, 1)
    assert "loops" in pc.virtio_console.broken
    pc.bus.write(io + V.STATUS, 1, 0)
    assert pc.virtio_console.broken is None


# -- a VM with virtio devices is data like any other --------------------------------------------
def test_a_vm_with_virtio_devices_saves_and_restores(native_blk, tmp_path):
    """Stopped in the middle of ``blk,blk`` and saved, then restored: the description brings
    back the virtio disk (the same image file) and console before their state, and the two
    halves print what one run printed and leave the same image.  Without its image file the
    restore says so in one line."""
    whole, ref_img = native_blk
    img = blank(tmp_path / "disk.img")
    saved = tmp_path / "vm.rvs"
    first = rv_run("kernel", "--append", "run=blk,blk", "--virtio-disk", str(img),
                   "--virtio-console", "--stop-at", "700000", "--save", str(saved))
    assert first.returncode == 0, first.stderr
    second = subprocess.run([sys.executable, "-m", "ringvisor", "restore", str(saved)],
                            capture_output=True, timeout=300)
    assert second.returncode == whole.returncode, second.stderr
    assert first.stdout and first.stdout + second.stdout == whole.stdout
    assert img.read_bytes() == ref_img.read_bytes()
    img.unlink()
    gone = subprocess.run([sys.executable, "-m", "ringvisor", "restore", str(saved)],
                          capture_output=True, timeout=300)
    err = gone.stderr.decode()
    assert gone.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert "the VM's disk" in err and "cannot open the disk image" in err


# -- the command line -------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--virtio-disk", "/nonexistent/x.img"], "cannot open the disk image"),
    (["--virtio-disk-ro"], "--virtio-disk-ro goes with --virtio-disk"),
    (["--virtio-console", "--mode", "paravirt"], "no virtio devices"),
    (["--virtio-disk", "/nonexistent/x.img", "--record", "x.rec"], "with a writable --virtio-disk"),
])
def test_bad_virtio_options_say_one_line(args, message):
    r = rv_run("kernel", *args)
    err = r.stderr.decode()
    assert r.returncode == 2 and message in err and len(err.strip().splitlines()) == 1, err


# -- a polled guest of its own: QEMU, the emulated PC, hvm and the host's KVM -----------------
def _guest_run(mode: str, image, disk) -> tuple[bytes, int]:
    from ringvisor.hw.machine import read_image
    from ringvisor.vmm import create_vm
    out = bytearray()
    m, _ = create_vm(read_image(image), mode, "", 32, output=out.extend,
                     virtio_disk=str(disk), virtio_console=True)
    if mode == "kvm":
        m.wall_limit = 60.0
        stop = m.run()
        m.close()
    else:
        stop = m.run(20_000_000)
    return bytes(out).replace(b"\r\n", b"\n"), stop.status


@pytest.fixture(scope="module")
def guest_qemu(tmp_path_factory):
    if not shutil.which("qemu-system-i386"):
        pytest.skip("qemu-system-i386 is not installed")
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from hwtests import build_kernel
    from ringvisor.tools.qemu import run_qemu
    d = tmp_path_factory.mktemp("virtio-guest")
    image = build_kernel("virtio")
    disk, console = blank(d / "q.img", 64), d / "vc.out"
    q = run_qemu(image, mem_mb=32, timeout=60, extra_args=(
        "-drive", f"file={disk},format=raw,if=none,id=d0",
        "-device", "virtio-blk-pci,disable-modern=on,drive=d0",
        "-chardev", f"file,id=vc,path={console}",
        "-device", "virtio-serial-pci,disable-modern=on", "-device", "virtconsole,chardev=vc"))
    return image, q.output.replace(b"\r\n", b"\n") + console.read_bytes(), q.exit_status, disk


@pytest.mark.parametrize("mode", ["native", "hvm", "kvm"])
def test_polled_guest_matches_qemu(guest_qemu, mode, tmp_path):
    """The registers, requests, statuses and used lengths a driver sees, and one line
    through the console's transmit queue: on QEMU, on the emulated PC, under the VT-x
    monitor and on the host's KVM (its IO exits served by the same Python devices)."""
    image, expected, status, q_disk = guest_qemu
    assert status == 1 and b"FAIL" not in expected, expected.decode()
    if mode == "kvm":
        from ringvisor.hw import kvm as K
        if K.unusable_reason():
            pytest.skip(K.unusable_reason())
    disk = blank(tmp_path / "d.img", 64)
    out, st = _guest_run(mode, image, disk)
    assert out == expected
    assert st == status
    assert disk.read_bytes() == q_disk.read_bytes()

"""The hosted structure's disk: an ATA disk on the PC's primary IDE channel.

The teaching kernel's ATA driver and its `blk` workload run on QEMU's IDE
disk (``-drive file=...,format=raw,if=ide``) and on ringvisor's: the console
output and the image bytes afterwards must be the same.  The register-level
facts checked below are QEMU's (hw/ide/core.c: the reset signature and
status, an absent device reading 0, ABRT for a sector past the end) and the
ATA-6 task file's."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys

import pytest

from ringvisor.guests.build import image_path
from ringvisor.hw.bus import IoBus
from ringvisor.hw.devices.ata import AtaDisk, DiskError, DiskImage
from ringvisor.vmm import run_vm

TIMING = re.compile(rb"^\[timing\].*\n", re.M)
SECTORS = 2048


def blank(tmp_path, name="disk.img", sectors=SECTORS):
    p = tmp_path / name
    p.write_bytes(bytes(sectors * 512))
    return p


class Run:
    def __init__(self, p: subprocess.CompletedProcess):
        self.output, self.status, self.stderr = p.stdout, p.returncode, p.stderr.decode()


def rv_run(*args: str) -> Run:
    """``ringvisor run ...`` as a user types it."""
    return Run(subprocess.run([sys.executable, "-m", "ringvisor", "run", *args],
                              capture_output=True, timeout=300))


@pytest.fixture(scope="module")
def native_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ata")
    img = blank(d)
    return rv_run("kernel", "--append", "run=blk,blk", "--disk", str(img)), img


def test_blk_on_ringvisor_matches_qemu_output_and_image(native_run, tmp_path):
    if not shutil.which("qemu-system-i386"):
        pytest.skip("qemu-system-i386 is not installed")
    from ringvisor.tools.qemu import run_qemu
    r, img = native_run
    q_img = blank(tmp_path, "q.img")
    q = run_qemu(image_path("kernel"), cmdline="run=blk,blk", mem_mb=32, timeout=60,
                 extra_args=("-drive", f"file={q_img},format=raw,if=ide"))
    assert b"generation 1 found and verified" in r.output, r.stderr
    assert TIMING.sub(b"", r.output) == TIMING.sub(b"", q.output)
    assert img.read_bytes() == q_img.read_bytes()
    assert r.status == q.exit_status == 1             # isa-debug-exit: (0 << 1) | 1


def test_blk_under_bt_reads_what_native_wrote(native_run):
    r, img = native_run
    bt = run_vm(image_path("kernel"), "bt", "run=blk", disk=str(img))
    assert b"blk: generation 2 found and verified (40 sectors)" in bt.output
    assert b"wrote generation 3, read it back" in bt.output and bt.status == 1


class Lines:
    def __init__(self):
        self.level = False

    def up(self):
        self.level = True

    def down(self):
        self.level = False


@pytest.fixture
def dev(tmp_path):
    img = blank(tmp_path, sectors=64)
    bus, irq = IoBus(), Lines()
    d = AtaDisk(bus, DiskImage(str(img)), irq.up, irq.down)
    return d, bus, irq, img


def test_reset_signature_and_absent_slave(dev):
    d, bus, irq, _ = dev
    assert bus.read(0x1F7, 1) == 0x50                 # DRDY | DSC
    assert [bus.read(p, 1) for p in (0x1F2, 0x1F3, 0x1F4, 0x1F5)] == [1, 1, 0, 0]
    bus.write(0x1F6, 1, 0xF0)                         # device 1: not there
    assert bus.read(0x1F7, 1) == 0 and bus.read(0x3F6, 1) == 0
    bus.write(0x1F6, 1, 0xE0)
    bus.write(0x3F6, 1, 0x04)                         # SRST
    assert bus.read(0x3F6, 1) & 0x80
    bus.write(0x3F6, 1, 0x00)
    assert bus.read(0x1F7, 1) == 0x50 and bus.read(0x1F1, 1) == 0x01


def test_identify_read_write_chs_and_errors(dev):
    d, bus, irq, img = dev
    bus.write(0x1F7, 1, 0xEC)
    assert irq.level and bus.read(0x3F6, 1) == 0x58 and irq.level   # alt status keeps IRQ
    assert bus.read(0x1F7, 1) == 0x58 and not irq.level
    words = [bus.read(0x1F0, 2) for _ in range(256)]
    assert words[60] | words[61] << 16 == 64 and words[0] == 0x40
    assert bytes(b for w in words[27:47] for b in (w >> 8, w & 0xFF)).strip() == b"QEMU HARDDISK"
    assert bus.read(0x1F7, 1) == 0x50
    # write 2 sectors at LBA 62 with 32-bit accesses: DRQ at once, IRQ after each sector
    for port, v in ((0x1F6, 0xE0), (0x1F2, 2), (0x1F3, 62), (0x1F4, 0), (0x1F5, 0), (0x1F7, 0x30)):
        bus.write(port, 1, v)
    assert bus.read(0x3F6, 1) == 0x58 and not irq.level
    for i in range(256):
        bus.write(0x1F0, 4, 0x01020304 + i)
    assert bus.read(0x1F7, 1) == 0x50 and bus.read(0x1F2, 1) == 0
    assert bus.read(0x1F3, 1) == 64                   # the task file points past the last
    assert img.read_bytes()[62 * 512:62 * 512 + 4] == struct.pack("<I", 0x01020304)
    # CHS: cylinder 0, head 0, sector 63 is LBA 62
    for port, v in ((0x1F6, 0xA0), (0x1F2, 1), (0x1F3, 63), (0x1F4, 0), (0x1F5, 0), (0x1F7, 0x20)):
        bus.write(port, 1, v)
    assert bus.read(0x1F0, 4) == 0x01020304
    # past the end: aborted (QEMU: ide_sect_range_ok -> ABRT)
    for port, v in ((0x1F6, 0xE0), (0x1F2, 2), (0x1F3, 63), (0x1F7, 0x20)):
        bus.write(port, 1, v)
    assert bus.read(0x1F7, 1) == 0x41 and bus.read(0x1F1, 1) == 0x04
    bus.write(0x1F7, 1, 0x99)                         # no such command
    assert bus.read(0x1F7, 1) == 0x41


def test_state_survives_save_and_restore_mid_transfer(dev, tmp_path):
    d, bus, irq, img = dev
    for port, v in ((0x1F6, 0xE0), (0x1F2, 2), (0x1F3, 5), (0x1F7, 0x30)):
        bus.write(port, 1, v)
    for i in range(100):
        bus.write(0x1F0, 2, i)
    from ringvisor.lifecycle.codec import decode, encode
    state = decode(encode(d.get_state()))
    bus2, irq2 = IoBus(), Lines()
    d2 = AtaDisk(bus2, DiskImage(str(img)), irq2.up, irq2.down)
    d2.set_state(state)
    for i in range(100, 512):
        bus2.write(0x1F0, 2, i)
    data = img.read_bytes()[5 * 512:7 * 512]
    assert struct.unpack("<512H", data) == tuple(range(512))
    other = DiskImage(str(blank(tmp_path, "small.img", sectors=8)))
    d3 = AtaDisk(IoBus(), other, irq2.up, irq2.down)
    with pytest.raises(DiskError):
        d3.set_state(state)


def test_a_bad_image_is_one_line(tmp_path):
    bad = tmp_path / "odd.img"
    bad.write_bytes(b"x" * 700)
    with pytest.raises(DiskError, match="whole 512-byte sectors"):
        DiskImage(str(bad))
    with pytest.raises(DiskError, match="cannot open"):
        DiskImage(str(tmp_path / "missing.img"))


def test_a_bad_disk_on_the_command_line_is_one_line_and_read_only_refuses_writes(tmp_path):
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"x" * 700)
    r = rv_run("kernel", "--disk", str(odd))
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.status == 2 and len(lines) == 1 and "whole 512-byte sectors" in lines[0], r.stderr
    img = blank(tmp_path, sectors=64)
    ro = rv_run("kernel", "--append", "run=blk", "--disk", str(img), "--disk-ro")
    assert b"blk: blank disk" in ro.output
    assert b"blk: writing sectors 1..1 was refused" in ro.output
    assert img.read_bytes() == bytes(64 * 512)

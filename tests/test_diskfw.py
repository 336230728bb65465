"""The firmware's report of the PC's hard disks, against QEMU's.

tests/hwguests/diskfw prints what a `-kernel` image is told about its disks besides
the disks themselves: SeaBIOS's count of hard disks in the BIOS data area (0x475) and
the CMOS bytes QEMU's board writes for the IDE drives (hw/i386/pc.c pc_cmos_init_late,
cmos_init_hd: types 0x12/0x19/0x1A, drive 0's and 1's geometry at 0x1B/0x24, the BIOS
translation at 0x39), with the geometry QEMU's IDE guesses for the image
(hw/block/hd-geometry.c: the one its partition table was made for, else 16 heads and
63 sectors, translated beyond 1024 cylinders).  Each disk set-up prints the same lines
on `qemu-system-i386 -kernel` and on ringvisor (`ringvisor run --disk` for one)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys

import pytest

from hwtests import build_kernel, output_lines
from ringvisor.hw.devices.ata import DiskImage, Geometry, guess_geometry
from ringvisor.vmm import run_vm

SECTOR = 512


def image(path, sectors: int, mbr: tuple[int, int] | None = None):
    """A sparse raw image; ``mbr`` = (end head, end sector) of one partition entry."""
    with open(path, "wb") as f:
        f.truncate(sectors * SECTOR)
        if mbr is not None:
            entry = struct.pack("<BBBBBBBBII", 0x80, 1, 1, 0, 0x83, mbr[0], mbr[1], 0xFF, 63,
                                sectors - 63)
            f.seek(0x1BE)
            f.write(entry)
            f.seek(510)
            f.write(b"\x55\xaa")
    return path


# name: (sectors, partition table) -- what QEMU makes of each (see the expected lines)
IMAGES = {
    "small": (2048, None),                  # 1 MiB: 2 cylinders (the least QEMU gives)
    "big": (600 * 2048, None),              # 600 MiB: 1219 cylinders, LBA translation
    "parted": (40960, (7, 32)),             # a partition table for 8 heads, 32 sectors
    "wide": (40960, (254, 63)),             # ... for 255 heads: QEMU's "large" translation
}


def text_lines(out: bytes) -> list[str]:
    return output_lines(out.decode("latin-1").replace("\r\n", "\n"))


def qemu_lines(kernel, ide: dict[int, str] = {}, virtio: str | None = None) -> list[str]:
    if not shutil.which("qemu-system-i386"):
        pytest.skip("qemu-system-i386 is not installed")
    from ringvisor.tools.qemu import run_qemu
    args = []
    for index, path in ide.items():
        args += ["-drive", f"file={path},format=raw,if=ide,index={index}"]
    if virtio:
        args += ["-drive", f"file={virtio},format=raw,if=virtio"]
    r = run_qemu(kernel, extra_args=args, timeout=60)
    return text_lines(r.output)


def rv_lines(kernel, disk: str | None = None, virtio: str | None = None) -> list[str]:
    r = run_vm(kernel, "native", disk=disk, virtio_disk=virtio, quiet=True)
    return text_lines(r.output)


@pytest.fixture(scope="module")
def kernel():
    return build_kernel("diskfw")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("diskfw")
    return {name: str(image(d / f"{name}.img", n, mbr)) for name, (n, mbr) in IMAGES.items()}


def test_the_geometry_is_qemus_guess(images):
    g = {name: guess_geometry(DiskImage(path, True)) for name, path in images.items()}
    assert g == {"small": Geometry(2, 16, 63, 0), "big": Geometry(1219, 16, 63, 1),
                 "parted": Geometry(160, 8, 32, 0), "wide": Geometry(40, 16, 63, 2)}


def test_ringvisor_run_disk_reports_it_as_qemu_does(kernel, images):
    """`ringvisor run --disk IMG`, as a user types it, against `qemu -hda IMG`."""
    r = subprocess.run([sys.executable, "-m", "ringvisor", "run", str(kernel), "--disk",
                        images["big"]], capture_output=True, timeout=300)
    lines = text_lines(r.stdout)
    assert lines == qemu_lines(kernel, {0: images["big"]})
    assert "bda hard disks (0x475): 1" in lines
    assert "cmos drive 0 geometry: cylinders 1219 heads 16 precomp ffff control c8 " \
           "landing 1219 sectors 63" in lines
    assert "cmos 0x39 translation: 01" in lines


@pytest.mark.parametrize("disk", [None, "small", "parted", "wide"])
def test_each_disk_is_reported_as_qemu_does(kernel, images, disk):
    path = images[disk] if disk else None
    lines = rv_lines(kernel, disk=path)
    assert lines == qemu_lines(kernel, {0: path} if path else {})
    assert lines[-1] == "diskfw: done"
    assert f"bda hard disks (0x475): {int(disk is not None)}" in lines


def test_a_virtio_disk_is_counted_beside_the_ata_disk(kernel, images):
    lines = rv_lines(kernel, disk=images["small"], virtio=images["parted"])
    assert lines == qemu_lines(kernel, {0: images["small"]}, virtio=images["parted"])
    assert "bda hard disks (0x475): 2" in lines and "cmos 0x12 disk types: f0" in lines

"""The block split driver: blkfront in a DomU, blkback in Domain 0 or in the hypervisor.

One machine for the module: a DomU runs the teaching kernel's `blk` workload
on `xvda` through blkfront and Domain 0's blkback, is destroyed, and a new one
finds its data; another runs it through the back-end inside the hypervisor
(the monolithic structure).  The image left behind must be byte for byte
what the same workload leaves on the PC's ATA disk (tests/test_ata.py checks
that one against QEMU's IDE).  Then a hostile front-end: requests forged into
a connected ring -- malformed, out of range, on grants it does not hold --
get Xen's error responses (io/blkif.h: BLKIF_RSP_ERROR, BLKIF_RSP_EOPNOTSUPP)
and the image is untouched; a ring whose indexes lie is shut."""

from __future__ import annotations

import hashlib
import struct

import pytest

from ringvisor.abi import (BLKIF_REQUEST, BLKIF_RESPONSE, BLKIF_RING_SIZE, BlkifOp, BlkifRsp,
                           XenbusState, slot_offset, vbd_device)
from ringvisor.guests.build import image_path
from ringvisor.hypervisor.domain import State
from ringvisor.toolstack.config import Disk
from ringvisor.vmm import run_vm
from test_xen import Host

SECTORS = 2048
XVDA = vbd_device("xvda")


def blank(path):
    path.write_bytes(bytes(SECTORS * 512))
    return path


class Blk:
    def __init__(self, tmp):
        self.tmp = tmp
        self.h = Host(tmp / "state")
        self.dom0_img = blank(tmp / "dom0.img")
        self.hyp_img = blank(tmp / "hyp.img")

    def create(self, name, img, backend):
        return self.h.create(name, "run=blk", on_poweroff="preserve", on_crash="preserve",
                             disks=[Disk(str(img), "raw", "xvda", "rw", backend)])

    def run(self, *names):
        assert self.h.run_until(lambda: all(self.h.dom(n).state is State.SHUTDOWN for n in names),
                                400_000_000)


@pytest.fixture(scope="module")
def blk(tmp_path_factory):
    b = Blk(tmp_path_factory.mktemp("blkif"))
    b.create("first", b.dom0_img, "dom0")
    b.create("mono", b.hyp_img, "hypervisor")
    b.run("first", "mono")
    b.first_out = bytes(b.h.consoles["first"])
    first = b.h.ts.find("first")
    b.vbd_states = (first.disks[0].state, b.h.ts.xs.read(f"{first.disks[0].front}/state"))
    dom0 = b.h.hv.domains[0]
    b.dom0_ports, b.dom0_maps = dom0.events.ports_in_use(), len(dom0.grants.maptrack)
    b.first_id = first.domid
    b.h.ts.destroy("first")
    b.h.run_until(lambda: b.first_id not in b.h.hv.domains, 2_000_000)
    b.create("second", b.dom0_img, "dom0")
    b.run("second")
    return b


def test_a_domu_writes_xvda_and_the_data_outlives_it(blk):
    assert b"blk: disk of 2048 sectors\nblk: blank disk\nblk: wrote generation 1, read it back\n" \
        b"blk: a read past the end was refused\n" in blk.first_out
    assert blk.vbd_states == (XenbusState.Connected, str(int(XenbusState.Connected)))
    second = bytes(blk.h.consoles["second"])
    assert b"blk: generation 1 found and verified (40 sectors)" in second
    assert b"wrote generation 2, read it back" in second
    assert blk.h.dom("second").shutdown_reason == 0          # poweroff: blk exited 0


def test_destroy_lets_go_of_the_ring_and_the_xenstore_directories(blk):
    d = blk.first_id
    dom0 = blk.h.hv.domains[0]
    # its console, xenstore and block channels and rings are gone; "second" holds its own three
    assert dom0.events.ports_in_use() <= blk.dom0_ports
    assert not any(m.granter == d for m in dom0.grants.maptrack.values())
    assert blk.h.ts.xs.read(f"/local/domain/0/backend/vbd/{d}/{XVDA}/state") is None


def test_the_image_is_what_the_same_workload_leaves_on_the_ata_disk(blk, tmp_path):
    ata = blank(tmp_path / "ata.img")
    r = run_vm(image_path("kernel"), "native", "run=blk,blk", disk=str(ata))
    assert b"wrote generation 2" in r.output
    assert blk.dom0_img.read_bytes() == ata.read_bytes()


def test_the_monolithic_back_end_serves_from_inside_the_hypervisor(blk):
    out = bytes(blk.h.consoles["mono"])
    assert b"blk: wrote generation 1, read it back" in out and b"refused\n" in out
    mono = blk.h.ts.find("mono").disks[0]
    assert mono.server is None and mono.hv_handle      # Domain 0 serves nothing
    b = blk.h.hv.blkbacks[mono.hv_handle]
    assert b.server.stats.sectors_written >= 41 and b.server.stats.errors == 1   # past the end
    first_gen = blank(blk.tmp / "one.img")
    run_vm(image_path("kernel"), "native", "run=blk", disk=str(first_gen))
    assert blk.hyp_img.read_bytes() == first_gen.read_bytes()


# -- a hostile front-end -------------------------------------------------------------------
def request(op, sector=0, segs=((9, 0, 7),), nr=None, rid=1):
    seg = [{"gref": g, "first_sect": f, "last_sect": l, "_pad": 0} for g, f, l in segs]
    seg += [{"gref": 0, "first_sect": 0, "last_sect": 0, "_pad": 0}] * (11 - len(seg))
    return BLKIF_REQUEST.pack(operation=op, nr_segments=len(segs) if nr is None else nr,
                              handle=0, id=rid, sector_number=sector, seg=seg)


def forge(server, serve, reqs):
    """Put ``reqs`` on the ring as the front-end would, let the back-end serve them,
    and read the responses."""
    ch = server.ch
    prod = struct.unpack("<I", ch.ring_read(0, 4))[0]
    for i, raw in enumerate(reqs):
        ch.ring_write(slot_offset(prod + i), raw)
    rsp0 = server.rsp_prod
    ch.ring_write(0, struct.pack("<I", prod + len(reqs)))
    serve()
    out = []
    for i in range(len(reqs)):
        r = BLKIF_RESPONSE.unpack(ch.ring_read(slot_offset(rsp0 + i), BLKIF_RESPONSE.size))
        out.append((r["id"], r["status"]))
    return out


HOSTILE = [
    (request(9, rid=1), BlkifRsp.EOPNOTSUPP),                       # no such operation
    (request(BlkifOp.read, nr=0, segs=(), rid=2), BlkifRsp.ERROR),  # no segments
    (request(BlkifOp.read, nr=12, rid=3), BlkifRsp.ERROR),          # more than 11
    (request(BlkifOp.read, segs=((9, 3, 2),), rid=4), BlkifRsp.ERROR),   # first > last
    (request(BlkifOp.read, segs=((9, 0, 8),), rid=5), BlkifRsp.ERROR),   # past the page
    (request(BlkifOp.write, sector=SECTORS - 4, rid=6), BlkifRsp.ERROR),  # past the end
    (request(BlkifOp.write, sector=2 ** 64 - 1, rid=7), BlkifRsp.ERROR),  # wraps
    (request(BlkifOp.write, segs=((9, 0, 7),), rid=8), BlkifRsp.ERROR),   # revoked grant
    (request(BlkifOp.read, segs=((4000, 0, 0),), rid=9), BlkifRsp.ERROR),  # beyond the table
    (request(BlkifOp.write, segs=((7, 0, 0),), rid=10), BlkifRsp.ERROR),   # never granted
]


@pytest.mark.parametrize("backend", ["dom0", "hypervisor"])
def test_a_hostile_front_end_gets_errors_and_cannot_touch_the_image(blk, backend):
    name, img = ("second", blk.dom0_img) if backend == "dom0" else ("mono", blk.hyp_img)
    vbd = blk.h.ts.find(name).disks[0]
    if backend == "dom0":
        server, serve = vbd.server, vbd.poll
    else:
        hb = blk.h.hv.blkbacks[vbd.hv_handle]
        server, serve = hb.server, hb.kick
    before = hashlib.sha256(img.read_bytes()).digest()
    got = forge(server, serve, [raw for raw, _ in HOSTILE])
    assert got == [(i + 1, int(want)) for i, (_, want) in enumerate(HOSTILE)]
    assert hashlib.sha256(img.read_bytes()).digest() == before
    # indexes that claim more requests than the ring has slots: the ring is shut
    ch = server.ch
    ch.ring_write(0, struct.pack("<I", server.req_cons + BLKIF_RING_SIZE + 1))
    serve()
    assert "inconsistent" in server.broken
    if backend == "dom0":       # Dom0's back-end says why, in the toolstack's back-end log
        said = [line for line in blk.h.ts.backend_log if "inconsistent" in line]
        assert len(said) == 1 and said[0].startswith(f"blkback d{blk.h.ts.find(name).domid} ")
        assert said[0] in (blk.h.ts.state_dir / "backends.log").read_text()
    assert blk.h.hv.domains[0].state is not State.CRASHED


def test_a_disk_that_cannot_be_opened_fails_the_create_with_one_line(blk):
    from ringvisor.toolstack.xl import XlError
    domains = set(blk.h.hv.domains)
    with pytest.raises(XlError) as e:
        blk.create("nodisk", blk.tmp / "missing.img", "dom0")
    assert "cannot open the disk image" in str(e.value) and "\n" not in str(e.value)
    assert set(blk.h.hv.domains) == domains                  # nothing left behind


# -- several disks ---------------------------------------------------------------------------
def labelled(path, text: bytes, sectors: int = SECTORS):
    path.write_bytes(text.ljust(sectors * 512, b"\0"))
    return path


def test_a_domu_has_a_ring_per_disk_and_reads_each(blk):
    """xvda..xvdc: three virtual disks, each with its own ring, grant and event channel,
    two served by Domain 0's blkback and one by the hypervisor's; the kernel finds them
    as the IDE drives 0..2 and reads each one's sector 0."""
    t = blk.tmp
    disks = [Disk(str(labelled(t / "m0.img", b"first of three")), "raw", "xvda", "rw", "dom0"),
             Disk(str(labelled(t / "m1.img", b"the second disk", 1024)), "raw", "xvdb", "ro", "dom0"),
             Disk(str(labelled(t / "m2.img", b"third\x01disk")), "raw", "xvdc", "rw", "hypervisor")]
    blk.h.create("multi", "run=disks", on_poweroff="preserve", disks=disks)
    blk.run("multi")
    out = bytes(blk.h.consoles["multi"])
    assert b'disks: disk 0: 2048 sectors, sector 0 begins "first of three"\n' \
           b'disks: disk 1: 1024 sectors, sector 0 begins "the second disk"\n' \
           b'disks: disk 2: 2048 sectors, sector 0 begins "third.disk"\n' \
           b'disks: 3 found\n' in out, out
    m = blk.h.ts.find("multi")
    assert [v.state for v in m.disks] == [XenbusState.Connected] * 3
    xs = blk.h.ts.xs
    fronts = [f"/local/domain/{m.domid}/device/vbd/{vbd_device(v)}" for v in ("xvda", "xvdb", "xvdc")]
    rings = {(xs.read(f"{f}/ring-ref"), xs.read(f"{f}/event-channel")) for f in fronts}
    assert len(rings) == 3                                   # a ring and a channel each
    assert m.disks[2].hv_handle and m.disks[2].server is None
    blk.h.ts.destroy("multi")

"""xenstored: the tree, Xen's permissions, watches, transactions, the ring protocol
(the toolstack's side), and xl.cfg files and the security policy language."""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import pytest

from ringvisor.abi import XENSTORE_DOMAIN_INTERFACE, XSD_SOCKMSG, XsType
from ringvisor.hypervisor import xsm
from ringvisor.toolstack import config
from ringvisor.toolstack.xenstore import Connection, Store, XsError


def conns():
    st = Store()
    events = {0: [], 1: [], 2: []}
    c = {d: Connection(st, d, lambda p, t, d=d: events[d].append((p, t))) for d in events}
    return st, c, events


def test_permissions_are_xens():
    st, c, _ = conns()
    c[0].write("/local/domain/1/name", "one")
    c[0].set_perms("/local/domain/1", "n0", "r1")          # owner 0, nobody else, 1 may read
    assert c[1].read("/local/domain/1") == ""
    with pytest.raises(XsError, match="EACCES"):
        c[2].call(XsType.READ, "/local/domain/1")
    with pytest.raises(XsError, match="EACCES"):
        c[1].call(XsType.WRITE, "/local/domain/1/x", b"y")
    c[0].call(XsType.MKDIR, "/local/domain/1/device")
    c[0].set_perms("/local/domain/1/device", "n1")          # owned by 1
    c[1].write("/local/domain/1/device/vbd", "x")           # a new node: owned by its creator
    assert c[1].call(XsType.GET_PERMS, "/local/domain/1/device/vbd") == b"n1\0"
    with pytest.raises(XsError, match="EACCES"):
        c[2].set_perms("/local/domain/1/device", "b2")      # only the owner (or Domain 0)
    with pytest.raises(XsError, match="ENOENT"):
        c[0].call(XsType.READ, "/nope")
    with pytest.raises(XsError, match="EINVAL"):
        c[0].call(XsType.READ, "bad path")
    assert c[0].call(XsType.DIRECTORY, "/local/domain/1") == b"device\0name\0"


def test_watches_fire_on_the_subtree_for_who_may_read():
    st, c, ev = conns()
    c[0].write("/local/domain/1/control/shutdown", "")
    for p in ("/local/domain/1", "/local/domain/1/control", "/local/domain/1/control/shutdown"):
        c[0].set_perms(p, "n0", "r1")          # (each node has its own permissions)
    c[1].call(XsType.WATCH, "/local/domain/1/control", "tok")
    assert ev[1] == [("/local/domain/1/control", "tok")]      # at once, as Xen does
    c[2].call(XsType.WATCH, "/local/domain/1/control", "spy")
    c[0].write("/local/domain/1/control/shutdown", "poweroff")
    assert ("/local/domain/1/control/shutdown", "tok") in ev[1]
    assert ("/local/domain/1/control/shutdown", "spy") not in ev[2]   # it may not read it
    c[1].call(XsType.UNWATCH, "/local/domain/1/control", "tok")
    n = len(ev[1])
    c[0].write("/local/domain/1/control/shutdown", "reboot")
    assert len(ev[1]) == n
    with pytest.raises(XsError, match="ENOENT"):
        c[1].call(XsType.UNWATCH, "/local/domain/1/control", "tok")


def test_transactions_commit_whole_or_not_at_all():
    st, c, ev = conns()
    c[0].write("/a", "1")
    tx = int(c[0].call(XsType.TRANSACTION_START).rstrip(b"\0"))
    c[0].call(XsType.WRITE, "/a", b"2", tx=tx)
    c[0].call(XsType.WRITE, "/b", b"3", tx=tx)
    assert c[0].read("/a") == "1" and c[0].read("/b") is None      # not yet visible
    assert c[0].call(XsType.TRANSACTION_END, "T", tx=tx) == b"OK\0"
    assert c[0].read("/a") == "2" and c[0].read("/b") == "3"
    # a conflict: what the transaction read changed meanwhile
    tx = int(c[0].call(XsType.TRANSACTION_START).rstrip(b"\0"))
    c[0].call(XsType.READ, "/a", tx=tx)
    c[0].call(XsType.WRITE, "/c", b"x", tx=tx)
    c[0].write("/a", "changed")
    with pytest.raises(XsError, match="EAGAIN"):
        c[0].call(XsType.TRANSACTION_END, "T", tx=tx)
    assert c[0].read("/c") is None
    # aborted: nothing applies
    tx = int(c[0].call(XsType.TRANSACTION_START).rstrip(b"\0"))
    c[0].call(XsType.WRITE, "/d", b"x", tx=tx)
    c[0].call(XsType.TRANSACTION_END, "F", tx=tx)
    assert c[0].read("/d") is None


def test_quotas_hold_a_domain_back():
    st, c, _ = conns()
    c[0].call(XsType.MKDIR, "/local/domain/1/data")
    c[0].set_perms("/local/domain/1/data", "n1")
    with pytest.raises(XsError, match="ENOSPC"):
        for i in range(2000):
            c[1].write(f"/local/domain/1/data/k{i}", "v")
    with pytest.raises(XsError, match="E2BIG"):
        c[1].request(XsType.WRITE, 0, b"/local/domain/1/data/big\0" + b"x" * 5000)


def test_the_ring_layout_is_xs_wires():
    assert XENSTORE_DOMAIN_INTERFACE.offset("rsp") == 1024
    hdr = XSD_SOCKMSG.pack(type=XsType.READ, req_id=7, tx_id=0, len=3)
    assert struct.unpack("<4I", hdr) == (2, 7, 0, 3)


# -- xl.cfg ---------------------------------------------------------------------------------
GOOD = 'name = "web"\nkernel = "kernel-pv"  # bundled\nmemory = 16\nmaxmem = 24\n' \
       'disk = ["/img/web.img,raw,xvda,rw"]\non_crash = "preserve"\n'


def test_a_config_file_reads_as_xl_cfg():
    c = config.parse(GOOD, "web.cfg")
    assert (c.name, c.kernel, c.memory, c.maxmem, c.on_crash) == ("web", "kernel-pv", 16, 24, "preserve")
    assert c.disks[0].vdev == "xvda" and c.disks[0].access == "rw"
    assert c.disks[0].backend == "dom0"
    mono = config.parse(GOOD.replace("xvda,rw", "xvda,ro,backend=hypervisor"), "web.cfg")
    assert (mono.disks[0].access, mono.disks[0].backend) == ("ro", "hypervisor")
    xl_style = config.parse(GOOD.replace("xvda,rw", "xvda,rw,backend=0"), "web.cfg")
    assert xl_style.disks[0].backend == "dom0"
    assert config.DomainConfig.from_dict(c.to_dict()) == c
    two = config.parse(GOOD.replace('xvda,rw"]', 'xvda,rw", "/img/b.img,raw,xvdb,ro"]'), "web.cfg")
    assert [(d.vdev, d.access) for d in two.disks] == [("xvda", "rw"), ("xvdb", "ro")]
    assert config.DomainConfig.from_dict(two.to_dict()) == two


@pytest.mark.parametrize("text,expect", [
    ('kernel = "k"', "web.cfg: name: missing"),
    ('name = "a"', "web.cfg: kernel: missing"),
    ('name = "a"\nkernel = "k"\nmemory = "lots"', "web.cfg:3: memory: expected a number"),
    ('name = "a"\nkernel = k', "web.cfg:2: kernel: cannot read the value"),
    ('name = "a"\nkernel = "k"\nvcpus = 9', "web.cfg:3: vcpus: 9 is out of range (1 to 8)"),
    ('name = "a"\nkernel = "k"\nvcpus = 0', "web.cfg:3: vcpus: 0 is out of range"),
    ('name = "a"\ntype = "bt"\nkernel = "k"\nvcpus = 2', "web.cfg:4: vcpus: a bt domain has one"),
    ('name = "a"\nkernel = "k"\nmemory = 64\nmaxmem = 32', "web.cfg:4: maxmem:"),
    ('name = "a"\nkernel = "k"\ndisk = ["x.img,qcow2,xvda,rw"]', "web.cfg:3: disk:"),
    ('name = "a"\nkernel = "k"\ndisk = ["x.img,raw,xvda,rw,backend=qemu"]',
     "web.cfg:3: disk: 'x.img,raw,xvda,rw,backend=qemu': backend=qemu: not one of"),
    ('name = "a"\nkernel = "k"\ndisk = ["/i.iso,,xvdc,cdrom"]', "web.cfg:3: disk: '/i.iso,,xvdc,cdrom': devtype cdrom"),
    ('name = "a"\nkernel = "k"\ndisk = ["qcow2:/i.img,xvda,w"]', "web.cfg:3: disk: 'qcow2:/i.img,xvda,w': format qcow2"),
    ('name = "a"\nkernel = "k"\ndisk = ["/i.img,raw"]', "web.cfg:3: disk: '/i.img,raw': no vdev"),
    ('name = "a"\nkernel = "k"\ndisk = ["vdev=xvda,script=block"]', "web.cfg:3: disk: 'vdev=xvda,script=block': script="),
    ('name = "a"\nkernel = "k"\ndisk = ["/a,raw,xvda,rw,extra"]', "web.cfg:3: disk: '/a,raw,xvda,rw,extra': more positional"),
    ('name = "a"\nkernel = "k"\ndisk = [\n  "/a,raw,xvda,rw",\n', "web.cfg:3: disk: a list whose ']' never comes"),
    ('name = "a"\nkernel = "k"\nvif = ["bridge=xenbr0"]', "web.cfg:3: vif: ringvisor's domains have no network"),
    ('name = "a"\nkernel = "k"\nbuilder = "hvm"', "web.cfg:3: builder: 'hvm'"),
    ('name = "a"\nkernel = "k"\nweight = 5; cpu_weight = 6', "web.cfg:3: cpu_weight: give cpu_weight or weight"),
    ('name = "a"\nkernel = "k"\ndisk = ["x.img,raw,xvde,rw"]', "web.cfg:3: disk:"),
    ('name = "a"\nkernel = "k"\ndisk = ["x.img,raw,xvda,rw", "y.img,raw,xvda,ro"]',
     "web.cfg:3: disk: 'y.img,raw,xvda,ro': xvda is given twice"),
    ('name = "a"\nkernel = "k"\non_crash = "explode"', "web.cfg:3: on_crash:"),
    ('name = "a"\nkernel = "k"\ncolour = "blue"', "web.cfg:3: unknown key 'colour'"),
    ('name = "a b"\nkernel = "k"', "web.cfg:1: name:"),
    ('name = "a"\nname = "b"\nkernel = "k"', "web.cfg:2: name: given twice"),
])
def test_a_bad_config_file_is_one_line_naming_the_key(text, expect):
    with pytest.raises(config.ConfigFileError) as e:
        config.parse(text, "web.cfg")
    assert str(e.value).startswith(expect) and "\n" not in str(e.value)


def test_xl_cfg_syntax_and_disk_specs_as_xl_reads_them():
    """xl-disk-configuration(5)'s equivalent forms give the same disk; lists may run over
    lines; ';' ends a setting; root goes before the command line; empty vif is nothing."""
    forms = ["/img/a.img,raw,xvda,rw", "/img/a.img,,xvda", "format=raw, vdev=xvda, access=rw, "
             "target=/img/a.img", "phy:/img/a.img,xvda,w", "file:/img/a.img,xvda,w",
             "tap:aio:/img/a.img,xvda,w", "vdev=xvda, target=/img/a.img", "/img/a.img,,xvda,,"]
    for form in forms:
        c = config.parse(f'name = "a"\nkernel = "k"\ndisk = [ {form!r} ]\n', "x.cfg")
        assert [(d.target, d.vdev, d.access, d.backend) for d in c.disks] == \
            [("/img/a.img", "xvda", "rw", "dom0")], form
    c = config.parse('name = "a"; kernel = "k"   # two settings\n'
                     'disk = [ "/img/a.img,,xvda,ro",   # a comment inside the list\n'
                     "         'vdev=xvdb, target=/img/b,c.img' ]\n"  # (target= takes the rest)
                     'memory = 16\nroot = "/dev/xvda1 ro"\nextra = "run=hello"\n'
                     'vif = []\ncpu_weight = 512\nbuilder = "generic"\n', "x.cfg")
    assert [(d.target, d.vdev, d.access) for d in c.disks] == \
        [("/img/a.img", "xvda", "ro"), ("/img/b,c.img", "xvdb", "rw")]
    assert (c.memory, c.cmdline, c.weight) == (16, "root=/dev/xvda1 ro run=hello", 512)
    with pytest.raises(config.ConfigFileError, match=r"^x.cfg:4: memory: expected a number"):
        config.parse('name = "a"\nkernel = "k"\ndisk = [\n]; memory = "x"\n', "x.cfg")


def test_a_value_python_warns_about_is_still_one_line_on_stderr(tmp_path):
    """'1and 2' makes Python's tokenizer print a SyntaxWarning on stderr before it fails:
    ``xl create`` must print only its own line."""
    import subprocess
    import sys
    cfg = tmp_path / "w.cfg"
    cfg.write_text('name = "a"\nkernel = "kernel-pv"\nmemory = 1and 2\n')
    p = subprocess.run([sys.executable, "-W", "default", "-m", "ringvisor", "xl", "--state-dir",
                        str(tmp_path), "create", str(cfg)], capture_output=True, timeout=120)
    err = p.stderr.decode()
    assert p.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert "w.cfg:3: memory: cannot read the value" in err


def test_the_shipped_example_config_is_valid():
    examples = sorted((Path(__file__).parents[1] / "examples" / "xen").glob("*.cfg"))
    assert examples
    for p in examples:
        config.load(p)


# -- the security policy ------------------------------------------------------------------------
def test_the_default_policy_is_xens_in_spirit():
    p = xsm.default_policy()
    assert p.allows("dom0_t", "domU_t", "domain", "pause", False)
    assert not p.allows("domU_t", "dom0_t", "domain", "pause", False)
    assert not p.allows("domU_t", "domU_t", "event", "bind", False)     # DomU to DomU: no
    assert p.allows("domU_t", "domU_t", "event", "bind", True)          # itself: yes
    assert p.allows("domU_t", "dom0_t", "grant", "map_write", False)


@pytest.mark.parametrize("text,expect", [
    ("type xen_t; type dom0_t; type domU_t;\nallow dom0_t x_t:domain pause;", "p:2: type 'x_t'"),
    ("type xen_t; type dom0_t; type domU_t;\nallow dom0_t domU_t:domain { fly };", "p:2: class domain has no"),
    ("type xen_t; type dom0_t; type domU_t;\nallow dom0_t domU_t:nope pause;", "p:2: unknown class"),
    ("type xen_t; type dom0_t;", "p: the policy must declare type domU_t"),
    ("type xen_t type", "p:1: expected ';'"),
])
def test_a_bad_policy_is_refused_with_its_line(text, expect):
    with pytest.raises(xsm.PolicyError) as e:
        xsm.parse(text, "p")
    assert str(e.value).startswith(expect)


# -- the layering: mechanism and policy -------------------------------------------------------------
# (and the image format's modules, for xl save: data layouts that reach nothing;
# ringvisor.backend: the split drivers' protocol engines, shared with the hypervisor's
# in-hypervisor back-end; they reach a front-end only through what their host passes in)
ALLOWED = ("ringvisor.abi", "ringvisor.hypervisor.interface", "ringvisor.hw.boot",
           "ringvisor.errors", "ringvisor.guests.build", "ringvisor.toolstack",
           "ringvisor.lifecycle.stream", "ringvisor.lifecycle.codec", "ringvisor.lifecycle.ram",
           "ringvisor.backend", "ringvisor.hw.devices.ata")
BACKEND_ALLOWED = ("ringvisor.abi", "ringvisor.hw.devices.ata", "ringvisor.backend")


@pytest.mark.parametrize("package,allowed", [("toolstack", ALLOWED), ("backend", BACKEND_ALLOWED)])
def test_the_toolstack_reaches_the_hypervisor_only_through_hypercalls(package, allowed):
    root = Path(__file__).parents[1] / "ringvisor" / package
    for f in root.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            for m in mods:
                if m and m.startswith("ringvisor"):
                    assert m.startswith(allowed), f"{f.name} imports {m}"

"""`xlist`, the teaching kernel's program that lists the hypervisor's domains with
domctl/sysctl through the kernel's privcmd device (guests/user/xlist.c): in Domain 0
it lists what `xl list` lists; in a DomU the same program is refused by the
hypervisor's security module; on a machine without a hypervisor there is no
privcmd device.  End to end: `ringvisor xen`, its Domain 0 console on a pipe,
`ringvisor xl create`, `xl console`, `xl list`, `xl dmesg`."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import threading

import pytest

from ringvisor.guests.build import image_path
from test_guest_kernel import run_platform
from test_xl_cli import wait_for as _wait_for, xl as _xl

ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+) ([-rbpscd]{6})\s+(\d+)\.(\d)$", re.M)


# test_xl_cli's helpers, with this file's longer bounds (a xen host boots here too)
xl = functools.partial(_xl, timeout=120)
wait_for = functools.partial(_wait_for, seconds=180)


@pytest.fixture(scope="module")
def xen(tmp_path_factory):
    d = tmp_path_factory.mktemp("xlist")
    env = dict(os.environ, RINGVISOR_STATE_DIR=str(d))
    proc = subprocess.Popen([sys.executable, "-m", "ringvisor", "xen", "--mem", "96M"],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out = bytearray()

    def reader():
        while chunk := proc.stdout.read1(4096):
            out.extend(chunk)
    threading.Thread(target=reader, daemon=True).start()
    try:
        wait_for(lambda: b"$ " in out or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read()
        cfg = d / "u.cfg"
        cfg.write_text('name = "u"\nkernel = "kernel-pv"\nmemory = 16\n')
        r = xl(env, "create", str(cfg))
        assert r.returncode == 0, r.stderr
        wait_for(lambda: b"$ " in (d / "console" / "u.log").read_bytes())
        yield env, d, proc, out
    finally:
        proc.terminate()
        proc.wait(30)


def test_xlist_in_domain0_lists_what_xl_list_lists(xen):
    env, d, proc, out = xen
    start = len(out)
    proc.stdin.write(b"xlist\n")
    proc.stdin.flush()
    wait_for(lambda: out[start:].count(b"$ ") >= 1 and b"ID" in out[start:])
    text = bytes(out[start:]).decode()
    assert re.search(r"^xlist: 1 CPU, \d+ MHz, \d+ MiB, \d+ MiB free$", text, re.M), text
    rows = {int(m.group(1)): m for m in ROW.finditer(text)}
    listed = {r["id"]: r for r in json.loads(xl(env, "list", "--json").stdout)}
    assert set(rows) == set(listed) == {0, 1}
    for domid, m in rows.items():
        assert int(m.group(2)) == listed[domid]["mem"], text
        assert int(m.group(3)) == listed[domid]["vcpus"] == 1
    assert rows[0].group(4)[0] == "r"                # Domain 0 ran the program
    assert rows[1].group(4)[0] == "-"


def test_xlist_in_a_domu_is_refused_by_the_hypervisor(xen):
    env, d, proc, out = xen
    r = xl(env, "console", "u", stdin="xlist\n")
    assert r.returncode == 0, r.stderr
    # (the answer may come after xl console stopped waiting: the domain's console log has it)
    log = d / "console" / "u.log"
    wait_for(lambda: b"sh: xlist exited with status 1" in log.read_bytes())
    text = log.read_bytes().decode()
    assert "xlist: sysctl physinfo refused by the hypervisor: -13\n" \
           "xlist: domctl getdomaininfo refused by the hypervisor: -13\n" in text
    assert not ROW.search(text)
    dmesg = xl(env, "dmesg").stdout
    assert "avc:  denied  { physinfo } for domid=1 target=xen scontext=system_u:system_r:domU_t " \
           "tcontext=system_u:system_r:xen_t tclass=xen" in dmesg, dmesg
    assert re.search(r"avc:  denied  \{ getdomaininfo \} for domid=1 target=0 ", dmesg), dmesg


@pytest.mark.parametrize("platform", [pytest.param("qemu", marks=pytest.mark.qemu), "ringvisor"])
def test_xlist_without_a_hypervisor_finds_no_privcmd_device(platform):
    """Nothing answers at the privcmd ports of a PC (they read all ones, as on QEMU's)."""
    out, status = run_platform(platform, image_path("kernel"), "run=xlist")
    assert "xlist: no hypervisor (sysctl physinfo: privcmd device absent, -19)\n" in out, out
    assert status == 1                               # init: a program exited non-zero

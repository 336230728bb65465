"""The live view (``--web PORT``) in a real headless browser: Chromium loads the page, its
script polls the VM's counters, and they change while the guest runs."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jsonschema
import pytest

from ringvisor import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                "(make setup-test installs it from Debian's packages)")
SCHEMA = Path(cli.__file__).resolve().parent / "schemas" / "live.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browse(url: str, profile: Path) -> str:
    """The page's DOM after its script ran for a while (Chromium's virtual time)."""
    p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        "--virtual-time-budget=2000", "--dump-dom", url],
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    return p.stdout.decode()


def fetch(url: str) -> dict:
    with urllib.request.urlopen(url + "live.json", timeout=30) as r:
        return json.loads(r.read())


def shown(dom: str, key: str) -> int:
    m = re.search(rf'id="{key}">([0-9,]+)<', dom)
    assert m, f"{key} not filled in by the page's script:\n{dom[:3000]}"
    return int(m.group(1).replace(",", ""))


def small_tree(store: Path) -> None:
    """A snapshot tree of two nodes, as savevm at the monitor prompt would leave it."""
    from ringvisor.guests.build import image_path
    from ringvisor.hw.machine import read_image
    from ringvisor.lifecycle.snapshots import SnapshotTree
    from ringvisor.vmm import create_vm

    tree = SnapshotTree(store)
    m, mon = create_vm(read_image(image_path("kernel")), "native", "", 32, output=lambda b: None)
    for name, n in (("boot", 20_000), ("later", 40_000)):
        m.stop = None
        m.run(n - m.cpu.state.icount)
        tree.create(name, m, mon, description=f"at {n}")


def first_look(vm, url: str, deadline: float) -> dict:
    """The live document, once the VM's server answers (the VM must not die first); it
    follows the documented schema."""
    while True:
        try:
            live = fetch(url)
            break
        except OSError:
            assert vm.poll() is None and time.monotonic() < deadline, vm.stderr.read()
            time.sleep(0.1)
    jsonschema.validate(live, json.loads(SCHEMA.read_text()))
    return live


def test_live_view_in_chromium(tmp_path):
    port = free_port()
    small_tree(tmp_path / "store")
    # the shell idles on its 100 Hz timer, paced to the wall clock: under para-virtualization
    # every tick is a timer event and the hypercalls that answer it
    vm = subprocess.Popen([sys.executable, "-m", "ringvisor", "run", "kernel-pv", "--mode",
                           "paravirt", "--serial", "null", "--pace", "on", "--web", str(port),
                           "--store", str(tmp_path / "store")],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        live = first_look(vm, url, deadline)
        assert live["vm"]["mode"] == "paravirt" and live["vm"]["status"] == "running"
        # on a loaded machine the guest may get little time: wait until it has booted
        # (its timer events flow), and between the two looks until it has moved on
        keys = ("instructions", "hypercalls", "events")
        while fetch(url)["highlights"]["events"] == 0:
            assert vm.poll() is None and time.monotonic() < deadline + 120
            time.sleep(0.2)
        first = browse(url, tmp_path / "profile1")
        while any(fetch(url)["highlights"][k] <= shown(first, k) for k in keys):
            assert vm.poll() is None and time.monotonic() < deadline + 120
            time.sleep(0.2)
        second = browse(url, tmp_path / "profile2")
    finally:
        vm.kill()
        vm.communicate()
    assert 'id="mode">paravirt - kernel-pv.elf<' in first
    for key in keys:
        assert shown(second, key) > shown(first, key) > 0, key
    assert 'id="traps">' in second and "<h2>hypercalls</h2>" in second
    assert "none: this VM runs on its own" in second      # no hypervisor: no domains
    assert [r["name"] for r in live["snapshots"]] == ["boot", "  later"]
    snaps = second[second.index('id="snapshots"'):]
    assert "<td>boot</td>" in snaps and "<td>  later</td>" in snaps and "<td>yes</td>" in snaps


def test_live_view_of_hvm_in_chromium(tmp_path):
    """Under hardware-assisted virtualization the page shows VM exits (the monitor has no
    traps, callouts or hypercalls to show), and they go up as the guest's timer ticks."""
    port = free_port()
    vm = subprocess.Popen([sys.executable, "-m", "ringvisor", "run", "kernel", "--mode", "hvm",
                           "--serial", "null", "--pace", "on", "--web", str(port)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 180
        live = first_look(vm, url, deadline)
        while not fetch(url)["highlights"]["exits"]:
            assert vm.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        first = browse(url, tmp_path / "profile1")
        while fetch(url)["highlights"]["exits"] <= shown(first, "exits"):
            assert vm.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        second = browse(url, tmp_path / "profile2")
        live = fetch(url)
    finally:
        vm.kill()
        _, stderr = vm.communicate()
    jsonschema.validate(live, json.loads(SCHEMA.read_text()))
    assert live["vm"]["mode"] == "hvm" and live["highlights"]["traps"] is None
    assert live["groups"]["exits"]["I/O instruction"] > 0
    assert 'id="mode">hvm - kernel.elf<' in first
    assert shown(second, "exits") > shown(first, "exits") > 0
    assert b"Traceback" not in stderr, stderr.decode()

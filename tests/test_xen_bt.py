"""bt domains: an unmodified kernel as a domain of the hypervisor, beside PV domains.

One machine for the module: Domain 0, a PV DomU and a bt DomU (the native
build of the teaching kernel under binary translation) created by the
toolstack from configurations with ``type = "pv"`` and ``type = "bt"``, run
at once; then a bt domain with the shell, typed at through its console,
paused, unpaused and destroyed."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ringvisor.abi import Shutdown
from ringvisor.guests.build import image_path
from ringvisor.hypervisor.btdomain import TC_PAGES
from ringvisor.hypervisor.domain import State
from ringvisor.toolstack import config, saverestore
from ringvisor.toolstack.builder import is_paravirtual
from ringvisor.toolstack.xc import XcError
from ringvisor.toolstack.xl import XlError
from ringvisor.vmm import run_vm
from test_xen import Host
from test_xl_cli import wait_for as _wait_for, xl as _xl, xl_here

TIMING = re.compile(rb"^\[timing\].*\n", re.M)
# test_xl_cli's helpers, with longer bounds (a xen host boots here too)
xl = functools.partial(_xl, timeout=120)
wait_for = functools.partial(_wait_for, seconds=240)
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "xen" / "bt.cfg"
WORKLOADS = {"pvdom": ("pv", "kernel-pv", "run=syscall iters=50"),
             "btdom": ("bt", "kernel", "run=forkwait:2,blk")}
DISK_SECTORS = 2048
BUDGET = 100_000_000          # guest instructions a wait may take (a bound, not a timing)


def _blank(path: Path) -> Path:
    path.write_bytes(bytes(DISK_SECTORS * 512))
    return path


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xenbt")
    h = Host(tmp)
    h.disk = _blank(tmp / "btdom.img")
    for name, (type_, kernel, cmdline) in WORKLOADS.items():
        disks = [config.Disk(str(h.disk), "raw", "xvda", "rw")] if type_ == "bt" else []
        h.create(name, cmdline, kernel=kernel, type=type_, on_poweroff="preserve", disks=disks)
    assert h.run_until(lambda: all(h.dom(n).state is State.SHUTDOWN for n in WORKLOADS),
                       BUDGET)
    return h


def test_a_bt_domu_prints_what_the_kernel_prints_alone_under_bt(host, tmp_path):
    """... and its disk (``disk =``: the ATA disk the hypervisor emulates on its primary
    IDE channel, the hosted structure) ends as the lone VM's ATA disk does."""
    _, kernel, cmdline = WORKLOADS["btdom"]
    disk = _blank(tmp_path / "alone.img")
    alone = run_vm(image_path(kernel), "bt", cmdline, mem_mb=16, disk=str(disk))
    assert b"forkwait: iters=2" in alone.output
    assert b"blk: wrote generation 1, read it back" in alone.output
    got = bytes(host.consoles["btdom"])
    assert TIMING.sub(b"", got) == TIMING.sub(b"", alone.output)
    assert host.disk.read_bytes() == disk.read_bytes()
    # through the console back-end, as a PV domain's: the log and the listeners
    assert (host.ts.state_dir / "console" / "btdom.log").read_bytes() == got
    assert host.dom("btdom").shutdown_reason == Shutdown.poweroff
    # ... and the PV domain beside it ran its workload to the end
    assert b"syscall: iters=50 checksum=" in host.consoles["pvdom"]
    assert host.dom("pvdom").shutdown_reason == Shutdown.poweroff


def test_xl_list_shows_the_type_and_both_ran(host):
    rows = {r["name"]: r for r in host.ts.list()}
    assert {n: r["type"] for n, r in rows.items()} == {"Domain-0": "pv", "pvdom": "pv",
                                                       "btdom": "bt"}
    assert rows["btdom"]["mem"] == 16 and rows["btdom"]["time"] > 0
    assert rows["btdom"]["state"][3] == "s"
    assert "domain 2 created (domU_t, binary translation)" in host.ts.dmesg()


def test_the_hypervisor_counts_each_domains_traps_and_translations(host):
    counters = host.hv.domain_counters()
    bt, pv = counters[host.dom("btdom").domid], counters[host.dom("pvdom").domid]
    assert bt["translations"] > 100 and bt["callouts"] > 100 and bt["traps"] > 0
    assert bt["hypercalls"] == 0
    assert pv["hypercalls"] > 100 and pv["translations"] == 0 and pv["callouts"] == 0
    assert counters[0]["hypercalls"] > 0


def test_the_shell_of_a_bt_domain_paused_robbed_and_destroyed(host):
    """Its console both ways, pause and unpause; then Domain 0 takes the frames of the
    kernel's code from under it (decrease_reservation): its translations of those pages
    go with the mapping, so the next fetch there finds no frame and the domain crashes
    with a report -- it never runs stale translated code -- while the others run on;
    destroyed, everything it had goes back."""
    d = host.create("shell", "", kernel="kernel", type="bt", on_crash="preserve")
    assert host.run_until(lambda: b"$ " in host.consoles["shell"], BUDGET)
    dom = host.hv.domains[d]
    host.ts.type_console("shell", b"echo hello-bt\n")
    assert host.run_until(lambda: host.consoles["shell"].count(b"hello-bt") == 2)   # echo, answer
    # paused, it does not answer; unpaused, it does
    host.ts.pause("shell")
    assert {r["name"]: r for r in host.ts.list()}["shell"]["state"][2] == "p"
    host.ts.type_console("shell", b"echo again\n")
    before = bytes(host.consoles["shell"])
    host.hv.run_until(lambda: False, 3_000_000, ns=50_000_000)          # 50 ms
    assert bytes(host.consoles["shell"]) == before and not dom.runnable
    host.ts.unpause("shell")
    assert host.run_until(lambda: b"again\n" in host.consoles["shell"][len(before):])
    # its code frames taken away
    mon = dom.monitor
    code = {mfn for u in mon.tc.units.values() if u.live for mfn in u.frames}
    assert code and all(mfn in dom.rev for mfn in code)          # machine frames of its own
    gpfns = sorted(dom.rev[mfn] for mfn in code)
    assert host.ts.xc.decrease_reservation(d, gpfns) == len(gpfns)
    assert not any(u.live and u.frames & code for u in mon.tc.units.values())
    host.ts.type_console("shell", b"echo x\n")          # (its shell runs again)
    assert host.run_until(lambda: dom.state is State.CRASHED)
    assert "is not backed by a frame of the domain" in dom.crash_report
    assert host.hv.domains[0].state is not State.CRASHED
    # destroyed: its memory, translation cache, shadows and ports go back
    free_before = host.hv.frames.nr_free
    owned = len(host.hv.frames.owned_by(d))
    xen_frames = len(dom.xen_frames)
    assert xen_frames >= TC_PAGES
    host.ts.destroy("shell")
    host.run_until(lambda: d not in host.hv.domains, 2_000_000)
    assert d not in host.hv.domains and host.hv.frames.owned_by(d) == []
    assert host.hv.frames.nr_free >= free_before + owned + xen_frames
    with pytest.raises(XlError):
        host.ts.find("shell")


def test_a_bt_domain_is_scheduled_among_busy_pv_domains(host):
    """Two CPU-bound domains, one of each type, weights 1:1: both make progress, and
    neither is starved (the credit scheduler's shares, not their structure, decide)."""
    names = ("spin-bt", "spin-pv")
    host.create("spin-bt", "run=sieve iters=200", kernel="kernel", type="bt", on_poweroff="preserve")
    host.create("spin-pv", "run=sieve iters=200", kernel="kernel-pv", type="pv", on_poweroff="preserve")
    t0 = {n: host.dom(n).cpu_time_ns for n in names}
    host.hv.run_until(lambda: any(host.dom(n).dead for n in names), 40_000_000,
                      ns=70_000_000)                                    # 70 ms of their time
    used = {n: host.dom(n).cpu_time_ns - t0[n] for n in names}
    assert all(used[n] >= 25_000_000 for n in names), used     # each had its 30 ms slices
    for n in names:
        host.ts.destroy(n)


def test_the_kernel_must_match_the_type(host):
    assert is_paravirtual(image_path("kernel-pv").read_bytes())
    assert is_paravirtual(image_path("evping").read_bytes())
    assert not is_paravirtual(image_path("kernel").read_bytes())
    with pytest.raises(XlError, match=r"is a para-virtual image .* type = \"bt\" runs an unmodified"):
        host.create("wrong1", "", kernel="kernel-pv", type="bt")
    with pytest.raises(XlError, match=r"is not a para-virtual image .* type = \"pv\" needs"):
        host.create("wrong2", "", kernel="kernel", type="pv")
    assert not any(m.name.startswith("wrong") for m in host.ts.managed.values())


def _devices(dom) -> tuple:
    """What a bt domain's kernel programmed in its devices (not their times)."""
    dev = dom.monitor.devices
    pit = [{k: v for k, v in ch.items() if k != "load_cycle"}
           for ch in dev.pit.get_state()["channels"]]
    uart = {k: v for k, v in dev.uart.get_state().items() if k != "timeout_at"}
    return pit, uart, dev.platform.vpic.get_state()


def test_a_bt_domain_saved_in_the_middle_of_work_finishes_as_an_unsaved_one(host, tmp_path):
    """``btdom``'s workload again, on a blank disk of its own: saved (and destroyed) when
    its first program has printed -- the pause taken at that UART write, so in the same
    place every run --, restored: the console and the disk end as the unsaved run's
    (its translations and shadows made again, its devices and vCPU carried).  A corrupt
    image, and a bt context given to a PV domain, are refused in one line."""
    _, kernel, cmdline = WORKLOADS["btdom"]
    disk = _blank(tmp_path / "saved.img")
    cfg = config.DomainConfig(name="btsave", kernel=kernel, type="bt", cmdline=cmdline,
                              memory=16, on_poweroff="preserve",
                              disks=[config.Disk(str(disk), "raw", "xvda", "rw")])
    ts, hv = host.ts, host.hv
    d = ts.create(cfg, paused=True)
    out = bytearray()
    ts.managed[d].listeners.append(out.extend)
    ring = hv.domains[d].monitor.devices.console
    written = bytearray()
    write = ring.write

    def pause_after_first_program(data: bytes) -> None:
        write(data)
        written.extend(data)
        if b"forkwait: iters=2" in written and not hv.domains[d].paused:
            hv.pause(hv.domains[d])
    ring.write = pause_after_first_program
    ts.unpause("btsave")
    assert host.run_until(lambda: hv.domains[d].paused and not hv.on_cpu(hv.domains[d]), BUDGET)
    devices = _devices(hv.domains[d])
    saved = []
    ts.save("btsave", lambda stream, err: saved.append((stream, err)) or "destroy")
    assert host.run_until(lambda: saved) and saved[0][1] is None, saved
    assert d not in hv.domains
    assert b"blk: wrote" not in out                      # saved in the middle of its work
    stream = saved[0][0]
    # refused in one line: a corrupt image, a bt domain's context for a PV domain
    bad = bytearray(stream)
    bad[len(bad) // 2] ^= 0x55
    with pytest.raises(XlError) as e:
        ts.restore(bytes(bad), "btsave.img")
    assert "\n" not in str(e.value) and "btsave.img" in str(e.value)
    meta, context, frames, memory, used = saverestore.parse_stream(stream, "btsave.img")
    as_pv = {**meta, "config": {**meta["config"], "type": "pv"}}
    with pytest.raises(XcError, match="EINVAL|22"):
        saverestore.restore_stream(ts.xc, as_pv, context, frames, memory, used, 0)
    new = ts.restore(stream, "btsave.img")
    ts.managed[new].listeners.append(out.extend)
    dom = hv.domains[new]
    assert dom.kind == "bt" and dom.monitor.tc.stats["translations"] < 50    # made again
    assert _devices(dom) == devices          # the kernel's 100 Hz PIT, its PIC, its UART
    assert host.run_until(lambda: dom.dead, BUDGET), bytes(out)
    assert dom.shutdown_reason == Shutdown.poweroff
    assert TIMING.sub(b"", bytes(out)) == TIMING.sub(b"", bytes(host.consoles["btdom"]))
    assert disk.read_bytes() == host.disk.read_bytes()
    ts.destroy("btsave")


def test_the_example_config_is_a_bt_domain():
    cfg = config.load(EXAMPLE)
    assert cfg.type == "bt" and cfg.kernel == "kernel"
    assert not is_paravirtual(image_path(cfg.kernel).read_bytes())
    # a bt domain's disk is the hypervisor's emulated one: no back-end to choose
    with pytest.raises(config.ConfigFileError, match="no backend="):
        config.parse('name = "x"\ntype = "bt"\nkernel = "kernel"\n'
                     'disk = ["/tmp/x.img,raw,xvda,rw,backend=hypervisor"]\n')
    with pytest.raises(config.ConfigFileError, match="a bt domain has one disk, xvda"):
        config.parse('name = "x"\ntype = "bt"\nkernel = "kernel"\n'
                     'disk = ["/tmp/x.img,raw,xvda,rw", "/tmp/y.img,raw,xvdb,rw"]\n')


# -- end to end: `ringvisor xen` and `ringvisor xl`, as a user runs them -----------------------

@pytest.fixture(scope="module")
def xen(tmp_path_factory):
    d = tmp_path_factory.mktemp("xenbtcli")
    env = dict(os.environ, RINGVISOR_STATE_DIR=str(d))
    proc = subprocess.Popen([sys.executable, "-m", "ringvisor", "xen", "--mem", "96M"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (d / "xl.sock").exists() or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read()
        yield env, d
    finally:
        proc.terminate()
        proc.wait(60)


def test_xl_create_of_a_bt_config(xen, tmp_path):
    env, d = xen
    cmdline = "run=syscall iters=50"
    cfg = tmp_path / "bt.cfg"
    cfg.write_text(EXAMPLE.read_text().replace('cmdline = ""', f'cmdline = "{cmdline}"')
                   .replace('on_poweroff = "destroy"', 'on_poweroff = "preserve"'))
    r = xl(env, "create", str(cfg))
    assert r.returncode == 0, r.stderr
    log = d / "console" / "gamma.log"
    wait_for(lambda: log.exists() and b"kernel: halt" in log.read_bytes())
    # (what the kernel prints alone under bt: the in-process test above compares it all)
    assert b"syscall: iters=50 checksum=0x00000032\n" in log.read_bytes()
    rows = wait_for(lambda: (lambda rs: rs if rs["gamma"]["state"][3] == "s" else None)(
        {r["name"]: r for r in json.loads(xl_here(env, "list", "--json").stdout)}))
    assert rows["gamma"]["type"] == "bt" and rows["Domain-0"]["type"] == "pv"
    text = xl_here(env, "list", "-v").stdout.splitlines()
    assert text[0].split()[-2:] == ["Type", "UUID"]
    assert [line.split()[6] for line in text[1:] if line.startswith("gamma")] == ["bt"]
    # refused in one line each: the save of a domain that has shut down, the wrong kind of
    # image for the type (the queries run in this process, test_xl_cli.xl_here; the
    # creates are the user's own processes)
    r = xl_here(env, "save", "gamma", str(tmp_path / "gamma.save"))
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert "shut down" in r.stderr and not (tmp_path / "gamma.save").exists()
    bad = tmp_path / "wrong.cfg"
    bad.write_text('name = "wrong"\ntype = "bt"\nkernel = "kernel-pv"\nmemory = 16\n')
    r = xl(env, "create", str(bad))
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "is a para-virtual image" in r.stderr
    assert xl_here(env, "destroy", "gamma").returncode == 0
    assert [r["name"] for r in json.loads(xl_here(env, "list", "--json").stdout)] == ["Domain-0"]

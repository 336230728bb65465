"""`ringvisor xen` and `ringvisor xl` as a user runs them: two processes, the control
socket between them, configuration files, and one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import socket
import time
import urllib.request
from pathlib import Path

import jsonschema
import pytest

from ringvisor import cli

EXAMPLES = Path(__file__).parents[1] / "examples" / "xen"
SCHEMA = Path(cli.__file__).resolve().parent / "schemas" / "live.json"


def xl(env, *args, stdin=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "ringvisor", "xl", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, input=stdin)


def xl_here(env, *args):
    """`ringvisor xl` run in this process (cli.main, as `python -m ringvisor` calls it):
    the session's many queries would each start an interpreter (~0.25 s of CPU, more time
    for the paced host to spend idling); create, console and the bad input still run
    as the user's own processes."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(["xl", "--state-dir", env["RINGVISOR_STATE_DIR"], *args])
        except SystemExit as e:            # (a usage error: argparse exits)
            code = e.code
    return subprocess.CompletedProcess(["xl", *args], code, out.getvalue(), err.getvalue())


def wait_for(cond, seconds=120):
    end = time.time() + seconds
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def xen(tmp_path_factory):
    d = tmp_path_factory.mktemp("xenhost")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the port of the live view, for the test that reads it
    env = dict(os.environ, RINGVISOR_STATE_DIR=str(d), TEST_WEB_PORT=str(port))
    proc = subprocess.Popen([sys.executable, "-m", "ringvisor", "xen", "--pace", "on",
                             "--mem", "160M", "--web", str(port)], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (d / "xl.sock").exists() or proc.poll() is not None, 60)
        assert proc.poll() is None, proc.stderr.read()
        yield env, d
    finally:
        proc.terminate()
        proc.wait(30)


def listing(env):
    r = xl_here(env, "list", "--json")
    assert r.returncode == 0, r.stderr
    return {row["name"]: row for row in json.loads(r.stdout)}


def test_a_session(xen):
    env, d = xen
    for cfg in ("alpha.cfg", "beta.cfg"):
        r = xl(env, "create", str(EXAMPLES / cfg))
        assert r.returncode == 0, r.stderr
        assert "created" in r.stdout
    rows = wait_for(lambda: (lambda rs: rs if rs.get("beta", {}).get("state", "")[3:4] == "s"
                             else None)(listing(env)))
    assert set(rows) == {"Domain-0", "alpha", "beta"}
    # the live view (--web) lists the same domains, as xl list does
    url = f"http://127.0.0.1:{env['TEST_WEB_PORT']}/live.json"

    def live():
        with urllib.request.urlopen(url, timeout=30) as r:
            d = json.loads(r.read())
        return d if {x["name"] for x in d["domains"]} == set(rows) else None
    view = wait_for(live)
    jsonschema.validate(view, json.loads(SCHEMA.read_text()))
    assert view["vm"]["mode"] == "xen" and view["groups"]["scheduler"]["accountings"] > 0
    assert {x["name"]: x["id"] for x in view["domains"]}["Domain-0"] == 0
    text = xl_here(env, "list").stdout.splitlines()
    assert text[0].split() == ["Name", "ID", "Mem", "VCPUs", "State", "Time(s)"]
    # every vCPU, in Xen's columns; one domain's only when it is named
    text = xl_here(env, "vcpu-list", "alpha").stdout.splitlines()
    assert text[0].split() == ["Name", "ID", "VCPU", "CPU", "State", "Time(s)", "Affinity",
                               "(Hard", "/", "Soft)"]
    assert len(text) == 2 and text[1].split()[:3] == ["alpha", str(rows["alpha"]["id"]), "0"]
    r = xl_here(env, "vcpu-list", "nosuch")
    assert r.returncode == 1 and r.stderr.strip() == "ringvisor: no domain called 'nosuch'"
    assert wait_for(lambda: b"$ " in (d / "console" / "alpha.log").read_bytes())
    assert b"forkwait: iters=5" in (d / "console" / "beta.log").read_bytes()
    # the console, from a script: what is typed goes in, what it prints comes out
    r = xl(env, "console", "alpha", stdin="echo from-xl\n")
    assert r.returncode == 0 and "from-xl" in r.stdout.split("echo from-xl", 1)[-1]
    assert xl_here(env, "pause", "alpha").returncode == 0
    assert listing(env)["alpha"]["state"][2] == "p"
    assert xl_here(env, "unpause", "alpha").returncode == 0
    assert listing(env)["alpha"]["state"][2] == "-"
    assert xl_here(env, "sched-credit", "-d", "alpha", "-w", "128").returncode == 0
    rows = json.loads(xl_here(env, "sched-credit", "--json").stdout)
    assert {r["name"]: r["weight"] for r in rows}["alpha"] == 128
    assert {r["name"]: r["weight"] for r in rows}["beta"] == 512      # from its config file
    # a balloon target beyond what the domain may have, or below what its kernel can
    # give back, is refused in one line (test_balloon moves a balloon)
    for size in ("33", "3"):
        r = xl_here(env, "mem-set", "alpha", size)
        assert r.returncode == 1 and r.stderr == (f"ringvisor: mem-set alpha: {size} MiB is "
                                                  "outside 4..32 (the least a domain runs in "
                                                  ".. its maxmem)\n")
    assert xl_here(env, "destroy", "alpha").returncode == 0
    assert "alpha" not in listing(env)
    assert "domain 0 created (dom0_t)" in xl_here(env, "dmesg").stdout
    info = json.loads(xl_here(env, "info", "--json").stdout)
    assert info["nr_cpus"] == 1 and info["xen_scheduler"] == "credit"
    r = xl(env, "destroy", "alpha")
    assert r.returncode == 1 and r.stderr.strip() == "ringvisor: no domain called 'alpha'"


def test_bad_arguments_are_usage_errors_before_any_host_is_asked(tmp_path):
    """A malformed argument is the user's mistake: one line, exit status 2, found before
    the client connects (no host runs here); what only the host can judge -- a vCPU or
    CPU it lacks, a cap beyond the domain's vCPUs -- is its refusal, exit status 1."""
    env = dict(os.environ, RINGVISOR_STATE_DIR=str(tmp_path / "none"))
    for args, why in ((("vcpu-pin", "alpha", "0", "one"), "'one' is not a CPU"),
                      (("vcpu-pin", "alpha", "0", "3-1"), "'3-1' is not a range"),
                      (("vcpu-pin", "alpha", "first", "0"), "'first' is not a vCPU number"),
                      (("sched-credit", "-d", "alpha", "-w", "0"), "must be positive"),
                      (("sched-credit", "-d", "alpha", "-w", "65536"), "out of range (1 to 65535)"),
                      (("sched-credit", "-d", "alpha", "-c", "-5"), "cap -5 is out of range"),
                      (("sched-credit", "-w", "512"), "-w and -c need -d DOMAIN"),
                      (("save", "alpha", str(tmp_path / "no" / "alpha.save")), "no such directory")):
        r = xl_here(env, *args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and why in r.stderr, (args, r)


def test_a_save_to_nowhere_is_refused_and_the_host_goes_on(tmp_path):
    """The host writes an ``xl save`` stream in its machine loop: a path it cannot write
    to is an answer to the client, not an error that ends ``ringvisor xen``."""
    from ringvisor.toolstack.server import Server

    class Saving:                        # (a toolstack whose domain is saved at once)
        requests_hook = None

        def save(self, name, write):
            self.then = write(b"a stream", None)
    ts = Saving()
    server = Server(ts, tmp_path / "xl.sock")
    mine, theirs = socket.socketpair()
    try:
        server._save("save", {"name": "alpha", "path": str(tmp_path / "no" / "a.save")}, theirs)
        reply = json.loads(mine.makefile("rb").readline())
    finally:
        mine.close()
        server.close()
    assert ts.then == "resume" and not reply["ok"]
    assert reply["error"] == f"save alpha: {tmp_path / 'no' / 'a.save'}: no such directory"


def test_a_fault_of_the_toolstack_is_an_answer_and_the_host_goes_on(tmp_path):
    """An exception the toolstack did not expect, raised while the host serves a request,
    is one line to the client and a traceback in the state directory's log -- not the end
    of ``ringvisor xen`` and every domain on it; the next request is served."""
    from ringvisor.toolstack.server import Server

    class Broken:
        requests_hook = None
        state_dir = tmp_path
        calls = 0

        def list(self):
            Broken.calls += 1
            if Broken.calls == 1:
                raise RuntimeError("a bug")
            return []
    server = Server(Broken(), tmp_path / "xl.sock")
    replies = []
    try:
        for _ in range(2):
            mine, theirs = socket.socketpair()
            server._do({"cmd": "list"}, theirs, None)
            replies.append(json.loads(mine.makefile("rb").readline()))
            mine.close()
    finally:
        server.close()
    log = tmp_path / "toolstack-errors.log"
    assert not replies[0]["ok"] and "\n" not in replies[0]["error"]
    assert "RuntimeError: a bug" in replies[0]["error"] and str(log) in replies[0]["error"]
    assert replies[1] == {"ok": True, "result": []}
    assert "Traceback" in log.read_text() and "RuntimeError: a bug" in log.read_text()


def test_bad_input_is_one_line(xen, tmp_path):
    env, _ = xen
    bad = tmp_path / "bad.cfg"
    bad.write_text('name = "x"\nkernel = "kernel-pv"\nmemory = "big"\n')
    r = xl(env, "create", str(bad))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert f"{bad}:3: memory: expected a number" in r.stderr
    r = xl(env, "create", str(tmp_path / "missing.cfg"))
    assert r.returncode == 2 and "no such configuration file" in r.stderr
    nowhere = dict(env, RINGVISOR_STATE_DIR=str(tmp_path / "none"))
    r = xl(nowhere, "list")
    assert r.returncode == 2 and "no `ringvisor xen` is running" in r.stderr

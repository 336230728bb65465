"""Machine-readable output: every ``--json`` document validates against its published schema
(``ringvisor/schemas``, described in docs/json.md), and the progress line shows on a terminal
only."""

from __future__ import annotations

import io
import json
import os
import re
import pty
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from ringvisor import __version__, cli
from ringvisor.ui.progress import Progress, duration

SCHEMAS = Path(cli.__file__).resolve().parent / "schemas"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "json.md"


def validate(doc: dict, name: str) -> None:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
    assert doc["schema"] == f"ringvisor.{name}/1" and doc["ringvisor"] == __version__


def run_json(capsys, *args: str, stream: str = "out", status: int = 0) -> dict:
    got = cli.main(list(args))
    out, err = capsys.readouterr()
    text = out if stream == "out" else err
    other = err if stream == "out" else out
    assert other == "", other                     # nothing else: no progress line when piped
    assert got == status, text
    return json.loads(text)


def test_every_schema_is_documented():
    names = sorted(p.stem for p in SCHEMAS.glob("*.json"))
    assert names == ["bench", "devbench", "live", "probe", "run-stats", "vmbench"]
    text = DOCS.read_text()
    for name in names:
        assert f"ringvisor.{name}/1" in text and f"schemas/{name}.json" in text


def test_run_stats(capsys):
    doc = run_json(capsys, "run", "kernel-pv", "--mode", "paravirt", "--append",
                   "run=syscall iters=2", "--serial", "null", "--stats", "--json", stream="err",
                   status=1)
    validate(doc, "run-stats")
    assert doc["stop"] == {"reason": "exit", "status": 1, "message": None}
    assert doc["machine"]["instructions"] > 100_000
    mon = doc["monitor"]
    assert mon["name"] == "paravirt" and sum(mon["tables"]["hypercalls"].values()) > 0


def test_run_stats_of_a_guest_that_stops_early(capsys):
    doc = run_json(capsys, "run", "kernel", "--max-instructions", "5000", "--serial", "null",
                   "--stats", "--json", stream="err", status=4)
    validate(doc, "run-stats")
    assert doc["stop"]["reason"] == "limit" and doc["monitor"] is None
    assert "5000 instructions" in doc["stop"]["message"]


def test_probe(capsys):
    doc = run_json(capsys, "probe", "--json", "--mode", "bt")
    validate(doc, "probe")
    assert doc["modes"] == ["native", "bt"]
    sgdt = {m: v for m, v in next(p for p in doc["probes"] if p["name"] == "SGDT")["results"].items()}
    # binary translation shows the guest's GDTR to its kernel, and user code (run
    # directly) the monitor's: Robin & Irvine's leak
    assert sgdt["bt"]["kernel"] == sgdt["native"]["kernel"]
    assert sgdt["bt"]["user"] != sgdt["native"]["user"] and sgdt["bt"]["differs"]


def test_vmbench(capsys):
    doc = run_json(capsys, "vmbench", "--json", "--workload", "syscall", "--workload", "sieve",
                   "--mode", "trapemu", "--mode", "hvm", "--scale", "0.02", "--repeat", "1")
    validate(doc, "vmbench")
    syscall = doc["workloads"][0]
    assert syscall["name"] == "syscall" and syscall["results"]["native"]["ok"]
    nat, te = syscall["results"]["native"], syscall["results"]["trapemu"]
    assert te["cycles_ratio"] == pytest.approx(te["cycles"] / nat["cycles"])
    assert set(doc["throughput"]) == {"trapemu", "hvm"}
    # the CPU-bound workload ran in every mode at once, in turns: its ratios are the
    # rounds' (one here, so no spread), in wall and in CPU time
    sieve = doc["workloads"][1]["results"]
    assert sieve["native"]["cpu_us"] > 0 and sieve["trapemu"]["cpu_us"] > 0
    assert sieve["trapemu"]["cpu_ratio"] == pytest.approx(
        sieve["trapemu"]["cpu_us"] / sieve["native"]["cpu_us"])
    assert sieve["trapemu"]["wall_ratio_spread"] == 0 and sieve["hvm"]["exits_per_op"] is not None
    assert doc["throughput"]["trapemu"]["cpu_percent"] == pytest.approx(
        100 / sieve["trapemu"]["cpu_ratio"])
    # a system call needs no VM exit: the kernel handles it at ring 0 in non-root operation
    assert syscall["results"]["hvm"]["ok"] and syscall["results"]["hvm"]["exits_per_op"] < 0.5


def test_bench(capsys):
    doc = run_json(capsys, "bench", "--json", "--workload", "crc32", "--scale", "0.004",
                   "--no-qemu")
    validate(doc, "bench")
    assert doc["workloads"][0]["qemu"] is None and doc["summary"]["qemu_ratio_geomean"] is None


# -- progress -------------------------------------------------------------------------------

class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_estimates_from_the_steps_of_each_kind():
    now = [0.0]
    out = Tty()
    p = Progress([("a under native", "native"), ("a under bt", "bt"),
                  ("b under native", "native"), ("b under bt", "bt")], stream=out,
                 clock=lambda: now[0])
    p.start(0)
    assert "[1/4] a under native ... estimating the time left" in out.getvalue()
    now[0] = 2.0
    p.done(0)
    p.start(1)                                  # bt unseen: the overall mean, 2 s a step
    assert out.getvalue().rstrip().endswith("[2/4] a under bt ... about 6s left")
    now[0] = 12.0
    p.done(1)
    p.start(2)                                  # native 2 s, bt 10 s
    assert out.getvalue().rstrip().endswith("[3/4] b under native ... about 12s left")
    now[0] = 14.0
    p.done(2)
    p.start(3)
    p.done(3)                                   # the last step takes the line away
    assert out.getvalue().endswith("\r")
    assert duration(75) == "1m15s" and duration(3 * 3600 + 60) == "3h01m"


def test_progress_is_silent_when_piped():
    out = io.StringIO()
    p = Progress([("x", "k")], stream=out)
    p.start(0)
    p.done(0)
    p.clear()
    assert out.getvalue() == ""


def on_a_terminal(*args: str) -> tuple[subprocess.CompletedProcess, bytes]:
    """``ringvisor ARGS`` with standard error on a pseudo-terminal: the run, and what the
    terminal got."""
    master, slave = pty.openpty()
    try:
        p = subprocess.run([sys.executable, "-m", "ringvisor", *args], stdout=subprocess.PIPE,
                           stderr=slave, timeout=300)
        os.close(slave)
        slave = -1
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    return p, seen


def test_bench_shows_progress_on_a_terminal():
    p, seen = on_a_terminal("bench", "--workload", "crc32", "--scale", "0.004", "--no-qemu")
    assert p.returncode == 0
    assert b"[1/1] bench: crc32 on ringvisor ... estimating the time left" in seen
    assert b"crc32" in p.stdout and b"[1/1]" not in p.stdout


def test_vmbench_shows_progress_on_a_terminal():
    """Each boot on the line in turn, the time left estimated once one has finished; the
    line is taken away at the end, and the table on standard output has none of it."""
    p, seen = on_a_terminal("vmbench", "--workload", "syscall", "--scale", "0.01", "--mode", "bt",
                            "--repeat", "1")
    assert p.returncode == 0, seen
    assert b"\r[1/2] vmbench: syscall under native ... estimating the time left" in seen
    assert re.search(rb"\r\[2/2\] vmbench: syscall under bt \.\.\. about \d[0-9hms]* left",
                     seen), seen
    assert seen.endswith(b"\r"), seen          # cleared
    assert b"syscall" in p.stdout and b"[1/2]" not in p.stdout and b"\r" not in p.stdout


def test_version():
    """``ringvisor --version``: the version every JSON document carries, the package's own."""
    import tomllib
    p = subprocess.run([sys.executable, "-m", "ringvisor", "--version"], capture_output=True,
                       text=True, timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (0, f"ringvisor {__version__}\n", "")
    pyproject = Path(cli.__file__).resolve().parents[1] / "pyproject.toml"
    assert tomllib.loads(pyproject.read_text())["project"]["version"] == __version__

"""Real-address mode from RESET: a firmware ROM of our own (tests/roms/realmode.S),
run as ``qemu-system-i386 -bios`` runs it and on ringvisor with both engines, and the
``run --bios`` command line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ringvisor.hw.machine import Machine

ROM_DIR = Path(__file__).resolve().parent / "roms"
BUILD_DIR = Path(os.environ.get("RINGVISOR_HWGUEST_BUILD", Path(__file__).resolve().parent /
                                "hwguests" / "build"))

# What the ROM must print (the SDM rule behind each line is in realmode.S).
EXPECTED = """\
cs after reset f000
msw 0010
1001:0000 beef
wrap 1234
o32/a32 23456789
int30 ax,if 5432 0200
#DE ip-off 0000
#UD ip-off 0000
#BR ip-off 0000
popf 70d7
far 0123
sp wrap fffe 5555
protected mode
unreal cafef00d
pe 0000
lmsw pe 0001
irq0 ticks 0003
done
"""
POST_CODES = [0x01, 0x02, 0x03, 0x05, 0x04, 0xFF]


def build_rom(name: str) -> Path:
    """Assemble ``tests/roms/NAME.S`` (``as --32``, ``.code16``) into a flat 64 KiB ROM,
    cached by a hash of the source."""
    src = ROM_DIR / f"{name}.S"
    sources = [src, *sorted(ROM_DIR.glob("*.inc"))]      # (what ``.include`` may read)
    tag = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    out = BUILD_DIR / f"{name}-{tag}.rom"
    if not out.exists():
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        obj = out.with_name(f"{out.stem}.{os.getpid()}.o")
        tmp = out.with_name(f"{out.stem}.{os.getpid()}.rom")
        subprocess.run(["as", "--32", "-I", str(ROM_DIR), "-o", str(obj), str(src)], check=True)
        subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0", "--oformat", "binary", "-e", "0",
                        "-o", str(tmp), str(obj)], check=True)
        obj.unlink()
        os.replace(tmp, out)
    return out


@pytest.fixture(scope="module")
def rom() -> Path:
    return build_rom("realmode")


def run_rom(path: Path, engine: str) -> tuple[str, int, Machine]:
    out = bytearray()
    m = Machine(32, engine, output=out.extend)
    m.boot_bios(path.read_bytes(), str(path))
    stop = m.run(2_000_000)
    return out.decode("latin-1"), stop.status, m


@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_realmode_rom_on_ringvisor(rom, engine):
    out, status, m = run_rom(rom, engine)
    assert out == EXPECTED
    assert status == 1                       # isa-debug-exit: (0 << 1) | 1
    assert [(p, v) for _, p, v in m.post.codes] == [(0x80, c) for c in POST_CODES]


def qemu_bios(rom: Path) -> tuple[str, int | None]:
    """What ``qemu-system-i386 -bios ROM`` prints on COM1, and its isa-debug-exit code."""
    from ringvisor.tools.qemu import QemuError, run_qemu
    try:
        res = run_qemu(rom, bios=True, timeout=30)
    except QemuError as e:
        pytest.skip(str(e))
    return res.output.decode("latin-1").replace("\r\n", "\n"), res.guest_exit_code


def test_realmode_rom_on_qemu(rom):
    assert qemu_bios(rom) == (EXPECTED, 0)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ringvisor", "run", *args], capture_output=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})


def test_run_bios_cli_and_post_log(rom, tmp_path):
    log = tmp_path / "post.log"
    r = _cli("--bios", str(rom), "--post-log", str(log), "--stats")
    assert r.returncode == 1, r.stderr
    assert r.stdout.decode() == EXPECTED
    assert b"POST codes: 6 written, the last 0xff" in r.stderr
    lines = log.read_text().splitlines()
    assert [tuple(l.split()[1:]) for l in lines] == [("0x80", f"{c:#04x}") for c in POST_CODES]
    assert [int(l.split()[0]) for l in lines] == sorted(int(l.split()[0]) for l in lines)


@pytest.mark.parametrize("args,message", [
    (["--bios", "/nonexistent.rom"], "no such ROM image"),
    (["--bios", "SHORT"], "must be a multiple of 64 KiB"),
    (["--bios", "ROM", "kernel"], "no KERNEL"),
    (["--bios", "ROM", "--mode", "bt"], "bare machine or under --mode hvm"),
    (["--post-log", "x.log", "kernel"], "--post-log goes with --bios"),
])
def test_run_bios_bad_input(rom, tmp_path, args, message):
    short = tmp_path / "short.rom"
    short.write_bytes(b"\xf4" * 1000)
    args = [str(short) if a == "SHORT" else str(rom) if a == "ROM" else a for a in args]
    r = _cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    err = r.stderr.decode().strip().splitlines()
    assert len(err) == 1 and message in err[0], err

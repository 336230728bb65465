"""The command line's contract: bad input gives one clear line and a non-zero exit,
a crashed guest gives a CPU report, and nothing reaches the user as a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ringvisor.guests.toolchain import Target, build

MB_HEADER = """
.section .text
.align 4
.long 0x1BADB002
.long 0x00000003
.long -(0x1BADB002 + 0x00000003)
.globl _start
_start:
"""

LINKER = """
ENTRY(_start)
SECTIONS { . = 0x100000; .text : { *(.text*) } .data : { *(.data*) *(.bss*) } }
"""


def guest(tmp_path: Path, name: str, body: str) -> Path:
    src = tmp_path / f"{name}.S"
    src.write_text(MB_HEADER + body)
    lds = tmp_path / "link.ld"
    lds.write_text(LINKER)
    return build(Target(name, [src], lds), tmp_path / f"{name}.elf")


def rv(*args: str, stdin: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ringvisor", *args], input=stdin,
                          capture_output=True, timeout=timeout)


def one_line_error(p: subprocess.CompletedProcess) -> str:
    err = p.stderr.decode()
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_hello_and_exit_status(tmp_path):
    img = guest(tmp_path, "hello", """
    mov $msg, %esi
1:  lodsb
    test %al, %al
    jz 2f
    mov $0x3f8, %dx
    out %al, %dx
    jmp 1b
2:  mov $0xf4, %dx
    mov $5, %al
    out %al, %dx
    hlt
.data
msg: .asciz "hello from ring 0\\n"
""")
    for engine in ("jit", "interp"):
        p = rv("run", str(img), "--engine", engine)
        assert p.stdout == b"hello from ring 0\n"
        assert p.returncode == (5 << 1) | 1      # isa-debug-exit: (value << 1) | 1


def test_stats_go_to_stderr(tmp_path):
    img = guest(tmp_path, "quiet", "mov $0xf4, %dx\n out %al, %dx\n hlt\n")
    p = rv("run", str(img), "--stats")
    assert p.stdout == b""
    assert b"instructions retired" in p.stderr and b"MIPS" in p.stderr


@pytest.mark.parametrize("content,expect", [
    (b"", "no Multiboot header"),
    (b"\x7fELF" + b"\x00" * 60, "Multiboot"),
    (b"hello world" * 100, "no Multiboot header"),
])
def test_bad_images(tmp_path, content, expect):
    f = tmp_path / "bad.elf"
    f.write_bytes(content)
    p = rv("run", str(f))
    assert p.returncode != 0
    assert expect in one_line_error(p)


def test_truncated_image(tmp_path):
    img = guest(tmp_path, "t", "hlt\n")
    data = img.read_bytes()
    f = tmp_path / "trunc.elf"
    f.write_bytes(data[:len(data) // 3])
    p = rv("run", str(f))
    assert p.returncode != 0
    one_line_error(p)


def test_image_larger_than_memory(tmp_path):
    f = tmp_path / "huge.elf"
    f.write_bytes(b"\0" * (3 << 20))
    p = rv("run", str(f), "--mem", "2")
    assert p.returncode != 0
    assert "more than" in one_line_error(p)


@pytest.mark.parametrize("args,expect", [
    (["run"], "required"),
    (["run", "x", "--mem", "lots"], "bad memory size"),
    (["run", "x", "--mem", "0"], "positive"),
    (["run", "x", "--engine", "turbo"], "invalid choice"),
    (["run", "x", "--max-instructions", "-3"], "positive"),
    (["frobnicate"], "invalid choice"),
    (["bench", "--workload", "nope", "--no-qemu"], "unknown workload"),
    (["xen", "--dom0-max-vcpus", "9"], "at most 8 vCPUs"),
])
def test_bad_arguments(args, expect):
    p = rv(*args)
    assert p.returncode == 2
    assert expect in one_line_error(p)


def test_missing_kernel_and_module(tmp_path):
    p = rv("run", str(tmp_path / "nope.elf"))
    assert p.returncode == 2 and "no such" in one_line_error(p)
    img = guest(tmp_path, "m", "hlt\n")
    p = rv("run", str(img), "--module", str(tmp_path / "missing.bin"))
    assert p.returncode == 2 and "no such module" in one_line_error(p)
    p = rv("run", str(tmp_path))
    assert p.returncode == 2 and "directory" in one_line_error(p)


def test_triple_fault_reports_cpu_state(tmp_path):
    # No IDT: #UD finds a not-present gate (#NP), then #DF fails too: shutdown.
    img = guest(tmp_path, "tf", "lidt idt\n mov $0x1234, %eax\n ud2\n.data\nidt: .word 0\n .long 0\n")
    p = rv("run", str(img))
    err = p.stderr.decode()
    assert p.returncode == 3
    assert "Traceback" not in err
    assert "triple fault" in err
    assert "eax=00001234" in err
    assert "ud2" in err            # the instructions at the faulting address


def test_instruction_limit(tmp_path):
    img = guest(tmp_path, "spin", "1: jmp 1b\n")
    p = rv("run", str(img), "--max-instructions", "50000")
    assert p.returncode == 4
    assert "50000 instructions" in p.stderr.decode()


def test_halt_with_interrupts_disabled_stops(tmp_path):
    img = guest(tmp_path, "cli", "cli\n hlt\n")
    p = rv("run", str(img))
    assert p.returncode == 0
    assert "interrupts disabled" in p.stderr.decode()


def test_serial_input_from_a_pipe(tmp_path):
    # poll the UART for two bytes and echo them in reverse order
    img = guest(tmp_path, "echo", """
    mov $0x3fd, %dx
1:  in %dx, %al
    test $1, %al
    jz 1b
    mov $0x3f8, %dx
    in %dx, %al
    mov %al, %bl
    mov $0x3fd, %dx
2:  in %dx, %al
    test $1, %al
    jz 2b
    mov $0x3f8, %dx
    in %dx, %al
    out %al, %dx
    mov %bl, %al
    out %al, %dx
    mov $0xf4, %dx
    xor %al, %al
    out %al, %dx
""")
    p = rv("run", str(img), stdin=b"ab")
    assert p.stdout == b"ba"
    assert p.returncode == 1


def test_trace_file(tmp_path):
    img = guest(tmp_path, "tr", "mov $3, %ecx\n1: dec %ecx\n jnz 1b\n xor %eax, %eax\n mov $0xf4, %dx\n out %al, %dx\n")
    trace = tmp_path / "trace.txt"
    p = rv("run", str(img), "--trace", str(trace))
    assert p.returncode == 1
    text = trace.read_text()
    assert "translate 0x" in text and "dec ecx" in text and "def blk" in text


def test_demo_boots_and_compares_the_structures():
    p = subprocess.run([sys.executable, "-m", "ringvisor", "demo", "--append", "run=hello"],
                       capture_output=True, timeout=300)
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr
    assert "hello from pid" in out and "guest exit status 1" in out
    rows = [l for l in out.splitlines() if l.split()[:1] in (["syscall"], ["pgfault"], ["ctxsw"])]
    assert len(rows) == 3 and all("paravirt:" in r and "bt:" in r and "failed" not in r for r in rows)
    # each wall time is that of the guest's own timed loop, found by its rdtsc reads
    syscall = rows[0]
    assert "A&A 2006" in syscall and "cyc," in syscall
    walls = [float(w) for w in re.findall(r"([\d.]+) us", syscall)]
    assert len(walls) == 4 and all(w > 0 for w in walls)

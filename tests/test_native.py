"""Native-handler regions: Python code entered as ring-0 software through a real IDT gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringvisor.guests.toolchain import Target, build
from ringvisor.hw.machine import Machine

NATIVE = 0xFEE00000       # physical, above RAM: only the handler lives there

GUEST = """
.section .text
.align 4
.long 0x1BADB002, 0, -0x1BADB002
.globl _start
_start:
    # IDT entry 0x30: 32-bit interrupt gate, DPL 0, CS 0x08 (the Multiboot GDT), offset NATIVE
    movl $idt, %edi
    movl $0x{native:08x}, %eax
    movw %ax, 0x180(%edi)
    movw $0x08, 0x182(%edi)
    movw $0x8E00, 0x184(%edi)
    shrl $16, %eax
    movw %ax, 0x186(%edi)
    lidt idtr
    movl $21, %eax
    int $0x30                 # enters the Python handler at ring 0, which returns with iret
    movl %ebx, %eax
    cmp $0x{native:08x}, %ecx # the handler saw the gate's offset in EIP
    jne bad
    movw $0xf4, %dx
    outb %al, %dx
bad:
    movw $0xf4, %dx
    movb $0x7f, %al
    outb %al, %dx
.data
.align 8
idtr: .word 0x30 * 8 + 7
      .long idt
idt:  .fill 0x31 * 8, 1, 0
"""

LINKER = "ENTRY(_start)\nSECTIONS { . = 0x100000; .text : { *(.text*) } .data : { *(.data*) } }\n"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("native")
    (d / "g.S").write_text(GUEST.format(native=NATIVE))
    (d / "l.ld").write_text(LINKER)
    return build(Target("native", [d / "g.S"], d / "l.ld"), d / "native.elf")


@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_gate_enters_python_handler(image, engine):
    m = Machine(16, engine)
    seen = []

    def handler(cpu):
        st = cpu.state
        seen.append((cpu.cpl, st.eip))
        st.regs[3] = st.regs[0] * 2          # ebx = 2 * eax
        st.regs[1] = st.eip                  # ecx = where we were entered
        cpu.iret()

    m.cpu.native.bind(NATIVE, 0x1000, handler, "doubler")
    m.boot_multiboot(image.read_bytes())
    stop = m.run(100_000)
    assert seen == [(0, NATIVE)]
    assert stop.reason == "exit" and stop.status == (42 << 1) | 1


def test_regions_must_not_overlap():
    m = Machine(16)
    m.cpu.native.bind(NATIVE, 0x1000, lambda cpu: None, "a")
    with pytest.raises(ValueError):
        m.cpu.native.bind(NATIVE + 0x800, 0x1000, lambda cpu: None, "b")

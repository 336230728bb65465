"""The monitor prompt's commands: the part of QEMU's human monitor a kernel developer uses.

Reached from the console with Ctrl-A c (``console.py``) and from gdb with
``monitor CMD`` (``qRcmd``).  Everything it shows of the guest comes through the
VM's guest view (``ringvisor.vmm.guestview``): under a monitor, the registers and
memory the guest believes it has, never the monitor's.

    info registers      the guest's registers (QEMU's layout)
    info status         running or paused, and why
    x/FMT ADDR          guest memory at a guest virtual address: FMT is
                        [count][format][size], format x (hex), d, u, c or i
                        (instructions), size b, h, w (default) or g; ADDR is a
                        number or a register ($eip, $esp+8 ...)
    stop, cont          pause and resume the VM
    savevm NAME [TEXT]  the VM as it stands, as a node of the snapshot tree
    loadvm NAME         the VM in node NAME's state, in place (it runs on from there)
    quit                end the run
"""

from __future__ import annotations

import re

import iced_x86 as ix

from ringvisor.hw import state as S
from ringvisor.vmm.guestview import REGISTERS, ViewError

HELP = """\
info registers   show the guest's registers
info status      show whether the VM runs
x/FMT ADDR       examine guest memory: FMT = [count][x|d|u|c|i][b|h|w|g], e.g. x/8x $esp, x/5i $eip
stop             pause the VM
cont | c         resume it
savevm NAME      snapshot the VM into the snapshot tree (snapshot-revert NAME resumes it)
loadvm NAME      put the VM back in snapshot NAME's state, in place
quit | q         end the run
help | ?         this list
"""

SIZES = {"b": 1, "h": 2, "w": 4, "g": 8}
_FMT = re.compile(r"^(\d*)([xduci]?)([bhwg]?)$")
_ADDR = re.compile(r"^(\$[a-z0-9_]+|0x[0-9a-fA-F]+|\d+)(?:\s*([+-])\s*(0x[0-9a-fA-F]+|\d+))?$")
MAX_COUNT = 4096


class HmpError(Exception):
    pass


def evaluate(text: str, view) -> int:
    """An address: a number, or a register with an optional offset ($esp+8)."""
    m = _ADDR.match(text.strip())
    if not m:
        raise HmpError(f"bad address {text.strip()!r} (a number, or $reg[+N])")
    base, sign, off = m.groups()
    if base.startswith("$"):
        regs = view.registers()
        name = base[1:]
        if name == "pc":
            name = "eip"
        if name not in regs:
            raise HmpError(f"no register {base} ({', '.join('$' + r for r in REGISTERS[:16])} ...)")
        value = regs[name]
    else:
        value = int(base, 0)
    if sign:
        value = value + int(off, 0) if sign == "+" else value - int(off, 0)
    return value & 0xFFFFFFFF


def info_registers(view) -> str:
    r = view.registers()
    ef = r["eflags"]
    flags = "".join(n[0] if ef & getattr(S, n) else "-" for n in ("DF", "OF", "SF", "ZF", "AF",
                                                                   "PF", "CF"))
    lines = [f"guest registers ({view.name}{', halted' if view.halted else ''}):",
             f"EAX={r['eax']:08x} EBX={r['ebx']:08x} ECX={r['ecx']:08x} EDX={r['edx']:08x}",
             f"ESI={r['esi']:08x} EDI={r['edi']:08x} EBP={r['ebp']:08x} ESP={r['esp']:08x}",
             f"EIP={r['eip']:08x} EFL={ef:08x} [{flags}] CPL={r['cs'] & 3} "
             f"IF={int(bool(ef & S.IF))} IOPL={(ef & S.IOPL_MASK) >> 12}"]
    for n in ("es", "cs", "ss", "ds", "fs", "gs"):
        lines.append(f"{n.upper():<3}={r[n]:04x}")
    lines.append(f"LDT={r['ldtr']:04x} TR ={r['tr']:04x}")
    lines.append(f"GDT=     {r['gdt_base']:08x} {r['gdt_limit']:08x}")
    lines.append(f"IDT=     {r['idt_base']:08x} {r['idt_limit']:08x}")
    lines.append(f"CR0={r['cr0']:08x} CR2={r['cr2']:08x} CR3={r['cr3']:08x} CR4={r['cr4']:08x}")
    return "\n".join(lines) + "\n"


def examine(view, fmt: str, addr: int) -> str:
    m = _FMT.match(fmt)
    if not m:
        raise HmpError(f"bad format /{fmt} ([count][x|d|u|c|i][b|h|w|g])")
    count = int(m.group(1) or 1)
    if not 0 < count <= MAX_COUNT:
        raise HmpError(f"count must be 1 to {MAX_COUNT}")
    kind = m.group(2) or "x"
    if kind == "i":
        return disassemble(view, addr, count)
    size = SIZES[m.group(3) or ("b" if kind == "c" else "w")]
    data = view.read(addr, count * size)
    items = [int.from_bytes(data[i:i + size], "little") for i in range(0, len(data) - size + 1, size)]
    per_line = max(1, 16 // size)
    out = []
    for i in range(0, len(items), per_line):
        row = items[i:i + per_line]
        if kind == "x":
            cells = [f"0x{v:0{2 * size}x}" for v in row]
        elif kind == "d":
            cells = [str(v - (1 << (8 * size)) if v >> (8 * size - 1) else v) for v in row]
        elif kind == "u":
            cells = [str(v) for v in row]
        else:
            cells = [repr(chr(v & 0xFF)) for v in row]
        out.append(f"{(addr + i * size) & 0xFFFFFFFF:08x}: " + " ".join(cells))
    if len(items) < count:
        out.append(f"{(addr + len(items) * size) & 0xFFFFFFFF:08x}: <not mapped>")
    return "\n".join(out) + "\n"


def disassemble(view, addr: int, count: int) -> str:
    data = view.read(addr, 15 * count)
    fmt = ix.Formatter(ix.FormatterSyntax.GAS)
    fmt.uppercase_hex = False
    out = []
    for ins in ix.Decoder(32, data, ip=addr):
        if len(out) >= count or ins.code == ix.Code.INVALID and ins.len == 0:
            break
        raw = data[ins.ip32 - addr:ins.ip32 - addr + ins.len].hex()
        out.append(f"{ins.ip32:08x}:  {raw:<16} {fmt.format(ins)}")
    return "\n".join(out) + "\n"


def execute(line: str, view, session) -> str:
    """Run one command line; the text to show (errors included, as one line)."""
    words = line.split()
    if not words:
        return ""
    cmd, rest = words[0], line.strip()[len(words[0]):].strip()
    try:
        if cmd in ("help", "?", "h"):
            return HELP
        if cmd == "info":
            what = rest.split()[0] if rest else ""
            if what in ("registers", "reg", "r"):
                session.settle()
                return info_registers(view)
            if what == "status":
                return f"VM status: {session.status()}\n"
            raise HmpError("info registers | info status")
        if cmd.startswith("x/") or cmd == "x":
            fmt = cmd[2:] if cmd.startswith("x/") else ""
            if not rest:
                raise HmpError("x/FMT ADDR, e.g. x/8x $esp or x/5i $eip")
            session.settle()
            return examine(view, fmt, evaluate(rest, view))
        if cmd == "stop":
            return session.user_stop()
        if cmd in ("cont", "c"):
            return session.user_cont()
        if cmd in ("quit", "q"):
            session.quit("stopped by the user (monitor quit)")
            return ""
        if cmd in ("savevm", "loadvm"):
            return session.lifecycle(cmd, rest)
        raise HmpError(f"unknown command {cmd!r} (try 'help')")
    except HmpError as e:
        return f"{e}\n"
    except ViewError as e:
        return f"{e}\n"

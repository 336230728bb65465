"""The replacement sequences pvcc puts in place of each privileged or sensitive
instruction (docs/paravirt.md's table): stores to the shared-info page, Xen-style
hypercalls, calls into the PV runtime.

Each sequence keeps the rules of the ``ringvisor.pvcc`` docstring: registers the
original did not write are preserved, so is the stack pointer; EFLAGS too where
``keep`` asks it (sites from assembly sources); position independent, with
numeric local labels.  Apart from the rewriter because they are the contract
with the hypervisor (``ringvisor.abi``), and the rewriter only chooses one.
"""

from __future__ import annotations

from ringvisor import abi
from ringvisor.abi import (DomId, Hypercall, Mmuext, RvMachineOp, SchedOp, Shutdown, VcpuOp,
                           XenVer)

from .operands import ACC, REG16, deeper, gpr32

MASK = f"0x{abi.PV_UPCALL_MASK_VA:08x}"           # vcpu_info[0].evtchn_upcall_mask
PENDING = f"0x{abi.PV_UPCALL_PENDING_VA:08x}"     # vcpu_info[0].evtchn_upcall_pending
CR2 = f"0x{abi.PV_CR2_VA:08x}"                    # vcpu_info[0].arch.cr2
INT = f"int ${abi.HYPERCALL_VECTOR:#x}"
EFLAGS_IF = 0x200


# ---------------------------------------------------------------------------
# Replacement sequences
# ---------------------------------------------------------------------------

L1, L2, L3 = "98761", "98762", "98763"


def _push(*regs: str) -> list[str]:
    return [f"pushl %{r}" for r in regs]


def _pop(*regs: str) -> list[str]:
    return [f"popl %{r}" for r in reversed(regs)]


def _flags_save() -> list[str]:
    # (%esp) := AH = SF ZF AF PF CF, AL = OF; eax keeps its value
    return ["pushl %eax", "lahf", "seto %al", "xchgl %eax, (%esp)"]


def _flags_restore() -> list[str]:
    # OF := AL (1 + 0x7f overflows, 0 + 0x7f does not), then the rest from AH
    return ["xchgl %eax, (%esp)", "addb $0x7f, %al", "sahf", "popl %eax"]


def _keep_flags(body, keep: bool) -> list[str]:
    """``body(depth)`` between a flags save and restore when ``keep``;
    ``depth`` is how many bytes the wrapper pushed."""
    if not keep:
        return body(0)
    return _flags_save() + body(4) + _flags_restore()


def _deliver_pending() -> list[str]:
    """If an event is pending, make a hypercall: the hypervisor delivers
    pending events on the way back (xen_version is the cheapest)."""
    return [*_push("ecx"), f"movzbl {PENDING}, %ecx", f"jecxz {L2}f",
            *_push("eax", "ebx"), "movl $0, %ecx", f"movl ${XenVer.version}, %ebx",
            f"movl ${Hypercall.xen_version}, %eax", INT, *_pop("eax", "ebx"),
            f"{L2}:", *_pop("ecx")]


def seq_cli() -> list[str]:
    return [f"movb $1, {MASK}"]


def seq_sti() -> list[str]:
    return [f"movb $0, {MASK}"] + _deliver_pending()


def seq_safe_halt() -> list[str]:
    # sched_op(SCHEDOP_block) unmasks and blocks atomically (no lost wakeup)
    regs = ("eax", "ebx", "ecx")
    return [*_push(*regs), f"movl ${SchedOp.block}, %ebx", "movl $0, %ecx",
            f"movl ${Hypercall.sched_op}, %eax", INT, *_pop(*regs)]


def seq_hlt() -> list[str]:
    regs = ("eax", "ebx", "ecx", "edx")
    return [*_push(*regs), f"movzbl {MASK}, %ecx", "movl $0, %edx", f"jecxz {L1}f",
            # masked: nothing can wake it, as with cli; hlt
            f"movl ${VcpuOp.down}, %ebx", "movl $0, %ecx", f"movl ${Hypercall.vcpu_op}, %eax",
            f"jmp {L2}f",
            f"{L1}:", f"movl ${SchedOp.block}, %ebx", f"movl ${Hypercall.sched_op}, %eax",
            f"{L2}:", INT, *_pop(*regs)]


def seq_pushf(keep: bool) -> list[str]:
    def body(d: int) -> list[str]:
        at = f"{d + 4}(%esp)"           # the pushed flags, under eax
        return ["pushl %eax", f"movzbl {MASK}, %eax", f"orl ${EFLAGS_IF:#x}, {at}",
                "shll $9, %eax", f"xorl %eax, {at}", "popl %eax"]      # IF := !mask
    return ["pushfl"] + _keep_flags(body, keep)


def seq_popf() -> list[str]:
    return ["testb $2, 1(%esp)", f"jz {L1}f",                 # IF (bit 9) of the popped value
            f"movb $0, {MASK}", "popfl", *_deliver_pending(), f"jmp {L3}f",
            f"{L1}:", f"movb $1, {MASK}", "popfl", f"{L3}:"]


def seq_iret() -> list[str]:
    return ["pushl %eax", f"movl ${Hypercall.iret}, %eax", INT]


def _mmuext(load_arg1: list[str], cmd: int, refused: list[str] = ()) -> list[str]:
    """mmuext_op({cmd, arg1 = eax after load_arg1}, 1, NULL, DOMID_SELF), the
    one-element array built on the stack; ``refused`` right after the call."""
    regs = ("eax", "ebx", "ecx", "edx", "esi")
    return [*_push(*regs), *load_arg1, "pushl $0", "pushl %eax", f"pushl ${cmd}",
            "movl %esp, %ebx", "movl $1, %ecx", "movl $0, %edx", f"movl ${DomId.SELF:#x}, %esi",
            f"movl ${Hypercall.mmuext_op}, %eax", INT, *refused, "leal 12(%esp), %esp",
            *_pop(*regs)]


def _crash_if_refused() -> list[str]:
    """A negative eax (the hypercall refused) stops the domain: sched_op(SCHEDOP_shutdown,
    {SHUTDOWN_crash}), issued again should it return -- as a Linux guest BUG()s on a failed
    MMU hypercall; going on would run on the tables it had."""
    return ["testl %eax, %eax", f"jns {L1}f", f"pushl ${Shutdown.crash}", "movl %esp, %ecx",
            f"movl ${SchedOp.shutdown}, %ebx", f"{L2}:", f"movl ${Hypercall.sched_op}, %eax",
            INT, f"jmp {L2}b", f"{L1}:"]


def seq_write_cr3(reg: str, keep: bool) -> list[str]:
    return _keep_flags(lambda d: _mmuext([f"movl %{reg}, %eax", "shrl $12, %eax"],
                                         Mmuext.NEW_BASEPTR, _crash_if_refused()), keep)


def seq_write_cr(n: int, reg: str) -> list[str]:
    regs = ("eax", "ebx", "ecx", "edx")
    return [*_push(*regs), f"movl %{reg}, %edx", f"movl ${RvMachineOp.WRITE_CR}, %ebx",
            f"movl ${n}, %ecx", f"movl ${Hypercall.rv_machine_op}, %eax", INT, *_pop(*regs)]


def seq_read_cr(n: int, reg: str) -> list[str]:
    if n == 2:
        return [f"movl {CR2}, %{reg}"]
    saved = [r for r in ("eax", "ebx", "ecx") if r != reg]
    out = [*_push(*saved), f"movl ${RvMachineOp.READ_CR}, %ebx", f"movl ${n}, %ecx",
           f"movl ${Hypercall.rv_machine_op}, %eax", INT]
    if reg != "eax":
        out.append(f"movl %eax, %{reg}")
    return out + _pop(*saved)


def seq_invlpg(mem: str) -> list[str]:
    return _mmuext([f"leal {deeper(mem, 20)}, %eax"], Mmuext.INVLPG_LOCAL)


def seq_runtime_call(func: str, mem: str) -> list[str]:
    regs = ("eax", "ecx", "edx")            # what a C function may clobber
    return [*_push(*regs), f"leal {deeper(mem, 12)}, %eax", "pushl %eax", f"call {func}",
            "leal 4(%esp), %esp", *_pop(*regs)]


def seq_runtime_value_call(func: str, reg: str) -> list[str]:
    """``func(reg)`` with the caller-saved registers kept (pushed before the argument:
    ``reg`` may be one of them)."""
    regs = ("eax", "ecx", "edx")
    return [*_push(*regs), f"pushl %{reg}", f"call {func}", "leal 4(%esp), %esp",
            *_pop(*regs)]


def seq_port_io(kind: str, size: int, port: str) -> list[str]:
    """``in``/``out`` of ``size`` bytes at ``port`` (``%dx`` or ``$n``) as a call of the
    runtime's pv_in(size, port) / pv_out(size, port, value); every register but the
    destination of an ``in`` is kept."""
    load_port = ["movzwl %dx, %ecx"] if port == "%dx" else [f"movl {port}, %ecx"]
    if kind == "out":
        return [*_push("eax", "ecx", "edx"), "pushl %eax", *load_port, "pushl %ecx",
                f"pushl ${size}", "call pv_out", "addl $12, %esp", *_pop("eax", "ecx", "edx")]
    keep = [] if size == 4 else ["pushl %eax"]
    put = [] if size == 4 else [f"mov{'b' if size == 1 else 'w'} {ACC[size]}, (%esp)", "popl %eax"]
    return [*_push("ecx", "edx"), *keep, *load_port, "pushl %ecx", f"pushl ${size}",
            "call pv_in", "addl $8, %esp", *put, *_pop("ecx", "edx")]


def seq_ltr(op: str) -> list[str]:
    regs = ("eax", "ebx", "ecx")
    r = gpr32(op)
    src = f"%{[k for k, v in REG16.items() if v == r][0]}" if r else deeper(op, 12)
    return [*_push(*regs), f"movzwl {src}, %ecx", f"movl ${RvMachineOp.LTR}, %ebx",
            f"movl ${Hypercall.rv_machine_op}, %eax", INT, *_pop(*regs)]


def seq_load_ss(op: str, keep: bool) -> list[str]:
    r = gpr32(op)

    def body(d: int) -> list[str]:
        src = f"%{[k for k, v in REG16.items() if v == r][0]}" if r else deeper(op, 4 + d + 4)
        return ["pushl %eax", f"movzwl {src}, %eax", "orl $1, %eax",     # RPL 1
                f"movl %eax, {d + 4}(%esp)", "popl %eax"]
    # a slot for the selector, filled, then popped into SS last so the
    # one-instruction interrupt shadow still covers the source's next instruction
    return ["leal -4(%esp), %esp"] + _keep_flags(body, keep) + ["popl %ss"]


def seq_lret(original: str, keep: bool) -> list[str]:
    return _keep_flags(lambda d: [f"orl $1, {d + 4}(%esp)"], keep) + [original]   # CS RPL 1

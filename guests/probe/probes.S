/* The probes.  Each one is a function that the runner calls in ring 0 and
 * starts by iret in ring 3; it executes one sensitive instruction (or a
 * short sequence around one) and stores raw results in pv[] (or dtr_buf);
 * probe.c formats them.  A probe that faults never finishes: the exception
 * handler records the fault instead.  The code is identical in both rings;
 * only home_cs (0x08 or 0x1b, the code selector a compiled kernel or
 * program would name in an immediate) differs. */
#include "probe.h"

#define IF 0x200

    .text

/* SGDT / SIDT: base and limit (6 bytes) */
    .globl p_sgdt, p_sidt
p_sgdt:
    sgdt dtr_buf
    ret
p_sidt:
    sidt dtr_buf
    ret

/* SLDT / STR / SMSW into a 32-bit register (low 16 bits are printed) */
    .globl p_sldt, p_str, p_smsw
p_sldt:
    xorl %eax, %eax
    sldt %eax
    movl %eax, pv
    ret
p_str:
    xorl %eax, %eax
    str %eax
    movl %eax, pv
    ret
p_smsw:
    xorl %eax, %eax
    smsw %eax
    movl %eax, pv
    ret

/* PUSHF: EFLAGS as pushed (the kernel runs with IF=0, ring 3 with IF=1) */
    .globl p_pushf
p_pushf:
    pushfl
    popl pv
    ret

/* POPF: try to clear IF, read EFLAGS back; try to set IF, read back.
 * At CPL > IOPL popf leaves IF alone, silently. */
    .globl p_popf
p_popf:
    pushfl
    popl %eax
    andl $~IF, %eax
    pushl %eax
    popfl
    pushfl
    popl pv
    orl $IF, %eax
    pushl %eax
    popfl
    pushfl
    popl pv+4
    ret

/* LAR of 0x08 and 0x1b: rights in pv[0], pv[2]; ZF in pv[1], pv[3] */
    .globl p_lar
p_lar:
    xorl %eax, %eax
    movl $SEL_KCODE, %ecx
    lar %ecx, %eax
    setz %dl
    movl %eax, pv
    movzbl %dl, %edx
    movl %edx, pv+4
    xorl %eax, %eax
    movl $SEL_UCODE, %ecx
    lar %ecx, %eax
    setz %dl
    movl %eax, pv+8
    movzbl %dl, %edx
    movl %edx, pv+12
    ret

/* LSL of 0x10 and 0x23: limits in pv[0], pv[2]; ZF in pv[1], pv[3] */
    .globl p_lsl
p_lsl:
    xorl %eax, %eax
    movl $SEL_KDATA, %ecx
    lsl %ecx, %eax
    setz %dl
    movl %eax, pv
    movzbl %dl, %edx
    movl %edx, pv+4
    xorl %eax, %eax
    movl $SEL_UDATA, %ecx
    lsl %ecx, %eax
    setz %dl
    movl %eax, pv+8
    movzbl %dl, %edx
    movl %edx, pv+12
    ret

/* VERR 0x08, 0x10 / VERW 0x10, 0x23: ZF in pv[0], pv[1] */
    .globl p_verr, p_verw
p_verr:
    movl $SEL_KCODE, %ecx
    verr %cx
    setz %dl
    movzbl %dl, %edx
    movl %edx, pv
    movl $SEL_KDATA, %ecx
    verr %cx
    setz %dl
    movzbl %dl, %edx
    movl %edx, pv+4
    ret
p_verw:
    movl $SEL_KDATA, %ecx
    verw %cx
    setz %dl
    movzbl %dl, %edx
    movl %edx, pv
    movl $SEL_UDATA, %ecx
    verw %cx
    setz %dl
    movzbl %dl, %edx
    movl %edx, pv+4
    ret

/* PUSH CS / PUSH SS: the selector as pushed (low 16 bits are printed) */
    .globl p_push_cs, p_push_ss
p_push_cs:
    pushl %cs
    popl pv
    ret
p_push_ss:
    pushl %ss
    popl pv
    ret

/* MOV from CS / SS / DS */
    .globl p_mov_cs, p_mov_ss, p_mov_ds
p_mov_cs:
    xorl %eax, %eax
    movw %cs, %ax
    movl %eax, pv
    ret
p_mov_ss:
    xorl %eax, %eax
    movw %ss, %ax
    movl %eax, pv
    ret
p_mov_ds:
    xorl %eax, %eax
    movw %ds, %ax
    movl %eax, pv
    ret

/* FAR CALL to home_cs:far_target, which returns with lret */
    .globl p_far_call
p_far_call:
    movl $far_target, far_ptr
    movw home_cs, %ax
    movw %ax, far_ptr+4
    lcall *far_ptr
    movl $1, pv
    ret
far_target:
    lret

/* FAR JMP to home_cs:1f */
    .globl p_far_jmp
p_far_jmp:
    movl $1f, far_ptr
    movw home_cs, %ax
    movw %ax, far_ptr+4
    ljmp *far_ptr
1:  movl $1, pv
    ret

/* FAR RET to a pushed home_cs:1f */
    .globl p_far_ret
p_far_ret:
    movzwl home_cs, %eax
    pushl %eax
    pushl $1f
    lret
1:  movl $1, pv
    ret

/* INT $0x30 through a DPL-3 interrupt gate: the handler notes the CS in its
 * frame (the interrupted code's selector, RPL = its CPL) */
    .globl p_int
p_int:
    movl $0, int_cs
    int $VEC_INT
    movl int_cs, %eax
    movl %eax, pv
    ret

/* IRET to the same level: a frame with IF clear, then one with IF set;
 * EFLAGS read after each. */
    .globl p_iret
p_iret:
    pushfl
    popl %eax
    andl $~IF, %eax
    pushl %eax
    pushl %cs
    pushl $1f
    iret
1:  pushfl
    popl pv
    orl $IF, %eax
    pushl %eax
    pushl %cs
    pushl $2f
    iret
2:  pushfl
    popl pv+4
    ret

/* CLI / HLT: privileged (IOPL-sensitive / CPL 0 only) */
    .globl p_cli, p_hlt
p_cli:
    cli
    movl $1, pv
    ret
p_hlt:
    hlt
    movl $1, pv
    ret

    .section .bss
    .align 4
    .globl pv, home_cs, dtr_buf
pv:
    .long 0, 0, 0, 0
far_ptr:
    .long 0
    .word 0
    .align 4
home_cs:
    .word 0
    .align 4
    .skip 2
dtr_buf:                                /* limit (16 bits), base (32 bits) */
    .skip 6

/* The probe image: Multiboot entry, the descriptor tables (at addresses
 * fixed by probe.lds), exception stubs and the ring-0 / ring-3 runner. */
#include "probe.h"

#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

/* ---- descriptor tables ---------------------------------------------------
 * Flat 4 GiB segments, accessed bit preset (so LAR results and the table
 * contents never depend on when the CPU sets it).  The TSS descriptor and
 * the IDT gates are filled in by probe.c. */
    .section .tables, "aw"
    .align 64
    .globl gdt
gdt:
    .quad 0                             /* 0x00 null */
    .quad 0x00cf9b000000ffff            /* 0x08 ring-0 code */
    .quad 0x00cf93000000ffff            /* 0x10 ring-0 data */
    .quad 0x00cffb000000ffff            /* 0x18 ring-3 code */
    .quad 0x00cff3000000ffff            /* 0x20 ring-3 data */
    .quad 0                             /* 0x28 TSS */
    .align 64
    .globl idt
idt:
    .fill 256, 8, 0
    .align 64
    .globl tss
tss:
    .fill 26, 4, 0                      /* 104 bytes, no I/O bitmap */

    .text
    .globl _start
_start:
    cli
    cld
    movl %eax, %ebp
    movl %ebx, %esi
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    xorl %eax, %eax
    rep stosl
    movl $kstack_top, %esp
    pushl $2
    popfl                               /* IF=0 DF=0 IOPL=0 NT=0 */
    pushl %esi
    pushl %ebp
    xorl %ebp, %ebp
    call probe_main
1:  hlt
    jmp 1b

/* void load_tables(void): lgdt, reload every segment register, ltr, lidt */
    .globl load_tables
load_tables:
    lgdt gdt_ptr
    ljmp $SEL_KCODE, $1f
1:  movl $SEL_KDATA, %eax              /* upper half zero: only 16 bits are a selector */
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    movl $SEL_TSS, %eax
    ltr %ax
    lidt idt_ptr
    ret

/* ---- exceptions ----------------------------------------------------------
 * One 16-byte stub per vector 0..NSTUBS-1; vectors 8, 10-14 and 17 get
 * their error code from the CPU, the others push 0.  probe_fault (C) records
 * the fault, then the probe is abandoned. */
    .altmacro
    .macro STUB n
    .align 16
    .if (\n == 8) || ((\n >= 10) && (\n <= 14)) || (\n == 17)
    .else
    pushl $0
    .endif
    pushl $\n
    jmp fault_common
    .endm

    .align 16
    .globl fault_stubs
fault_stubs:
    .set i, 0
    .rept NSTUBS
    STUB %i
    .set i, i+1
    .endr

fault_common:
    movl $SEL_KDATA, %eax
    movw %ax, %ds
    movw %ax, %es
    cld
    pushl %esp                          /* -> vector, error, eip, cs, eflags */
    call probe_fault
    movl $1, %eax
    jmp probe_back

/* int $0x30 (DPL 3 interrupt gate): note the CS of the interrupted code. */
    .globl int30_handler
int30_handler:
    pushl %eax
    movl 8(%esp), %eax                  /* frame: eip, cs, eflags[, esp, ss] */
    movl %eax, %ss:int_cs
    popl %eax
    iret

/* int $0x80 (DPL 3 interrupt gate): a ring-3 probe is over. */
    .globl exit_handler
exit_handler:
    xorl %eax, %eax
    jmp probe_back

/* ---- the runner --------------------------------------------------------- */
/* int probe_run(void (*fn)(void), int user) */
    .globl probe_run
probe_run:
    pushl %ebp
    pushl %ebx
    pushl %esi
    pushl %edi
    movl %esp, saved_esp
    movl 20(%esp), %eax                 /* fn */
    cmpl $0, 24(%esp)
    jne 1f
    call *%eax                          /* ring 0: an ordinary call */
    xorl %eax, %eax
    jmp probe_back
1:  movl $user_stack_top - 4, %ecx      /* ring 3: fn returns to user_exit */
    movl $user_exit, (%ecx)
    pushl $SEL_UDATA                    /* ss */
    pushl %ecx                          /* esp */
    pushl $USER_EFLAGS                  /* eflags */
    pushl $SEL_UCODE                    /* cs */
    pushl %eax                          /* eip */
    movl $SEL_UDATA, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    iret

user_exit:
    int $VEC_EXIT

/* Back in ring 0 (from a probe's return, int $0x80 or a fault): the
 * runner's stack and segments again, interrupts off; eax = result. */
probe_back:
    movl $SEL_KDATA, %edx
    movw %dx, %ss
    movl %ss:saved_esp, %esp
    movw %dx, %ds
    movw %dx, %es
    movw %dx, %fs
    movw %dx, %gs
    cli
    cld
    popl %edi
    popl %esi
    popl %ebx
    popl %ebp
    ret

    .section .rodata
    .align 4
gdt_ptr:
    .word 6 * 8 - 1
    .long gdt
    .align 4
idt_ptr:
    .word 256 * 8 - 1
    .long idt

    .section .bss
    .align 16
    .skip 16384
    .globl kstack_top
kstack_top:                             /* the kernel's stack */
    .skip 8192
    .globl kstack0_top
kstack0_top:                            /* TSS esp0: traps from ring 3 */
    .skip 8192
user_stack_top:                         /* ring 3 */
    .align 4
saved_esp:
    .long 0
    .globl int_cs
int_cs:
    .long 0

/* Attack primitives for the hostile guest (hostile.c).
 *
 * Each primitive takes its operands from globals (hx_sel, hx_addr, hx_val,
 * hx_farptr), records how far it got in hx_stage (0: before the segment
 * load, 1: loaded, 2: the access completed) and leaves what it read in
 * hx_out.  hx_try runs one primitive at ring 0 with every exception caught:
 * the handler in hostile.c sends a faulting primitive to hx_caught.
 */
        .text

/* the kernel's flat segments and the stack hx_try saved (after any attack) */
        .macro back_to_flat
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %fs
        movw %ax, %gs
        movw %ax, %ss
        movl hx_saved_esp, %esp
        .endm

/* main: keep the Multiboot information pointer (EBX is preserved by rt_init). */
        .globl main
main:
        movl %ebx, hx_mbi
        jmp hostile_main

/* int hx_try(void (*fn)(void)): 0 if fn finished, 1 if it faulted. */
        .globl hx_try
hx_try:
        pushl %ebp
        pushl %ebx
        pushl %esi
        pushl %edi
        movl %esp, hx_saved_esp
        movl $hx_caught, hx_resume
        movl 20(%esp), %eax
        call *%eax
        .globl hx_done
hx_done:                                /* also the target of far jumps back */
        back_to_flat
        movl $0, hx_resume
        xorl %eax, %eax
        jmp 2f
        .globl hx_caught
hx_caught:
        back_to_flat
        movl $1, %eax
2:      popl %edi
        popl %esi
        popl %ebx
        popl %ebp
        ret

/* Load a segment register with hx_sel, then read or write [hx_addr] through it. */
        .macro SREG_READ name, sreg, other
        .globl \name
\name:
        movl $0, hx_stage
        movl hx_sel, %eax
        movl hx_addr, %ebx
        movw %ax, %\sreg
        movl $1, %\other:hx_stage
        movl %\sreg:(%ebx), %ecx
        movw $0x10, %ax
        movw %ax, %\sreg
        movl %ecx, hx_out
        movl $2, hx_stage
        ret
        .endm

        SREG_READ hx_es_read, es, ss
        SREG_READ hx_ds_read, ds, ss
        SREG_READ hx_fs_read, fs, ss
        SREG_READ hx_gs_read, gs, ss
        SREG_READ hx_ss_read, ss, ds

        .globl hx_es_write
hx_es_write:
        movl $0, hx_stage
        movl hx_sel, %eax
        movl hx_addr, %ebx
        movl hx_val, %ecx
        movw %ax, %es
        movl $1, hx_stage
        movl %ecx, %es:(%ebx)
        movw $0x10, %ax
        movw %ax, %es
        movl $2, hx_stage
        ret

/* Far transfers to hx_farptr (offset, selector); the targets come back
 * to hx_done with a far jump. */
        .globl hx_ljmp
hx_ljmp:
        movl $0, hx_stage
        ljmp *hx_farptr

        .globl hx_iret_to
hx_iret_to:
        movl $0, hx_stage
        pushfl
        movzwl hx_farptr+4, %eax
        pushl %eax
        pushl hx_farptr
        iret

/* A target: stage 1, read [hx_addr] through CS, stage 2, back to hx_done. */
        .globl hx_cs_target
hx_cs_target:
        movl $1, %ss:hx_stage
        movl %ss:hx_addr, %ebx
        movl %cs:(%ebx), %ecx
        movl %ecx, %ss:hx_out
        movl $2, %ss:hx_stage
        ljmp $0x08, $hx_done

/* Software interrupts. */
        .globl hx_int3
hx_int3:
        movl $1, hx_stage
        int3
        movl $2, hx_stage
        ret

        .globl hx_int81
hx_int81:
        movl $1, hx_stage
        int $0x81
        movl $2, hx_stage
        ret

        .globl hx_int82
hx_int82:
        movl $1, hx_stage
        int $0x82
        movl $2, hx_stage
        ret

/* Control transfers to an unmapped page (0x400000: PDE 1 -> an empty table). */
        .globl hx_jmp_unmapped
hx_jmp_unmapped:
        movl $1, hx_stage
        jmp 0x400000

        .globl hx_call_unmapped
hx_call_unmapped:
        movl $1, hx_stage
        movl $0x400000, %eax
        call *%eax
        ret

        .globl hx_ret_unmapped
hx_ret_unmapped:
        movl $1, hx_stage
        pushl $0x400000
        ret

/* Ring 3 primitives (run by rt_run_user; faults resume at rt_ring_exit_stub). */
        .globl hx_user_read
hx_user_read:
        movl $1, hx_stage
        movl hx_addr, %ebx
        movl (%ebx), %ecx
        movl %ecx, hx_out
        movl $2, hx_stage
        ret

        .globl hx_user_load_ds
hx_user_load_ds:
        movl $0, hx_stage
        movl hx_sel, %eax
        movw %ax, %ds
        movl $1, %ss:hx_stage
        movl %ss:hx_addr, %ebx
        movl (%ebx), %ecx
        movw $0x23, %ax
        movw %ax, %ds
        movl %ecx, hx_out
        movl $2, hx_stage
        ret

        .globl hx_user_int_f1
hx_user_int_f1:
        movl $1, hx_stage
        int $0xf1
        movl $2, hx_stage
        ret

        .globl hx_user_ljmp
hx_user_ljmp:
        movl $0, hx_stage
        ljmp *hx_farptr

/* IRQ 0 on vector 8 (the PIC programmed by a word write): count it and
 * check that no error code was pushed (an interrupt has none). */
        .globl hx_irq8
hx_irq8:
        pushl %eax
        movl 8(%esp), %eax              /* CS, if the frame is an interrupt's */
        andl $0xfffc, %eax
        cmpl $0x08, %eax
        je 1f
        incl hx_irq_bad
        popl %eax
        addl $4, %esp                   /* drop what stands for an error code */
        jmp 2f
1:      popl %eax
2:      incl hx_irq_count
        movl $0x08, 4(%esp)             /* RPL 0: trap-and-emulate sees the IRET (and IF) */
        pushl %eax
        movb $0x20, %al
        outb %al, $0x20
        popl %eax
        iret

        .section .bss
        .align 4
        .globl hx_mbi, hx_saved_esp, hx_resume, hx_sel, hx_addr, hx_val, hx_out, hx_stage
        .globl hx_farptr, hx_irq_count, hx_irq_bad
hx_mbi:         .long 0
hx_saved_esp:   .long 0
hx_resume:      .long 0
hx_sel:         .long 0
hx_addr:        .long 0
hx_val:         .long 0
hx_out:         .long 0
hx_stage:       .long 0
hx_irq_count:   .long 0
hx_irq_bad:     .long 0
hx_farptr:      .long 0, 0

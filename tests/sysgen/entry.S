/* sysgen runtime, assembly part: the Multiboot entry, the exception and
 * interrupt stubs (one common path into trap() in rt.c), the resume path
 * that abandons a faulting operation, and step_end, which hands the
 * registers at the end of each step to rt.c. */
#define KCODE 0x08
#define KDATA 0x10

    .section .multiboot, "a"
    .align 4
    .long 0x1BADB002, 0, -0x1BADB002

    .text
    .globl _start
_start:
    cli
    mov $kstack_top, %esp
    call rt_init                /* own GDT, IDT, TSS, LDT, paging */
    ljmp $KCODE, $1f
1:  mov $KDATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    mov %ax, %ss
    mov $kstack_top, %esp
    jmp steps_start

/* vectors with a hardware error code: 8, 10-14, 17 */
.macro STUB v, err
    .globl stub_\v
stub_\v:
    .if \err == 0
    pushl $0
    .endif
    pushl $\v
    jmp common
.endm
    STUB 0,0; STUB 1,0; STUB 2,0; STUB 3,0; STUB 4,0; STUB 5,0; STUB 6,0; STUB 7,0
    STUB 8,1; STUB 9,0; STUB 10,1; STUB 11,1; STUB 12,1; STUB 13,1; STUB 14,1; STUB 15,0
    STUB 16,0; STUB 17,1; STUB 18,0; STUB 19,0; STUB 20,0; STUB 21,0; STUB 22,0; STUB 23,0
    STUB 24,0; STUB 25,0; STUB 26,0; STUB 27,0; STUB 28,0; STUB 29,0; STUB 30,0; STUB 31,0
    STUB 63,0
    STUB 64,0; STUB 65,0; STUB 66,0; STUB 67,0; STUB 68,0; STUB 69,0; STUB 70,0; STUB 71,0

common:
    pushal
    push %ds
    push %es
    push %fs
    push %gs
    cld
    mov $KDATA, %ax
    mov %ax, %ds
    mov %ax, %es
    push %esp
    call trap
    add $4, %esp
    test %eax, %eax
    jnz resume_step
    pop %gs
    pop %fs
    pop %es
    pop %ds
    popal
    add $8, %esp
    iret

/* Abandon the operation: back to the step's resume label at ring 0 on the
 * kernel stack with EFLAGS = 2, through an IRET to an RPL-0 frame (which
 * also restores the virtual flags under a monitor), with the general
 * registers of the interrupted context (trap() copied them to rs_regs). */
    .globl resume_step
resume_step:
    mov $KDATA, %ax
    mov %ax, %ss
    mov $kstack_top, %esp
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    pushl $2
    pushl $KCODE
    pushl resume
    mov rs_regs+0, %edi
    mov rs_regs+4, %esi
    mov rs_regs+8, %ebp
    mov rs_regs+16, %ebx
    mov rs_regs+20, %edx
    mov rs_regs+24, %ecx
    mov rs_regs+28, %eax
    iret

/* step_reset: DS..GS flat, EFLAGS = 2 (IRET to an RPL-0 frame), DR7 = 0, and the
 * general registers 0 (nothing a step left, a sensitive step's result, reaches the next) */
    .globl step_reset
step_reset:
    mov $KDATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    xor %eax, %eax
    mov %eax, %dr7
    pushl $2
    pushl $KCODE
    pushl $1f
    iret
1:  xor %ecx, %ecx
    xor %edx, %edx
    xor %ebx, %ebx
    xor %esi, %esi
    xor %edi, %edi
    xor %ebp, %ebp
    ret

/* step_end: the registers at the end of a step, to rt.c (step_done).
 * Flags by LAHF/SETO: PUSHF is sensitive under trap-and-emulate. */
    .globl step_end
step_end:
    pushal
    lahf
    seto %al
    push %eax
    push %ds
    push %es
    push %fs
    push %gs
    cld
    mov $KDATA, %ax
    mov %ax, %ds
    mov %ax, %es
    push %esp
    call step_done
    add $24+32, %esp
    ret

    .section .rodata
    .align 4
    .globl stub_table
stub_table:                     /* the stubs by vector, 0 where there is none */
    .long stub_0, stub_1, stub_2, stub_3, stub_4, stub_5, stub_6, stub_7
    .long stub_8, stub_9, stub_10, stub_11, stub_12, stub_13, stub_14, stub_15
    .long stub_16, stub_17, stub_18, stub_19, stub_20, stub_21, stub_22, stub_23
    .long stub_24, stub_25, stub_26, stub_27, stub_28, stub_29, stub_30, stub_31
    .fill 31, 4, 0
    .long stub_63, stub_64, stub_65, stub_66, stub_67, stub_68, stub_69, stub_70, stub_71
    .fill 184, 4, 0
    .text

/* The task behind the task gates: prints, returns by IRET (NT), and
 * starts over when entered again. */
    .globl task_entry
task_entry:
    call task_note
    iret
    jmp task_entry

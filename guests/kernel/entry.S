/* Interrupt and exception entry, return to user mode, context switch. */
#include "arch.h"

#define KDATA 0x10

/* One stub per vector: push a zero error code where the CPU pushes none,
 * push the vector number, and go to trap_common.  The address of each stub
 * goes into trap_vectors[] (vectors 0..47, then 0x80 at index 48). */
.macro stub n
    .text
    .globl vec\n
vec\n:
    .if \n == 8 || \n == 10 || \n == 11 || \n == 12 || \n == 13 || \n == 14 || \n == 17
    .else
    pushl $0
    .endif
    pushl $\n
    jmp trap_common
    .section .rodata
    .long vec\n
.endm

    .section .rodata
    .align 4
    .globl trap_vectors
trap_vectors:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    stub \n
    .endr
    .irp n, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,128
    stub \n
    .endr

    .text
trap_common:
    pushl %ds
    pushl %es
    pushl %fs
    pushl %gs
    pushal
    cld
    movl $KDATA, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    pushl %esp                      /* struct trapframe * */
    call trap_dispatch
    addl $4, %esp

    .globl trap_return
trap_return:
    popal
    popl %gs
    popl %fs
    popl %es
    popl %ds
    addl $8, %esp                   /* vector, error code */
    ARCH_IRET

/* void swtch(uint32_t *save_esp, uint32_t new_esp)
 * Saves the callee-saved registers on the current kernel stack, stores esp
 * in *save_esp, switches to new_esp and pops the same frame from there.
 * A new process's stack holds such a frame whose return address is
 * trap_return, with its trap frame above it. */
    .globl swtch
swtch:
    movl 4(%esp), %eax
    movl 8(%esp), %edx
    pushl %ebp
    pushl %ebx
    pushl %esi
    pushl %edi
    movl %esp, (%eax)
    movl %edx, %esp
    popl %edi
    popl %esi
    popl %ebx
    popl %ebp
    ret

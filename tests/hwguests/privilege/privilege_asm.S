/* Ring-3 / ring-1 code and call-gate targets for the privilege guest.
 * Written in assembly so that stack pointers and flags are exact. */

        .text
/* ring 3/1: flags = 0x246 | IF (cmp of equal values: ZF PF, no AF/CF/SF/OF) */
        .globl u_int80
u_int80:
        movl $0, %eax
        cmpl %eax, %eax
        .globl u_int80_insn
u_int80_insn:
        int $0x80
        ret

        .globl u_int81
u_int81:
        movl $0, %eax
        cmpl %eax, %eax
        int $0x81
        ret

/* ring 3: far call through the DPL 3 call gate 0x43 (2 parameters). */
        .globl u_callgate
u_callgate:
        pushl $0x11111111
        pushl $0x22222222
        lcall $0x43, $0
        .globl u_callgate_ret
u_callgate_ret:
        movl %esp, cg_user_esp_after
        movw %es, cg_user_es_after
        ret

/* ring 0 target of gate 0x40 */
        .globl cg_target
cg_target:
        movl %esp, cg_esp
        movl 0(%esp), %eax
        movl %eax, cg_stack+0
        movl 4(%esp), %eax
        movl %eax, cg_stack+4
        movl 8(%esp), %eax
        movl %eax, cg_stack+8
        movl 12(%esp), %eax
        movl %eax, cg_stack+12
        movl 16(%esp), %eax
        movl %eax, cg_stack+16
        movl 20(%esp), %eax
        movl %eax, cg_stack+20
        movw %cs, cg_cs
        movw %ss, cg_ss
        movw $0x10, %ax                 /* ES: DPL 0 data, nulled by the return */
        movw %ax, %es
        lret $8

/* ring 3: far call through gate 0x4b to ring-1 code (stack from SS1:ESP1) */
        .globl u_callgate1
u_callgate1:
        lcall $0x4b, $0
        ret

        .globl cg1_target
cg1_target:
        movl %esp, cg_esp
        movl 0(%esp), %eax
        movl %eax, cg_stack+0
        movl 4(%esp), %eax
        movl %eax, cg_stack+4
        movl 8(%esp), %eax
        movl %eax, cg_stack+8
        movl 12(%esp), %eax
        movl %eax, cg_stack+12
        movw %cs, cg_cs
        movw %ss, cg_ss
        lret

/* ring 3: faults that must raise #GP */
        .globl u_int31
u_int31:
        movl $1f, rt_resume
        movl $2f, rt_mark
2:      int $0x31
1:      ret

        .globl u_int3
u_int3:
        movl $1f, rt_resume
        movl $2f, rt_mark
2:      int3
1:      ret

        .globl u_into
u_into:
        movl $0x7fffffff, %eax
        addl $1, %eax
        movl $1f, rt_resume
        movl $2f, rt_mark
2:      into
1:      ret

        .globl u_call_dpl0_gate
u_call_dpl0_gate:
        movl $1f, rt_resume
        movl $2f, rt_mark
2:      lcall $0x53, $0
1:      ret

        .globl u_call_code0
u_call_code0:
        movl $1f, rt_resume
        movl $2f, rt_mark
2:      lcall $0x08, $cg_target
1:      ret

        .section .bss
        .align 4
        .globl cg_esp, cg_stack, cg_cs, cg_ss, cg_user_esp_after, cg_user_es_after
cg_esp: .long 0
cg_stack: .space 32
cg_cs:  .long 0
cg_ss:  .long 0
cg_user_esp_after: .long 0
cg_user_es_after: .long 0

/* Code that runs with a code segment whose base is not 0 (a kernel linked at one
 * address and run at another through its segments), and SYSENTER/SYSEXIT. */
        .text

/* u32 based_sum(u32 n): far jump into the based segments (GDT 0x60 code, 0x68 data,
 * base 0x00080000: offset = load address - 0x80000), compute there with near calls,
 * RETs, an indirect call and a read through DS, and far jump back.  Returns
 * 3 * (1 + .. + n) + n + 1000, or 0xdead if the pushed return address was not the
 * offset. */
        .globl based_sum
based_sum:
        pushl %ebx
        pushl %esi
        pushl %edi
        movl 16(%esp), %ecx
        movw $0x68, %ax
        movw %ax, %ds
        ljmp $0x60, $(1f - 0x80000)
1:      xorl %eax, %eax
        xorl %edi, %edi
        call 2f                          /* pushes the offset, 0x80000 below */
2:      popl %ebx
        cmpl $(2b - 0x80000), %ebx
        jne 9f
        leal (add_three - 2b)(%ebx), %esi   /* an offset, for an indirect call */
3:      testl %ecx, %ecx
        jz 4f
        call *%esi                       /* eax += 3 * ecx */
        incl %edi
        decl %ecx
        jmp 3b
4:      movl (table - 0x80000), %edx       /* through DS, base 0x80000 */
        addl %edx, %eax
        addl %edi, %eax
        jmp 5f
9:      movl $0xdead, %eax
5:      ljmp $0x08, $6f
6:      movw $0x10, %bx
        movw %bx, %ds
        popl %edi
        popl %esi
        popl %ebx
        ret

add_three:
        leal (%ecx, %ecx, 2), %edx
        addl %edx, %eax
        ret

        .data
        .align 4
table:  .long 1000

        .text
/* SYSENTER from ring 3 (rt_run_ring), the kernel entry records its stack and
 * selectors (RPL masked: trap-and-emulate shows its ring there), and SYSEXIT back to
 * the user code after the SYSENTER (EDX = EIP, ECX = ESP). */
        .globl u_sysenter_test, sysenter_entry
u_sysenter_test:
        movl $0x1234, %eax
        movl %esp, %ecx
        movl $1f, %edx
        sysenter
1:      movl %eax, se_eax_back
        movw %cs, %ax
        movw %ax, se_user_cs
        movw %ss, %ax
        movw %ax, se_user_ss
        movl %esp, se_user_esp
        ret

sysenter_entry:
        movl %esp, se_kernel_esp
        movw %cs, %bx
        andw $0xfffc, %bx
        movw %bx, se_kernel_cs
        movw %ss, %bx
        andw $0xfffc, %bx
        movw %bx, se_kernel_ss
        addl $0x1111, %eax
        sysexit

        .bss
        .align 4
        .globl se_eax_back, se_user_cs, se_user_ss, se_user_esp, se_kernel_esp
        .globl se_kernel_cs, se_kernel_ss
se_eax_back: .long 0
se_user_cs: .long 0
se_user_ss: .long 0
se_user_esp: .long 0
se_kernel_esp: .long 0
se_kernel_cs: .long 0
se_kernel_ss: .long 0

        .text
/* Call gates.  gate_kernel_target: reached through the DPL-0 gate 0x70 from the kernel
 * (same privilege: CS:EIP pushed) and returns with LRET. */
        .globl gate_kernel_target, gate_user_target, gate_jmp_target, u_gate_call
        .globl u_gate_call_denied, u_gate_call_absent, gate_jmp_back
gate_kernel_target:
        movl 4(%esp), %eax
        movl %eax, g_pushed_cs
        movl %esp, g_same_esp
        lret

/* through the DPL-3 gate 0x78 (two parameters) from ring 3: the kernel's stack from
 * the TSS holds the user's SS, ESP, the parameters, CS and EIP; LRET $8 returns and
 * releases the parameters on the user's stack */
gate_user_target:
        movl 4(%esp), %eax
        movl %eax, g_user_cs
        movl 8(%esp), %eax
        movl %eax, g_p0
        movl 12(%esp), %eax
        movl %eax, g_p1
        movl 16(%esp), %eax
        movl %eax, g_user_esp
        movl 20(%esp), %eax
        movl %eax, g_user_ss
        movl (%esp), %eax
        movl %eax, g_ret_eip
        movl %esp, g_kernel_esp
        movw %ss, %ax
        andw $0xfffc, %ax
        movw %ax, g_kernel_ss
        lret $8

u_gate_call:
        pushl $0x2222
        pushl $0x1111
        movl %esp, g_esp_before
        lcall $0x7b, $0
1:      movl %esp, g_esp_after
        movl $1b, g_ret_expected
        movl g_esp_before, %esp
        addl $8, %esp
        ret

u_gate_call_denied:                  /* the DPL-0 gate from ring 3: #GP(0x70) */
        movl $1f, rt_resume
        movl $2f, rt_mark
2:      lcall $0x73, $0
1:      ret

u_gate_call_absent:                  /* a gate not present: #NP(0x80) */
        movl $1f, rt_resume
        movl $2f, rt_mark
2:      lcall $0x83, $0
1:      ret

/* through the DPL-0 gate 0x88 with JMP: nothing pushed; back with a far JMP */
gate_jmp_target:
        movl %esp, g_jmp_esp
        ljmp $0x08, $gate_jmp_back
gate_jmp_back:
        ret

        .bss
        .align 4
        .globl g_pushed_cs, g_same_esp, g_user_cs, g_p0, g_p1, g_user_esp, g_user_ss
        .globl g_ret_eip, g_kernel_esp, g_kernel_ss, g_esp_before, g_esp_after
        .globl g_ret_expected, g_jmp_esp
g_pushed_cs: .long 0
g_same_esp: .long 0
g_user_cs: .long 0
g_p0: .long 0
g_p1: .long 0
g_user_esp: .long 0
g_user_ss: .long 0
g_ret_eip: .long 0
g_kernel_esp: .long 0
g_kernel_ss: .long 0
g_esp_before: .long 0
g_esp_after: .long 0
g_ret_expected: .long 0
g_jmp_esp: .long 0

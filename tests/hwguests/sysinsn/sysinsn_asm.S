/* Assembly parts of the sysinsn guest: ring-3 fragments with exact flags,
 * far transfers, SYSENTER/SYSEXIT. */
        .text

/* ---- POPF at CPL 3 ---- */
        .globl u_popf
u_popf:
        pushfl
        popl u_flags0                   /* flags on entry */
        pushl $0x3002                   /* IOPL=3 IF=0 */
        popfl
        pushfl
        popl u_flags1
        pushl $0x0202                   /* IOPL=0 IF=1 */
        popfl
        pushfl
        popl u_flags2
        pushl $0x0002                   /* IOPL=0 IF=0 */
        popfl
        pushfl
        popl u_flags3
        ret

/* ---- SYSENTER / SYSEXIT ---- */
        .globl u_sysenter
u_sysenter:
        pushfl
        popl u_flags0
        movl %esp, %ecx
        movl $1f, %edx
        sysenter
1:      pushfl
        popl u_flags1
        movw %cs, u_cs
        movw %ss, u_ss
        movl %esp, u_esp
        ret

        .globl sysenter_entry
sysenter_entry:
        movl %esp, se_esp
        movw %cs, se_cs
        movw %ss, se_ss
        pushfl
        popl se_flags
        sysexit

/* ---- far jmp / call / ret within ring 0 ---- */
        .globl far_tests
far_tests:
        pushl %ebx
        ljmp $0x48, $1f
1:      movw %cs, far_cs_jmp
        lcall $0x08, $far_func          /* from CS 0x48 to CS 0x08 */
        movw %cs, far_cs_ret
        ljmp $0x50, $(based_code - 0x10000)
        .globl far_back
far_back:
        movw %cs, far_cs_back
        popl %ebx
        ret

far_func:
        movw %cs, far_cs_in
        movl 4(%esp), %eax
        movl %eax, far_pushed_cs
        lret

/* runs with CS base 0x10000: EIP = linear - 0x10000 */
based_code:
        movw %cs, based_cs
        call 2f
2:      popl %eax
        movl %eax, based_eip
        movl $2b, based_linear
        ljmp $0x08, $far_back

        .section .bss
        .align 4
        .globl u_flags0, u_flags1, u_flags2, u_flags3, u_cs, u_ss, u_esp
        .globl se_esp, se_cs, se_ss, se_flags
        .globl far_cs_jmp, far_cs_in, far_pushed_cs, far_cs_ret, far_cs_back
        .globl based_cs, based_eip, based_linear
u_flags0: .long 0
u_flags1: .long 0
u_flags2: .long 0
u_flags3: .long 0
u_cs:   .long 0
u_ss:   .long 0
u_esp:  .long 0
se_esp: .long 0
se_cs:  .long 0
se_ss:  .long 0
se_flags: .long 0
far_cs_jmp: .long 0
far_cs_in: .long 0
far_pushed_cs: .long 0
far_cs_ret: .long 0
far_cs_back: .long 0
based_cs: .long 0
based_eip: .long 0
based_linear: .long 0

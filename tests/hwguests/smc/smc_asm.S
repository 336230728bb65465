/* Self-modifying code fragments.  .text is writable (one RWX segment; no
 * paging unless the guest turns it on with an identity map). */
        .text

/* u32 smc_func(void): mov $imm32, %eax; ret -- the immediate is patched */
        .globl smc_func, smc_func_imm
        .align 16
smc_func:
        .byte 0xb8
smc_func_imm:
        .long 0x11111111
        ret

/* u32 smc_loop(u32 n): the loop patches its own ADD immediate for the next
 * iteration: returns n + (n-1) + ... + 2 */
        .globl smc_loop
        .align 16
smc_loop:
        movl 4(%esp), %ecx
        xorl %eax, %eax
        movl $0, smc_loop_add+1
1:
smc_loop_add:
        .byte 0x05                      /* add $imm32, %eax */
        .long 0
        movl %ecx, smc_loop_add+1
        decl %ecx
        jnz 1b
        ret

/* u32 smc_next(u32 v): patches the very next instruction (no branch) */
        .globl smc_next
        .align 16
smc_next:
        movl 4(%esp), %edx
        movl %edx, smc_next_insn+1
smc_next_insn:
        movl $0x33333333, %eax
        ret

/* u32 smc_ahead(u32 v): patches an instruction three instructions ahead */
        .globl smc_ahead
        .align 16
smc_ahead:
        movl 4(%esp), %edx
        movl %edx, smc_ahead_insn+1
        nop
        xorl %eax, %eax
        incl %eax
smc_ahead_insn:
        movl $0x44444444, %ecx
        addl %ecx, %eax                 /* returns v + 1 */
        ret

/* u32 smc_opcode(u32 which): patches an opcode byte (not just data):
 * which=0 -> "inc %eax" (0x40), 1 -> "dec %eax" (0x48), 2 -> "nop" (0x90) */
        .globl smc_opcode
        .align 16
smc_opcode:
        movl 4(%esp), %edx
        movb smc_opcode_table(%edx), %dl
        movb %dl, smc_opcode_insn
        movl $100, %eax
smc_opcode_insn:
        incl %eax
        ret
smc_opcode_table:
        .byte 0x40, 0x48, 0x90, 0x90

/* template copied into a buffer with rep movsb: returns 4*arg + 3 */
        .globl tmpl_start, tmpl_end
tmpl_start:
        movl 4(%esp), %eax
        leal 3(,%eax,4), %eax
        ret
tmpl_end:

/* Things kernels do that a monitor must not notice (kernelisms.c). */
        .text

/* u32 cs_reads(u32 i): constants read through CS, as kernels do */
        .globl cs_reads, cs_jump
        .align 16
cs_reads:
        pushl %ebx
        movl 8(%esp), %ebx
        movl %cs:cs_const, %eax                 /* plain load */
        addl %cs:cs_const+4, %eax               /* an ALU operand */
        movzbl %cs:cs_bytes(%ebx), %ecx         /* indexed byte load */
        addl %ecx, %eax
        cmpl %cs:cs_const, %eax                 /* flags from a CS operand */
        jb 9f
        pushl %cs:cs_const+8                    /* PUSH from memory */
        popl %edx
        addl %edx, %eax
        movl %ebx, %edx
        andl $3, %edx
        jmp *%cs:cs_jump(,%edx,4)               /* a jump table */
1:      addl $100, %eax
        popl %ebx
        ret
2:      addl $200, %eax
        popl %ebx
        ret
9:      movl $0xbad, %eax
        popl %ebx
        ret
        .section .rodata
        .align 4
cs_const:
        .long 0x10000000, 0x00000300, 0x00050000
cs_bytes:
        .byte 1, 2, 3, 4, 5, 6, 7, 8
cs_jump:
        .long 1b, 2b, 1b, 2b
        .text

/* void cs_write(void): a store through CS: #GP(0), code is never writable */
        .globl cs_write, cs_write_insn
cs_write:
cs_write_insn:
        movl %eax, %cs:cs_const
        ret

/* u32 cs_limit_read(u32 off): a read through the code segment 0x40
 * (limit 0x3fffff): beyond it, #GP(0) */
        .globl cs_limit_read, cs_limit_insn
cs_limit_read:
        movl 4(%esp), %edx
        ljmp $0x40, $1f
1:
cs_limit_insn:
        movl %cs:(%edx), %eax
        ljmp $0x08, $2f
2:      ret

/* u32 cs_xo_read(void): a read through the execute-only segment 0x48 */
        .globl cs_xo_read, cs_xo_insn
cs_xo_read:
        ljmp $0x48, $1f
1:
cs_xo_insn:
        movl %cs:cs_const, %eax
        ljmp $0x08, $2f
2:      ret

/* u32 nt_roundtrip(void): NT set by POPF, seen by PUSHF after a trapping
 * instruction and port I/O in between, then cleared again */
        .globl nt_roundtrip
nt_roundtrip:
        pushfl
        orl $0x4000, (%esp)
        popfl
        cli
        movl $0x3ff, %edx
        movb $0x11, %al
        outb %al, %dx
        movl %cr0, %ecx
        pushfl
        popl %eax
        pushfl
        andl $~0x4000, (%esp)
        popfl
        pushfl
        popl %ecx
        andl $0x4000, %eax
        andl $0x4000, %ecx
        shll $1, %ecx
        orl %ecx, %eax                          /* 0x4000: NT seen set, then clear */
        ret

/* the instructions that raise #UD (SDM Vol. 2, each one's "Protected Mode
 * Exceptions"); each is a routine of its own: ud_N: <insn>; ret */
        .globl ud_table
        .section .rodata
        .align 4
ud_table:
        .long ud_0, ud_1, ud_2, ud_3, ud_4, ud_5, ud_6, ud_7, ud_8, 0
        .text
ud_0:   ud2
        ret
ud_1:   .byte 0x0f, 0xb9, 0xc0                  /* ud1 %eax, %eax */
        ret
ud_2:   .byte 0x0f, 0xff, 0xc0                  /* ud0 %eax, %eax */
        ret
ud_3:   .byte 0xf0, 0x90                        /* lock nop */
        ret
ud_4:   .byte 0xf0, 0x01, 0xc0                  /* lock add %eax, %eax */
        ret
ud_5:   .byte 0x8e, 0xc8                        /* mov %eax, %cs */
        ret
ud_6:   .byte 0x8d, 0xc0                        /* lea with a register operand */
        ret
ud_7:   .byte 0x0f, 0xc7, 0xc8                  /* cmpxchg8b with a register operand */
        ret
ud_8:   .byte 0xff, 0xe8                        /* far jmp with a register operand */
        ret

/* FPU, MMX and SSE instructions, each a routine: fpu_N: <insn>; ret */
        .globl fpu_table
        .section .rodata
        .align 4
fpu_table:
        .long fpu_0, fpu_1, fpu_2, fpu_4, fpu_5, 0
        .text
fpu_0:  fnop
        ret
fpu_1:  fninit
        ret
fpu_2:  fwait
        ret
fpu_4:  movd %eax, %mm0
        ret
fpu_5:  xorps %xmm0, %xmm0
        ret

/* user code: an x87 instruction, then back to the kernel */
        .globl user_fnop, user_fnop_insn
user_fnop:
user_fnop_insn:
        fnop
        int $0xf0

/* void probe_call(void (*fn)(void)): calls fn; an exception inside it
 * lands (rt_resume) at probe_landing, back in CS 0x08 with the caller's
 * registers */
        .globl probe_call
probe_call:
        pushl %ebp
        pushl %ebx
        pushl %esi
        pushl %edi
        movl %esp, probe_esp
        movl $probe_landing, rt_resume
        call *20(%esp)
probe_landing:
        ljmp $0x08, $1f
1:      movl probe_esp, %esp
        movl $0, rt_resume
        popl %edi
        popl %esi
        popl %ebx
        popl %ebp
        ret
        .section .bss
probe_esp:
        .long 0

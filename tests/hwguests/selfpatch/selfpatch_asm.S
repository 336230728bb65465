/* Code that patches itself with no jump between the store and the patched
 * instruction (SDM Vol. 3 §11.6: a write to code that is already
 * prefetched or decoded is detected, and the processor runs the new
 * bytes).  Each routine returns a value that says which bytes ran. */
        .text

/* u32 patch_ahead(u32 v): a store rewrites the immediate of an instruction
 * three instructions further on */
        .globl patch_ahead
        .align 16
patch_ahead:
        movl 4(%esp), %edx
        movl %edx, 1f+1
        xorl %eax, %eax
        incl %eax
        nop
1:      movl $0x11111111, %ecx          /* the immediate becomes v */
        addl %ecx, %eax
        ret

/* u32 patch_next(u32 which): the store rewrites the very next
 * instruction's opcode and length: "xorl %eax,%eax" (31 c0) becomes
 * "incl %eax; incl %eax" (40 40) or back */
        .globl patch_next
        .align 16
patch_next:
        movl $100, %eax
        movl 4(%esp), %edx
        movw %dx, 1f
1:      xorl %eax, %eax
        ret

/* u32 patch_loop(u32 n): each iteration rewrites the ADD immediate of its
 * own body for the next one; returns the sum of 0, n, n-1, .., 2 */
        .globl patch_loop
        .align 16
patch_loop:
        movl 4(%esp), %ecx
        xorl %eax, %eax
        movl $0, 1f+1
1:      .byte 0x05                      /* addl $imm32, %eax */
        .long 0
        movl %ecx, 1b+1
        decl %ecx
        jnz 1b
        ret

/* u32 patch_rmw(void): read-modify-write instructions patch what follows:
 * INCB on an immediate, XORB on an opcode (inc 0x40 -> dec 0x48), XCHG a
 * whole instruction in */
        .globl patch_rmw
        .align 16
patch_rmw:
        movb $0, 1f+1
        movb $0x40, 2f
        movl $0x90909090, 3f
        incb 1f+1
1:      movl $0, %eax                   /* becomes movl $1 */
        xorb $0x08, 2f
2:      incl %eax                       /* becomes decl: eax = 0 */
        movl $0x90904040, %edx          /* inc; inc; nop; nop */
        xchgl %edx, 3f
3:      nop
        nop
        nop
        nop
        ret                             /* 2 */

/* u32 patch_straddle(u32 v): one 4-byte store covers the end of one
 * instruction and the start of the next */
        .globl patch_straddle
        .align 16
patch_straddle:
        movl 4(%esp), %edx
        movl %edx, 1f+3
        xorl %eax, %eax
1:      addl $0x01010101, %eax          /* 05 imm32: bytes 3..4 of the imm ... */
        nop                             /* ... and these two bytes */
        nop
        ret

/* u32 patch_rep(void): REP MOVSB copies new code over the instructions
 * right after it (eax = 7); REP STOSB fills a run of NOPs with INC EDX */
        .globl patch_rep
        .align 16
patch_rep:
        pushl %esi
        pushl %edi
        movl $0x90909090, 1f
        movl $0x90909090, 2f
        movl $patch_rep_new, %esi
        movl $1f, %edi
        movl $4, %ecx
        cld
        rep movsb
1:      nop                             /* becomes movl $7, %eax ... */
        nop
        nop
        nop
        movl %eax, %edx
        movl $2f, %edi
        movl $3, %ecx
        movb $0x42, %al
        rep stosb
2:      nop                             /* becomes incl %edx x3 */
        nop
        nop
        nop
        movl %edx, %eax                 /* 10 */
        popl %edi
        popl %esi
        ret
patch_rep_new:
        .byte 0x6a, 0x07                /* push $7 */
        .byte 0x58                      /* pop %eax */
        .byte 0x90

/* u32 patch_push(void): a PUSH whose stack slot is the code right after
 * it */
        .globl patch_push
        .align 16
patch_push:
        movl $0x90909090, 1f
        movl %esp, %edx
        xorl %eax, %eax
        movl $1f+4, %esp
        pushl $0x90404040               /* inc; inc; inc; nop */
1:      nop
        nop
        nop
        nop
        movl %edx, %esp
        ret

/* u32 patch_self(void): the first call's store rewrites the store itself
 * into "jmp +6; incl %eax; incl %eax" (the last two bytes of its own
 * immediate): returns 1, then 3 */
        .globl patch_self
        .align 16
patch_self:
        xorl %eax, %eax
1:      movl $0x404006eb, 1b            /* c7 05 <addr> <imm>: 10 bytes */
        incl %eax
        ret

/* u32 patch_alias(u32 alias_delta, u32 v): writes the immediate of an
 * instruction ahead through another linear address of the same frame */
        .globl patch_alias
        .align 16
patch_alias:
        movl 4(%esp), %ecx
        movl 8(%esp), %edx
        movl %edx, 1f+1(%ecx)
        xorl %eax, %eax
1:      addl $0x22222222, %eax
        ret

/* Code run right after MOV SS or POP SS (movss.c).  Each routine loads SS
 * from a word under a data breakpoint, then runs one instruction; the label
 * after that instruction is where a trap held by the load is reported. */
        .text

/* u32 movss_next(u16 *sel): MOV SS, then an INC */
        .globl movss_next, movss_next_after
        .align 16
movss_next:
        movl 4(%esp), %edx
        xorl %eax, %eax
        movw (%edx), %ss
        incl %eax
movss_next_after:
        incl %eax
        ret

/* u32 popss_next(u32 *slot): POP SS from a watched slot (ESP moved there),
 * then the MOV that puts ESP back -- the pair the shadow is for */
        .globl popss_next, popss_next_after
        .align 16
popss_next:
        movl 4(%esp), %edx
        movl %esp, %ecx
        movl %edx, %esp
        popl %ss
        movl %ecx, %esp
popss_next_after:
        movl $1, %eax
        ret

/* void movss_store(u16 *sel, u32 *p): MOV SS, then a store under a second
 * data breakpoint */
        .globl movss_store, movss_store_after
        .align 16
movss_store:
        movl 4(%esp), %edx
        movl 8(%esp), %ecx
        movw (%edx), %ss
        movl %eax, (%ecx)
movss_store_after:
        ret

/* void movss_ud(u16 *sel): MOV SS, then UD2 (a fault) */
        .globl movss_ud, movss_ud_insn, movss_ud_resume
        .align 16
movss_ud:
        movl 4(%esp), %edx
        movw (%edx), %ss
movss_ud_insn:
        ud2
movss_ud_resume:
        ret

/* void movss_out(u16 *sel): MOV SS, then OUT (which a monitor emulates) */
        .globl movss_out, movss_out_after
        .align 16
movss_out:
        movl 4(%esp), %edx
        movw (%edx), %ss
        outb %al, $0x80
movss_out_after:
        ret

/* void movss_icebp(u16 *sel): MOV SS, then ICEBP (INT1, F1) */
        .globl movss_icebp, movss_icebp_after
        .align 16
movss_icebp:
        movl 4(%esp), %edx
        movw (%edx), %ss
        .byte 0xf1
movss_icebp_after:
        ret

/* void movss_int(u16 *sel): MOV SS, then INT 0x81 */
        .globl movss_int, movss_int_after
        .align 16
movss_int:
        movl 4(%esp), %edx
        movw (%edx), %ss
        int $0x81
movss_int_after:
        ret

/* void movss_int3(u16 *sel): MOV SS, then INT3 */
        .globl movss_int3, movss_int3_after
        .align 16
movss_int3:
        movl 4(%esp), %edx
        movw (%edx), %ss
        int3
movss_int3_after:
        ret

/* void tf_movss_icebp(void): TF set by POPF, MOV SS, ICEBP, then three
 * instructions stepped (kvm-unit-tests' "Single-Step + ICEBP #DB w/ MOVSS
 * blocking") */
        .globl tf_movss_icebp, tf_icebp_after
        .align 16
tf_movss_icebp:
        pushfl
        popl %eax
        orl $0x100, %eax
        pushl %eax
        movw %ss, %dx
        popfl
        movw %dx, %ss
        .byte 0xf1
tf_icebp_after:
        andl $~0x100, %eax
        pushl %eax
        popfl
        ret

/* void rep_outsb(const u8 *p, u32 n, u16 port), rep_insb(u8 *p, u32 n, u16 port) */
        .globl rep_outsb, rep_outsb_insn, rep_insb, rep_insb_insn
        .align 16
rep_outsb:
        pushl %esi
        movl 8(%esp), %esi
        movl 12(%esp), %ecx
        movl 16(%esp), %edx
rep_outsb_insn:
        rep outsb
        popl %esi
        ret

        .align 16
rep_insb:
        pushl %edi
        movl 8(%esp), %edi
        movl 12(%esp), %ecx
        movl 16(%esp), %edx
rep_insb_insn:
        rep insb
        popl %edi
        ret

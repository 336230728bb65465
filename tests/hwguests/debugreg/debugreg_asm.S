/* Code under the debug registers' watch (debugreg.c). */
        .text

/* u32 bp_loop(u32 n): an execution breakpoint sits on bp_insn, inside a
 * loop the guest runs n times */
        .globl bp_loop, bp_insn
        .align 16
bp_loop:
        movl 4(%esp), %ecx
        xorl %eax, %eax
1:      addl $2, %eax
bp_insn:
        incl %eax
        decl %ecx
        jnz 1b
        ret

/* u32 bp_callout(void): breakpoints on instructions a monitor emulates */
        .globl bp_callout, bp_cli, bp_movcr
        .align 16
bp_callout:
        xorl %eax, %eax
bp_cli:
        cli
        incl %eax
bp_movcr:
        movl %cr0, %edx
        incl %eax
        ret

/* void write_loop(u32 *p, u32 n): n stores to *p (a write watchpoint) */
        .globl write_loop, write_insn
        .align 16
write_loop:
        movl 4(%esp), %edx
        movl 8(%esp), %ecx
1:
write_insn:
        movl %ecx, (%edx)
        decl %ecx
        jnz 1b
        ret

/* u32 read_word(u16 *p): a 2-byte read (a read/write watchpoint) */
        .globl read_word, read_insn
        .align 16
read_word:
        movl 4(%esp), %edx
read_insn:
        movzwl (%edx), %eax
        ret

/* void store_ss(u16 *p): MOV of SS to memory (binary translation emulates it) */
        .globl store_ss, store_ss_insn
        .align 16
store_ss:
        movl 4(%esp), %edx
store_ss_insn:
        movw %ss, (%edx)
        ret

/* void reload_gdt(void *desc): LGDT reads the watched descriptor */
        .globl reload_gdt, lgdt_insn
        .align 16
reload_gdt:
        movl 4(%esp), %edx
lgdt_insn:
        lgdt (%edx)
        ret

/* user code: an execution breakpoint at user_bp, RDTSC at user_rdtsc */
        .globl user_bp_code, user_bp, user_rdtsc_code, user_rdtsc
        .align 16
user_bp_code:
        movl $1, %eax
user_bp:
        incl %eax
        incl %eax
        int $0xf0
user_rdtsc_code:
user_rdtsc:
        rdtsc
        int $0xf0

/* ringcalls: the code that runs at rings 1, 2 and 3 (ringcalls.c drives it).  Every
 * store goes through SS (flat at every ring here), so that what DS, ES, FS and GS hold
 * -- made null by a return to an outer ring -- never decides where a value lands. */
        .text
        .code32

#define SAVE(n) movl n*4(%esp), %eax; movl %eax, %ss:rc_frame+n*4

/* Through a call gate (rc_gate_*): the frame the gate pushed (EIP, CS, the parameters,
 * ESP, SS), this ring's CS, SS and ESP; returns p_last - p_first with RET imm. */
        .globl r1_gate1, r1_gate2, r2_gate1
r1_gate1:                               /* ring 1, two parameters */
        movl %esp, %ss:rc_esp
        movw %cs, %ss:rc_cs
        movw %ss, %ss:rc_ss
        SAVE(0); SAVE(1); SAVE(2); SAVE(3); SAVE(4); SAVE(5)
        movl 8(%esp), %eax
        subl 12(%esp), %eax
        movl $0x39, %ecx                /* DS: DPL 1, ES: DPL 2, FS: DPL 3 */
        movw %cx, %ds
        movl $0x4a, %ecx
        movw %cx, %es
        movl $0x23, %ecx
        movw %cx, %fs
        lret $8
r1_gate2:                               /* ring 1, one parameter */
        movl %esp, %ss:rc_esp
        movw %cs, %ss:rc_cs
        movw %ss, %ss:rc_ss
        SAVE(0); SAVE(1); SAVE(2); SAVE(3); SAVE(4); SAVE(5)
        movl 8(%esp), %eax
        lret $4
r2_gate1:                               /* ring 2, two parameters */
        movl %esp, %ss:rc_esp
        movw %cs, %ss:rc_cs
        movw %ss, %ss:rc_ss
        SAVE(0); SAVE(1); SAVE(2); SAVE(3); SAVE(4); SAVE(5)
        movl 8(%esp), %eax
        subl 12(%esp), %eax
        lret $8

/* The caller at ring 2 or 3: two parameters through gate rc_sel (far pointer rc_far). */
        .globl caller2
caller2:
        pushl $0x11111111
        pushl $0x22222222
        .globl caller2_call
caller2_call:
        lcall *%ss:rc_far
        .globl caller2_back
caller2_back:
        movl %eax, %ss:rc_result
        movl %esp, %ss:rc_after
        movw %ds, %ss:rc_segs
        movw %es, %ss:rc_segs+2
        movw %fs, %ss:rc_segs+4
        movw %gs, %ss:rc_segs+6
        int $0xf0
        .globl caller1
caller1:
        pushl $0x33333333
        lcall *%ss:rc_far
        movl %eax, %ss:rc_result
        movl %esp, %ss:rc_after
        int $0xf0

/* An interrupt handler at ring 1 (the IDT's vector 0x61, DPL 3): its frame, CS, SS, ESP
 * and EFLAGS. */
        .globl r1_isr
r1_isr:
        movl %esp, %ss:rc_esp
        movw %cs, %ss:rc_cs
        movw %ss, %ss:rc_ss
        SAVE(0); SAVE(1); SAVE(2); SAVE(3); SAVE(4)
        pushfl
        popl %ss:rc_flags
        iret

/* int 0x61 from here, CF set: what the handler saw, and ESP after. */
        .globl int61
int61:
        stc
        .globl int61_at
int61_at:
        int $0x61
        .globl int61_back
int61_back:
        movl %esp, %ss:rc_after
        int $0xf0

/* The data segments after an IRET to this ring (ringcalls.c chose them), CS, SS. */
        .globl show_segs
show_segs:
        movw %ds, %ss:rc_segs
        movw %es, %ss:rc_segs+2
        movw %fs, %ss:rc_segs+4
        movw %gs, %ss:rc_segs+6
        movw %cs, %ss:rc_cs
        movw %ss, %ss:rc_ss
        movl %esp, %ss:rc_esp
        int $0xf0

        .bss
        .align 4
        .globl rc_frame, rc_esp, rc_cs, rc_ss, rc_flags, rc_result, rc_after, rc_segs, rc_far
rc_frame: .space 24
rc_esp: .long 0
rc_cs: .long 0
rc_ss: .long 0
rc_flags: .long 0
rc_result: .long 0
rc_after: .long 0
rc_segs: .space 8
rc_far: .long 0, 0

/* A task at ring 1 (ringcalls.c's tss1): what it runs with, a fault there, and the task
 * return by IRET (NT); switched to again, it starts over. */
        .text
        .globl task1_entry, task1_back
task1_entry:
        movl %esp, %ss:rc_esp
        movw %cs, %ss:rc_cs
        movw %ss, %ss:rc_ss
        movw %ds, %ss:rc_segs
        movw %es, %ss:rc_segs+2
        movw %fs, %ss:rc_segs+4
        movw %gs, %ss:rc_segs+6
        pushfl
        popl %ss:rc_flags
        movzwl %ss:tss1, %eax
        movl %eax, %ss:rc_result
        movl $1f, %ss:rt_resume
        movl $2f, %ss:rt_mark
2:      movl %cr0, %eax
1:      iret
task1_back:
        jmp task1_entry

/* int 0x62 (a task gate of DPL 3) from ring 3 */
        .globl int62, int62_back
int62:
        int $0x62
int62_back:
        movw %cs, %ss:rc_frame
        movw %ss, %ss:rc_frame+4
        movl %esp, %ss:rc_after
        int $0xf0

/* 16-bit code at ring 1, at offset 0 of its own segment */
        .text
        .globl r1_code16
        .code16
r1_code16:
        movw %cs, %ax
        .globl r1_code16_gp, r1_code16_back
r1_code16_gp:
        cli                             /* IOPL 0: #GP(0) */
r1_code16_back:
        int $0xf0
        .code32

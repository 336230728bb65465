# The differences tests/sysgen.py found, minimised: fixed steps on the sysgen runtime
# (rt.c, entry.S), run by tests/test_sysgen.py on QEMU, natively and under trapemu and bt.
# Each step is written as the generator writes one (step number, sensitive mark, resume
# label, step_reset ... step_end).

.macro STEP n
    movl $\n, cur_step
    movl $0, cur_mark
    movl $.Lend\n, resume
    movl $0, dbcount
    call step_reset
.endm
.macro END n
.Lend\n:
    call step_end
.endm

.data
.globl cfg_paging
cfg_paging: .long 1
.text
.globl steps_start
steps_start:

# 0: single-stepping a RET (and the IRET of each #DB) to a JMP.  Under bt the RET and
# the IRET are emulated and resume in the unit of the JMP's target, which a chained JMP
# costs nothing to reach: the trap after the RET was reported past the JMP, and the JMP
# never stepped (SDM Vol. 3 §17.3.1.4: a trap after every instruction).
    STEP 0
    mov $0x11, %eax
    pushl $0x102
    popf
    call 1f
    jmp 2f
1:  ret
2:  add $1, %eax
    call 3f
    jmp 4f
3:  add $2, %eax
    ret
4:  pushl $2
    popf
    END 0

# 1: INT n through a task gate with TF set.  The bare PC raised a single-step trap at
# the new task's first instruction; INT n owes none (the gate's transfer clears TF,
# SDM Vol. 3 §17.3.1.4, as for interrupt and trap gates; QEMU too).
    STEP 1
    mov $task_entry, %eax
    movw $0x0, idt+0x40*8
    movw $0x60, idt+0x40*8+2        # task B's TSS
    movb $0, idt+0x40*8+4
    movb $0xe5, idt+0x40*8+5        # present, DPL 3, task gate
    movw $0, idt+0x40*8+6
    mov $0x22, %ebx
    pushl $0x102
    popf
    int $0x40
    add $1, %ebx
    pushl $2
    popf
    END 1

# 2: IRET and RETF to the kernel's ring that fault on the new CS (a conforming code
# segment of DPL 3 for RPL 0: #GP(selector)).  trapemu and bt loaded EFLAGS from the
# image and released the stack before the checks, so the handler saw the image's flags
# and the frame 12 (IRET) or 8 (RETF) bytes higher (SDM Vol. 2 IRET, RET: a fault
# leaves the state as it was).
    STEP 2
    movl $0x0000ffff, ldt+8         # LDT 1: base 0, limit 4 GiB,
    movl $0x00cffd00, ldt+8+4       # present, DPL 3, conforming code, accessed
    xor %eax, %eax                  # ZF PF
    pushl $0x8d5                    # CF PF AF ZF SF OF
    pushl $0x0c
    pushl $.Lend2
    iret
    END 2

    STEP 3
    xor %eax, %eax
    pushl $0x0c
    pushl $.Lend3
    lret
    END 3

# 4: INT n from user code through a gate to a ring-3 handler (a DPL-3 code segment): an
# interrupt without a privilege change, its frame on the user's stack (SDM Vol. 2 INT n:
# INTRA-PRIVILEGE-LEVEL-INTERRUPT).  The monitors stopped ("only ring-0 handlers are
# virtualized").  The handler here is the runtime's stub, whose load of the kernel's DS
# at ring 3 then faults: #GP(0x10) with the stub's CS:EIP and the user stack holding
# the frame of the INT.
    STEP 4
    mov $stub_65, %eax
    movw %ax, idt+0x41*8
    movw $0x4b, idt+0x41*8+2        # ring-3 code
    movb $0, idt+0x41*8+4
    movb $0xee, idt+0x41*8+5        # present, DPL 3, 32-bit interrupt gate
    shr $16, %eax
    movw %ax, idt+0x41*8+6
    pushl $0x53
    pop %ds
    pushl $0x53
    pop %es
    pushl $0x53
    pushl $xstack_top3
    pushl $0x2
    pushl $0x4b
    pushl $5f
    iret
5:  mov $0x44, %ebx
    int $0x41
    int $0x3f
    END 4

# 5: the same with a handler that is user code: it reads its frame (EIP, CS, EFLAGS
# image) off the user's stack and returns by IRET at ring 3.
    STEP 5
    mov $.Lh5, %eax
    movw %ax, idt+0x42*8
    movw $0x4b, idt+0x42*8+2
    movb $0, idt+0x42*8+4
    movb $0xef, idt+0x42*8+5        # present, DPL 3, 32-bit trap gate
    shr $16, %eax
    movw %ax, idt+0x42*8+6
    pushl $0x53
    pop %ds
    pushl $0x53
    pop %es
    pushl $0x53
    pushl $xstack_top3
    pushl $0x2
    pushl $0x4b
    pushl $6f
    iret
6:  mov $0x5, %ebx
    int $0x42
    add $1, %ebx
    int $0x3f
.Lh5:
    add $0x10, %ebx
    mov 0(%esp), %esi
    mov 4(%esp), %edi
    mov 8(%esp), %ebp
    mov %esp, %edx
    iret
    END 5

    call finish

# The differences tests/sysgen.py found, minimised: fixed steps on the sysgen runtime
# (rt.c, entry.S), run by tests/test_sysgen.py on QEMU, natively and under trapemu and bt.
# After tests/sysgen/fixed.inc (the STEP and END macros: sysgen.fixed_steps).

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

# 6: INT n executed with RF set (the IRET before it loaded RF from its image, as a #DB
# handler's IRET does).  RF is cleared when an instruction completes, so the INT's
# EFLAGS image keeps it (SDM Vol. 3 §17.3.1.1; Vol. 2 INT n pushes EFLAGS, then clears
# RF); QEMU pushes it.  The bare PC cleared RF as each instruction began: the handler
# (which takes the image into ESI) saw it clear.
    STEP 6
    mov $.Lh6, %eax
    movw %ax, idt+0x43*8
    movw $0x08, idt+0x43*8+2
    movb $0, idt+0x43*8+4
    movb $0x8e, idt+0x43*8+5        # present, DPL 0, 32-bit interrupt gate
    shr $16, %eax
    movw %ax, idt+0x43*8+6
    pushl $0x10002                  # RF
    pushl $0x08
    pushl $7f
    iret
7:  int $0x43
    mov $0x66, %ebx
    jmp 8f
.Lh6:
    mov 8(%esp), %esi
    iret
8:
    END 6

# 7: the same INT n through a task gate: the outgoing task's EFLAGS in its TSS (the
# kernel's last line, "tss:", word 9) keeps RF.
    STEP 7
    movw $0x0, idt+0x40*8
    movw $0x60, idt+0x40*8+2        # task B's TSS
    movb $0, idt+0x40*8+4
    movb $0xe5, idt+0x40*8+5        # present, DPL 3, task gate
    movw $0, idt+0x40*8+6
    mov $0x77, %ebx
    pushl $0x10002                  # RF
    pushl $0x08
    pushl $9f
    iret
9:  int $0x40
    add $1, %ebx
    END 7

# 8: a 32-bit expand-down data segment (base 0, limit 0x4fffff: offsets above it).  Its
# offsets run up to 4 GiB, through the monitors' region at the top: the monitors
# refused the load with #GP(selector).  Now the hardware holds none of its offsets and
# each access is emulated by the guest's rules: a store, a load and an ALU update above
# the limit.  (Below the limit it is #GP(0), SDM Vol. 3 §5.3, which QEMU does not check:
# tests/test_sysgen.py compares that one with the bare PC.)
    STEP 8
    movl $0x000004ff, gdt+128       # limit 0x4ff, base 0
    movl $0x00c09700, gdt+128+4     # present, DPL 0, data expand-down writable, G, B
    mov $0x80, %ax
    mov %ax, %es
    movl $0x12345678, %es:0x500010
    mov %es:0x500010, %ebx
    addl $1, %es:0x500010
    mov %es:0x500010, %ecx
    END 8

# 9: a data segment whose base lies in the monitors' region (0xffc00000, 4 GiB): its
# low offsets reach the region, the rest wraps around to 0; and the kernel's own
# mapping of the region (a 4 MiB page at 0xffc00000 over physical 4 MiB), reached
# through it and through the flat DS.  The monitors refused the load; the flat DS
# faulted at 0xffd00010 (cut short below the region).
    STEP 9
    movl $0x400087, pd+1023*4       # 4 MiB, present, writable, user
    mov %cr3, %eax
    mov %eax, %cr3
    movl $0x0000ffff, gdt+136
    movl $0xffcf93c0, gdt+136+4     # base 0xffc00000, limit 4 GiB, data writable
    mov $0x88, %ax
    mov %ax, %fs
    mov %fs:0x00900010, %esi        # linear 0x500010 (step 8's store)
    movl $0xabcdef01, %fs:0x100020  # linear 0xffd00020: physical 0x500020
    mov 0x500020, %edi
    mov 0xffd00010, %ebp
    xchg %eax, %fs:0x100020
    mov 0x500020, %edx
    END 9

# 10: a data segment that wraps around 4 GiB (base 0x40000000, limit 4 GiB, the "GDT
# trick"): offsets from 0xc0000000 reach linear 0 up.  The monitors cut it below the
# region and faulted beyond the cut.
    STEP 10
    movl $0x0000ffff, gdt+144
    movl $0x40cf9300, gdt+144+4     # base 0x40000000, limit 4 GiB, data writable
    mov $0x90, %ax
    mov %ax, %gs
    movl $0x55aa55aa, %gs:0xc0500030
    mov 0x500030, %eax
    orl $0x0f00, %gs:0xc0500030
    mov %gs:0xc0500030, %ebx
    mov %gs:0x10000000, %ecx        # below the cut, the hardware's own: #PF at 0x50000000
    END 10

# 11: the kernel's stack through a 32-bit expand-down SS (base 0, offsets above
# 0x1fffff): the hardware under a monitor holds none of it, so each stack access traps
# and is emulated -- PUSH of an immediate and of memory, a near CALL and RET, an access
# through ESP, PUSH EBP / MOV / LEAVE, PUSHAD / POPAD, POP, PUSH and POP of ES.
    STEP 11
    movl $0x000001ff, gdt+152       # limit 0x1ff (G): offsets above 0x1fffff
    movl $0x00c09700, gdt+152+4     # present, DPL 0, data expand-down writable, G, B
    mov $0x10, %esi                 # (the kernel's SS, back at the end: MOV from SS
    mov $0x98, %ax                  # is one of Robin & Irvine's under trapemu)
    mov %ax, %ss
    pushl $0x11
    pushl 0x500010
    call 1f
    jmp 2f
1:  mov 4(%esp), %ebx
    push %ebp
    mov %esp, %ebp
    mov $0x5a, %edi
    pushal
    mov $0, %edi
    popal
    leave
    ret
2:  pop %ecx
    pop %edx
    push %es
    pop %es
    mov %si, %ss
    END 11

# 12: an instruction breakpoint whose DR7 LEN field is 11 rather than 00 (the SDM asks
# for 00; QEMU and the bare PC match the address as it is).  bt aligned the address
# down to the length, as for a data breakpoint, and never stopped (sysgen seed 2046).
    STEP 12
    mov $1f, %eax
    mov %eax, %dr2
    mov $0x0c000110, %eax           # L2, LE; R/W2 = 00 (instruction), LEN2 = 11
    mov %eax, %dr7
    jmp 2f
    .balign 4
2:  nop
1:  add $5, %ebp                    # (at 1 modulo 4)
    xor %eax, %eax
    mov %eax, %dr7
    END 12

# 13: a descriptor edited in place in a GDT page that also holds hot data, loaded at
# once.  After eight stores beside the GDT that left the descriptors alone, the
# monitors stopped protecting the page and compared it at their next entry only: the
# descriptor made not present here loaded the old present copy (sysgen seed 4014).
# The next segment load reads the descriptor from memory (SDM Vol. 3 §3.4.3):
# #NP(0xa0) (Vol. 2 MOV: a not-present data segment).
    STEP 13
    movl $0x0000ffff, gdt+160
    movl $0x00cf9300, gdt+160+4     # entry 20: base 0, limit 4 GiB, data writable
    mov $0xa0, %ax
    mov %ax, %fs
    mov $40, %ecx
1:  incl gdt-0x100                  # hot data beside the GDT (the layout's padding)
    loop 1b
    movb $0x13, gdt+160+5           # not present now
    mov $0x1313, %ebx
    mov %ax, %fs
    mov $0x1414, %ebx
    END 13

# 14: readable code segments loaded into data registers, one based in the monitors'
# region (conforming, DPL 1, base 0xffe3d6e5, 16 MiB: its offsets wrap around 4 GiB to
# linear 0 up), one below it whose code the region leaves less than a page of (base
# 0xffbff800, 4 GiB, nonconforming DPL 0).  Both load into DS..GS and read as data (SDM
# Vol. 3 §5.6; Vol. 2 MOV); the monitors refused both loads (#GP(selector)), since no
# code segment may reach the region (sysgen seed 6017).  Read: step 8's store at linear
# 0x500010 through each, and step 9's at 0xffd00020 (the kernel's own mapping of the
# region) through the second, then its offset 0x10 (linear 0xffbff810, not mapped: the
# guest's #PF); a store through a code segment is #GP(0) (QEMU does not check it: not
# here).
    STEP 14
    movl $0xd6e50fff, gdt+168
    movl $0xffc0bfe3, gdt+168+4     # entry 21: conforming readable code, DPL 1, G, D
    movl $0xf800ffff, gdt+176
    movl $0xffcf9bbf, gdt+176+4     # entry 22: readable code, DPL 0, G, D
    mov $0xa8, %ax
    mov %ax, %fs
    mov %fs:0x6c292b, %esi          # linear 0x100500010: 0x500010
    mov $0xb0, %ax
    mov %ax, %gs
    mov %gs:0x900810, %edi          # linear 0x100500010
    mov %gs:0x100820, %ebp          # linear 0xffd00020
    mov $0xab, %ax                  # RPL 3: a conforming one takes any RPL and CPL
    mov %ax, %es
    mov %es:0x6c292b, %ecx
    mov %gs:0x10, %edx              # linear 0xffbff810, not mapped: #PF
    END 14

    call finish

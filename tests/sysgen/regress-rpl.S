# Segment loads of the kernel's (ring 0) with a selector of RPL 1: ring compression's
# limit.  The guest kernel runs at the real ring 1, where RPL 1 passes the checks
# that RPL 0 passes; at ring 0 it does not (SDM Vol. 3 §5.7, Vol. 2 MOV, POP, LDS,
# JMP).  QEMU and the bare PC raise #GP(selector) at each; bt raises it too;
# trapemu cannot (docs/virtualization.md: "Ring compression"), and
# tests/test_sysgen.py pins what it does instead.  After tests/sysgen/fixed.inc.

# 0: MOV to DS of a DPL-0 data descriptor with RPL 1: #GP(0x10) (max(CPL, RPL) > DPL).
    STEP 0
    mov $0x11, %eax
    mov %ax, %ds
    mov $0x1000, %ebx
    END 0

# 1: the same through POP ES.
    STEP 1
    pushl $0x11
    pop %es
    mov $0x1001, %ebx
    END 1

# 2: ... MOV to GS from memory.
    STEP 2
    pushl $0x11
    mov (%esp), %gs
    mov $0x1002, %ebx
    END 2

# 3: ... LFS.
    STEP 3
    pushl $0x11
    pushl $0
    lfs (%esp), %eax
    mov $0x1003, %ebx
    END 3

# 4: ... MOV to FS from a 16-bit register set from an immediate in the same block.
    STEP 4
    mov $0x11, %cx
    mov %cx, %fs
    mov $0x1004, %ebx
    END 4

# 5: RPL 0 and RPL 3 of descriptors that allow them load (no fault): the loads the
# translator keeps as they are (the selector known), and a POP.
    STEP 5
    mov $0x10, %eax
    mov %ax, %ds
    mov $0x53, %edx                 # ring-3 data, DPL 3
    mov %dx, %es
    pushl $0x10
    pop %fs
    pushl $0x53
    pop %gs
    mov %gs, %esi
    mov $0x1005, %ebx
    END 5

# 6: MOV to SS with RPL 1: #GP(0x10) (RPL and DPL must equal CPL).
    STEP 6
    mov $0x11, %eax
    mov %ax, %ss
    mov $0x1006, %ebx
    END 6

# 7: POP SS with RPL 1.
    STEP 7
    pushl $0x11
    pop %ss
    mov $0x1007, %ebx
    END 7

# 8: a far JMP to the kernel's code with RPL 1: #GP(0x08) (a nonconforming code
# segment needs RPL <= CPL).
    STEP 8
    ljmp $0x09, $1f
1:  mov $0x1008, %ebx
    END 8

# 9: a far CALL the same way.
    STEP 9
    lcall $0x09, $1f
1:  mov $0x1009, %ebx
    END 9

    call finish

# Accesses through segments the monitors cannot hold whole (tests/sysgen/regress.S,
# steps 8-10) that the guest's own segment forbids: #GP(0) as the SDM says (Vol. 3
# §5.3, §5.6).  QEMU does not check data segment limits and types at each access, so
# tests/test_sysgen.py compares trapemu and bt with the bare ringvisor PC here.  After
# tests/sysgen/fixed.inc (sysgen.fixed_steps).

# 0: a 32-bit expand-down segment (offsets above 0x4fffff): a load above the limit, then
# one below it (#GP(0)).
    STEP 0
    movl $0x000004ff, gdt+128
    movl $0x00c09700, gdt+128+4     # present, DPL 0, data expand-down writable, G, B
    mov $0x80, %ax
    mov %ax, %es
    mov %es:0x500000, %ebx
    mov %es:0x4ffffe, %ecx          # (its last two bytes below the bottom)
    END 0

# 1: the same read-only: a load, then a store (#GP(0)).
    STEP 1
    movl $0x000004ff, gdt+128
    movl $0x00c09500, gdt+128+4     # present, DPL 0, data expand-down read-only, G, B
    mov $0x80, %ax
    mov %ax, %es
    mov %es:0x500000, %ebx
    movl $1, %es:0x500000
    END 1

# 2: a segment that wraps around 4 GiB (base 0x40000000, limit 0xc05fffff): offsets
# beyond the monitors' cut but inside the limit reach linear 0x500000; past the limit,
# #GP(0).
    STEP 2
    movl $0x000005ff, gdt+144
    movl $0x40cc9300, gdt+144+4     # base 0x40000000, limit 0xc05ff (G), data writable
    mov $0x90, %ax
    mov %ax, %gs
    movl $0x77, %gs:0xc0500000
    mov %gs:0xc0500000, %ebx
    mov %gs:0xc05ffffd, %ecx        # (one byte past the limit)
    END 2

    call finish

# Kernel code through a code segment the monitors' region cuts: after tests/sysgen/fixed.inc,
# run by tests/test_sysgen.py on QEMU, natively and under bt (under trapemu, whose kernel
# code runs on the real processor in the cut segment, the documented #GP(0)).

# 0: the "GDT trick" of higher-half kernels: a code segment with base 0x40000000 and a
# 4 GiB limit, whose offsets from 0xc0000000 up reach linear 0 up: a far JMP to it, a
# near CALL and RET inside it, and a far JMP back.  bt runs it (its translations run at
# the guest's linear addresses: the CS base is added to every fetch); trapemu's real CS
# is cut below the region (base 0x40000000, limit 0xbfbfffff), so the far JMP to an
# offset beyond is #GP(0) (docs/virtualization.md, Known limits).
    STEP 0
    movl $0x0000ffff, gdt+184
    movl $0x40cf9b00, gdt+184+4     # entry 23: base 0x40000000, 4 GiB, code readable, accessed
    ljmp $0xb8, $(1f + 0xc0000000)
1:  mov $0x1515, %ebx
    call 2f
    mov $0x1616, %ecx
    ljmp $0x08, $3f
2:  mov $0x1717, %edx
    ret
3:  mov $0x1818, %esi
    END 0

# 1: a far JMP to a code segment based in the monitors' region (0xffc00000, limit 0xfff):
# the guest's linear 0xffc00010 is not mapped, so the fetch there is its #PF (CR2
# ffc00010), natively and under bt (which fetches through the guest's page tables);
# under trapemu no real code segment may reach the region and the far JMP is
# #GP(selector), the documented limit.
    STEP 1
    movl $0x00000fff, gdt+192
    movl $0xff409bc0, gdt+192+4     # entry 24: base 0xffc00000, code readable, accessed
    ljmp $0xc0, $0x10
    END 1

    call finish

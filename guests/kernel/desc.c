/* Segment descriptors: flat ring-0 and ring-3 code/data segments and one
 * TSS whose esp0 is the kernel stack of the running process. */
#include "kernel.h"

struct __attribute__((packed)) tss {
    uint32_t link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    uint32_t eax, ecx, edx, ebx, esp, ebp, esi, edi;
    uint32_t es, cs, ss, ds, fs, gs, ldt;
    uint16_t trap, iomap_base;
};

static struct tss tss;
static uint64_t gdt[6];

static uint64_t seg_desc(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
    return (uint64_t)(limit & 0xFFFF) | ((uint64_t)(base & 0xFFFFFF) << 16) |
           ((uint64_t)access << 40) | ((uint64_t)((limit >> 16) & 0xF) << 48) |
           ((uint64_t)(flags & 0xF) << 52) | ((uint64_t)(base >> 24) << 56);
}

void desc_init(void)
{
    gdt[0] = 0;
    gdt[1] = seg_desc(0, 0xFFFFF, 0x9A, 0xC);    /* 0x08 kernel code */
    gdt[2] = seg_desc(0, 0xFFFFF, 0x92, 0xC);    /* 0x10 kernel data */
    gdt[3] = seg_desc(0, 0xFFFFF, 0xFA, 0xC);    /* 0x1B user code */
    gdt[4] = seg_desc(0, 0xFFFFF, 0xF2, 0xC);    /* 0x23 user data */
    gdt[5] = seg_desc((uint32_t)&tss, sizeof(tss) - 1, 0x89, 0x0);  /* 0x28 TSS */

    tss.ss0 = SEL_KDATA;
    tss.iomap_base = sizeof(tss);                /* no I/O bitmap: IOPL rules */

    struct dtr d = { sizeof(gdt) - 1, (uint32_t)gdt };
    arch_lgdt(&d);
    arch_load_segments(SEL_KCODE, SEL_KDATA);
    arch_ltr(SEL_TSS);
}

void tss_set_kstack(uint32_t esp0)
{
    tss.esp0 = esp0;
}

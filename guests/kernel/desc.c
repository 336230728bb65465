/* Segment descriptors: flat ring-0 and ring-3 code/data segments and one
 * TSS whose esp0 is the kernel stack of the running process. */
#include "kernel.h"

struct __attribute__((packed)) tss {
    uint32_t link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    uint32_t eax, ecx, edx, ebx, esp, ebp, esi, edi;
    uint32_t es, cs, ss, ds, fs, gs, ldt;
    uint16_t trap, iomap_base;
};

/* The GDT in a page of its own, as Linux's gdt_page: nothing else is stored to
 * that page.  A monitor keeps the page write-protected (its descriptors are
 * copied into the real GDT, and an edit must be seen at the next load), so a
 * counter or the TSS beside the table would cost a trap per store under
 * trap-and-emulate and binary translation (docs/virtualization.md).
 * With "gdt=shared" on the command line the table is kept beside the kernel's
 * counters instead (gdt_shared, proc.c), in a page it stores to at every
 * system call (as xv6 keeps its GDT in struct cpu): what the monitors do with
 * such a page (docs/virtualization.md, "GDT").  The page is first in .bss
 * (kernel.lds), so that its alignment leaves the rest of .bss as it was: the
 * TSS, the counters and the process table share a page, as before. */
static struct gdt_page {
    uint64_t gdt[6];
} __attribute__((aligned(4096))) gdt_page __attribute__((section(".bss..page_aligned")));

static struct tss tss;

static uint64_t seg_desc(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
    return (uint64_t)(limit & 0xFFFF) | ((uint64_t)(base & 0xFFFFFF) << 16) |
           ((uint64_t)access << 40) | ((uint64_t)((limit >> 16) & 0xF) << 48) |
           ((uint64_t)(flags & 0xF) << 52) | ((uint64_t)(base >> 24) << 56);
}

void desc_init(int shared)
{
    uint64_t *gdt = shared ? gdt_shared : gdt_page.gdt;
    gdt[0] = 0;
    gdt[1] = seg_desc(0, 0xFFFFF, 0x9A, 0xC);    /* 0x08 kernel code */
    gdt[2] = seg_desc(0, 0xFFFFF, 0x92, 0xC);    /* 0x10 kernel data */
    gdt[3] = seg_desc(0, 0xFFFFF, 0xFA, 0xC);    /* 0x1B user code */
    gdt[4] = seg_desc(0, 0xFFFFF, 0xF2, 0xC);    /* 0x23 user data */
    gdt[5] = seg_desc((uint32_t)&tss, sizeof(tss) - 1, 0x89, 0x0);  /* 0x28 TSS */

    tss.ss0 = SEL_KDATA;
    tss.iomap_base = sizeof(tss);                /* no I/O bitmap: IOPL rules */

    struct dtr d = { 6 * sizeof(gdt[0]) - 1, (uint32_t)gdt };
    arch_lgdt(&d);
    arch_load_segments(SEL_KCODE, SEL_KDATA);
    arch_ltr(SEL_TSS);
}

void tss_set_kstack(uint32_t esp0)
{
    tss.esp0 = esp0;
}

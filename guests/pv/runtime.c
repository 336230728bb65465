/* The PV runtime: what pvcc's rewrites of lgdt and lidt call, linked into a
 * para-virtualized kernel.  It runs in the kernel's higher half (C sites
 * only), at ring 1, and talks to the hypervisor only with hypercalls.
 *
 *   pv_lgdt: Xen wants the GDT in whole pages of its own, which no mapping may
 *            leave writable while they hold it (their type, PGT_seg_desc_page):
 *            copy the kernel's table to a page-aligned buffer, map the buffer
 *            read-only, hand over its frames; of two buffers, the one not in use
 *            takes the next copy (and is writable again once the GDT left it).
 *   pv_write_cr3: the kernel may build page tables after its lgdt -- the
 *            teaching kernel's mm_init maps all RAM writable, the GDT copy too
 *            -- and Xen validates a directory's every entry when it loads it
 *            (MMUEXT_NEW_BASEPTR): one that maps the copy writable is refused.
 *            Linux never meets this (its GDT page is read-only in the kernel
 *            page tables every directory shares, since xen_load_gdt); the
 *            runtime sees none of the kernel's page-table stores, so Xen's
 *            refusal is what tells it: it then makes the copy read-only at its
 *            own address in the new directory (mmu_update) and loads it again;
 *            a second refusal stops the domain.  Nothing is added to a load
 *            Xen accepts.
 *   pv_lidt: the hypervisor delivers exceptions and software interrupts
 *            through a trap table (set_trap_table) and interrupts as events
 *            through one callback (pv_upcall, upcall.S), which finds the
 *            kernel's handler in the IDT recorded here. */
#include "pv.h"

#define GDT_PAGES 2
#define NR_ISA_IRQS 16

static uint64_t pv_gdt[2][GDT_PAGES * 512] __attribute__((aligned(4096)));
static int pv_gdt_now = -1;                  /* the buffer the hypervisor holds */
static xen_pfn_t pv_gdt_frames[GDT_PAGES];   /* its frames ... */
static uint32_t pv_gdt_pages;                /* ... and how many */
/* A page of the runtime's own, its address the window through which pv_write_cr3
 * reads a directory and a page table (mapped onto them read-only, then back). */
static uint32_t pv_window[1024] __attribute__((aligned(4096)));
static trap_info_t pv_traps[257];
static int pv_irqs_bound;

/* Read by pv_upcall. */
uint32_t pv_idt_base, pv_idt_limit;          /* the kernel's IDT (linear) */
uint8_t pv_port_irq[EVTCHN_2L_NR_CHANNELS];  /* port -> ISA IRQ + 1 (0: none) */
uint8_t pv_irq_vector[NR_ISA_IRQS];          /* IRQ -> vector, asked once (0: not yet) */
uint32_t pv_upcall_target;                   /* the handler pv_upcall jumps to */

void pv_panic(const char *msg)
{
    uint32_t n = 0;
    while (msg[n])
        n++;
    HYPERVISOR_console_io(CONSOLEIO_write, n, msg);
    struct sched_shutdown s = { SHUTDOWN_crash };
    for (;;)
        HYPERVISOR_sched_op(SCHEDOP_shutdown, &s);
}

/* Map the buffer's pages read-only or writable again (with paging on: without it
 * nothing maps them); 0, or the hypercall's refusal. */
static long pv_gdt_map(const uint64_t *buf, uint32_t pages, int writable)
{
    if (!(HYPERVISOR_rv_machine_op(RV_READ_CR, 0, 0) & 0x80000000u))
        return 0;
    for (uint32_t p = 0; p < pages; p++) {
        uint32_t va = (uint32_t)buf + p * 4096;
        long mfn = HYPERVISOR_rv_machine_op(RV_VA_TO_MFN, va, 0);
        if (mfn < 0)
            return mfn;
        uint32_t pte = ((uint32_t)mfn << 12) | 0x61 | (writable ? 2 : 0);   /* P, A, D */
        long r = pv_hypercall4(__HYPERVISOR_update_va_mapping, va, pte, 0, UVMF_INVLPG);
        if (r < 0)
            return r;
    }
    return 0;
}

void pv_lgdt(const struct pv_dtr *d)
{
    uint32_t bytes = (uint32_t)d->limit + 1;
    if (bytes > sizeof(pv_gdt[0]) || bytes % 8)
        pv_panic("pv: lgdt: the GDT must be whole descriptors, at most 1024\n");
    int next = pv_gdt_now == 0;
    const volatile uint8_t *src = (const uint8_t *)d->base;
    volatile uint8_t *dst = (volatile uint8_t *)pv_gdt[next];
    uint32_t pages = (bytes + 4095) / 4096;
    for (uint32_t i = 0; i < pages * 4096; i++)
        dst[i] = i < bytes ? src[i] : 0;
    if (pv_gdt_map(pv_gdt[next], pages, 0) < 0)
        pv_panic("pv: lgdt: the GDT copy cannot be mapped read-only\n");
    xen_pfn_t frames[GDT_PAGES];
    for (uint32_t p = 0; p < pages; p++) {
        long mfn = HYPERVISOR_rv_machine_op(RV_VA_TO_MFN, (uint32_t)pv_gdt[next] + p * 4096, 0);
        if (mfn < 0)
            pv_panic("pv: lgdt: no frame behind the GDT copy\n");
        frames[p] = (xen_pfn_t)mfn;
    }
    if (HYPERVISOR_set_gdt(frames, bytes / 8) < 0)
        pv_panic("pv: lgdt: set_gdt refused the GDT\n");
    for (uint32_t p = 0; p < pages; p++)
        pv_gdt_frames[p] = frames[p];
    pv_gdt_pages = pages;
    /* the GDT left the other buffer: writable again, for the next copy */
    if (pv_gdt_now >= 0 && pv_gdt_map(pv_gdt[pv_gdt_now], GDT_PAGES, 1) < 0)
        pv_panic("pv: lgdt: the old GDT copy cannot be mapped writable again\n");
    pv_gdt_now = next;
}

/* Point the window at frame `mfn`, read-only (0), or back at its own frame (1);
 * 0, or the hypercall's refusal. */
static long pv_window_map(uint32_t mfn, int own)
{
    uint32_t pte = mfn << 12 | (own ? 0x63 : 0x21);        /* P, A [, W, D] */
    return pv_hypercall4(__HYPERVISOR_update_va_mapping, (uint32_t)pv_window, pte, 0,
                         UVMF_INVLPG);
}

/* The entry `i` of the table in frame `mfn`: through the window, or with paging
 * off at its own address (linear = pseudo-physical then); 0 (not present) if the
 * frame cannot be mapped (not the guest's: the load is refused again, and stops). */
static uint32_t pv_entry(uint32_t mfn, uint32_t i, int paging)
{
    if (!paging)
        return ((const volatile uint32_t *)(mfn << 12))[i];
    if (pv_window_map(mfn, 0) < 0)
        return 0;
    return ((const volatile uint32_t *)pv_window)[i];
}

/* The GDT copy is read-only at its own address in directory `pd` (a frame): its
 * page-table entries there that map a frame of the copy writable lose the W bit,
 * by mmu_update (a plain write while the table is no table yet, as in Xen). */
static void pv_gdt_protect(uint32_t pd)
{
    int paging = (HYPERVISOR_rv_machine_op(RV_READ_CR, 0, 0) & 0x80000000u) != 0;
    static uint32_t own = ~0u;                     /* the window's own frame */
    if (paging && own == ~0u) {
        long mfn = HYPERVISOR_rv_machine_op(RV_VA_TO_MFN, (uint32_t)pv_window, 0);
        if (mfn < 0)
            pv_panic("pv: mov to cr3: no frame behind the runtime's window\n");
        own = (uint32_t)mfn;
    }
    for (uint32_t p = 0; p < pv_gdt_pages; p++) {
        uint32_t va = (uint32_t)pv_gdt[pv_gdt_now] + p * 4096;
        uint32_t pde = pv_entry(pd, va >> 22, paging);
        if (!(pde & 1))
            continue;                              /* not mapped there: nothing to do */
        if (pde & 0x80) {                          /* a 4 MiB page: cannot be split here */
            if (pde & 2)
                pv_panic("pv: mov to cr3: a writable 4 MiB page maps the GDT copy\n");
            continue;
        }
        uint32_t l1 = pde >> 12, i = (va >> 12) & 1023;
        uint32_t pte = pv_entry(l1, i, paging);
        if ((pte & 3) != 3 || pte >> 12 != pv_gdt_frames[p])
            continue;                              /* read-only, or another frame */
        struct mmu_update u = { (uint64_t)(l1 << 12 | i * 4) | MMU_NORMAL_PT_UPDATE,
                                pte & ~2u };
        if (pv_hypercall4(__HYPERVISOR_mmu_update, (uint32_t)&u, 1, 0, DOMID_SELF) < 0)
            pv_panic("pv: mov to cr3: the GDT copy cannot be made read-only there\n");
    }
    if (paging && pv_window_map(own, 1) < 0)
        pv_panic("pv: mov to cr3: the runtime's window cannot be mapped back\n");
}

static long pv_new_baseptr(uint32_t cr3)
{
    struct mmuext_op op = { .cmd = MMUEXT_NEW_BASEPTR, .arg1.mfn = cr3 >> 12 };
    return pv_hypercall4(__HYPERVISOR_mmuext_op, (uint32_t)&op, 1, 0, DOMID_SELF);
}

void pv_write_cr3(uint32_t cr3)
{
    long r = pv_new_baseptr(cr3);
    if (r < 0 && pv_gdt_now >= 0) {
        pv_gdt_protect(cr3 >> 12);
        r = pv_new_baseptr(cr3);
    }
    if (r < 0)
        pv_panic("pv: mov to cr3: MMUEXT_NEW_BASEPTR refused the page directory\n");
}

static void bind_isa_irqs(void)
{
    for (uint32_t irq = 0; irq < NR_ISA_IRQS; irq++) {
        struct evtchn_bind_pirq b = { .pirq = irq, .flags = 0 };
        if (HYPERVISOR_event_channel_op(EVTCHNOP_bind_pirq, &b) < 0)
            continue;                   /* not ours to have */
        if (b.port >= EVTCHN_2L_NR_CHANNELS)
            pv_panic("pv: lidt: event channel port out of range\n");
        pv_port_irq[b.port] = (uint8_t)(irq + 1);
        struct evtchn_unmask u = { .port = b.port };
        HYPERVISOR_event_channel_op(EVTCHNOP_unmask, &u);
    }
}

void pv_lidt(const struct pv_dtr *d)
{
    const volatile uint32_t *idt = (const uint32_t *)d->base;
    uint32_t n = 0;
    pv_idt_base = d->base;
    pv_idt_limit = d->limit;
    for (uint32_t v = 0; v < 256 && v * 8 + 7 <= d->limit; v++) {
        uint32_t lo = idt[2 * v], hi = idt[2 * v + 1];
        uint32_t type = (hi >> 8) & 0xF, dpl = (hi >> 13) & 3;
        if (!(hi & 0x8000))
            continue;                   /* not present */
        if (type != 0xE && type != 0xF)
            pv_panic("pv: lidt: only 32-bit interrupt and trap gates are supported\n");
        /* Every present gate, IRQ vectors too: interrupts come as events, but the
         * kernel may also invoke any of its gates with int n, as natively.  The
         * kernel runs at ring 1, so a DPL-0 gate is the kernel ring's (DPL 1):
         * open to the kernel's int n, #GP from user code as natively. */
        pv_traps[n].vector = (uint8_t)v;
        pv_traps[n].flags = (uint8_t)((dpl ? dpl : 1) | (type == 0xE ? TI_IF : 0));
        pv_traps[n].cs = (uint16_t)((lo >> 16) | 1);   /* the kernel runs at ring 1 */
        pv_traps[n].address = (lo & 0xFFFF) | (hi & 0xFFFF0000u);
        n++;
    }
    pv_traps[n].address = 0;            /* the end of the table */
    if (HYPERVISOR_set_trap_table(pv_traps) < 0)
        pv_panic("pv: lidt: set_trap_table refused the table\n");
    uint32_t cs;
    __asm__ volatile("movl %%cs, %0" : "=r"(cs));
    if (HYPERVISOR_set_callbacks(cs, pv_upcall, cs, pv_failsafe) < 0)
        pv_panic("pv: lidt: set_callbacks failed\n");
    if (!pv_irqs_bound) {
        pv_irqs_bound = 1;
        bind_isa_irqs();
    }
}

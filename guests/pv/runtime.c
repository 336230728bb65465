/* The PV runtime: what pvcc's rewrites of lgdt and lidt call, linked into a
 * para-virtualized kernel.  It runs in the kernel's higher half (C sites
 * only), at ring 1, and talks to the hypervisor only with hypercalls.
 *
 *   pv_lgdt: Xen wants the GDT in whole pages of its own, which no mapping may
 *            leave writable while they hold it (their type, PGT_seg_desc_page):
 *            copy the kernel's table to a page-aligned buffer, map the buffer
 *            read-only, hand over its frames; of two buffers, the one not in use
 *            takes the next copy (and is writable again once the GDT left it).
 *   pv_lidt: the hypervisor delivers exceptions and software interrupts
 *            through a trap table (set_trap_table) and interrupts as events
 *            through one callback (pv_upcall, upcall.S), which finds the
 *            kernel's handler in the IDT recorded here. */
#include "pv.h"

#define GDT_PAGES 2
#define NR_ISA_IRQS 16

static uint64_t pv_gdt[2][GDT_PAGES * 512] __attribute__((aligned(4096)));
static int pv_gdt_now = -1;                  /* the buffer the hypervisor holds */
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
    /* the GDT left the other buffer: writable again, for the next copy */
    if (pv_gdt_now >= 0 && pv_gdt_map(pv_gdt[pv_gdt_now], GDT_PAGES, 1) < 0)
        pv_panic("pv: lgdt: the old GDT copy cannot be mapped writable again\n");
    pv_gdt_now = next;
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

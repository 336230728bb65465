/* The sensitive-instruction probe (after J. S. Robin and C. E. Irvine,
 * "Analysis of the Intel Pentium's Ability to Support a Secure Virtual
 * Machine Monitor", USENIX Security 2000).
 *
 * A standalone Multiboot kernel: its own GDT, IDT and TSS (no paging, every
 * interrupt masked at the PIC), then each probe of probes.S once in ring 0
 * and once in ring 3, one line per probe on COM1:
 *
 *     probe NAME kernel=VALUE user=VALUE
 *
 * then "probe done", and isa-debug-exit with 0.  On bare hardware (QEMU,
 * ringvisor's native machine) the values show the Popek-Goldberg failure of
 * IA-32: sensitive instructions that are not privileged (SGDT, PUSHF, POPF,
 * PUSH CS, LAR, ...) run in ring 3 without a trap, revealing or silently
 * ignoring machine state.  Under a virtual machine monitor the "kernel"
 * column shows what the deprivileged guest kernel sees instead. */
#include "standalone.h"
#include "probe.h"

#define EFLAGS_IF 0x200

/* ---- the probes -------------------------------------------------------- */

void p_sgdt(void), p_sidt(void), p_sldt(void), p_str(void), p_smsw(void);
void p_pushf(void), p_popf(void), p_lar(void), p_lsl(void), p_verr(void);
void p_verw(void), p_push_cs(void), p_push_ss(void), p_mov_cs(void);
void p_mov_ss(void), p_mov_ds(void), p_far_call(void), p_far_jmp(void);
void p_far_ret(void), p_int(void), p_iret(void), p_cli(void), p_hlt(void);

enum show {
    SHOW_DT,        /* dtr_buf: BASE/LIMIT */
    SHOW_HEX16,     /* pv[0] & 0xffff */
    SHOW_IF_IOPL,   /* pv[0] as EFLAGS: IF=n,IOPL=n */
    SHOW_IF2,       /* pv[0], pv[1] as EFLAGS: IF=n,IF=n */
    SHOW_LAR,       /* per selector: access rights or ZF=0 */
    SHOW_LSL,       /* per selector: limit or ZF=0 */
    SHOW_ZF2,       /* pv[0], pv[1]: ZF=n/ZF=n */
    SHOW_OK,        /* pv[0] == 1: ok */
};

struct probe {
    const char *name;
    void (*fn)(void);
    enum show show;
    int kernel_skip;        /* not run in ring 0 (HLT with nothing to wake it) */
};

static const struct probe probes[] = {
    { "SGDT", p_sgdt, SHOW_DT, 0 },
    { "SIDT", p_sidt, SHOW_DT, 0 },
    { "SLDT", p_sldt, SHOW_HEX16, 0 },
    { "STR", p_str, SHOW_HEX16, 0 },
    { "SMSW", p_smsw, SHOW_HEX16, 0 },
    { "PUSHF", p_pushf, SHOW_IF_IOPL, 0 },
    { "POPF", p_popf, SHOW_IF2, 0 },
    { "LAR", p_lar, SHOW_LAR, 0 },
    { "LSL", p_lsl, SHOW_LSL, 0 },
    { "VERR", p_verr, SHOW_ZF2, 0 },
    { "VERW", p_verw, SHOW_ZF2, 0 },
    { "PUSH_CS", p_push_cs, SHOW_HEX16, 0 },
    { "PUSH_SS", p_push_ss, SHOW_HEX16, 0 },
    { "MOV_CS", p_mov_cs, SHOW_HEX16, 0 },
    { "MOV_SS", p_mov_ss, SHOW_HEX16, 0 },
    { "MOV_DS", p_mov_ds, SHOW_HEX16, 0 },
    { "FAR_CALL", p_far_call, SHOW_OK, 0 },
    { "FAR_JMP", p_far_jmp, SHOW_OK, 0 },
    { "FAR_RET", p_far_ret, SHOW_OK, 0 },
    { "INT", p_int, SHOW_HEX16, 0 },
    { "IRET", p_iret, SHOW_IF2, 0 },
    { "CLI", p_cli, SHOW_OK, 0 },
    { "HLT", p_hlt, SHOW_OK, 1 },
};

/* ---- faults ------------------------------------------------------------ */

struct fault_frame {
    uint32_t vector, error, eip, cs, eflags;
};

static const char *const exc_names[32] = {
    "DE", "DB", "NMI", "BP", "OF", "BR", "UD", "NM", "DF", "CSO", "TS", "NP",
    "SS", "GP", "PF", "V15", "MF", "AC", "MC", "XM", "VE", "CP",
};

static volatile int in_probe;
static char fault_token[24];

static int has_error_code(uint32_t v)
{
    return v == 8 || (v >= 10 && v <= 14) || v == 17;
}

/* Called by the exception stubs (boot.S) on the ring-0 stack. */
void probe_fault(const struct fault_frame *f)
{
    char name[8];
    if (f->vector < 32 && exc_names[f->vector])
        snprintf(name, sizeof(name), "#%s", exc_names[f->vector]);
    else
        snprintf(name, sizeof(name), "#V%u", f->vector);
    if (has_error_code(f->vector))
        snprintf(fault_token, sizeof(fault_token), "%s(%04x)", name, f->error & 0xffff);
    else
        snprintf(fault_token, sizeof(fault_token), "%s", name);
    if (!in_probe) {
        print("probe: unexpected exception %s at %04x:%08x\n", fault_token, f->cs & 0xffff,
              f->eip);
        finish(0x10);
    }
}

/* ---- formatting -------------------------------------------------------- */

static void show(char *buf, size_t n, enum show how)
{
    char a[16], b[16];
    switch (how) {
    case SHOW_DT:
        snprintf(buf, n, "%08x/%04x", dtr_buf.base, dtr_buf.limit);
        break;
    case SHOW_HEX16:
        snprintf(buf, n, "%04x", pv[0] & 0xffff);
        break;
    case SHOW_IF_IOPL:
        snprintf(buf, n, "IF=%u,IOPL=%u", (pv[0] >> 9) & 1, (pv[0] >> 12) & 3);
        break;
    case SHOW_IF2:
        snprintf(buf, n, "IF=%u,IF=%u", (pv[0] >> 9) & 1, (pv[1] >> 9) & 1);
        break;
    case SHOW_LAR:
    case SHOW_LSL: {
        /* LAR: bits 16-19 of the result are undefined (SDM: masked by
         * 00FxFF00H), so they are left out. */
        uint32_t mask = how == SHOW_LAR ? 0x00f0ff00u : 0xffffffffu;
        if (pv[1])
            snprintf(a, sizeof(a), "%08x", pv[0] & mask);
        else
            snprintf(a, sizeof(a), "ZF=0");
        if (pv[3])
            snprintf(b, sizeof(b), "%08x", pv[2] & mask);
        else
            snprintf(b, sizeof(b), "ZF=0");
        snprintf(buf, n, "%s/%s", a, b);
        break;
    }
    case SHOW_ZF2:
        snprintf(buf, n, "ZF=%u/ZF=%u", pv[0] & 1, pv[1] & 1);
        break;
    case SHOW_OK:
        snprintf(buf, n, "%s", pv[0] == 1 ? "ok" : "not-reached");
        break;
    }
}

static void run(const struct probe *p, int user, char *buf, size_t n)
{
    if (!user && p->kernel_skip) {
        snprintf(buf, n, "skip");
        return;
    }
    for (int i = 0; i < 4; i++)
        pv[i] = 0;
    dtr_buf.limit = 0;
    dtr_buf.base = 0;
    home_cs = user ? SEL_UCODE : SEL_KCODE;
    in_probe = 1;
    int faulted = probe_run(p->fn, user);
    in_probe = 0;
    if (faulted)
        snprintf(buf, n, "%s", fault_token);
    else
        show(buf, n, p->show);
}

/* ---- set-up ------------------------------------------------------------ */

static uint64_t gate(uint32_t offset, uint16_t sel, uint8_t access)
{
    return (offset & 0xffffu) | ((uint32_t)sel << 16)
        | ((uint64_t)((offset & 0xffff0000u) | ((uint32_t)access << 8)) << 32);
}

static void tables_init(void)
{
    uint32_t base = (uint32_t)tss, limit = sizeof(tss) - 1;
    tss[1] = (uint32_t)kstack0_top;                 /* esp0 */
    tss[2] = SEL_KDATA;                             /* ss0 */
    tss[25] = (uint32_t)sizeof(tss) << 16;          /* I/O map base beyond the limit */
    gdt[SEL_TSS >> 3] = (limit & 0xffff) | ((uint64_t)(base & 0xffffff) << 16)
        | (uint64_t)0x89 << 40                      /* 32-bit TSS, available */
        | (uint64_t)(limit & 0xf0000) << 32 | (uint64_t)(base >> 24) << 56;
    for (uint32_t v = 0; v < NSTUBS; v++)
        idt[v] = gate((uint32_t)fault_stubs + 16 * v, SEL_KCODE, 0x8e);
    idt[VEC_INT] = gate((uint32_t)int30_handler, SEL_KCODE, 0xee);
    idt[VEC_EXIT] = gate((uint32_t)exit_handler, SEL_KCODE, 0xee);
    load_tables();
}

static void pic_mask_all(void)
{
    /* Remap the 8259A pair to 0x20-0x2f and mask every line: ring 3 runs
     * with IF=1 and nothing may interrupt it. */
    outb(0x20, 0x11);
    outb(0xa0, 0x11);
    outb(0x21, 0x20);
    outb(0xa1, 0x28);
    outb(0x21, 0x04);
    outb(0xa1, 0x02);
    outb(0x21, 0x01);
    outb(0xa1, 0x01);
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
}

void probe_main(uint32_t magic, uint32_t mbi)
{
    (void)mbi;
    serial_init();
    if (magic != 0x2BADB002u) {
        print("probe: not started by a Multiboot loader\n");
        finish(0x11);
    }
    pic_mask_all();
    tables_init();
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        char k[32], u[32];
        run(&probes[i], 0, k, sizeof(k));
        run(&probes[i], 1, u, sizeof(u));
        print("probe %s kernel=%s user=%s\n", probes[i].name, k, u);
    }
    print("probe done\n");
    finish(0);
}

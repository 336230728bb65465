/* sysinsn: system instructions and their privilege rules: POPF/CLI/STI and
 * IOPL, IN/OUT with IOPL and the TSS I/O permission bitmap, SGDT/SIDT/SLDT/
 * STR/SMSW (also from ring 3), LMSW/CLTS, LAR/LSL/VERR/VERW, segment
 * register moves, far JMP/CALL/RET, RDMSR/WRMSR, CPUID, INVD/WBINVD,
 * SYSENTER/SYSEXIT and privileged instructions at CPL 3.  Expected values
 * are in tests/test_hw_guests.py. */
#include "rt.h"

#define SEL_LDT    0x40   /* LDT: 2 entries */
#define SEL_CODE0B 0x48   /* second flat ring-0 code segment */
#define SEL_BASED  0x50   /* ring-0 code, base 0x10000 */
#define SEL_XO     0x58   /* execute-only code */
#define SEL_RO     0x60   /* read-only data */
#define SEL_LIM    0x68   /* data, byte granular, limit 0x1234 */
#define SEL_LIMG   0x70   /* data, 4 KiB granular, limit 1 -> 0x1fff */
#define SEL_GATE   0x78   /* call gate, DPL 3 */
#define SEL_CONF   0x80   /* conforming readable code, DPL 0 */
#define SEL_LDT1   0x0f   /* LDT entry 1 (DPL 3 data), TI=1, RPL 3 */

extern void u_popf(void), u_sysenter(void), sysenter_entry(void), far_tests(void);
extern u32 u_flags0, u_flags1, u_flags2, u_flags3, u_cs, u_ss, u_esp;
extern u32 se_esp, se_cs, se_ss, se_flags;
extern u32 far_cs_jmp, far_cs_in, far_pushed_cs, far_cs_ret, far_cs_back;
extern u32 based_cs, based_eip, based_linear;

struct __attribute__((packed)) dtr {
    u16 limit;
    u32 base;
};

/* ---- descriptor queries ---- */

static u32 q_lar(u32 sel, u32 *zf)
{
    u32 r = 0;
    u8 z;
    __asm__ volatile("larl %2, %0\n\tsetz %1" : "+r"(r), "=q"(z) : "r"(sel) : "cc");
    *zf = z;
    return r;
}

static u32 q_lsl(u32 sel, u32 *zf)
{
    u32 r = 0;
    u8 z;
    __asm__ volatile("lsll %2, %0\n\tsetz %1" : "+r"(r), "=q"(z) : "r"(sel) : "cc");
    *zf = z;
    return r;
}

static u32 q_verr(u32 sel)
{
    u8 z;
    __asm__ volatile("verr %w1\n\tsetz %0" : "=q"(z) : "r"(sel) : "cc");
    return z;
}

static u32 q_verw(u32 sel)
{
    u8 z;
    __asm__ volatile("verw %w1\n\tsetz %0" : "=q"(z) : "r"(sel) : "cc");
    return z;
}

/* Results of queries run at ring 3 are stored, then printed in ring 0. */
struct qres { u32 sel, zf, val; };
static struct qres ring3_lar[6], ring3_lsl[2], ring3_ver[6];
static const u32 ring3_lar_sels[6] = { SEL_DATA0, SEL_CODE3, SEL_CONF, SEL_GATE, SEL_TSS, SEL_LDT1 };
static const u32 ring3_lsl_sels[2] = { SEL_DATA3, SEL_DATA0 };
static const u32 ring3_ver_sels[3] = { SEL_DATA3, SEL_CODE0, SEL_CONF };

static void print_lar(const char *ring, u32 sel, u32 zf, u32 v)
{
    if (zf)
        kprintf("%s lar 0x%02x: zf=1 ar=0x%08x\n", ring, sel, v & 0x00f0ff00);
    else
        kprintf("%s lar 0x%02x: zf=0\n", ring, sel);
}

static void print_lsl(const char *ring, u32 sel, u32 zf, u32 v)
{
    if (zf)
        kprintf("%s lsl 0x%02x: zf=1 limit=0x%x\n", ring, sel, v);
    else
        kprintf("%s lsl 0x%02x: zf=0\n", ring, sel);
}

/* ---- ring 3 fragments ---- */

static struct dtr u_gdtr, u_idtr;
static u16 u_ldtr, u_tr, u_msw;
static u8 u_in_allowed;
static volatile u32 u_cpuid_max;

static void u_queries(void)
{
    __asm__ volatile("sgdt %0" : "=m"(u_gdtr));
    __asm__ volatile("sidt %0" : "=m"(u_idtr));
    __asm__ volatile("sldt %0" : "=m"(u_ldtr));
    __asm__ volatile("str %0" : "=m"(u_tr));
    __asm__ volatile("smsw %0" : "=m"(u_msw));
    for (int i = 0; i < 6; i++) {
        ring3_lar[i].sel = ring3_lar_sels[i];
        ring3_lar[i].val = q_lar(ring3_lar_sels[i], &ring3_lar[i].zf);
    }
    for (int i = 0; i < 2; i++) {
        ring3_lsl[i].sel = ring3_lsl_sels[i];
        ring3_lsl[i].val = q_lsl(ring3_lsl_sels[i], &ring3_lsl[i].zf);
    }
    for (int i = 0; i < 3; i++) {
        ring3_ver[2 * i].zf = q_verr(ring3_ver_sels[i]);
        ring3_ver[2 * i + 1].zf = q_verw(ring3_ver_sels[i]);
    }
    u32 a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0));
    u_cpuid_max = a;
}

static void u_io_allowed(void)
{
    u8 v;
    __asm__ volatile("inb %w1, %0" : "=a"(v) : "Nd"((u16)0x3ff));
    u_in_allowed = v;
    __asm__ volatile("outb %0, %w1" :: "a"((u8)0xc3), "Nd"((u16)0x3ff));
}

static void u_in_denied(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: inb %%dx, %%al\n1:" :: "d"(0x3fb) : "eax", "memory");
}

static void u_inw_straddle(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: inw %%dx, %%ax\n1:" :: "d"(0x3ff) : "eax", "memory");
}

static void u_out_denied(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: outb %%al, %%dx\n1:" :: "d"(0x3fa), "a"(0) : "memory");
}

static void u_cli(void) { __asm__ volatile(ARM(1f, 2f) "2: cli\n1:" ::: "memory"); }
static void u_sti(void) { __asm__ volatile(ARM(1f, 2f) "2: sti\n1:" ::: "memory"); }

static void u_iopl3(void)
{
    u8 v;
    __asm__ volatile("cli\n\t"
                     "pushfl\n\tpopl u_flags1\n\t"
                     "sti\n\t"
                     "pushfl\n\tpopl u_flags2\n\t"
                     "pushl $0x0002\n\tpopfl\n\t"       /* IF=0, IOPL stays 3 */
                     "pushfl\n\tpopl u_flags3" ::: "memory", "cc");
    __asm__ volatile("inb %w1, %0" : "=a"(v) : "Nd"((u16)0x3fb));   /* denied in the bitmap */
    u_in_allowed = v;
}

static void u_rdmsr(void) { __asm__ volatile(ARM(1f, 2f) "2: rdmsr\n1:" :: "c"(0x174) : "eax", "edx", "memory"); }
static void u_wbinvd(void) { __asm__ volatile(ARM(1f, 2f) "2: wbinvd\n1:" ::: "memory"); }
static void u_clts(void) { __asm__ volatile(ARM(1f, 2f) "2: clts\n1:" ::: "memory"); }
static void u_lgdt(void) { __asm__ volatile(ARM(1f, 2f) "2: lgdt u_gdtr\n1:" ::: "memory"); }
static void u_lmsw(void) { __asm__ volatile(ARM(1f, 2f) "2: lmsw %%ax\n1:" :: "a"(0x11) : "memory"); }
static void u_invlpg(void) { __asm__ volatile(ARM(1f, 2f) "2: invlpg 0x1000\n1:" ::: "memory"); }
static void u_movdr(void) { __asm__ volatile(ARM(1f, 2f) "2: movl %%dr7, %%eax\n1:" ::: "eax", "memory"); }
static void u_ltr(void) { __asm__ volatile(ARM(1f, 2f) "2: ltr %%ax\n1:" :: "a"(SEL_TSS) : "memory"); }

static void user_gp(const char *name, void (*fn)(void))
{
    rt_expect_reset();
    rt_run_user(fn);
    report_exc(name);
}

int main(void)
{
    kprintf("sysinsn: start\n");
    volatile u32 *ldt = (u32 *)LDT_ADDR;
    ldt[0] = ldt[1] = 0;
    ldt[2] = 0x0000ffff;                      /* entry 1: flat data, DPL 3 */
    ldt[3] = 0x00cff300;
    gdt_set(SEL_LDT >> 3, LDT_ADDR, 0xf, 0x82, 0);
    gdt_set(SEL_CODE0B >> 3, 0, 0xfffff, ACC_CODE, FLG_4K32);
    gdt_set(SEL_BASED >> 3, 0x10000, 0xfffff, ACC_CODE, FLG_4K32);
    gdt_set(SEL_XO >> 3, 0, 0xfffff, 0x99, FLG_4K32);
    gdt_set(SEL_RO >> 3, 0, 0xfffff, 0x91, FLG_4K32);
    gdt_set(SEL_LIM >> 3, 0x1000, 0x1234, ACC_DATA, FLG_BYTE32);
    gdt_set(SEL_LIMG >> 3, 0x1000, 0x1, ACC_DATA, FLG_4K32);
    gdt_set_gate(SEL_GATE >> 3, SEL_CODE0, 0, 0xec, 0);
    gdt_set(SEL_CONF >> 3, 0, 0xfffff, 0x9f, FLG_4K32);
    __asm__ volatile("lldt %w0" :: "r"(SEL_LDT));

    /* descriptor table registers */
    struct dtr g, i;
    u16 ldtr, tr, msw;
    __asm__ volatile("sgdt %0" : "=m"(g));
    __asm__ volatile("sidt %0" : "=m"(i));
    __asm__ volatile("sldt %0" : "=m"(ldtr));
    __asm__ volatile("str %0" : "=m"(tr));
    __asm__ volatile("smsw %0" : "=m"(msw));
    kprintf("ring 0: gdtr=0x%x/0x%x idtr=0x%x/0x%x ldtr=0x%x tr=0x%x msw=0x%x\n",
            g.base, g.limit, i.base, i.limit, ldtr, tr, msw);

    /* lmsw / clts */
    u16 m1, m2, m3;
    __asm__ volatile("lmsw %w0" :: "r"(0x000e));      /* MP EM TS; PE=0 ignored */
    __asm__ volatile("smsw %0" : "=m"(m1));
    __asm__ volatile("clts");
    __asm__ volatile("smsw %0" : "=m"(m2));
    __asm__ volatile("lmsw %w0" :: "r"(0x0000));
    __asm__ volatile("smsw %0" : "=m"(m3));
    kprintf("lmsw 0xe -> msw=0x%x, clts -> 0x%x, lmsw 0 -> 0x%x (PE stays set)\n", m1, m2, m3);

    /* POPF at CPL 0 */
    write_eflags(0x3202);
    u32 f0 = read_eflags();
    write_eflags(0x0002);
    kprintf("ring 0 popf 0x3202 -> eflags=0x%x, popf 0x2 -> 0x%x\n", f0, read_eflags());

    /* LAR / LSL / VERR / VERW at CPL 0 */
    static const u32 lar_sels[] = { SEL_CODE0, SEL_DATA0, SEL_CODE3, SEL_TSS, SEL_LDT, SEL_GATE,
                                    SEL_CONF | 3, SEL_LDT1, SEL_NULL, 0x800, SEL_DATA0 | 3, SEL_XO };
    for (u32 k = 0; k < sizeof lar_sels / sizeof lar_sels[0]; k++) {
        u32 zf, v = q_lar(lar_sels[k], &zf);
        print_lar("ring 0", lar_sels[k], zf, v);
    }
    static const u32 lsl_sels[] = { SEL_CODE0, SEL_TSS, SEL_LIM, SEL_LIMG, SEL_LDT, SEL_GATE, SEL_NULL };
    for (u32 k = 0; k < sizeof lsl_sels / sizeof lsl_sels[0]; k++) {
        u32 zf, v = q_lsl(lsl_sels[k], &zf);
        print_lsl("ring 0", lsl_sels[k], zf, v);
    }
    static const u32 ver_sels[] = { SEL_CODE0, SEL_XO, SEL_DATA0, SEL_RO, SEL_TSS, SEL_CONF,
                                    SEL_DATA0 | 3, SEL_DATA3, SEL_NULL };
    for (u32 k = 0; k < sizeof ver_sels / sizeof ver_sels[0]; k++)
        kprintf("ring 0 verr/verw 0x%02x: %u %u\n", ver_sels[k], q_verr(ver_sels[k]), q_verw(ver_sels[k]));

    /* segment register moves */
    u32 m = 0xaaaaaaaa, esp_before, esp_after, pushed;
    __asm__ volatile("movw %%ds, %0" : "+m"(m));
    __asm__ volatile("movl %%esp, %0\n\t"
                     "pushl $0xffffffff\n\t"
                     "addl $4, %%esp\n\t"
                     "pushl %%ds\n\t"
                     "movl %%esp, %1\n\t"
                     "popl %2" : "=&r"(esp_before), "=&r"(esp_after), "=&r"(pushed) :: "memory");
    kprintf("mov ds -> m16 keeps the upper half: 0x%x; push ds: esp-4=%s low16=0x%x\n",
            m, esp_before - esp_after == 4 ? "yes" : "no", pushed & 0xffff);
    u16 fsv;
    __asm__ volatile("movw %w1, %%fs\n\tmovw %%fs, %0\n\tmovw %w2, %%fs"
                     : "=r"(fsv) : "r"(SEL_LDT1), "r"(0));
    kprintf("mov fs, LDT selector 0x%x -> fs=0x%x\n", SEL_LDT1, fsv);

    /* far transfers in ring 0 */
    far_tests();
    kprintf("ljmp 0x48: cs=0x%x; lcall 0x08: cs=0x%x pushed cs=0x%x; after lret cs=0x%x; back cs=0x%x\n",
            far_cs_jmp & 0xffff, far_cs_in & 0xffff, far_pushed_cs & 0xffff, far_cs_ret & 0xffff,
            far_cs_back & 0xffff);
    kprintf("cs base 0x10000: cs=0x%x, call pushed linear-0x10000: %s\n", based_cs & 0xffff,
            based_eip == based_linear - 0x10000 ? "yes" : "no");

    /* MSRs */
    u32 lo, hi;
    __asm__ volatile("wrmsr" :: "c"(0x174), "a"(SEL_CODE0), "d"(0));
    __asm__ volatile("wrmsr" :: "c"(0x175), "a"(0x0027f800), "d"(0));
    __asm__ volatile("wrmsr" :: "c"(0x176), "a"((u32)sysenter_entry), "d"(0));
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0x174));
    kprintf("SYSENTER_CS: 0x%x:0x%x", hi, lo);
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0x175));
    kprintf(" SYSENTER_ESP: 0x%x:0x%x", hi, lo);
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0x176));
    kprintf(" SYSENTER_EIP matches: %s\n", lo == (u32)sysenter_entry && hi == 0 ? "yes" : "no");

    /* CPUID, INVD, WBINVD */
    u32 a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0));
    kprintf("cpuid max leaf >= 1: %s\n", a >= 1 ? "yes" : "no");
    __asm__ volatile("wbinvd" ::: "memory");
    kprintf("wbinvd ok\n");
    __asm__ volatile("invd" ::: "memory");   /* nothing dirty that matters: no caches modelled, WB memory just written back */
    kprintf("invd ok\n");

    /* ring 3 */
    tss_set_io(0x3ff, 1);
    rt_run_user(u_queries);
    kprintf("ring 3: gdtr=0x%x/0x%x idtr=0x%x/0x%x ldtr=0x%x tr=0x%x msw=0x%x cpuid max>=1: %s\n",
            u_gdtr.base, u_gdtr.limit, u_idtr.base, u_idtr.limit, u_ldtr, u_tr, u_msw,
            u_cpuid_max >= 1 ? "yes" : "no");
    for (int k = 0; k < 6; k++)
        print_lar("ring 3", ring3_lar[k].sel, ring3_lar[k].zf, ring3_lar[k].val);
    for (int k = 0; k < 2; k++)
        print_lsl("ring 3", ring3_lsl[k].sel, ring3_lsl[k].zf, ring3_lsl[k].val);
    for (int k = 0; k < 3; k++)
        kprintf("ring 3 verr/verw 0x%02x: %u %u\n", ring3_ver_sels[k], ring3_ver[2 * k].zf,
                ring3_ver[2 * k + 1].zf);

    /* POPF at CPL 3 with IOPL 0 (IF=1 on entry) */
    rt_run_ring(u_popf, SEL_CODE3, SEL_DATA3, USER_STACK_TOP, 0x0202);
    kprintf("ring 3 IOPL 0 popf: entry=0x%x, 0x3002 -> 0x%x, 0x0202 -> 0x%x, 0x0002 -> 0x%x\n",
            u_flags0, u_flags1, u_flags2, u_flags3);
    user_gp("ring 3 IOPL 0 cli", u_cli);
    user_gp("ring 3 IOPL 0 sti", u_sti);

    /* I/O permission bitmap: only port 0x3ff (COM1 scratch) allowed */
    outb(COM1 + 7, 0x5a);
    rt_expect_reset();
    rt_run_user(u_io_allowed);
    report_exc("ring 3 in/out 0x3ff (bitmap allows)");
    kprintf("  read 0x%02x, scratch now 0x%02x\n", u_in_allowed, inb(COM1 + 7));
    user_gp("ring 3 in 0x3fb (bitmap denies)", u_in_denied);
    user_gp("ring 3 inw 0x3ff (0x400 denied)", u_inw_straddle);
    user_gp("ring 3 out 0x3fa (bitmap denies)", u_out_denied);

    /* IOPL 3 */
    rt_expect_reset();
    rt_run_ring(u_iopl3, SEL_CODE3, SEL_DATA3, USER_STACK_TOP, 0x3202);
    report_exc("ring 3 IOPL 3 cli/sti/popf/in");
    kprintf("  after cli 0x%x, after sti 0x%x, popf 0x0002 -> 0x%x, in 0x3fb=0x%02x\n",
            u_flags1, u_flags2, u_flags3, u_in_allowed);

    /* SYSENTER / SYSEXIT */
    rt_run_ring(u_sysenter, SEL_CODE3, SEL_DATA3, USER_STACK_TOP, 0x0202);
    kprintf("sysenter: cs=0x%x ss=0x%x esp=0x%x eflags=0x%x (entry 0x%x)\n",
            se_cs & 0xffff, se_ss & 0xffff, se_esp, se_flags, u_flags0);
    kprintf("sysexit: cs=0x%x ss=0x%x esp=0x%x eflags=0x%x\n",
            u_cs & 0xffff, u_ss & 0xffff, u_esp, u_flags1);

    /* privileged instructions at CPL 3 */
    user_gp("ring 3 rdmsr", u_rdmsr);
    user_gp("ring 3 wbinvd", u_wbinvd);
    user_gp("ring 3 clts", u_clts);
    user_gp("ring 3 lgdt", u_lgdt);
    user_gp("ring 3 lmsw", u_lmsw);
    user_gp("ring 3 invlpg", u_invlpg);
    user_gp("ring 3 mov dr7", u_movdr);
    user_gp("ring 3 ltr", u_ltr);

    kprintf("sysinsn: done\n");
    return 0;
}

/* faults: every exception class, its error code and the saved EIP.
 *
 * Saved EIPs are printed relative to the instruction under test ("eip=+0"
 * for faults, "+len" for traps), so the output does not depend on where the
 * linker put the code.  The expected values and their justification (Intel
 * SDM vol. 3, chapter 6) are in tests/test_hw_guests.py.
 */
#include "rt.h"

#define SEL_NP     0x48   /* data, DPL 0, not present */
#define SEL_XO     0x50   /* code, execute-only */
#define SEL_RO     0x58   /* data, read-only */
#define SEL_BASED  0x68   /* data, base 0x00100000, 4 GiB (wraps) */

static u32 bounds[2] = { 0, 10 };
static volatile u32 watched __attribute__((aligned(4)));

#define NOINL __attribute__((noinline, noclone))

/* ---- #DE ---- */

NOINL static void t_de(void)
{
    u32 a, d;
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f)
                     "2: divl %%ecx\n1:"
                     : "=a"(a), "=d"(d) : "a"(1), "d"(0), "c"(0) : "memory", "cc");
    report_exc("DE div by zero");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f)
                     "2: idivl %%ecx\n1:"
                     : "=a"(a), "=d"(d) : "a"(0x80000000u), "d"(0xffffffffu), "c"(-1)
                     : "memory", "cc");
    report_exc("DE idiv INT_MIN/-1");
    kprintf("DE idiv operands kept: eax=0x%x edx=0x%x\n", a, d);

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f)
                     "2: divb %%cl\n1:"
                     : "=a"(a) : "a"(0x1000), "c"(0x10) : "memory", "cc");
    report_exc("DE div8 quotient overflow");

    rt_expect_reset();
    __asm__ volatile("divl %%ecx" : "=a"(a), "=d"(d) : "a"(100), "d"(0), "c"(7) : "cc");
    report_exc("DE none 100/7");
    kprintf("div 100/7: q=%u r=%u\n", a, d);
}

/* ---- #DB ---- */

static u32 db_eips[8];
static u32 db_n, db_dr6;
extern char ss_start[], ss_end[], hwbp_insn[], wp_after[];

static void db_single_step(struct frame *f)
{
    u32 dr6;
    __asm__ volatile("mov %%dr6, %0" : "=r"(dr6));
    if (db_n == 0)
        db_dr6 = dr6;
    if (db_n < 8)
        db_eips[db_n] = f->eip;
    db_n++;
    if (f->eip == (u32)ss_end || db_n >= 8)
        f->eflags &= ~EFLAGS_TF;
}

static void db_hw(struct frame *f)
{
    u32 dr6;
    __asm__ volatile("mov %%dr6, %0" : "=r"(dr6));
    db_dr6 = dr6;
    db_eips[db_n < 8 ? db_n : 7] = f->eip;
    db_n++;
    __asm__ volatile("mov %0, %%dr7" :: "r"(0));   /* disarm */
}

NOINL static void t_db(void)
{
    db_n = 0;
    rt_isr[1] = db_single_step;
    __asm__ volatile("mov %0, %%dr6" :: "r"(0));
    __asm__ volatile("pushfl\n\t"
                     "orl $0x100, (%%esp)\n\t"
                     "popfl\n\t"               /* no trap after the POPF that sets TF */
                     ".globl ss_start\nss_start:\n\t"
                     "nop\n\t"                 /* 1 byte */
                     "incl %%eax\n\t"          /* 1 byte */
                     "movl $5, %%ecx\n\t"      /* 5 bytes */
                     "addl %%ecx, %%eax\n\t"   /* 2 bytes */
                     ".globl ss_end\nss_end:\n\t"
                     ::: "eax", "ecx", "cc", "memory");
    rt_isr[1] = 0;
    kprintf("DB single-step: traps=%u eips=", db_n);
    for (u32 i = 0; i < db_n && i < 8; i++)
        kprintf("%s+%u", i ? "," : "", db_eips[i] - (u32)ss_start);
    kprintf(" dr6.bs=%u\n", (db_dr6 >> 14) & 1);

    /* Instruction breakpoint (DR0, R/W=00, LEN=00): a fault, before the
     * instruction executes; DR6.B0.  The handler clears DR7 and returns to
     * the same instruction, which then runs. */
    db_n = 0;
    rt_isr[1] = db_hw;
    __asm__ volatile("mov %0, %%dr6" :: "r"(0));
    __asm__ volatile("mov %0, %%dr0" :: "r"(hwbp_insn));
    __asm__ volatile("mov %0, %%dr7" :: "r"(0x1));
    u32 v = 0;
    __asm__ volatile(".globl hwbp_insn\nhwbp_insn:\n\t"
                     "movl $0x1234, %0\n\t" : "+r"(v) :: "memory");
    kprintf("DB exec breakpoint: count=%u eip=+%u b0-3=0x%x ran=0x%x\n",
            db_n, db_eips[0] - (u32)hwbp_insn, db_dr6 & 0xf, v);

    /* Data write breakpoint (DR1, R/W=01, LEN=11): a trap, after the write;
     * DR6.B1. */
    db_n = 0;
    __asm__ volatile("mov %0, %%dr6" :: "r"(0));
    __asm__ volatile("mov %0, %%dr1" :: "r"(&watched));
    __asm__ volatile("mov %0, %%dr7" :: "r"(0x00d00004));
    __asm__ volatile("movl $0x5678, %0\n\t"
                     ".globl wp_after\nwp_after:" : "=m"(watched) :: "memory");
    s32 wd = (s32)(db_eips[0] - (u32)wp_after);
    kprintf("DB write watchpoint: count=%u eip=next%s%d b0-3=0x%x value=0x%x\n",
            db_n, wd >= 0 ? "+" : "", wd, db_dr6 & 0xf, watched);
    rt_isr[1] = 0;
    __asm__ volatile("mov %0, %%dr7" :: "r"(0));
}

/* ---- #BP #OF #BR #UD ---- */

NOINL static void t_traps(void)
{
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: int3\n1:" ::: "memory");
    report_exc("BP int3");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: .byte 0xcd, 0x03\n1:" ::: "memory");   /* int $3 (gas would emit int3) */
    report_exc("BP int $3 (cd 03)");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f)
                     "movl $0x7fffffff, %%eax\n\t"
                     "addl $1, %%eax\n\t"           /* OF=1 */
                     "2: into\n1:" ::: "eax", "memory", "cc");
    report_exc("OF into OF=1");

    rt_expect_reset();
    __asm__ volatile("xorl %%eax, %%eax\n\tinto" ::: "eax", "memory", "cc");
    report_exc("OF into OF=0");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: bound %%eax, (%%ebx)\n1:"
                     :: "a"(11), "b"(bounds) : "memory");
    report_exc("BR bound 11 in [0,10]");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: bound %%eax, (%%ebx)\n1:"
                     :: "a"(-1), "b"(bounds) : "memory");
    report_exc("BR bound -1 in [0,10]");

    rt_expect_reset();
    __asm__ volatile("bound %%eax, (%%ebx)" :: "a"(10), "b"(bounds) : "memory");
    report_exc("BR bound 10 in [0,10]");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: ud2\n1:" ::: "memory");
    report_exc("UD ud2");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: .byte 0xf0, 0x90\n1:" ::: "memory");
    report_exc("UD lock nop");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: .byte 0xf0, 0x01, 0xc3\n1:"   /* lock add %eax,%ebx */
                     ::: "ebx", "memory", "cc");
    report_exc("UD lock add reg,reg");

    u32 x = 5;
    rt_expect_reset();
    __asm__ volatile("lock addl $3, %0" : "+m"(x) :: "memory", "cc");
    report_exc("UD lock add mem");
    kprintf("lock add mem result: %u\n", x);

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: .byte 0x8e, 0xc8\n1:"          /* mov %eax,%cs */
                     ::: "memory");
    report_exc("UD mov to cs");
}

/* ---- #NM and SSE #UD ---- */

NOINL static void t_nm(void)
{
    u32 cr0 = read_cr0();

    write_cr0(cr0 | 0x8);                    /* TS */
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: .byte 0xdb, 0xe3\n1:" ::: "memory");   /* fninit */
    report_exc("NM fninit TS=1");

    write_cr0((cr0 & ~0x8u) | 0x4);          /* EM */
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: .byte 0xd9, 0xe8\n1:" ::: "memory");   /* fld1 */
    report_exc("NM fld1 EM=1");

    write_cr0((cr0 & ~0x4u) | 0x8 | 0x2);    /* TS MP */
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: .byte 0x9b\n1:" ::: "memory");         /* wait */
    report_exc("NM wait TS=1 MP=1");

    write_cr0((cr0 & ~0x2u) | 0x8);          /* TS, MP=0 */
    rt_expect_reset();
    __asm__ volatile(".byte 0x9b" ::: "memory");
    report_exc("NM wait TS=1 MP=0");

    write_cr0(cr0 & ~0xeu);
    __asm__ volatile("clts");
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: .byte 0x0f, 0x57, 0xc0\n1:" ::: "memory"); /* xorps */
    report_exc("UD xorps CR4.OSFXSR=0");
    write_cr0(cr0);
}

/* ---- #NP #SS #GP with selectors ---- */

NOINL static void t_segments(void)
{
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movw %w0, %%fs\n1:" :: "r"(SEL_NP) : "memory");
    report_exc("NP mov fs, not-present data");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: int $0x81\n1:" ::: "memory");
    report_exc("NP int 0x81, not-present gate");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movw %w0, %%ss\n1:" :: "r"(SEL_NP) : "memory");
    report_exc("SS mov ss, not-present data");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movw %w0, %%ss\n1:" :: "r"(0) : "memory");
    report_exc("GP mov ss, null");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movw %w0, %%fs\n1:" :: "r"(0x800) : "memory");
    report_exc("GP mov fs, beyond GDT limit");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movw %w0, %%fs\n1:" :: "r"(SEL_TSS) : "memory");
    report_exc("GP mov fs, TSS descriptor");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movw %w0, %%fs\n1:" :: "r"(SEL_XO) : "memory");
    report_exc("GP mov fs, execute-only code");

    rt_expect_reset();
    __asm__ volatile("movw %w0, %%fs\n\tmovw %w1, %%fs" :: "r"(SEL_CODE0), "r"(0) : "memory");
    report_exc("ok mov fs, readable code");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movw %w0, %%ss\n1:" :: "r"(SEL_RO) : "memory");
    report_exc("GP mov ss, read-only data");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movw %w0, %%ss\n1:" :: "r"(SEL_DATA0 | 3) : "memory");
    report_exc("GP mov ss, RPL 3 at CPL 0");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movw %w0, %%ss\n1:" :: "r"(SEL_DATA3 & ~3) : "memory");
    report_exc("GP mov ss, DPL 3 at CPL 0");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: ljmp $0x10, $0\n1:" ::: "memory");
    report_exc("GP ljmp to data segment");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: ljmp $0x0, $0\n1:" ::: "memory");
    report_exc("GP ljmp to null selector");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movw %w0, %%ds\n1:" :: "r"(SEL_DATA0 | 3) : "memory");
    report_exc("GP mov ds, RPL 3 > DPL 0");

    rt_expect_reset();
    __asm__ volatile("movw %w0, %%fs\n\tmovw %w1, %%fs" :: "r"(SEL_DATA3), "r"(0) : "memory");
    report_exc("ok mov fs, DPL 3 data at CPL 0");
}

static void u_load_ds0(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: movw %w0, %%ds\n1:" :: "r"(SEL_DATA0) : "memory");
}

static void u_hlt(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: hlt\n1:" ::: "memory");
}

static void u_mov_cr0(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: movl %%cr0, %%eax\n1:" ::: "eax", "memory");
}

NOINL static void t_user_gp(void)
{
    rt_expect_reset();
    rt_run_user(u_load_ds0);
    report_exc("GP ring 3 mov ds, DPL 0 data");
    rt_expect_reset();
    rt_run_user(u_hlt);
    report_exc("GP ring 3 hlt");
    rt_expect_reset();
    rt_run_user(u_mov_cr0);
    report_exc("GP ring 3 mov cr0");
}

/* ---- #TS ---- */

NOINL static void t_ts(void)
{
    TSS->link = SEL_DATA0;            /* back link to a non-TSS descriptor */
    rt_expect_reset();
    __asm__ volatile("pushfl\n\t"
                     "orl $0x4000, (%%esp)\n\t"     /* NT=1 */
                     "popfl\n\t"
                     ARM(1f, 2f)
                     "2: iret\n"                     /* task return */
                     "1: pushfl\n\t"
                     "andl $~0x4000, (%%esp)\n\t"
                     "popfl" ::: "memory", "cc");
    TSS->link = 0;
    report_exc("TS iret NT=1, back link to data segment");
}

/* ---- #DF ---- */

static void df_handler(struct frame *f)
{
    rt_exc.count++;
    rt_exc.vector = f->vector;
    rt_exc.err = f->err;
    /* CS:EIP saved for #DF are undefined (SDM 6.15): resume explicitly. */
    f->eip = rt_resume;
    f->cs = SEL_CODE0;
    f->eflags = 0x2;
    rt_resume = 0;
}

NOINL static void t_df(void)
{
    rt_isr[8] = df_handler;
    idt_set_default(13, 0x0e);        /* #GP gate not present */
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movw %w0, %%fs\n1:" :: "r"(0x800) : "memory");
    idt_set_default(13, 0x8e);
    rt_isr[8] = 0;
    report_exc_noeip("DF #GP through not-present gate");
}

/* ---- #PF ---- */


static void u_read_sup(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: movl 0x402010, %%eax\n1:" ::: "eax", "memory");
}

static void u_write_sup(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: movl %%eax, 0x402014\n1:" ::: "memory");
}

static void u_write_ro(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: movl %%eax, 0x403018\n1:" ::: "memory");
}

static volatile u32 u_val;
static void u_read_ro(void)
{
    u32 v;
    __asm__ volatile("movl 0x40301c, %0" : "=r"(v) :: "memory");
    u_val = v;
}

static void u_read_np(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: movl 0x400020, %%eax\n1:" ::: "eax", "memory");
}

static void u_write_np(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: movl %%eax, 0x400024\n1:" ::: "memory");
}

static void u_fetch_sup(void)
{
    rt_mark = 0x405000;
    __asm__ volatile("movl $1f, rt_resume\n\t"
                     "jmp *%0\n1:" :: "r"(0x405000) : "memory");
}

NOINL static void t_pf(void)
{
    volatile u32 *phys = (u32 *)0x00800000;     /* identity mapped (4 MiB page) */
    for (int i = 0; i < 6 * 1024; i++)
        phys[i] = 0;
    rt_paging_init();
    phys[0x1004 / 4] = 0x11111111;
    phys[0x301c / 4] = 0x33333333;
    phys[0x5000 / 4] = 0x90909090;               /* nops */
    PT1[1] = 0x00801000 | PTE_P;                 /* supervisor, read-only */
    PT1[2] = 0x00802000 | PTE_P | PTE_W;         /* supervisor, read/write */
    PT1[3] = 0x00803000 | PTE_P | PTE_U;         /* user, read-only */
    PT1[5] = 0x00805000 | PTE_P | PTE_W;         /* supervisor code page */
    rt_paging_on(0);

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movl 0x400123, %%eax\n1:" ::: "eax", "memory");
    report_exc("PF read not-present");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movl %%eax, 0x400456\n1:" ::: "memory");
    report_exc("PF write not-present");

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movl 0x2000010, %%eax\n1:" ::: "eax", "memory");
    report_exc("PF read, PDE not present");

    rt_expect_reset();
    __asm__ volatile("movl $0x22222222, 0x401008" ::: "memory");
    report_exc("PF supervisor write read-only, WP=0");
    kprintf("WP=0 write landed: 0x%x\n", phys[0x1008 / 4]);

    rt_paging_on(1);
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movl $0x44444444, 0x40100c\n1:" ::: "memory");
    report_exc("PF supervisor write read-only, WP=1");
    kprintf("WP=1 write suppressed: 0x%x\n", phys[0x100c / 4]);
    rt_paging_on(0);

    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: jmp *%0\n1:" :: "r"(0x404000) : "memory");
    rt_mark = 0x404000;
    report_exc("PF fetch not-present");

    rt_expect_reset();
    __asm__ volatile("movw %w0, %%fs\n\t"
                     ARM(1f, 2f)
                     "2: movl %%fs:0x300123, %%eax\n"
                     "1: movw %w1, %%fs" :: "r"(SEL_BASED), "r"(0) : "eax", "memory");
    report_exc("PF read via fs base 0x100000 + 0x300123");

    rt_expect_reset();
    rt_run_user(u_read_sup);
    report_exc("PF user read supervisor page");
    rt_expect_reset();
    rt_run_user(u_write_sup);
    report_exc("PF user write supervisor page");
    rt_expect_reset();
    rt_run_user(u_write_ro);
    report_exc("PF user write read-only page");
    rt_expect_reset();
    rt_run_user(u_read_ro);
    report_exc("PF user read read-only page");
    kprintf("user read value: 0x%x\n", u_val);
    rt_expect_reset();
    rt_run_user(u_read_np);
    report_exc("PF user read not-present");
    rt_expect_reset();
    rt_run_user(u_write_np);
    report_exc("PF user write not-present");
    rt_expect_reset();
    rt_run_user(u_fetch_sup);
    report_exc("PF user fetch supervisor page");

    rt_paging_off();
}

int main(void)
{
    kprintf("faults: start\n");
    gdt_set(SEL_NP >> 3, 0, 0xfffff, ACC_DATA & 0x7f, FLG_4K32);
    gdt_set(SEL_XO >> 3, 0, 0xfffff, 0x99, FLG_4K32);
    gdt_set(SEL_RO >> 3, 0, 0xfffff, 0x91, FLG_4K32);
    gdt_set(SEL_BASED >> 3, 0x00100000, 0xfffff, ACC_DATA, FLG_4K32);
    idt_set_default(0x81, 0x0e);                  /* not present */

    t_de();
    t_db();
    t_traps();
    t_nm();
    t_segments();
    t_user_gp();
    t_ts();
    t_df();
    t_pf();
    kprintf("faults: done\n");
    return 0;
}

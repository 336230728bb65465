/* tssk: a kernel in the old style, where every task is a TSS and the processor
 * switches them (SDM Vol. 3 ch. 7):
 *
 *   - JMP to a TSS and back (busy bits moved, no back link), CALL to a TSS and IRET
 *     back (NT and the back link, the caller staying busy), a TSS with its own CR3;
 *   - the faults of bad switches: JMP or CALL to a busy TSS (#GP(selector)), to a TSS
 *     whose limit is below 67H (#TS(selector)), IRET with NT to a back link that is
 *     not busy (#TS(selector)), JMP from ring 3 to a DPL-0 TSS (#GP(selector));
 *   - a ring-3 task entered by JMP, with its own I/O bitmap (one port allowed, #GP(0)
 *     for another), its ring-0 stack from its own TSS, a task gate in the IDT it
 *     reaches by INT (DPL 3) and a task gate in the GDT it leaves by;
 *   - a double fault, by a task gate to a TSS with its own stack: the kernel stack
 *     overflows into a not-present guard page (the #PF cannot be delivered on it:
 *     #DF, SDM Vol. 3 §6.15 Table 6-5), once by recursion and once by an INT, and
 *     the double-fault task mends the overflowed task's TSS (stack, EIP) and IRETs
 *     back to it; entered a second time, it goes on after its own IRET.
 *
 * Expected lines: tests/test_osdev2.py (checked on QEMU). */

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;

struct tss {
    uint16_t link, _0;
    uint32_t esp0; uint16_t ss0, _1;
    uint32_t esp1; uint16_t ss1, _2;
    uint32_t esp2; uint16_t ss2, _3;
    uint32_t cr3, eip, eflags, eax, ecx, edx, ebx, esp, ebp, esi, edi;
    uint16_t es, _4, cs, _5, ss, _6, ds, _7, fs, _8, gs, _9, ldt, _10;
    uint16_t trap, iomap;
} __attribute__((packed));

struct user_tss {                      /* a TSS with an I/O permission bitmap after it */
    struct tss t;
    uint8_t iobits[0x400 / 8];
    uint8_t end;                       /* the byte of ones the bitmap must end with */
} __attribute__((packed));

struct desc {                          /* a segment or system descriptor, by its fields */
    unsigned limit_lo : 16, base_lo : 16;
    unsigned base_mid : 8, type : 4, s : 1, dpl : 2, p : 1;
    unsigned limit_hi : 4, avl : 1, l : 1, db : 1, g : 1, base_hi : 8;
} __attribute__((packed));

struct gate {
    unsigned off_lo : 16, sel : 16;
    unsigned zero : 8, type : 4, s : 1, dpl : 2, p : 1, off_hi : 16;
} __attribute__((packed));

struct frame {
    uint32_t edi, esi, ebp, esp_, ebx, edx, ecx, eax, num, err, eip, cs, eflags, esp, ss;
};

enum {
    KCODE = 0x08, KDATA = 0x10, UCODE = 0x1b, UDATA = 0x23,
    T_MAIN = 0x28, T_DF = 0x30, T_A = 0x38, T_B = 0x40, T_SHORT = 0x48, T_C = 0x50,
    T_U = 0x58, G_MAIN = 0x63,         /* a task gate to main, DPL 3 */
    NGDT = 13,
};

static struct desc gdt[NGDT] __attribute__((aligned(8)));
static struct gate idt[0x60] __attribute__((aligned(8)));
static struct tss tss_main, tss_df, tss_a, tss_b, tss_short, tss_c;
static struct user_tss tss_u;

static uint8_t df_stack[2048] __attribute__((aligned(16)));
static uint8_t a_stack[1024] __attribute__((aligned(16)));
static uint8_t b_stack[1024] __attribute__((aligned(16)));
static uint8_t c_stack[1024] __attribute__((aligned(16)));
static uint8_t u_kstack[1024] __attribute__((aligned(16)));
uint8_t boot_stack[4096] __attribute__((aligned(16)));
extern uint8_t boot_stack_end[];
__asm__(".globl boot_stack_end\n.set boot_stack_end, boot_stack + 4096");

/* the main task's stack: 4 pages, the lowest one the not-present guard */
static uint8_t mstack[4][4096] __attribute__((aligned(4096)));
#define GUARD_TOP ((uint32_t)mstack[1])
#define MSTACK_TOP ((uint32_t)mstack[4])

/* ring 3's page: its code and stack */
extern uint8_t user_page[];
void user_task(void);

static uint32_t pd[1024] __attribute__((aligned(4096)));
static uint32_t pd_b[1024] __attribute__((aligned(4096)));
static uint32_t pt[1024] __attribute__((aligned(4096)));
static uint32_t pt_b[1024] __attribute__((aligned(4096)));
static volatile uint32_t window_frames[2][1024] __attribute__((aligned(4096)));
#define WINDOW 0x00300000u

/* ---- console ---- */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void putch(char c)
{
    if (c == '\n')
        putch('\r');
    while ((inb(0x3fd) & 0x20) == 0)
        ;
    outb(0x3f8, c);
}

static void print(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    while (*fmt) {
        char c = *fmt++;
        if (c != '%') {
            putch(c);
            continue;
        }
        c = *fmt++;
        if (c == 's') {
            const char *s = __builtin_va_arg(ap, const char *);
            while (*s)
                putch(*s++);
        } else {                        /* %x: hex, %d: decimal */
            uint32_t v = __builtin_va_arg(ap, uint32_t), base = c == 'd' ? 10 : 16;
            char buf[12];
            int n = 0;
            do {
                buf[n++] = "0123456789abcdef"[v % base];
                v /= base;
            } while (v);
            while (n)
                putch(buf[--n]);
        }
    }
    __builtin_va_end(ap);
}

static void finish(uint8_t code)
{
    outb(0xf4, code);
    for (;;)
        __asm__ volatile("hlt");
}

/* ---- descriptors ---- */
static void set_desc(int sel, uint32_t base, uint32_t limit, int type, int s, int dpl, int db)
{
    struct desc *d = &gdt[sel >> 3];
    d->limit_lo = limit & 0xffff;
    d->limit_hi = limit >> 16;
    d->base_lo = base & 0xffff;
    d->base_mid = (base >> 16) & 0xff;
    d->base_hi = base >> 24;
    d->type = type;
    d->s = s;
    d->dpl = dpl;
    d->p = 1;
    d->avl = d->l = 0;
    d->db = db;
    d->g = limit > 0xfffff;
    if (d->g) {
        d->limit_lo = (limit >> 12) & 0xffff;
        d->limit_hi = limit >> 28;
    }
}

static void set_gate(struct gate *g, uint16_t sel, uint32_t off, int type, int dpl)
{
    g->off_lo = off & 0xffff;
    g->off_hi = off >> 16;
    g->sel = sel;
    g->zero = 0;
    g->type = type;
    g->s = 0;
    g->dpl = dpl;
    g->p = 1;
}

static int tss_type(int sel) { return gdt[sel >> 3].type; }

static void init_task(struct tss *t, void (*eip)(void), uint8_t *stack, uint32_t size, uint32_t *cr3)
{
    t->eip = (uint32_t)eip;
    t->esp = (uint32_t)stack + size;
    t->eflags = 0x2;
    t->cs = KCODE;
    t->ss = t->ds = t->es = KDATA;
    t->fs = t->gs = 0;
    t->cr3 = (uint32_t)cr3;
    t->iomap = sizeof(struct tss);
}

#define ljmp(sel) __asm__ volatile("ljmp %0, $0" :: "i"(sel) : "memory")
#define lcall(sel) __asm__ volatile("lcall %0, $0" :: "i"(sel) : "memory")

/* ---- traps ---- */
static volatile uint32_t u_gp_err, u_gp_cs, u_jmp_err;   /* the ring-3 task's faults */
static volatile uint32_t skip, last_num, last_err, last_cs, nfaults, clear_nt;

void trap(struct frame *f)
{
    if (f->num == 13 && (f->cs & 3) == 3) {   /* the ring-3 task's: by the opcode */
        uint8_t op = *(uint8_t *)f->eip;
        if (op == 0xe4) {
            u_gp_err = f->err;
            u_gp_cs = f->cs;
            f->eip += 2;
            return;
        }
        if (op == 0xea) {
            u_jmp_err = f->err;
            f->eip += 7;
            return;
        }
    }
    if ((f->num == 13 || f->num == 10) && skip) {
        last_num = f->num;
        last_err = f->err;
        last_cs = f->cs;
        nfaults++;
        f->eip += skip;
        if (clear_nt)
            f->eflags &= ~0x4000u;
        return;
    }
    print("unexpected trap %x err %x at %x:%x\n", f->num, f->err, f->cs, f->eip);
    finish(2);
}

/* ---- the other tasks ---- */
static volatile uint32_t a_runs, a_link, a_main_type;
static void task_a(void)
{
    for (;;) {
        a_runs++;
        a_link = tss_a.link;
        a_main_type = tss_type(T_MAIN);
        ljmp(T_MAIN);
    }
}

static volatile uint32_t b_runs, b_link, b_nt, b_cr3, b_window, b_main_type, b_gp_err;
static void task_b(void)
{
    for (;;) {
        uint32_t fl, cr3;
        b_runs++;
        b_link = tss_b.link;
        __asm__ volatile("pushf; pop %0; mov %%cr3, %1" : "=r"(fl), "=r"(cr3));
        b_nt = !!(fl & 0x4000);
        b_cr3 = cr3 == (uint32_t)pd_b;
        b_window = *(volatile uint32_t *)WINDOW;
        b_main_type = tss_type(T_MAIN);
        skip = 7;                         /* CALL to the busy caller: #GP(selector) */
        nfaults = 0;
        lcall(T_MAIN);
        b_gp_err = nfaults ? last_err : 0xdead;
        skip = 0;
        __asm__ volatile("iret");         /* NT: back to the caller */
    }
}

static volatile uint32_t c_runs, c_link, c_nt, c_u_type, c_u_cs, c_u_eip;
void in_task_c(void)
{
    uint32_t fl;
    c_runs++;
    c_link = tss_c.link;
    __asm__ volatile("pushf; pop %0" : "=r"(fl));
    c_nt = !!(fl & 0x4000);
    c_u_type = tss_type(T_U);
    c_u_cs = tss_u.t.cs;
    c_u_eip = tss_u.t.eip;
}

/* ---- the double-fault task ---- */
uint32_t df_err;
static volatile uint32_t ndf;
void recovered(void);
uint32_t dive(uint32_t n);
extern char int_site[];

void double_fault(void)
{
    uint32_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    ndf++;
    uint32_t base = GUARD_TOP - 4096;
    print("double fault %d: link %x err %x cr2=guard+%x, main esp=guard+%x eip=%s+%x, df busy %d\n",
          ndf, tss_df.link, df_err, cr2 - base, tss_main.esp - base, ndf == 1 ? "dive" : "int_site",
          tss_main.eip - (ndf == 1 ? (uint32_t)dive : (uint32_t)int_site), tss_type(T_DF) == 11);
    tss_main.eip = (uint32_t)recovered;   /* mend the task that overflowed */
    tss_main.esp = MSTACK_TOP - 16;
    tss_main.ebp = 0;
    tss_main.eflags = 0x2;
}

uint32_t __attribute__((noinline)) dive(uint32_t n)
{
    volatile uint8_t buf[300];
    buf[0] = n;
    buf[299] = n;
    return dive(n + 1) + buf[0] + buf[299];
}


/* ---- paging ---- */
static void paging(void)
{
    for (uint32_t i = 0; i < 1024; i++)
        pt[i] = i << 12 | 3;
    pt[GUARD_TOP / 4096 - 1] = 0;                 /* the guard page */
    pt[(uint32_t)user_page >> 12] |= 4;           /* ring 3's code and stack */
    pt[((uint32_t)user_page >> 12) + 1] |= 4;
    pt[WINDOW >> 12] = (uint32_t)window_frames[0] | 3;
    for (uint32_t i = 0; i < 1024; i++)
        pt_b[i] = pt[i];
    pt_b[WINDOW >> 12] = (uint32_t)window_frames[1] | 3;
    pd[0] = (uint32_t)pt | 7;
    tss_main.cr3 = (uint32_t)pd;                  /* (a task switch never saves CR3) */
    pd_b[0] = (uint32_t)pt_b | 7;
    window_frames[0][0] = 0x11;
    window_frames[1][0] = 0x22;
    __asm__ volatile("mov %0, %%cr3; mov %%cr0, %%eax; or $0x80000000, %%eax; mov %%eax, %%cr0"
                     :: "r"(pd) : "eax", "memory");
}

static void tables(void)
{
    extern void isr0(void), isr1(void), isr3(void), isr6(void), isr10(void), isr11(void),
        isr12(void), isr13(void), isr14(void), isr0x51(void), df_task(void), c_task(void);
    set_desc(KCODE, 0, 0xffffffff, 0xa, 1, 0, 1);
    set_desc(KDATA, 0, 0xffffffff, 0x2, 1, 0, 1);
    set_desc(UCODE, 0, 0xffffffff, 0xa, 1, 3, 1);
    set_desc(UDATA, 0, 0xffffffff, 0x2, 1, 3, 1);
    set_desc(T_MAIN, (uint32_t)&tss_main, sizeof tss_main - 1, 9, 0, 0, 0);
    set_desc(T_DF, (uint32_t)&tss_df, sizeof tss_df - 1, 9, 0, 0, 0);
    set_desc(T_A, (uint32_t)&tss_a, sizeof tss_a - 1, 9, 0, 0, 0);
    set_desc(T_B, (uint32_t)&tss_b, sizeof tss_b - 1, 9, 0, 0, 0);
    set_desc(T_SHORT, (uint32_t)&tss_short, 0x60, 9, 0, 0, 0);
    set_desc(T_C, (uint32_t)&tss_c, sizeof tss_c - 1, 9, 0, 0, 0);
    set_desc(T_U, (uint32_t)&tss_u, sizeof tss_u - 1, 9, 0, 0, 0);
    set_gate((struct gate *)&gdt[G_MAIN >> 3], T_MAIN, 0, 5, 3);

    void (*isr[])(void) = { isr0, isr1, 0, isr3, 0, 0, isr6, 0, 0, 0, isr10, isr11, isr12, isr13, isr14 };
    for (int v = 0; v < 15; v++)
        if (isr[v])
            set_gate(&idt[v], KCODE, (uint32_t)isr[v], 0xe, 0);
    set_gate(&idt[8], T_DF, 0, 5, 0);             /* #DF: a task gate */
    set_gate(&idt[0x50], T_C, 0, 5, 3);           /* INT 0x50 from ring 3: task C */
    set_gate(&idt[0x51], KCODE, (uint32_t)isr0x51, 0xe, 0);

    init_task(&tss_df, df_task, df_stack, sizeof df_stack, pd);
    init_task(&tss_a, task_a, a_stack, sizeof a_stack, pd);
    init_task(&tss_b, task_b, b_stack, sizeof b_stack, pd_b);
    init_task(&tss_c, c_task, c_stack, sizeof c_stack, pd);
    tss_main.iomap = sizeof(struct tss);
    tss_main.ss0 = KDATA;

    init_task(&tss_u.t, user_task, user_page + 8192, 0, pd);   /* ring 3, stack atop its page */
    tss_u.t.esp = (uint32_t)user_page + 8192 - 16;
    tss_u.t.cs = UCODE;
    tss_u.t.ss = tss_u.t.ds = tss_u.t.es = UDATA;
    tss_u.t.ss0 = KDATA;
    tss_u.t.esp0 = (uint32_t)u_kstack + sizeof u_kstack;
    tss_u.t.iomap = sizeof(struct tss);
    for (unsigned i = 0; i < sizeof tss_u.iobits; i++)
        tss_u.iobits[i] = 0xff;
    tss_u.iobits[0x80 / 8] &= ~(1 << (0x80 % 8));  /* port 0x80 only */
    tss_u.end = 0xff;

    struct { uint16_t lim; uint32_t base; } __attribute__((packed))
        g = { sizeof gdt - 1, (uint32_t)gdt }, i = { sizeof idt - 1, (uint32_t)idt };
    __asm__ volatile("lgdt %0; lidt %1; ljmp $0x08, $1f; 1: mov $0x10, %%eax; mov %%eax, %%ds;"
                     "mov %%eax, %%es; mov %%eax, %%ss; mov %%eax, %%fs; mov %%eax, %%gs;"
                     "mov $0x28, %%eax; ltr %%ax" :: "m"(g), "m"(i) : "eax", "memory");
}

static void part2(void);

void main(void)
{
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    outb(0x3f9, 0);
    tables();
    paging();
    print("tssk: start\n");

    ljmp(T_A);
    ljmp(T_A);
    print("jmp to A twice: runs %d, A's link %x, main's type seen by A %x, A's type now %x\n",
          a_runs, a_link, a_main_type, tss_type(T_A));

    lcall(T_B);
    lcall(T_B);
    uint32_t fl;
    __asm__ volatile("pushf; pop %0" : "=r"(fl));
    print("call B twice: runs %d, B's link %x nt %d cr3 pd_b %d window %x, main's type seen by B %x, "
          "B calling main: #GP %x; back: B's type %x, main's nt %d, window %x\n",
          b_runs, b_link, b_nt, b_cr3, b_window, b_main_type, b_gp_err, tss_type(T_B),
          !!(fl & 0x4000), *(volatile uint32_t *)WINDOW);

    skip = 7;
    nfaults = 0;
    ljmp(T_MAIN);
    print("jmp to itself (busy): #%d err %x\n", last_num, last_err);
    nfaults = 0;
    ljmp(T_SHORT);
    print("jmp to a TSS of limit 60: #%d err %x, its type %x\n", last_num, last_err, tss_type(T_SHORT));
    skip = 1;
    clear_nt = 1;
    tss_main.link = T_A;
    __asm__ volatile("pushf; orl $0x4000, (%%esp); popf; iret" ::: "memory");
    __asm__ volatile("pushf; pop %0" : "=r"(fl));
    print("iret with nt to a back link not busy: #%d err %x, nt after %d\n", last_num, last_err,
          !!(fl & 0x4000));
    skip = 0;
    clear_nt = 0;
    tss_main.link = 0;

    ljmp(T_U);
    print("ring 3 task: in from a port not in its bitmap: #GP %x from cs %x; "
          "int 0x50: task C link %x nt %d, U's type %x, U's cs %x, eip user+%x; "
          "jmp to main's TSS from ring 3: #GP %x; back through a task gate\n",
          u_gp_err, u_gp_cs, c_link, c_nt, c_u_type, c_u_cs, c_u_eip - (uint32_t)user_page,
          u_jmp_err);
    print("types: main %x df %x A %x B %x C %x U %x\n", tss_type(T_MAIN), tss_type(T_DF),
          tss_type(T_A), tss_type(T_B), tss_type(T_C), tss_type(T_U));

    /* on the stack with the guard page under it: overflows, the double-fault task mends us */
    __asm__ volatile("mov %0, %%esp; push $0; call dive" :: "r"(MSTACK_TOP) : "memory");
    print("not reached\n");
    finish(1);
}

/* after each double fault, on a fresh stack */
void recovered(void)
{
    if (ndf == 1) {
        print("recovered from the overflow, main's type %x, df's %x\n", tss_type(T_MAIN), tss_type(T_DF));
        /* an INT whose frame does not fit above the guard page */
        __asm__ volatile("mov %0, %%esp; .globl int_site; int_site: int $0x51" :: "r"(GUARD_TOP + 8));
    }
    part2();
}

static void part2(void)
{
    print("recovered again, main's type %x, df's %x\n", tss_type(T_MAIN), tss_type(T_DF));
    print("tssk: done\n");
    finish(0);
}

/* ring 3: the user task's code, on its own page with its stack above */
__asm__(
    ".section .user, \"ax\"\n"
    ".p2align 12\n"
    ".globl user_page, user_task\n"
    "user_page:\n"
    "user_task:\n"
    "    mov $0x5a, %al\n"
    "    outb %al, $0x80\n"          /* allowed by its bitmap */
    "    inb $0x71, %al\n"           /* not: #GP(0), skipped by the handler */
    "    int $0x50\n"                /* task C and back */
    "    ljmp $0x28, $0\n"           /* a DPL-0 TSS from ring 3: #GP(0x28), skipped */
    "    ljmp $0x63, $0\n"           /* the task gate to main (DPL 3) */
    "    jmp .\n"
    ".p2align 12\n"
    ".space 4096\n"
    ".text\n");

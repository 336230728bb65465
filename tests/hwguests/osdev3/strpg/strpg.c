/* strpg: what a kernel's string, stack and locked instructions do at page and segment
 * edges, the registers a fault leaves for the handler that restarts them (SDM Vol. 2
 * REP: "the registers are updated per iteration"; Vol. 3 §6.5 faults restart the
 * instruction):
 *
 *   - REP MOVSB, REP STOSD with DF=1, REPE CMPSB, REPNE SCASB and a misaligned REP MOVSD
 *     running into a not-present page: the #PF's CR2, error code and EIP, and ECX, ESI
 *     and EDI at the fault; the handler maps the page and the instruction goes on;
 *   - LOCK XADD, LOCK CMPXCHG and XCHG of a doubleword straddling into a read-only page
 *     (CR0.WP): #PF with neither page written, then done once the page is writable;
 *   - ENTER with nesting levels 0, 1, 3 and 33 (taken modulo 32) over a chain of frame
 *     pointers, and LEAVE;
 *   - BOUND of words and of doublewords (#BR a fault at it), INTO (#OF a trap after it);
 *   - a 16-bit expand-down stack segment (B=0): PUSH with SP=0 wrapping to FFFC, an
 *     access below its limit (#SS(0)), and an interrupt taken on it, whose frame goes to
 *     SS:SP, the upper half of ESP kept.
 *
 * Expected lines: tests/test_osdev3.py (checked on QEMU). */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

struct frame {
    u32 edi, esi, ebp, esp_, ebx, edx, ecx, eax, num, err, eip, cs, eflags;
};

struct gate {
    u16 off_lo, sel;
    u8 zero, type;
    u16 off_hi;
} __attribute__((packed));

enum { KCODE = 0x08, KDATA = 0x10, SS16 = 0x18 };

static unsigned long long gdt[4] = {
    0,
    0x00cf9a000000ffffull,          /* 08: code, flat */
    0x00cf92000000ffffull,          /* 10: data, flat */
    0x0000960000006fffull,          /* 18: data, expand-down, B=0, base 0, limit 6fff */
};
static struct gate idt[0x41];
static u32 pd[1024] __attribute__((aligned(4096)));
static u32 pt0[1024] __attribute__((aligned(4096)));
u8 stack[8192] __attribute__((aligned(16)));
__asm__(".globl stack_top\n.set stack_top, stack + 8192");

#define W 0x00300000u                 /* the window: pages W+0x0000 .. W+0x7000 */
#define PG(n) (W + 0x1000u * (n))

/* ---- console ---- */
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

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
        } else {
            u32 v = __builtin_va_arg(ap, u32), base = c == 'd' ? 10 : 16;
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

/* ---- paging ---- */
static void set_pte(u32 lin, u32 flags)
{
    pt0[lin >> 12] = (lin & 0xfffff000u) | flags;
    __asm__ volatile("invlpg (%0)" :: "r"(lin) : "memory");
}

/* ---- traps ---- */
struct fault { u32 num, err, eip, cr2, ecx, esi, edi, eflags; };
static volatile struct fault last;
static volatile u32 nfaults, resume, fix_pte, fix_flags;

void trap(struct frame *f)
{
    u32 cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    nfaults++;
    last.num = f->num;
    last.err = f->err;
    last.eip = f->eip;
    last.cr2 = f->num == 14 ? cr2 : 0;
    last.ecx = f->ecx;
    last.esi = f->esi;
    last.edi = f->edi;
    last.eflags = f->eflags;
    if (f->num == 14 && fix_pte) {        /* make the page what it should be; restart */
        set_pte(fix_pte, fix_flags);
        fix_pte = 0;
        return;
    }
    if (f->num == 4 || f->num == 3)         /* traps: go on after them */
        return;
    if (resume) {
        f->eip = resume;
        resume = 0;
        return;
    }
    print("unexpected trap %x err %x at %x cr2 %x\n", f->num, f->err, f->eip, cr2);
    outb(0xf4, 1);
    for (;;)
        __asm__ volatile("hlt");
}

static void show_fault(const char *what)
{
    print("%s: #%d err=%x cr2=%x eip=+%x ecx=%x esi=%x edi=%x", what, last.num, last.err,
          last.cr2, last.eip, last.ecx, last.esi, last.edi);
}

extern void isr0(void), isr1(void), isr3(void), isr4(void), isr5(void), isr6(void), isr8(void),
    isr10(void), isr11(void), isr12(void), isr13(void), isr14(void), isr_small(void);

static void set_gate(int n, void (*fn)(void))
{
    u32 off = (u32)fn;
    idt[n].off_lo = off & 0xffff;
    idt[n].off_hi = off >> 16;
    idt[n].sel = KCODE;
    idt[n].zero = 0;
    idt[n].type = 0x8e;
}

static void tables(void)
{
    struct { u16 limit; u32 base; } __attribute__((packed)) g = { sizeof gdt - 1, (u32)gdt },
        i = { sizeof idt - 1, (u32)idt };
    __asm__ volatile("lgdt %0" :: "m"(g));
    __asm__ volatile("ljmp %0, $1f; 1:" :: "i"(KCODE));
    __asm__ volatile("mov %0, %%ds; mov %0, %%es; mov %0, %%ss; mov %0, %%fs; mov %0, %%gs"
                     :: "r"(KDATA));
    void (*isrs[])(void) = { isr0, isr1, 0, isr3, isr4, isr5, isr6, 0, isr8, 0, isr10, isr11,
                             isr12, isr13, isr14 };
    for (int n = 0; n < 15; n++)
        if (isrs[n])
            set_gate(n, isrs[n]);
    set_gate(0x40, isr_small);
    __asm__ volatile("lidt %0" :: "m"(i));
    for (u32 a = 0; a < 0x400000; a += 0x1000)
        pt0[a >> 12] = a | 3;
    pd[0] = (u32)pt0 | 3;
    __asm__ volatile("mov %0, %%cr3" :: "r"(pd));
    u32 cr0;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" :: "r"(cr0 | 0x80010000u));     /* PG, WP */
}

static u32 sum(u32 lin, u32 n)
{
    u32 s = 0;
    for (u32 i = 0; i < n; i++)
        s = s * 31 + ((volatile u8 *)lin)[i];
    return s;
}

/* ---- string instructions into a not-present page ---- */
static void strings(void)
{
    for (u32 i = 0; i < 0x100; i++)
        ((u8 *)PG(0))[i] = i;
    /* REP MOVSB: 12 bytes to 5 before the end of page 1, page 2 not present */
    set_pte(PG(2), 0);
    fix_pte = PG(2), fix_flags = PG(2) | 3;
    u32 si = PG(0) + 0x10, di = PG(2) - 5, cx = 12;
    __asm__ volatile("cld; rep movsb" : "+S"(si), "+D"(di), "+c"(cx) :: "memory");
    show_fault("rep movsb");
    print(" -> ecx=%x esi=%x edi=%x sum=%x\n", cx, si, di, sum(PG(2) - 5, 12));

    /* REP STOSD downwards (DF=1) from page 3 into page 2, not present again */
    set_pte(PG(2), 0);
    fix_pte = PG(2), fix_flags = PG(2) | 3;
    di = PG(3) + 8, cx = 5;
    __asm__ volatile("std; rep stosl; cld" : "+D"(di), "+c"(cx) : "a"(0xa5a5f00d) : "memory");
    show_fault("std rep stosl");
    print(" df=%d -> ecx=%x edi=%x sum=%x\n", (last.eflags >> 10) & 1, cx, di, sum(PG(2) + 0xff0, 0x1c));

    /* REPE CMPSB: equal up to the page end, the rest in page 5 (not present) */
    for (u32 i = 0; i < 0x40; i++)
        ((u8 *)PG(4))[0xfe0 + i] = ((u8 *)PG(0))[i];
    set_pte(PG(5), 0);
    for (u32 i = 0; i < 0x20; i++)
        ((u8 *)PG(0))[0x20 + i] ^= i == 0x8 ? 0x40 : 0;      /* one byte differs at +0x28 */
    fix_pte = PG(5), fix_flags = PG(5) | 3;
    si = PG(0), di = PG(4) + 0xfe0, cx = 0x40;
    u32 fl;
    __asm__ volatile("repe cmpsb; pushf; pop %3" : "+S"(si), "+D"(di), "+c"(cx), "=r"(fl)
                     :: "memory", "cc");
    show_fault("repe cmpsb");
    print(" -> ecx=%x esi=+%x edi=+%x zf=%d\n", cx, si - PG(0), di - PG(4), (fl >> 6) & 1);

    /* REPNE SCASB: the byte is in page 6, not present */
    for (u32 i = 0; i < 8; i++)
        ((u8 *)PG(6))[i] = i == 3 ? 0x77 : 0;
    ((u8 *)PG(5))[0xffe] = 0x11;
    ((u8 *)PG(5))[0xfff] = 0x22;
    set_pte(PG(6), 0);
    fix_pte = PG(6), fix_flags = PG(6) | 3;
    di = PG(5) + 0xffe, cx = 0x100;
    __asm__ volatile("repne scasb; pushf; pop %2" : "+D"(di), "+c"(cx), "=r"(fl) : "a"(0x77)
                     : "memory", "cc");
    show_fault("repne scasb");
    print(" -> ecx=%x edi=+%x zf=%d\n", cx, di - PG(5), (fl >> 6) & 1);

    /* REP MOVSD with the destination misaligned across into page 7 (not present) */
    set_pte(PG(7), 0);
    fix_pte = PG(7), fix_flags = PG(7) | 3;
    si = PG(0) + 0x40, di = PG(7) - 6, cx = 4;
    __asm__ volatile("rep movsl" : "+S"(si), "+D"(di), "+c"(cx) :: "memory");
    show_fault("rep movsl straddling");
    print(" -> ecx=%x edi=%x sum=%x\n", cx, di, sum(PG(7) - 6, 16));
}

/* ---- locked read-modify-writes straddling into a read-only page ---- */
static void locked(void)
{
    u32 a = PG(1) - 2;                    /* bytes fe ff of page 0 and 00 01 of page 1 */
    *(volatile u32 *)(PG(1) - 4) = 0x44332211;
    *(volatile u32 *)PG(1) = 0x88776655;
    set_pte(PG(1), PG(1) | 1);            /* read-only (CR0.WP: at ring 0 too) */
    fix_pte = PG(1), fix_flags = PG(1) | 3;
    u32 v = 0x10000001;
    __asm__ volatile("lock xaddl %0, (%1)" : "+r"(v) : "r"(a) : "memory");
    show_fault("lock xadd");
    print(" -> old=%x mem=%x %x\n", v, *(volatile u32 *)(PG(1) - 4), *(volatile u32 *)PG(1));

    set_pte(PG(1), PG(1) | 1);
    fix_pte = PG(1), fix_flags = PG(1) | 3;
    u32 old = 0x66554433, cur;
    __asm__ volatile("lock cmpxchgl %2, (%3)" : "=a"(cur) : "a"(old), "r"(0xcafe), "r"(a)
                     : "memory", "cc");
    show_fault("lock cmpxchg");
    print(" -> eax=%x mem=%x %x", cur, *(volatile u32 *)(PG(1) - 4), *(volatile u32 *)PG(1));
    set_pte(PG(1), PG(1) | 1);
    fix_pte = PG(1), fix_flags = PG(1) | 3;
    v = 0xbeef0000;
    __asm__ volatile("xchgl %0, (%1)" : "+r"(v) : "r"(a) : "memory");
    print(" | xchg #%d err=%x -> %x mem=%x %x\n", last.num, last.err, v,
          *(volatile u32 *)(PG(1) - 4), *(volatile u32 *)PG(1));
}

/* ---- ENTER and LEAVE ---- */
u32 enter_buf[32];
u32 enter_out[4], enter_top, enter_ebp;

static void enter_leave(void)
{
    static const int levels[] = { 0, 1, 3, 33 };
    print("enter:");
    for (int k = 0; k < 4; k++) {
        /* a chain of frame pointers below a fake EBP; a stack of its own */
        static u32 fake[8];
        for (int i = 0; i < 8; i++)
            fake[i] = 0xe0e0e0e0u + 0x01010101u * i;
        for (int i = 0; i < 32; i++)
            enter_buf[i] = 0;
        u32 top = (u32)&enter_buf[24];
        enter_top = top;
        enter_ebp = (u32)&fake[5];
        switch (levels[k]) {
#define ENTER(L) \
            __asm__ volatile("push %%ebp; push %%edi; mov %%esp, %%edi; mov enter_top, %%esp;" \
                             "mov enter_ebp, %%ebp; enter $8, $" #L "; mov %%esp, enter_out;" \
                             "mov %%ebp, enter_out+4; leave; mov %%esp, enter_out+8;" \
                             "mov %%ebp, enter_out+12; mov %%edi, %%esp; pop %%edi; pop %%ebp" \
                             ::: "memory")
        case 0: ENTER(0); break;
        case 1: ENTER(1); break;
        case 3: ENTER(3); break;
        case 33: ENTER(33); break;
        }
        u32 esp_after = enter_out[0];
        print(" L%d esp=-%x ebp=-%x [", levels[k], top - esp_after, top - enter_out[1]);
        for (u32 *p = (u32 *)esp_after; p < (u32 *)top; p++) {
            u32 x = *p;
            if (x >= (u32)fake && x < (u32)(fake + 8))
                print(" f%d", (x - (u32)fake) / 4);
            else if (x >= (u32)enter_buf && x < (u32)(enter_buf + 32))
                print(" b-%x", top - x);
            else
                print(" %x", x);
        }
        print(" ] leave esp=-%x ebp=f%d", top - enter_out[2], (enter_out[3] - (u32)fake) / 4);
    }
    print("\n");
}

/* ---- BOUND, INTO ---- */
static const short wbounds[2] = { -5, 5 };
static const int dbounds[2] = { 100, 200 };

extern char bw_at[], bw_resume[], bd_resume[], into_after[];

static void bound_into(void)
{
    nfaults = 0;
    resume = (u32)bw_resume;
    __asm__ volatile("mov $6, %%ax; bw_at: boundw %%ax, (%0); bw_resume:" :: "r"(wbounds)
                     : "eax", "memory");
    print("bound: w 6 #%d at=%d", last.num, last.eip == (u32)bw_at);
    last.num = 0;
    __asm__ volatile("mov $-5, %%ax; boundw %%ax, (%0)" :: "r"(wbounds) : "eax", "memory");
    __asm__ volatile("mov $200, %%eax; boundl %%eax, (%0)" :: "r"(dbounds) : "eax", "memory");
    print(" w -5 and d 200 ok=%d", last.num == 0);
    resume = (u32)bd_resume;
    __asm__ volatile("mov $99, %%eax; boundl %%eax, (%0); bd_resume:" :: "r"(dbounds)
                     : "eax", "memory");
    print(" d 99 #%d err=%x", last.num, last.err);
    last.num = 0;
    __asm__ volatile("mov $1, %%eax; add $0, %%eax; into" ::: "eax", "cc");  /* OF=0 */
    print(" into: OF=0 #%d", last.num);
    __asm__ volatile("mov $0x7fffffff, %%eax; add $1, %%eax; into; into_after:" ::: "eax", "cc");
    print(" OF=1 #%d after=%d faults=%d\n", last.num, last.eip == (u32)into_after, nfaults);
}

/* ---- a 16-bit expand-down stack ---- */
volatile u32 small_esp, small_frame[3], s16[4];
extern char ss_at[], ss_resume[];

static void stack16(void)
{
    /* PUSH with SP=0: SP wraps to FFFC, the doubleword at 0xfffc; POP back to 0 */
    *(volatile u32 *)0xfffc = 0;
    __asm__ volatile("mov %%esp, %%esi; mov %%ss, %%edi; mov %0, %%ss; mov $0xabcd0000, %%esp;"
                     "pushl $0x600dcafe; mov %%esp, s16; popl %%eax; mov %%esp, s16+4;"
                     "mov %%eax, s16+8; mov %%edi, %%ss; mov %%esi, %%esp"
                     :: "r"(SS16) : "eax", "esi", "edi", "memory");
    print("stack16: push at sp=0 esp=%x pop esp=%x value=%x mem=%x", s16[0], s16[1], s16[2],
          *(volatile u32 *)0xfffc);
    /* below the limit (offsets 0..6fff): #SS(0) */
    resume = (u32)ss_resume;
    __asm__ volatile("mov %%esp, %%esi; mov %%ss, %%edi; mov %0, %%ss; mov $0x9000, %%esp;"
                     "ss_at: movl $1, %%ss:0x6ffe; ss_resume: mov %%edi, %%ss; mov %%esi, %%esp"
                     :: "r"(SS16) : "esi", "edi", "memory");
    print(" | below limit #%d err=%x at=%d", last.num, last.err, last.eip == (u32)ss_at);
    /* a near CALL and RET on it, then INT 0x40: the frame at SS:SP-12, ESP's upper
     * half kept, and IRET back */
    __asm__ volatile("mov %%esp, %%esi; mov %%ss, %%edi; mov %0, %%ss; mov $0x00308000, %%esp;"
                     "call 71f; jmp 72f; 71: ret; 72: int $0x40; mov %%esp, s16+12;"
                     "mov %%edi, %%ss; mov %%esi, %%esp"
                     :: "r"(SS16) : "eax", "ebx", "esi", "edi", "memory");
    print(" | int: in handler esp=%x frame cs=%x fl=%x after esp=%x\n", small_esp,
          small_frame[1], small_frame[2] & 0xffff, s16[3]);
}

void main(void)
{
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    print("strpg: start\n");
    tables();
    strings();
    locked();
    enter_leave();
    bound_into();
    stack16();
    print("strpg: done\n");
    outb(0xf4, 0);
    for (;;)
        __asm__ volatile("hlt");
}

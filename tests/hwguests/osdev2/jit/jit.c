/* jitk: a toy JIT kernel.  It generates x86 code at run time into an arena of frames
 * it sees three ways (identity-mapped X, where it runs it; a write alias W at
 * 0x40000000, where the "JIT" emits it; a second execution alias X2 at 0x50000000)
 * and then changes that code in every way a JIT, a live patcher or a debugger does:
 *
 *   - through another virtual alias of the same frame (SDM Vol. 3 §11.6: a write to a
 *     code page through any linear address is seen by the next fetch);
 *   - the immediate of the very next instruction, from inside the block, also when the
 *     block runs through the other alias;
 *   - a loop body that increments its own immediate; a callee that rewrites the call
 *     that called it; a REP MOVSB that overwrites the instructions right after it; a
 *     store behind EIP into the instruction that already ran;
 *   - XCHG, LOCK CMPXCHG, CMPXCHG8B, BTS, REP STOSB, PUSH (ESP inside the code), FNSTCW
 *     and ADD to memory as the writing instruction;
 *   - the code's page made not present (#PF err 0 on the fetch, SDM §4.7), remapped to
 *     another frame, and an instruction that straddles into a not-present page (CR2 is
 *     the second page, the saved EIP the instruction); another CR3 giving the same
 *     linear address other code; user code whose own page turns supervisor under it
 *     and a jump from ring 3 into a supervisor page (err 5: no I/D bit without
 *     NX/SMEP, §4.7);
 *   - the Linux text_poke_bp dance: INT3 over the first byte, the handler emulating
 *     the new instruction, then the rest written and the first byte last;
 *   - single-stepping generated code (TF, §17.3.1.4) across a store that patches the
 *     next instruction, REP MOVSB, MOV SS and POP SS (no trap until after the next
 *     instruction, §6.8.3) and the POPF that clears TF, with DR6 at each step;
 *   - an execution breakpoint (DR0) on generated code that is then rewritten, a write
 *     breakpoint (DR1) on a code byte hit through one alias and not the other, and
 *     DR7.GD (#DB with BD before the MOV to a debug register, §17.2.4).
 *
 * Expected lines: tests/test_osdev2.py (checked on QEMU). */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

struct tf {
    u32 edi, esi, ebp, esp_, ebx, edx, ecx, eax;
    u32 vec, err, eip, cs, eflags, esp, ss;
};

/* ---- the console ---- */
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void cputc(char c)
{
    while (!(inb(0x3f8 + 5) & 0x20))
        ;
    outb(0x3f8, c);
}

static void cputs(const char *s)
{
    for (; *s; s++) {
        if (*s == '\n')
            cputc('\r');
        cputc(*s);
    }
}

static void cputx(u32 v)
{
    char b[9];
    int i = 8;
    b[8] = 0;
    do {
        b[--i] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    cputs(b + i);
}

/* say("text %x %s\n", a, s): only %x and %s */
static void say(const char *f, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, f);
    for (; *f; f++) {
        if (f[0] == '%' && f[1] == 'x') {
            cputx(__builtin_va_arg(ap, u32));
            f++;
        } else if (f[0] == '%' && f[1] == 's') {
            cputs(__builtin_va_arg(ap, const char *));
            f++;
        } else {
            char s[2] = { *f, 0 };
            cputs(s);
        }
    }
    __builtin_va_end(ap);
}

static void __attribute__((noreturn)) bye(u8 code)
{
    outb(0xf4, code);
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* ---- descriptor tables ---- */
static u64 gdt[6] __attribute__((aligned(8)));
static u64 idt[64] __attribute__((aligned(8)));
static u32 tss[26] __attribute__((aligned(16)));
extern u32 ent_table[33];
extern char stack_top[];

static u64 seg(u32 base, u32 limit, u32 type)
{
    return (limit & 0xffff) | ((u64)(base & 0xffffff) << 16) | ((u64)type << 40) |
           ((u64)(limit >> 16 & 15) << 48) | ((u64)(base >> 24) << 56);
}

static void set_gate(int v, u32 fn, int dpl)
{
    idt[v] = (fn & 0xffff) | (0x08u << 16) | ((u64)(0x8e | dpl << 5) << 40) |
             ((u64)(fn >> 16) << 48);
}

static void tables(void)
{
    gdt[1] = seg(0, 0xfffff, 0xc09a);
    gdt[2] = seg(0, 0xfffff, 0xc092);
    gdt[3] = seg(0, 0xfffff, 0xc0fa);
    gdt[4] = seg(0, 0xfffff, 0xc0f2);
    gdt[5] = seg((u32)tss, sizeof tss - 1, 0x0089);
    tss[1] = (u32)stack_top - 4096;        /* esp0: below the boot stack's top */
    tss[2] = 0x10;
    tss[25] = sizeof tss << 16;            /* no I/O bitmap */
    for (int v = 0; v < 32; v++)
        set_gate(v, ent_table[v], 0);
    set_gate(0x30, ent_table[32], 3);
    struct { u16 lim; u32 base; } __attribute__((packed))
        g = { sizeof gdt - 1, (u32)gdt }, i = { sizeof idt - 1, (u32)idt };
    __asm__ volatile("lgdt %0; lidt %1; ljmp $8, $1f; 1:"
                     "mov $0x10, %%ax; mov %%ax, %%ds; mov %%ax, %%es; mov %%ax, %%ss;"
                     "mov %%ax, %%fs; mov %%ax, %%gs; mov $0x28, %%ax; ltr %%ax"
                     :: "m"(g), "m"(i) : "eax", "memory");
}

/* ---- paging: the arena and its aliases ---- */
#define ARENA 0x00400000u                  /* 12 frames of generated code */
#define WA    0x40000000u                  /* write alias */
#define XA2   0x50000000u                  /* second execution alias */
#define UVA   0x60000000u                  /* user code, user stack */
#define UFRAME (ARENA + 0xa000)
#define P 1
#define RW 2
#define US 4

static u32 pd[1024] __attribute__((aligned(4096)));
static u32 pd2[1024] __attribute__((aligned(4096)));
static u32 pt_id[2][1024] __attribute__((aligned(4096)));
static u32 pt_w[1024] __attribute__((aligned(4096)));
static u32 pt_x[1024] __attribute__((aligned(4096)));
static u32 pt_x2[1024] __attribute__((aligned(4096)));
static u32 pt_u[1024] __attribute__((aligned(4096)));

static inline void invlpg(u32 va) { __asm__ volatile("invlpg (%0)" :: "r"(va) : "memory"); }
static inline void load_cr3(u32 *p) { __asm__ volatile("mov %0, %%cr3" :: "r"(p) : "memory"); }
static inline u32 read_cr2(void) { u32 v; __asm__ volatile("mov %%cr2, %0" : "=r"(v)); return v; }

static void paging(void)
{
    for (u32 i = 0; i < 2048; i++)
        pt_id[i >> 10][i & 1023] = i << 12 | RW | P;
    for (u32 i = 0; i < 12; i++) {
        pt_w[i] = (ARENA + i * 4096) | RW | P;
        pt_x[i] = (ARENA + i * 4096) | RW | P;
    }
    pt_u[0] = UFRAME | US | RW | P;
    pt_u[1] = (UFRAME + 0x1000) | US | RW | P;
    pd[0] = (u32)pt_id[0] | RW | P;
    pd[1] = (u32)pt_id[1] | RW | P;
    pd[WA >> 22] = (u32)pt_w | RW | P;
    pd[XA2 >> 22] = (u32)pt_x | RW | P;
    pd[UVA >> 22] = (u32)pt_u | US | RW | P;
    for (u32 i = 0; i < 1024; i++) {
        pd2[i] = pd[i];
        pt_x2[i] = pt_x[i];
    }
    pt_x2[6] = (ARENA + 0x8000) | RW | P;
    pd2[XA2 >> 22] = (u32)pt_x2 | RW | P;
    for (u32 *p = (u32 *)ARENA; p < (u32 *)(ARENA + 0xc000); p++)
        *p = 0;
    load_cr3(pd);
    __asm__ volatile("mov %%cr0, %%eax; or $0x80010000, %%eax; mov %%eax, %%cr0" ::: "eax");
}

/* ---- the emitter ---- */
static u32 at;                             /* arena offset being emitted at */
#define W(o) ((volatile u8 *)(WA + (o)))
#define X(o) (ARENA + (o))
#define X2(o) (XA2 + (o))
static void org(u32 o) { at = o; }
static void b(u8 x) { *W(at++) = x; }
static void b2(u8 x, u8 y) { b(x); b(y); }
static void d(u32 x) { b(x); b(x >> 8); b(x >> 16); b(x >> 24); }
static void mov_eax(u32 v) { b(0xb8); d(v); }
static void ret(void) { b(0xc3); }
static void wr32(u32 o, u32 v) { *(volatile u32 *)W(o) = v; }

/* call generated code at linear address fn with ECX = arg; its EAX back */
static u32 run(u32 fn, u32 arg)
{
    u32 r;
    __asm__ volatile("call *%2" : "=a"(r), "+c"(arg) : "r"(fn)
                     : "edx", "esi", "edi", "memory", "cc");
    return r;
}

/* ---- traps ---- */
enum { PF_NONE, PF_MAP_X2, PF_USER };
static int pf_mode;
static u32 pf_n, pf_cr2, pf_err, pf_eip;
static u32 db_n, db_eip[40], db_dr6[40], db_rf;   /* db_rf: set RF on breakpoint hits */
static u32 bp_n, bp_eip, bp_emul_eax, bp_emul_len;
static u32 sys_n, sys_eax[8];
static u32 user_page_flip;
void leave_user(u32 v) __attribute__((noreturn));
u32 enter_user(u32 eip, u32 esp);

static u32 rd_dr6(void) { u32 v; __asm__ volatile("mov %%dr6, %0" : "=r"(v)); return v; }
static void wr_dr6(u32 v) { __asm__ volatile("mov %0, %%dr6" :: "r"(v) : "memory"); }
static void wr_dr7(u32 v) { __asm__ volatile("mov %0, %%dr7" :: "r"(v) : "memory"); }

void on_trap(struct tf *t)
{
    switch (t->vec) {
    case 14:
        pf_n++;
        pf_cr2 = read_cr2();
        pf_err = t->err;
        pf_eip = t->eip;
        if (pf_mode == PF_MAP_X2 && pf_cr2 >= XA2 && pf_cr2 < XA2 + 0xc000) {
            pt_x[(pf_cr2 - XA2) >> 12] |= P;
            invlpg(pf_cr2);
            return;
        }
        if (pf_mode == PF_USER && (t->cs & 3) == 3) {
            if (pf_cr2 >> 22 == UVA >> 22) {       /* its own page: give it back */
                pt_u[(pf_cr2 - UVA) >> 12] |= US;
                invlpg(pf_cr2);
            } else {                                /* anywhere else: skip the jump */
                t->eip = UVA + 17;
            }
            sys_eax[sys_n++ & 7] = 0xf000 | pf_err;
            return;
        }
        break;
    case 1:
        if (db_n < 40) {
            db_eip[db_n] = t->eip;
            db_dr6[db_n] = rd_dr6();
        }
        db_n++;
        wr_dr6(0);
        if (db_rf)
            t->eflags |= 0x10000;
        return;
    case 3:                                        /* text_poke_bp: emulate the new insn */
        bp_n++;
        bp_eip = t->eip;
        t->eax = bp_emul_eax;
        t->eip += bp_emul_len - 1;
        return;
    case 0x30:
        sys_eax[sys_n++ & 7] = t->eax;
        if (t->eax == 1 && user_page_flip) {       /* take the user's code page away */
            pt_u[0] &= ~US;
            invlpg(UVA);
        }
        if (t->eax == 3)
            leave_user(t->ebx);
        return;
    }
    say("unexpected trap %x err=%x eip=%x cs=%x cr2=%x\n", t->vec, t->err, t->eip, t->cs,
        read_cr2());
    bye(2);
}

/* ---- the tests ---- */
static void t_alias(void)
{
    org(0x000);
    mov_eax(0x11111111);
    ret();
    u32 r1 = run(X(0), 0);
    wr32(1, 0x22222222);
    u32 r2 = run(X(0), 0), r3 = run(X2(0), 0);
    *(volatile u32 *)X(1) = 0x33333333;
    u32 r4 = run(X2(0), 0), r5 = run(X(0), 0);
    say("alias: %x %x %x %x %x\n", r1, r2, r3, r4, r5);
}

static void t_patch_ahead(void)
{
    org(0x040);
    b2(0x89, 0x0d); d(X(0x040 + 7));       /* mov %ecx, next+1 */
    mov_eax(0);                            /* next: mov $0, %eax */
    ret();
    u32 r1 = run(X(0x40), 5), r2 = run(X(0x40), 6), r3 = run(X2(0x40), 7), r4 = run(X2(0x40), 8);
    say("patch ahead: %x %x %x %x\n", r1, r2, r3, r4);
}

static void t_loop(void)
{
    org(0x080);
    b2(0x31, 0xc0);                        /* xor %eax, %eax */
    b(0xb9); d(5);                         /* mov $5, %ecx */
    b(0x83); b2(0xc0, 1);                  /* L: add $1, %eax   (imm at +9) */
    b2(0xfe, 0x05); d(X(0x080 + 9));       /* incb L+2 */
    b(0x49);                               /* dec %ecx */
    b2(0x75, 0xf4);                        /* jnz L */
    ret();
    u32 r1 = run(X(0x80), 0), r2 = run(X(0x80), 0);
    say("own loop body: %x %x\n", r1, r2);
}

static void t_call_target(void)
{
    u32 f = 0xc0, g1 = 0xe0, g2 = 0xf0;
    org(f);
    b(0xe8); d(g1 - (f + 5));
    ret();
    org(g1);                               /* g1 points its caller's call at g2 */
    b2(0xc7, 0x05); d(X(f + 1)); d(g2 - (f + 5));
    mov_eax(0xa1);
    ret();
    org(g2);
    mov_eax(0xb2);
    ret();
    u32 r1 = run(X(f), 0), r2 = run(X(f), 0);
    wr32(f + 1, g1 - (f + 5));
    u32 r3 = run(X(f), 0), r4 = run(X(f), 0);
    say("call target: %x %x %x %x\n", r1, r2, r3, r4);
}

static void t_rep_overwrite(void)
{
    u32 f = 0x100, src = 0x1c0;
    org(src);
    mov_eax(0x44556677);
    ret();
    org(f);
    b(0xbe); d(X(src));                    /* mov $src, %esi */
    b(0xbf); d(X(f + 18));                 /* mov $f+18, %edi */
    b(0xb9); d(6);                         /* mov $6, %ecx */
    b2(0xf3, 0xa4);                        /* rep movsb: over what follows */
    b(0x90);
    mov_eax(0xdead);                       /* f+18 */
    ret();
    u32 r1 = run(X(f), 0);
    say("rep movsb over the next instructions: %x\n", r1);
}

static void t_behind(void)
{
    u32 f = 0x200;
    org(f);
    b2(0xb0, 0x05);                        /* mov $5, %al */
    b2(0xc6, 0x05); d(X(f + 1)); b(0x09);  /* movb $9, f+1: the instruction that ran */
    b2(0x04, 0x01);                        /* add $1, %al */
    b(0x0f); b2(0xb6, 0xc0);               /* movzbl %al, %eax */
    ret();
    u32 r1 = run(X(f), 0), r2 = run(X(f), 0);
    say("store behind eip: %x %x\n", r1, r2);
}

static void t_forms(void)
{
    u32 k = 0x7000, r[9];
    u32 one = 0x12345678;
    /* XCHG */
    org(k); mov_eax(1); ret();
    u32 v = 0xa0;
    __asm__ volatile("xchg %0, (%1)" : "+r"(v) : "r"(X(k + 1)) : "memory");
    r[0] = run(X(k), 0);
    /* LOCK CMPXCHG */
    u32 old = 0xa0, nw = 0xa1;
    __asm__ volatile("lock cmpxchg %2, (%1)" : "+a"(old) : "r"(X(k + 1)), "r"(nw) : "memory", "cc");
    r[1] = run(X(k), 0);
    /* CMPXCHG8B over mov + ret */
    {
        u32 elo = *(volatile u32 *)X(k + 1), ehi = *(volatile u32 *)X(k + 5);
        u32 lo = 0xa2, hi = ehi;
        __asm__ volatile("lock cmpxchg8b (%4)" : "+a"(elo), "+d"(ehi) : "b"(lo), "c"(hi), "r"(X(k + 1))
                         : "memory", "cc");
        r[2] = run(X(k), 0);
    }
    /* BTS: inc %eax (0x40) becomes dec %eax (0x48) */
    org(k + 0x20); b2(0x31, 0xc0); b(0x40); ret();
    u32 a = run(X(k + 0x20), 0);
    __asm__ volatile("btsl $3, (%0)" :: "r"(X(k + 0x22)) : "memory", "cc");
    r[3] = run(X(k + 0x20), 0) ^ a << 4;
    /* REP STOSB: NOPs over an ADD */
    org(k + 0x40); mov_eax(0x11); b(0x05); d(0x22); ret();
    u32 s1 = run(X(k + 0x40), 0);
    {
        u32 dst = X(k + 0x45), n = 5;
        __asm__ volatile("rep stosb" : "+D"(dst), "+c"(n) : "a"(0x90) : "memory");
    }
    r[4] = run(X(k + 0x40), 0) << 8 | s1;
    /* PUSH with ESP inside the code */
    org(k + 0x60); mov_eax(0); ret();
    __asm__ volatile("mov %%esp, %%edx; mov %0, %%esp; push %1; mov %%edx, %%esp"
                     :: "r"(X(k + 0x65)), "r"(one) : "edx", "memory");
    r[5] = run(X(k + 0x60), 0);
    /* FNSTCW */
    org(k + 0x80); mov_eax(0); ret();
    __asm__ volatile("fninit; fnstcw (%0)" :: "r"(X(k + 0x81)) : "memory");
    r[6] = run(X(k + 0x80), 0);
    /* ADD to the immediate, twice (translated in between) */
    __asm__ volatile("addl $0x100, (%0)" :: "r"(X(k + 0x81)) : "memory", "cc");
    u32 a1 = run(X(k + 0x80), 0);
    __asm__ volatile("addl $0x100, (%0)" :: "r"(X(k + 0x81)) : "memory", "cc");
    r[7] = run(X(k + 0x80), 0) - a1;
    /* REP MOVSB backwards (DF=1), overlapping its own source */
    org(k + 0xa0); mov_eax(0x01020304); ret(); b(0xc3);
    {
        u32 si = X(k + 0xa3), di = X(k + 0xa4), n = 3;   /* shift imm bytes 1..3 up by one */
        __asm__ volatile("std; rep movsb; cld" : "+S"(si), "+D"(di), "+c"(n) :: "memory");
    }
    r[8] = run(X(k + 0xa0), 0);
    say("forms: xchg %x cmpxchg %x cmpxchg8b %x bts %x stos %x push %x fnstcw %x add %x movs-back %x\n",
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]);
}

static void t_not_present(void)
{
    org(0x2000); mov_eax(0x5a5a); ret();
    org(0x3000); mov_eax(0x3b3b); ret();
    u32 r1 = run(X2(0x2000), 0);
    pt_x[2] &= ~P;
    invlpg(X2(0x2000));
    pf_mode = PF_MAP_X2;
    pf_n = 0;
    u32 r2 = run(X2(0x2000), 0);
    say("not present: %x, #PF %x err=%x cr2=%x eip=%x -> %x\n", r1, pf_n, pf_err, pf_cr2, pf_eip, r2);
    pt_x[2] = (ARENA + 0x3000) | RW | P;   /* same linear page, another frame */
    invlpg(X2(0x2000));
    u32 r3 = run(X2(0x2000), 0);
    pt_x[2] = (ARENA + 0x2000) | RW | P;
    invlpg(X2(0x2000));
    u32 r4 = run(X2(0x2000), 0);
    say("remapped: %x then %x\n", r3, r4);

    /* an instruction straddling into a not-present page */
    org(0x4ffd); mov_eax(0x0badcafe); ret();
    u32 s0 = run(X2(0x4ffd), 0);
    pt_x[5] &= ~P;
    invlpg(X2(0x5000));
    pf_n = 0;
    u32 s1 = run(X2(0x4ffd), 0);
    say("straddle: %x, #PF %x err=%x cr2=%x eip=%x -> %x\n", s0, pf_n, pf_err, pf_cr2, pf_eip, s1);
    *(volatile u32 *)W(0x4ffe) = 0x600dd00d;         /* a store straddling both frames */
    u32 s2 = run(X2(0x4ffd), 0);
    *(volatile u16 *)W(0x4fff) = 0xf00f;
    u32 s3 = run(X2(0x4ffd), 0);
    say("straddling stores: %x %x\n", s2, s3);
    pf_mode = PF_NONE;

    /* the same linear address, another page directory */
    org(0x6000); mov_eax(0x6161); ret();
    org(0x8000); mov_eax(0x6262); ret();
    u32 c1 = run(X2(0x6000), 0);
    load_cr3(pd2);
    u32 c2 = run(X2(0x6000), 0);
    load_cr3(pd);
    u32 c3 = run(X2(0x6000), 0);
    say("cr3: %x %x %x\n", c1, c2, c3);
}

static void t_user(void)
{
    volatile u8 *u = (volatile u8 *)UFRAME;   /* the user frame, through the identity map */
    u32 i = 0;
#define UB(x) (u[i++] = (x))
    UB(0xb8); UB(1); UB(0); UB(0); UB(0);      /* +0  mov $1, %eax */
    UB(0xcd); UB(0x30);                        /* +5  int $0x30: its page turns supervisor */
    UB(0xb8); UB(2); UB(0); UB(0); UB(0);      /* +7  mov $2, %eax  (fetch faults) */
    u32 rel = X(0x9000) - (UVA + 17);
    UB(0xe9); UB(rel); UB(rel >> 8); UB(rel >> 16); UB(rel >> 24); /* +12 jmp into the kernel */
    UB(0xcd); UB(0x30);                        /* +17 int $0x30 with eax 2 */
    UB(0xb8); UB(3); UB(0); UB(0); UB(0);      /* +19 mov $3, %eax */
    UB(0xbb); UB(0x55); UB(0); UB(0); UB(0);   /* +24 mov $0x55, %ebx */
    UB(0xcd); UB(0x30);                        /* +29 int $0x30: leave */
    org(0x9000); mov_eax(0xbad); ret();
    pf_mode = PF_USER;
    user_page_flip = 1;
    pf_n = 0;
    u32 v = enter_user(UVA, UVA + 0x2000);
    pf_mode = PF_NONE;
    say("user: %x, #PF %x, calls %x %x %x %x %x\n", v, pf_n, sys_eax[0], sys_eax[1], sys_eax[2],
        sys_eax[3], sys_eax[4]);
}

static void t_int3(void)
{
    u32 f = 0x1200;
    org(f); mov_eax(5); ret();
    u32 r1 = run(X(f), 0);
    *W(f) = 0xcc;                           /* 1: int3 over the first byte */
    bp_emul_eax = 0x77;
    bp_emul_len = 5;
    u32 r2 = run(X(f), 0);
    wr32(f + 1, 0x77);                      /* 2: the rest */
    u32 r3 = run(X(f), 0);
    *W(f) = 0xb8;                           /* 3: the first byte */
    u32 r4 = run(X(f), 0);
    say("int3 patch: %x %x (bp at +%x) %x %x, %x hits\n", r1, r2, bp_eip - X(f), r3, r4, bp_n);
}

static void show_steps(const char *what, u32 base, u32 r)
{
    u32 bad = 0;
    say("%s: eax=%x, %x steps at", what, r, db_n);
    for (u32 i = 0; i < db_n && i < 40; i++) {
        say(" %x", db_eip[i] - base);
        if (db_dr6[i] != 0xffff4ff0)
            bad++;
    }
    say(", dr6 other than ffff4ff0: %x\n", bad);
}

static void t_step(void)
{
    u32 s = 0x1000, src = 0x1800, dst = 0x1810;
    org(src); d(0x00616263);
    org(s);
    b(0x9c);                                 /* 0  pushf */
    b2(0x81, 0x0c); b(0x24); d(0x100);       /* 1  orl $0x100, (%esp) */
    b(0x9d);                                 /* 8  popf: TF */
    mov_eax(1);                              /* 9 */
    b2(0xc6, 0x05); d(X(s + 21)); b(0x40);   /* 14 movb $0x40, s+21 */
    b(0x48);                                 /* 21 dec %eax -> inc %eax */
    b(0xbe); d(X(src));                      /* 22 */
    b(0xbf); d(X(dst));                      /* 27 */
    b(0xb9); d(3);                           /* 32 */
    b2(0xf3, 0xa4);                          /* 37 rep movsb */
    b2(0x8c, 0xd2);                          /* 39 mov %ss, %edx */
    b2(0x8e, 0xd2);                          /* 41 mov %edx, %ss: no step after the next */
    b(0x41);                                 /* 43 inc %ecx */
    b(0xba); d(0x10);                        /* 44 mov $0x10, %edx */
    b2(0x8e, 0xd2);                          /* 49 mov %edx, %ss (RPL 0) */
    b(0x41);                                 /* 51 inc %ecx */
    b2(0x6a, 0x10);                          /* 52 push $0x10 */
    b(0x17);                                 /* 54 pop %ss */
    b(0x41);                                 /* 55 inc %ecx */
    b(0x9c);                                 /* 56 pushf */
    b2(0x81, 0x24); b(0x24); d(~0x100u);     /* 57 andl $~0x100, (%esp) */
    b(0x9d);                                 /* 64 popf: steps still */
    ret();                                   /* 65 */
    wr_dr6(0);
    db_n = 0;
    u32 r1 = run(X(s), 0);
    show_steps("stepped", X(s), r1);
    u32 moved = *(volatile u32 *)X(dst);
    *W(s + 21) = 0x48;
    db_n = 0;
    u32 r2 = run(X2(s), 0);
    show_steps("stepped via the alias", X2(s), r2);
    say("moved %x\n", moved);
}

static void t_breakpoints(void)
{
    u32 f = 0x1100, w = 0x1140;
    org(f); mov_eax(1); mov_eax(2); ret();
    org(w); b2(0xc6, 0x05); d(X(f + 6)); b(7); ret();   /* movb $7, f+6 */
    wr_dr6(0);
    __asm__ volatile("mov %0, %%dr0" :: "r"(X(f + 5)) : "memory");
    wr_dr7(0x1);                             /* L0, execute */
    db_n = 0;
    db_rf = 1;
    u32 r1 = run(X(f), 0);
    wr32(f + 6, 3);                          /* rewrite the instruction under the breakpoint */
    u32 r2 = run(X(f), 0);
    u32 r3 = run(X2(f), 0);                  /* another linear address: no hit */
    say("dr0 exec: %x %x %x, hits %x at +%x +%x dr6 %x %x\n", r1, r2, r3, db_n,
        db_eip[0] - X(f), db_eip[1] - X(f), db_dr6[0], db_dr6[1]);

    __asm__ volatile("mov %0, %%dr1" :: "r"(X(f + 6)) : "memory");
    wr_dr7(0x1 | 0x4 | (1u << 20));          /* L1, write, 1 byte */
    db_n = 0;
    *W(f + 6) = 9;                           /* through the write alias: no hit */
    u32 n0 = db_n;
    run(X(w), 0);                            /* through X: a trap after the store */
    u32 r4 = run(X(f), 0);
    say("dr1 write: alias hits %x, store hits at +%x dr6 %x, then exec hit dr6 %x -> %x\n", n0,
        db_eip[0] - X(w), db_dr6[0], db_dr6[1], r4);
    wr_dr7(0);

    /* DR7.GD: the next MOV to or from a debug register is #DB with BD, before it */
    u32 at_mov, got;
    db_n = 0;
    db_rf = 0;
    wr_dr7(0x2000);
    __asm__ volatile("movl $1f, %0\n1:\tmov %%dr7, %1" : "=r"(at_mov), "=r"(got) :: "memory");
    say("dr7.gd: hits %x at mov %x dr6 %x, then dr7 %x\n", db_n, db_eip[0] == at_mov,
        db_dr6[0], got);
    wr_dr7(0);
}

void jit_main(void)
{
    outb(0x21, 0xff);                        /* PICs masked: no IRQ reaches the IDT */
    outb(0xa1, 0xff);
    outb(0x3f8 + 1, 0);
    tables();
    paging();
    say("jitk: start\n");
    t_alias();
    t_patch_ahead();
    t_loop();
    t_call_target();
    t_rep_overwrite();
    t_behind();
    t_forms();
    t_not_present();
    t_user();
    t_int3();
    t_step();
    t_breakpoints();
    say("jitk: done\n");
    bye(0);
}

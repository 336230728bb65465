/* remap: code pages remapped under chained calls.  A caller page at
 * 0x401000 holds direct and indirect transfers to a callee page at
 * 0x402000 and to an instruction that straddles 0x402ffd..0x403001; the
 * guest calls them again and again (so binary translation chains them),
 * then changes the mappings: a PTE and INVLPG, a CR3 switch to a second
 * page directory, a PTE change followed by a CR3 reload, a 4 MiB PDE, and
 * unmapped targets.
 *
 * SDM Vol. 3 §4.10.4: after INVLPG, or a MOV to CR3 (no global pages
 * here), instruction fetches use the new translation.  §6.15 (#PF): a
 * fetch from a not-present page faults with error code 0 (no I/D bit
 * without PAE/NX), CR2 = the address fetched, and the saved EIP is the
 * instruction's: for a CALL/JMP/RET to a not-present page, the target
 * (the transfer itself completed, so a CALL's return address is on the
 * stack); for an instruction whose second page is missing, the
 * instruction's first byte, with CR2 = the start of the second page. */
#include "rt.h"

extern char resume_pop[], resume_ret[];

#define CALLER   0x00401000u
#define CALLEE   0x00402000u
#define STRADDLE 0x00402ffdu
#define TAIL     0x00403000u
#define BIGLIN   0x01c00000u        /* PDE 7: a 4 MiB page */
#define F_CALLER 0x00c00000u        /* frames, identity-mapped by the 4 MiB page at 12 MiB */
#define F_ONE    0x00c01000u
#define F_TWO    0x00c02000u
#define F_THREE  0x00c03000u
#define G_ONE    0x00c04000u
#define G_TWO    0x00c05000u
#define BIG_A    0x01400000u
#define BIG_B    0x01800000u
#define PD2      ((volatile u32 *)0x00305000u)
#define PT1B     ((volatile u32 *)0x00306000u)

typedef u32 (*fn0)(void);
static fn0 const call_direct = (fn0)(CALLER + 0x00);
static fn0 const jmp_direct = (fn0)(CALLER + 0x10);
static fn0 const call_indirect = (fn0)(CALLER + 0x20);
static fn0 const ret_to = (fn0)(CALLER + 0x30);
static fn0 const call_straddle = (fn0)(CALLER + 0x40);
static fn0 const call_big = (fn0)(CALLER + 0x50);

static void put32(u8 *p, u32 v)
{
    p[0] = (u8)v; p[1] = (u8)(v >> 8); p[2] = (u8)(v >> 16); p[3] = (u8)(v >> 24);
}

static void rel32(u8 *p, u8 op, u32 at, u32 target)
{
    p[0] = op;
    put32(p + 1, target - (at + 5));
}

/* mov $value, %eax; ret -- and the first bytes of the straddler */
static void callee(u32 frame, u32 value)
{
    u8 *p = (u8 *)frame;
    memset(p, 0xcc, 0x1000);
    p[0] = 0xb8;
    put32(p + 1, value);
    p[5] = 0xc3;
    p[0xffd] = 0xb8;                        /* mov $imm32, %eax: 2 bytes here ... */
    p[0xffe] = 0x44;
    p[0xfff] = 0x33;
}

static void tail(u32 frame, u8 b2, u8 b3)
{
    u8 *p = (u8 *)frame;
    memset(p, 0xcc, 0x1000);
    p[0] = b2;                               /* ... 2 bytes there */
    p[1] = b3;
    p[2] = 0xc3;
}

static void build(void)
{
    u8 *c = (u8 *)F_CALLER;
    memset(c, 0xcc, 0x1000);
    rel32(c + 0x00, 0xe8, CALLER + 0x00, CALLEE);       /* call CALLEE; ret */
    c[0x05] = 0xc3;
    rel32(c + 0x10, 0xe9, CALLER + 0x10, CALLEE);       /* jmp CALLEE */
    c[0x20] = 0xba;                                      /* mov $CALLEE, %edx; call *%edx; ret */
    put32(c + 0x21, CALLEE);
    c[0x25] = 0xff; c[0x26] = 0xd2; c[0x27] = 0xc3;
    c[0x30] = 0x68;                                      /* push $CALLEE; ret */
    put32(c + 0x31, CALLEE);
    c[0x35] = 0xc3;
    rel32(c + 0x40, 0xe8, CALLER + 0x40, STRADDLE);     /* call STRADDLE; ret */
    c[0x45] = 0xc3;
    rel32(c + 0x50, 0xe8, CALLER + 0x50, BIGLIN);       /* call BIGLIN; ret */
    c[0x55] = 0xc3;
    callee(F_ONE, 1);
    callee(F_TWO, 2);
    callee(F_THREE, 3);
    tail(G_ONE, 0x22, 0x11);
    tail(G_TWO, 0x66, 0x55);
    callee(BIG_A, 4);
    callee(BIG_B, 5);
}

static u32 all(void)
{
    /* every transfer, several times: 4 digits, one per kind */
    u32 r = 0;
    for (int i = 0; i < 4; i++)
        r = call_direct() * 1000 + jmp_direct() * 100 + call_indirect() * 10 + ret_to();
    return r;
}

static void pte(u32 lin, u32 frame)
{
    PT1[(lin >> 12) & 0x3ff] = frame ? (frame | PTE_P | PTE_W) : 0;
}

static void fault(const char *name, fn0 fn, char *resume, u32 mark)
{
    rt_expect_reset();
    rt_mark = mark;
    rt_resume = (u32)resume;
    u32 r = fn();
    rt_resume = 0;
    if (rt_exc.count == 0) {
        kprintf("%s: no exception, returned %u\n", name, r);
        return;
    }
    kprintf("%s: #%u err=0x%x eip=%s%d cr2=0x%x", name, rt_exc.vector, rt_exc.err,
            rt_exc.eip >= mark ? "+" : "-", rt_exc.eip >= mark ? rt_exc.eip - mark : mark - rt_exc.eip,
            rt_exc.cr2);
    if (resume == resume_pop)
        kprintf(" pushed=0x%x", r);
    putch('\n');
}

int main(void)
{
    kprintf("remap: start\n");
    build();
    rt_paging_init();
    pte(CALLER, F_CALLER);
    pte(CALLEE, F_ONE);
    pte(TAIL, G_ONE);
    /* a second address space: the same, except that the callee is F_THREE */
    for (int i = 0; i < 1024; i++) {
        PD2[i] = PD[i];
        PT1B[i] = PT1[i];
    }
    PD2[1] = (u32)PT1B | PTE_P | PTE_W | PTE_U;
    PT1B[2] = F_THREE | PTE_P | PTE_W;
    rt_paging_on(1);

    kprintf("mapped F_ONE: %u\n", all());
    pte(CALLEE, F_TWO);
    invlpg(CALLEE);
    kprintf("PTE -> F_TWO, invlpg: %u\n", all());
    write_cr3((u32)PD2);
    kprintf("CR3 -> second directory: %u\n", all());
    write_cr3(PD_ADDR);
    kprintf("CR3 -> first directory: %u\n", all());
    pte(CALLEE, F_ONE);
    write_cr3(PD_ADDR);
    kprintf("PTE -> F_ONE, CR3 reloaded: %u\n", all());
    PD[1] = (u32)PT1B | PTE_P | PTE_W | PTE_U;
    write_cr3(PD_ADDR);
    kprintf("PDE -> second table, CR3 reloaded: %u\n", all());
    PD[1] = (u32)PT1 | PTE_P | PTE_W | PTE_U;
    invlpg(CALLER);
    invlpg(CALLEE);
    invlpg(TAIL);
    kprintf("PDE restored, invlpg: %u\n", all());

    u32 s = 0;
    for (int i = 0; i < 4; i++)
        s = call_straddle();
    kprintf("straddling mov: 0x%08x\n", s);
    pte(TAIL, G_TWO);
    invlpg(TAIL);
    kprintf("second page -> G_TWO, invlpg: 0x%08x\n", call_straddle());
    pte(TAIL, 0);
    invlpg(TAIL);
    fault("second page unmapped", call_straddle, resume_pop, STRADDLE);

    pte(CALLEE, 0);
    invlpg(CALLEE);
    fault("unmapped, direct call", call_direct, resume_pop, CALLEE);
    fault("unmapped, direct jmp", jmp_direct, resume_ret, CALLEE);
    fault("unmapped, indirect call", call_indirect, resume_pop, CALLEE);
    fault("unmapped, ret", ret_to, resume_ret, CALLEE);
    pte(CALLEE, F_TWO);
    invlpg(CALLEE);
    kprintf("mapped F_TWO again: %u\n", all());

    u32 b = 0;
    PD[BIGLIN >> 22] = BIG_A | PDE_PS | PTE_P | PTE_W;
    invlpg(BIGLIN);
    for (int i = 0; i < 4; i++)
        b = b * 10 + call_big();
    PD[BIGLIN >> 22] = BIG_B | PDE_PS | PTE_P | PTE_W;
    invlpg(BIGLIN);
    b = b * 10 + call_big();
    kprintf("4 MiB page: %u\n", b);

    rt_paging_off();
    kprintf("remap: done\n");
    return 0;
}

/* smc: self-modifying and generated code.  Patched immediates and opcodes
 * are followed by a branch to the new code (SDM vol. 3, 11.6 "option 1"),
 * except smc_next/smc_ahead, which patch instructions straight ahead of the
 * store (11.6: writes that hit prefetched instructions are detected by
 * linear address on P6 and later).  The alias part writes code through one
 * linear address and executes it through another (11.6: code-cache
 * invalidation is by physical address).  Expected values are computed in
 * tests/test_hw_guests.py. */
#include "rt.h"

extern u32 smc_func(void);
extern u32 smc_func_imm;
extern u32 smc_loop(u32 n);
extern u32 smc_next(u32 v);
extern u32 smc_ahead(u32 v);
extern u32 smc_opcode(u32 which);
extern char tmpl_start[], tmpl_end[];

#define BUF ((volatile u8 *)0x00310000)     /* code buffer (identity) */
#define ALIAS ((volatile u8 *)0x00500000)   /* same frame via PT1 */

typedef u32 (*fn0)(void);
typedef u32 (*fn1)(u32);

static void emit_mov_ret(volatile u8 *p, u32 imm)
{
    p[0] = 0xb8;
    p[1] = (u8)imm;
    p[2] = (u8)(imm >> 8);
    p[3] = (u8)(imm >> 16);
    p[4] = (u8)(imm >> 24);
    p[5] = 0xc3;
}

int main(void)
{
    kprintf("smc: start\n");

    /* 1. patch the immediate of a function, call it again, in a loop */
    u32 sum = 0, x = 0, last = 0;
    for (u32 i = 0; i < 200; i++) {
        *(volatile u32 *)&smc_func_imm = i * 2654435761u;
        last = smc_func();
        sum += last;
        x ^= last;
    }
    kprintf("patched immediate x200: sum=0x%08x xor=0x%08x last=0x%08x\n", sum, x, last);

    /* 2. a loop that patches its own body */
    kprintf("self-patching loop: n=100 -> %u, n=7 -> %u\n", smc_loop(100), smc_loop(7));

    /* 3. patch the next instruction / a few instructions ahead */
    u32 a = 0;
    for (u32 i = 1; i <= 50; i++)
        a = a * 31 + smc_next(i * 0x01010101u);
    kprintf("next-instruction patch: 0x%08x 0x%08x, x50 hash=0x%08x\n",
            smc_next(0xcafe0001), smc_next(0xcafe0002), a);
    kprintf("patch 3 instructions ahead: 0x%08x 0x%08x\n", smc_ahead(0x1000), smc_ahead(0x2000));
    kprintf("opcode patch: inc->%u dec->%u nop->%u inc->%u\n",
            smc_opcode(0), smc_opcode(1), smc_opcode(2), smc_opcode(0));

    /* 4. generated code in a buffer, rewritten between calls */
    emit_mov_ret(BUF, 0x12345678);
    u32 g1 = ((fn0)BUF)();
    static const u8 inc2[] = { 0x31, 0xc0, 0x40, 0x40, 0xc3 };   /* xor eax,eax; inc; inc; ret */
    for (int i = 0; i < 5; i++)
        BUF[i] = inc2[i];
    u32 g2 = ((fn0)BUF)();
    emit_mov_ret(BUF + 3, 0x9abcdef0);      /* overlaps the old code at a new entry */
    u32 g3 = ((fn0)(BUF + 3))();
    u32 n = (u32)(tmpl_end - tmpl_start);
    void *dst = (void *)BUF;
    const void *src = tmpl_start;
    __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) :: "memory");
    u32 g4 = ((fn1)BUF)(10);
    kprintf("generated code: 0x%08x %u 0x%08x %u\n", g1, g2, g3, g4);

    /* 5. write through an alias, execute through the identity map (and the
     * other way round) */
    rt_paging_init();
    PT1[0x100] = 0x00310000 | PTE_P | PTE_W;
    rt_paging_on(0);
    u32 s1 = 0, s2 = 0;
    for (u32 i = 0; i < 64; i++) {
        emit_mov_ret(ALIAS, i * 0x10001u + 7);
        s1 += ((fn0)BUF)();
        emit_mov_ret(BUF + 16, i * 3 + 1);
        s2 += ((fn0)(ALIAS + 16))();
    }
    rt_paging_off();
    kprintf("alias: write via 0x500000 run at 0x310000 sum=0x%08x; write via 0x310010 run at 0x500010 sum=%u\n",
            s1, s2);
    kprintf("smc: done\n");
    return 0;
}

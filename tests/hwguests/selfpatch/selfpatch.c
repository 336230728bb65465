/* selfpatch: a kernel that patches the code it is running, with no jump
 * between the store and the patched instruction (SDM Vol. 3 §11.6: on P6
 * and later processors a write to an instruction already fetched is
 * detected, by linear and by physical address, and the new bytes run).
 * Every case is run several times, so that under binary translation the
 * code is translated and chained before it changes.  Expected values:
 * tests/test_monitor_guests.py (and QEMU). */
#include "rt.h"

extern u32 patch_ahead(u32 v), patch_next(u32 which), patch_loop(u32 n), patch_rmw(void);
extern u32 patch_straddle(u32 v), patch_rep(void), patch_push(void), patch_self(void);
extern u32 patch_alias(u32 delta, u32 v);

#define ALIAS 0x00500000u          /* PT1 slot 0x100: the frame of patch_alias's page */

int main(void)
{
    kprintf("selfpatch: start\n");

    u32 h = 0;
    for (u32 i = 0; i < 20; i++)
        h = h * 33 + patch_ahead(i * 0x01000193u);
    kprintf("ahead: %u %u hash=0x%08x\n", patch_ahead(5), patch_ahead(0x1000), h);

    /* 0x4040: incl; incl -> 102; 0xc031: xorl -> 0 */
    u32 n1 = patch_next(0x4040), n2 = patch_next(0xc031), n3 = patch_next(0x4040);
    kprintf("next: %u %u %u\n", n1, n2, n3);

    kprintf("loop: n=10 -> %u, n=3 -> %u, n=10 -> %u\n", patch_loop(10), patch_loop(3),
            patch_loop(10));

    u32 r1 = patch_rmw(), r2 = patch_rmw();
    kprintf("rmw: %u %u\n", r1, r2);

    kprintf("straddle: 0x%08x 0x%08x\n", patch_straddle(0x90904000u), patch_straddle(0x90900000u));

    u32 p1 = patch_rep(), p2 = patch_rep();
    kprintf("rep: %u %u\n", p1, p2);

    u32 q1 = patch_push(), q2 = patch_push();
    kprintf("push: %u %u\n", q1, q2);

    u32 s1 = patch_self(), s2 = patch_self(), s3 = patch_self();
    kprintf("self: %u %u %u\n", s1, s2, s3);

    /* the same frame at a second linear address: write through one, run
     * through the other, both ways */
    rt_paging_init();
    u32 page = (u32)patch_alias & ~0xfffu;
    PT1[0x100] = page | PTE_P | PTE_W;
    rt_paging_on(1);
    u32 delta = ALIAS - page;
    u32 a = 0;
    for (u32 i = 0; i < 10; i++)
        a = a * 7 + patch_alias(delta, i);
    u32 (*via_alias)(u32, u32) = (u32 (*)(u32, u32))((u32)patch_alias + delta);
    u32 b = 0;
    for (u32 i = 0; i < 10; i++)
        b = b * 7 + via_alias(0, i + 100);
    rt_paging_off();
    kprintf("alias: %u %u\n", a, b);

    kprintf("selfpatch: done\n");
    return 0;
}

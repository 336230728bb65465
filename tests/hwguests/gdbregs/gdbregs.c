/* gdbregs: the x87 and SSE registers a debugger sees and writes (tests/test_gdb_fpu.py).
 *
 * The guest turns SSE on (CR4.OSFXSR, OSXMMEXCPT: SDM Vol. 3 §13.1.3), loads known
 * values -- FLDCW 0x027f, LDMXCSR 0x3f80, then -1.5, 12345, pi and 1 onto the x87
 * stack (TOP 4, R4-R7 valid: SDM Vol. 1 §8.1.7), and eight patterns into XMM0-7 --
 * and passes gdbregs_loaded, where gdb stops it.  Then it stores the registers as it
 * finds them (FNSTCW, FNSTSW, STMXCSR, FNSTENV's tag word, FSTP ST(0)-ST(3), MOVDQU)
 * and prints them: undisturbed, the values it loaded (as on QEMU); after gdb wrote
 * some, gdb's values. */
#include "rt.h"

struct image {
    u16 cw, sw;
    u32 mxcsr;
    u32 env[7];                 /* FNSTENV, 32-bit protected mode: tag word in env[2] */
    struct { u32 lo, hi; u16 se; } __attribute__((packed)) st[4];
    u32 xmm[8][4];
} __attribute__((packed));

extern void gdbregs_run(struct image *out);

int main(void)
{
    static struct image im;
    write_cr4(read_cr4() | 0x600);                      /* OSFXSR | OSXMMEXCPT */
    write_cr0((read_cr0() & ~0x4u) | 0x22u);            /* EM off; MP, NE on */
    gdbregs_run(&im);
    kprintf("fcw %04x fsw %04x ftw %04x mxcsr %08x\n", im.cw, im.sw, im.env[2] & 0xffff,
            im.mxcsr);
    for (int i = 0; i < 4; i++)
        kprintf("st%d %04x:%08x%08x\n", i, im.st[i].se, im.st[i].hi, im.st[i].lo);
    for (int i = 0; i < 8; i++)
        kprintf("xmm%d %08x %08x %08x %08x\n", i, im.xmm[i][0], im.xmm[i][1], im.xmm[i][2],
                im.xmm[i][3]);
    return 0;
}

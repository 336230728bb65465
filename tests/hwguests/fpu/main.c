/* fpu: the x87, SSE and MMX units, by C code compiled for them and by instruction probes.
 *
 * One image per compiler setting; the command line picks the part that runs:
 *   part=0       floating-point C (the image's -mfpmath=387 / -msse2 code generation)
 *   part=1       x87 instructions: formats, rounding, exceptions, environment, transcendentals
 *   part=2       SSE/SSE2/MMX: MXCSR, DAZ/FTZ, conversions, NaN rules, compares
 *   part=3       CR0.EM/TS/MP/NE, #NM, #MF, FERR#/IRQ 13, FXSAVE/FXRSTOR, CPUID
 *   random=N     N random single-instruction cases (operands from an LCG, seed=S)
 * Every value is printed raw, in hex.  tests/test_fpu_guest.py runs each on QEMU and on
 * ringvisor and checks that the two outputs are identical, plus the SDM's own values.
 */
#include "fpu.h"

u32 rng_seed = 1;

u32 rng(void)
{
    rng_seed = rng_seed * 1664525u + 1013904223u;
    return rng_seed;
}

static void hex(u64 v, int digits)
{
    for (int i = digits - 1; i >= 0; i--)
        putch("0123456789abcdef"[(v >> (4 * i)) & 15]);
}

void put64(u64 v) { hex(v, 16); }

void put80(const f80 *v)
{
    hex(v->se, 4);
    putch(':');
    hex(v->m, 16);
}

void put80_masked(const f80 *v, u64 keep)
{
    f80 t = *v;
    t.m &= keep;
    put80(&t);
}

void put128(const u32 *v)
{
    for (int i = 3; i >= 0; i--)
        hex(v[i], 8);
}

void fpu_enable(u32 cr0_set, u32 cr0_clear)
{
    write_cr0((read_cr0() | cr0_set) & ~cr0_clear);
    write_cr4(read_cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT);
}

int main(void)
{
    u32 v;
    fpu_enable(CR0_MP | CR0_NE, CR0_EM | CR0_TS);
    fninit();
    if (rt_arg("seed", &v))
        rng_seed = v;
    if (rt_arg("random", &v))
        return part_random(v);
    if (!rt_arg("part", &v))
        v = 0;
    switch (v) {
    case 0: return part_c();
    case 1: return part_x87();
    case 2: return part_sse();
    case 3: return part_sys();
    }
    kprintf("fpu: unknown part %u\n", v);
    return 1;
}

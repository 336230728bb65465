/* tscwrite: WRMSR to IA32_TIME_STAMP_COUNTER (SDM Vol. 3 17.17): the counter runs on
 * from the value written, as RDTSC at ring 0 and ring 3 (CR4.TSD clear) and RDMSR read
 * it; with CR4.TSD set, ring 3's RDTSC is #GP(0) (Vol. 2 RDTSC).  QEMU 7.2's TCG
 * ignores such a write (its RDTSC does not read the value), so this guest runs on
 * ringvisor alone (tests/test_monitor_guests.py: natively and under the monitors). */
#include "rt.h"

static volatile u32 u_tsc_hi;

static void u_rdtsc(void)
{
    u32 lo, hi;
    __asm__ volatile(ARM(1f, 2f) "2: rdtsc\n1:" : "=a"(lo), "=d"(hi) :: "memory");
    u_tsc_hi = hi;
}

int main(void)
{
    u32 lo, hi, lo2, hi2, mlo, mhi;
    kprintf("tscwrite: start\n");
    __asm__ volatile("wrmsr" :: "c"(0x10), "a"(0), "d"(0x12345678));
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    __asm__ volatile("rdmsr" : "=a"(mlo), "=d"(mhi) : "c"(0x10));
    rt_expect_reset();
    rt_run_user(u_rdtsc);
    report_exc("ring 3 rdtsc");
    __asm__ volatile("rdtsc" : "=a"(lo2), "=d"(hi2));
    u64 t1 = (u64)hi << 32 | lo, t2 = (u64)hi2 << 32 | lo2;
    kprintf("written: rdtsc hi=0x%x rdmsr hi=0x%x user rdtsc hi=0x%x later=%s\n", hi, mhi,
            u_tsc_hi, t2 > t1 ? "yes" : "no");
    write_cr4(read_cr4() | 0x4);                         /* TSD */
    rt_expect_reset();
    rt_run_user(u_rdtsc);
    report_exc("ring 3 rdtsc with TSD");
    write_cr4(read_cr4() & ~0x4u);
    __asm__ volatile("wrmsr" :: "c"(0x10), "a"(5000), "d"(0));
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    kprintf("written back: hi=0x%x below 2^31=%s\n", hi, lo < 0x80000000u ? "yes" : "no");
    kprintf("tscwrite: done\n");
    return 0;
}

/* smp: QEMU's -smp N as a -kernel image finds it -- N processors in fw_cfg and in
 * the MADT, the application processors held until the BSP sends INIT and two SIPIs
 * (SDM Vol. 3 §8.4.4), a real-mode trampoline, each AP's own local APIC (ID, CPUID
 * initial APIC ID), fixed IPIs by physical destination, a broadcast and a logical
 * (flat) one, replies from every AP, and a counter all of them increment with LOCK.
 * Results are printed by the BSP at the end, in APIC ID order, so the lines do not
 * depend on how the processors interleave.  Expected lines: tests/test_smp.py. */
#include "rt.h"

#define APIC 0xfee00000u
static u32 ar(u32 r) { return *(volatile u32 *)(APIC + r); }
static void aw(u32 r, u32 v) { *(volatile u32 *)(APIC + r) = v; }
static void ipi(u32 dest, u32 lo) { aw(0x310, dest << 24); aw(0x300, lo); }

extern char ap_tramp_start[], ap_tramp_end[];
#define MAXCPU 8
static volatile u32 online, counter, replies[MAXCPU];
static volatile u32 ap_apic_id[MAXCPU], ap_cpuid_id[MAXCPU], ap_svr[MAXCPU], ap_base[MAXCPU];
static volatile u32 got[MAXCPU][4];
static volatile u32 go_reply;

static void handler(struct frame *f)
{
    u32 id = ar(0x20) >> 24;
    if (f->vector >= 0x40 && f->vector < 0x44)
        got[id][f->vector - 0x40]++;
    else if (f->vector >= 0x50 && f->vector < 0x58)
        replies[f->vector - 0x50]++;
    aw(0xb0, 0);
}

static u64 rdmsr(u32 n) { u32 lo, hi; __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(n)); return ((u64)hi << 32) | lo; }

void ap_main(u32 index)
{
    (void)index;
    u32 a, b, c, d;
    u32 id = ar(0x20) >> 24;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    ap_apic_id[id] = id;
    ap_cpuid_id[id] = b >> 24;
    ap_svr[id] = ar(0xf0);
    ap_base[id] = (u32)rdmsr(0x1b);
    aw(0xf0, 0x1ff);                    /* software-enable this AP's APIC */
    aw(0xd0, (1u << id) << 24);         /* logical ID: one bit per processor (flat) */
    for (int i = 0; i < 10000; i++)
        __asm__ volatile("lock incl %0" : "+m"(counter));
    __asm__ volatile("lock incl %0" : "+m"(online));
    while (!go_reply || got[id][0] == 0)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    ipi(0, 0x50 + id);                  /* reply to the BSP (physical 0) */
    for (;;)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
}

static void delay(u32 n) { for (volatile u32 i = 0; i < n; i++) ; }

int main(void)
{
    kprintf("smp: start\n");
    for (int v = 0x40; v < 0x58; v++)
        rt_isr[v] = handler;
    outw(0x510, 0x05);
    u32 ncpu = inb(0x511);
    ncpu |= inb(0x511) << 8;
    kprintf("fw_cfg cpus: %u\n", ncpu);
    if (ncpu > MAXCPU) ncpu = MAXCPU;

    /* the MADT's processors */
    const u8 *rsdp = 0;
    for (u32 a = 0xe0000; a < 0x100000; a += 16)
        if (!memcmp((void *)a, "RSD PTR ", 8)) { rsdp = (const u8 *)a; break; }
    const u8 *rsdt = (const u8 *)*(const u32 *)(rsdp + 16);
    u32 madt_cpus = 0;
    for (u32 i = 0; i < (*(const u32 *)(rsdt + 4) - 36) / 4; i++) {
        const u8 *t = (const u8 *)((const u32 *)(rsdt + 36))[i];
        if (!memcmp(t, "APIC", 4))
            for (u32 off = 44; off < *(const u32 *)(t + 4); off += t[off + 1])
                if (t[off] == 0 && (t[off + 4] & 1)) madt_cpus++;
    }
    kprintf("madt enabled processors: %u\n", madt_cpus);

    memcpy((void *)0x8000, ap_tramp_start, ap_tramp_end - ap_tramp_start);
    aw(0x300 + 0x10, 0);
    aw(0x300, 0x000c4500);              /* INIT, level assert, all excluding self */
    delay(10000);
    aw(0x300, 0x000c4608);              /* SIPI, vector 0x08: 0800:0000 */
    delay(2000);
    aw(0x300, 0x000c4608);              /* the second SIPI (ignored by started APs) */
    for (u32 guard = 0; online < ncpu - 1 && guard < 200000000; guard++)
        __asm__ volatile("pause");
    kprintf("online APs: %u counter: %u\n", online, counter);
    extern volatile u32 ap_next;
    kprintf("APs through the trampoline: %u\n", ap_next);

    /* fixed IPIs to each AP by physical ID; each replies */
    go_reply = 1;
    for (u32 id = 1; id < ncpu; id++)
        ipi(id, 0x40);
    sti();
    for (u32 guard = 0; guard < 200000000; guard++) {
        u32 n = 0;
        for (u32 id = 1; id < ncpu; id++) n += replies[id] != 0;
        if (n == ncpu - 1) break;
        __asm__ volatile("pause");
    }
    cli();
    /* broadcast excluding self, and logical (flat) to every AP's bit */
    aw(0x300, 0x000c0041);
    ipi(0xfe, 0x0842);
    ipi(0x02, 0x0843);                  /* logical: only the processor with bit 1 (APIC 1) */
    delay(200000);
    for (u32 guard = 0; guard < 200000000; guard++) {
        u32 n = 0;
        for (u32 id = 1; id < ncpu; id++) n += got[id][1] && got[id][2] && (id != 1 || got[id][3]);
        if (n == ncpu - 1) break;
        __asm__ volatile("pause");
    }
    delay(100000);
    for (u32 id = 1; id < ncpu; id++)
        kprintf("cpu %u: apic id=%u cpuid id=%u svr at start=%x apic base=%08x ipi=%u reply=%u "
                "broadcast=%u logical=%u logical-one=%u\n",
                id, ap_apic_id[id], ap_cpuid_id[id], ap_svr[id], ap_base[id], got[id][0],
                replies[id], got[id][1], got[id][2], got[id][3]);
    kprintf("bsp: apic id=%u base=%08x\n", ar(0x20) >> 24, (u32)rdmsr(0x1b));
    kprintf("smp: done\n");
    return 0;
}

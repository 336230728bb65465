/* smptlb: what the processors of a PC share, as a kernel unlike the teaching one
 * uses it -- one page directory that every application processor loads itself, a
 * page fault each AP takes and handles by writing a page-table entry, a fixed IPI
 * each AP takes, each AP's own APIC timer (one-shot, SDM Vol. 3 §10.5.4), a spinlock (XCHG, SDM Vol. 3 §8.1.2.1) around a counter
 * incremented without LOCK, and a TLB shootdown: the BSP remaps a page every AP
 * has read (and so holds in its TLB), invalidates it with INVLPG and sends an IPI;
 * each AP's handler runs INVLPG itself (SDM Vol. 3 §4.10.5: a processor's TLB is
 * its own) and then reads the page's new contents.  Last, AP 1 is sent INIT and a
 * SIPI again while it waits in its HLT loop: it comes back through the trampoline
 * in the state INIT leaves (paging off, its APIC's spurious-vector register back
 * at 0xff: SDM Vol. 3 §8.4.1, §10.4.7.3).  Results are printed by the BSP
 * at the end, in APIC ID order.  Expected lines: tests/test_smp.py. */
#include "rt.h"

#define APIC 0xfee00000u
static u32 ar(u32 r) { return *(volatile u32 *)(APIC + r); }
static void aw(u32 r, u32 v) { *(volatile u32 *)(APIC + r) = v; }
static void ipi(u32 dest, u32 lo) { aw(0x310, dest << 24); aw(0x300, lo); }
static u32 apic_id(void) { return ar(0x20) >> 24; }

extern char ap_tramp_start[], ap_tramp_end[];
#define MAXCPU 8
#define SHARED   0x00400000u            /* PT1[0]: frame A, then frame B */
#define FRAME_A  0x00900000u            /* identity-mapped by the 4 MiB page at 8 MiB */
#define FRAME_B  0x00901000u
#define FAULTING(i) (0x00400000u + ((u32)(i) << 12))    /* PT1[i]: not present at first */
#define FAULT_FRAME(i) (0x00910000u + ((u32)(i) << 12))
#define ROUNDS 3000

static volatile u32 lock_word, shared_count, online, acks, done;
static volatile u32 paging[MAXCPU], fault_cr2[MAXCPU], faults[MAXCPU], stored[MAXCPU];
static volatile u32 hello[MAXCPU], shot[MAXCPU], before[MAXCPU], after[MAXCPU];
static volatile u32 ticks[MAXCPU], timer_left[MAXCPU];
static volatile u32 restarting, restarted, re_paging, re_svr;

static void lock(void)
{
    u32 v;
    do {
        while (lock_word)
            __asm__ volatile("pause");
        v = 1;
        __asm__ volatile("xchgl %0, %1" : "+r"(v), "+m"(lock_word) :: "memory");
    } while (v);
}

static void unlock(void) { __asm__ volatile("movl $0, %0" : "=m"(lock_word) :: "memory"); }

static void count(void)
{
    for (int i = 0; i < ROUNDS; i++) {
        lock();
        u32 c = shared_count;           /* not atomic: only the lock keeps it right */
        __asm__ volatile("" ::: "memory");
        shared_count = c + 1;
        unlock();
    }
}

static void page_fault(struct frame *f)
{
    u32 cr2 = read_cr2(), id = apic_id();
    fault_cr2[id] = cr2;
    faults[id]++;
    if (cr2 >> 12 == FAULTING(id) >> 12 && !(f->err & 1))
        PT1[id] = FAULT_FRAME(id) | PTE_P | PTE_W;      /* the store runs again and hits */
}

static void hello_ipi(struct frame *f) { (void)f; hello[apic_id()]++; aw(0xb0, 0); }

static void apic_timer(struct frame *f) { (void)f; ticks[apic_id()]++; aw(0xb0, 0); }

static void shootdown(struct frame *f)
{
    (void)f;
    u32 id = apic_id();
    invlpg(SHARED);
    shot[id]++;
    __asm__ volatile("lock incl %0" : "+m"(acks));
    aw(0xb0, 0);
}

void ap_main(u32 index)
{
    (void)index;
    if (restarting) {
        re_paging = read_cr0() >> 31;
        re_svr = ar(0xf0);
        __asm__ volatile("lock incl %0" : "+m"(restarted));
        for (;;)
            __asm__ volatile("sti; hlt; cli" ::: "memory");
    }
    rt_paging_on(0);                    /* the BSP's page directory, loaded here */
    u32 id = apic_id();
    paging[id] = read_cr0() >> 31;
    aw(0xf0, 0x1ff);
    before[id] = *(volatile u32 *)SHARED;               /* now in this TLB */
    *(volatile u32 *)FAULTING(id) = 0x100 * id + 0x42;  /* #PF, mapped by the handler */
    stored[id] = *(volatile u32 *)FAULT_FRAME(id);
    count();
    aw(0x3e0, 0xb);                     /* its timer: divide by 1, one-shot, vector 0x62 */
    aw(0x320, 0x62);
    aw(0x380, 20000 + 5000 * id);
    while (!ticks[id])
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    timer_left[id] = ar(0x390);         /* a one-shot timer stops at 0 */
    __asm__ volatile("lock incl %0" : "+m"(online));
    while (!hello[id] || !shot[id])
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    after[id] = *(volatile u32 *)SHARED;
    __asm__ volatile("lock incl %0" : "+m"(done));
    for (;;)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
}

static void delay(u32 n) { for (volatile u32 i = 0; i < n; i++) ; }

int main(void)
{
    kprintf("smptlb: start\n");
    outw(0x510, 0x05);
    u32 ncpu = inb(0x511);
    ncpu |= inb(0x511) << 8;
    if (ncpu > MAXCPU) ncpu = MAXCPU;
    kprintf("cpus: %u\n", ncpu);
    rt_isr[14] = page_fault;
    rt_isr[0x61] = hello_ipi;
    rt_isr[0x60] = shootdown;
    rt_isr[0x62] = apic_timer;
    *(volatile u32 *)FRAME_A = 0xa0a0;
    *(volatile u32 *)FRAME_B = 0xb0b0;
    rt_paging_init();
    PD[APIC >> 22] = (APIC & 0xffc00000u) | PDE_PS | PTE_P | PTE_W;
    PT1[0] = FRAME_A | PTE_P | PTE_W;
    rt_paging_on(0);
    before[0] = *(volatile u32 *)SHARED;

    memcpy((void *)0x8000, ap_tramp_start, ap_tramp_end - ap_tramp_start);
    aw(0xf0, 0x1ff);
    aw(0x310, 0);
    aw(0x300, 0x000c4500);              /* INIT to all excluding self */
    delay(10000);
    aw(0x300, 0x000c4608);              /* SIPI: 0800:0000 */
    delay(2000);
    aw(0x300, 0x000c4608);
    count();                            /* against the APs, under the same lock */
    for (u32 guard = 0; online < ncpu - 1 && guard < 200000000; guard++)
        __asm__ volatile("pause");

    for (u32 id = 1; id < ncpu; id++)
        ipi(id, 0x61);                  /* fixed, physical destination */
    PT1[0] = FRAME_B | PTE_P | PTE_W;   /* the remap ... */
    invlpg(SHARED);                     /* ... this processor's TLB ... */
    aw(0x300, 0x000c0060);              /* ... and every other one's */
    for (u32 guard = 0; (acks < ncpu - 1 || done < ncpu - 1) && guard < 200000000; guard++)
        __asm__ volatile("pause");
    after[0] = *(volatile u32 *)SHARED;
    restarting = 1;
    ipi(1, 0x4500);                     /* INIT to APIC 1, running its HLT loop */
    delay(10000);
    ipi(1, 0x4608);                     /* and a SIPI: the trampoline again */
    for (u32 guard = 0; !restarted && guard < 200000000; guard++)
        __asm__ volatile("pause");
    for (u32 id = 1; id < ncpu; id++)
        kprintf("cpu %u: paging=%u fault cr2=%08x faults=%u stored=%x timer=%u left=%u hello=%u "
                "shootdown=%u before=%x after=%x\n", id, paging[id], fault_cr2[id], faults[id],
                stored[id], ticks[id], timer_left[id], hello[id], shot[id], before[id], after[id]);
    kprintf("cpu 1 after INIT and SIPI: paging=%u svr=%x\n", re_paging, re_svr);
    kprintf("bsp: before=%x after=%x count=%u of %u timer=%u\n", before[0], after[0],
            shared_count, ROUNDS * ncpu, ticks[0]);
    kprintf("smptlb: done\n");
    return 0;
}

/* gatecache: what a software interrupt from ring 3 goes through -- its IDT gate, the
 * handler's code segment in the GDT, the ring-0 stack in the TSS -- changed by the
 * program in user mode between two INT n, with no other entry into the kernel between
 * the store and the trap: every change must be seen at the next trap, as the hardware
 * reads the gate, the descriptor and the TSS at every delivery (SDM Vol. 3 §6.12.1).
 * A monitor that caches what it read last time must notice the store.  The tables are
 * the runtime's (GDT and IDT share a page, the TSS is on the next one); the user code
 * writes them through its flat data segment (paging off).
 *
 * The faults, from the SDM's INT n pseudo-code (Vol. 2) and Vol. 3 §6.12.1.1: the gate's
 * DPL below CPL: #GP(vector * 8 + 2); the gate not present: #NP(vector * 8 + 2); the
 * handler's code segment not present: #NP(selector); not a code segment:
 * #GP(selector); the entry point beyond its limit: #GP(0); each a fault at the INT (the
 * saved EIP is the INT's own, eip=+0), with nothing pushed on the ring-0 stack.
 * Expected lines are in tests/test_monitor_guests.py. */
#include "rt.h"

#define VEC       0x81
#define SEL_HCODE 0x48            /* descriptor 9: ring-0 code the tests edit in place */
#define SEL_KSS2  0x50            /* descriptor 10: another ring-0 stack segment */
#define ALT_TOP   0x00270000u     /* another ring-0 stack */

struct rec { u32 tag, frame, ss, cs, n; };
static volatile struct rec recs[32];
static volatile u32 nrecs;
static volatile u32 gate_a[2], gate_b[2];

static void record(u32 tag, struct frame *f)
{
    volatile struct rec *r = &recs[nrecs++];
    r->tag = tag;
    r->frame = (u32)&f->eip;
    r->ss = read_ss() & ~3u;          /* (RPL masked: a monitor's ring 1 shows in it) */
    r->cs = read_cs() & ~3u;
    r->n = 0;
}

static void h_a(struct frame *f) { record('A', f); }
static void h_b(struct frame *f) { record('B', f); }

/* at ring 3: a fault expected at the INT; what it was, in the log */
static void faulted(void)
{
    volatile struct rec *r = &recs[nrecs++];
    r->tag = 'F';
    r->frame = rt_exc.vector;
    r->ss = rt_exc.err;
    r->cs = rt_exc.eip - rt_mark;
    r->n = rt_exc.count;
}

#define TRAP() __asm__ volatile("int $0x81" ::: "memory")
#define TRAP_FAULTS() do {                                                          \
        rt_expect_reset();                                                          \
        __asm__ volatile(ARM(1f, 2f) "2: int $0x81\n1:\n" ::: "memory");           \
        faulted();                                                                  \
    } while (0)

static volatile u32 *const gate = (volatile u32 *)(IDT_ADDR + 8 * VEC);
static volatile u8 *const hcode_access = (volatile u8 *)(GDT_ADDR + 8 * 9 + 5);
static volatile u8 *const hcode_flags = (volatile u8 *)(GDT_ADDR + 8 * 9 + 6);

static void user_main(void)
{
    TRAP();                                   /* A, ring-0 stack of the TSS */
    TRAP();
    gate[0] = gate_b[0];                      /* the gate rewritten: B from now on */
    gate[1] = gate_b[1];
    TRAP();
    TRAP();
    TSS->esp0 = ALT_TOP;                      /* a new ring-0 stack */
    TRAP();
    TSS->ss0 = SEL_KSS2;                      /* ... and a new stack segment */
    TRAP();
    TRAP();
    *hcode_access = 0x1b;                     /* handler's code segment not present */
    TRAP_FAULTS();
    *hcode_access = 0x93;                     /* a data segment */
    TRAP_FAULTS();
    *hcode_access = 0x9b;                     /* a code segment again */
    TRAP();
#ifdef LIMIT_CHECK
    /* (QEMU 7.2's TCG does not check the entry point against the limit: built for
     * ringvisor only, as gatecache-sdm) */
    *hcode_flags = 0x40;                      /* byte granular: limit 0xffff */
    TRAP_FAULTS();
    *hcode_flags = 0xcf;
    TRAP();
#endif
    ((volatile u8 *)gate)[5] = 0x8e;          /* the gate's DPL 0 */
    TRAP_FAULTS();
    ((volatile u8 *)gate)[5] = 0x6e;          /* DPL 3, not present */
    TRAP_FAULTS();
    ((volatile u8 *)gate)[5] = 0xee;
    TRAP();
    gate[0] = gate_a[0];                      /* back to A, on the first stack */
    gate[1] = gate_a[1];
    TSS->esp0 = STACK0_TOP;
    TSS->ss0 = SEL_DATA0;
    TRAP();
    TRAP();
}

int main(void)
{
    kprintf("gatecache: start\n");
    gdt_set(9, 0, 0xfffff, ACC_CODE | ACC_DPL(0), FLG_4K32);
    gdt_set(10, 0, 0xfffff, ACC_DATA | ACC_DPL(0), FLG_4K32);
    idt_set(VEC, rt_stub_addr(VEC), SEL_CODE0, 0xee);
    gate_a[0] = gate[0];
    gate_a[1] = gate[1];
    idt_set(VEC, rt_stub_addr(0x82), SEL_HCODE, 0xee);
    gate_b[0] = gate[0];
    gate_b[1] = gate[1];
    idt_set(VEC, rt_stub_addr(VEC), SEL_CODE0, 0xee);
    rt_isr[VEC] = h_a;
    rt_isr[0x82] = h_b;
    rt_run_user(user_main);
    for (u32 i = 0; i < nrecs; i++) {
        volatile struct rec *r = &recs[i];
        if (r->tag == 'F') {
            kprintf("%u: fault #%u err=0x%x eip=+%d count=%u\n", i, r->frame, r->ss,
                    (s32)r->cs, r->n);
            continue;
        }
        u32 top = r->frame + 20;
        kprintf("%u: handler %c stack=%s ss=%04x cs=%04x\n", i, (char)r->tag,
                top == STACK0_TOP ? "esp0" : top == ALT_TOP ? "alt" : "other", r->ss, r->cs);
    }
    kprintf("esp0=%x ss0=%x\n", TSS->esp0, TSS->ss0);
    kprintf("gatecache: done\n");
    rt_exit(0);
}

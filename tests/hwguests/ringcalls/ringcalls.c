/* ringcalls: guest code at rings 1 and 2 as the processor runs it -- the transfers
 * into and out of those rings and the checks made there (SDM Vol. 3 ch. 5 and 6):
 *
 *   1. call gates into ring 1 (from ring 3 and from ring 2) and into ring 2 (from
 *      ring 3), their parameters copied to the inner stack from the TSS (SS1:ESP1,
 *      SS2:ESP2), RET imm back to the outer ring, which nulls the data segments the
 *      outer ring may not use (§5.8.5, Vol. 2 RET);
 *   2. an interrupt handler at ring 1 (a DPL-1 code segment, an interrupt gate of DPL
 *      3) entered from rings 3, 2 (through SS1:ESP1) and 1 (no stack switch); from
 *      ring 0 it is #GP(selector) (§6.12.1.1); the same at ring 2 (SS2:ESP2 from ring
 *      3, #GP(selector) from ring 1);
 *   3. IRET from ring 0 to rings 1 and 2, the data segments of lower DPL made null;
 *   4. faults at ring 2 delivered to ring 0: #GP(0) for MOV from CR0, #GP(selector)
 *      for a DPL-1 data segment into ES and into SS, an RPL-3 selector, #PF with the
 *      supervisor's error code; the frame's CS, SS and ESP;
 *   5. CLI, STI, POPF and port I/O at ring 1 with IOPL 1 and IOPL 0, at ring 2 with
 *      IOPL 1 (Vol. 1 §19.5.1, Vol. 2 CLI/POPF);
 *   6. paging: rings 1 and 2 are supervisor (§4.6): a supervisor page read from ring 2,
 *      a read-only user page written from ring 2 with CR0.WP clear and set;
 *   7. a selector beyond the GDT's limit into DS at ring 0: #GP(selector);
 *   8. a task at ring 1, entered by CALL from ring 0 and through a task gate from ring
 *      3, and one at ring 2: its segments, NT and back link, a fault there (on its TSS's SS0:ESP0), the
 *      IRET back to the calling task and the state saved in its TSS;
 *   9. 16-bit code at ring 1 (an IRET to a 16-bit DPL-1 code segment): CLI at IOPL 0.
 *
 * Every line is the same on QEMU, natively, under hvm and under bt; trapemu, which
 * gives a guest rings 0 and 3 only, stops at the first entry from ring-1 code. */
#include "rt.h"

#define SEL_CODE2 0x42                  /* descriptor 8 */
#define SEL_DATA2 0x4a                  /* descriptor 9 */
#define SEL_GATE1 0x53                  /* descriptor 10: call gate to ring 1, 2 parameters */
#define SEL_GATE2 0x5b                  /* descriptor 11: call gate to ring 2, 2 parameters */
#define SEL_GATE3 0x62                  /* descriptor 12: call gate to ring 1, 1 parameter (DPL 2) */
#define STACK2_TOP 0x0029f000u          /* SS2:ESP2 */
#define RUN2_TOP   0x0029e000u          /* where a ring-2 function starts */
#define RUN1_TOP   0x0029d000u          /* where a ring-1 function starts */
#define RUN3_TOP   USER_STACK_TOP
#define SUPER_PAGE 0x003e0000u          /* supervisor, writable */
#define RO_PAGE    0x003e1000u          /* user, read-only */

extern void r1_gate1(void), r1_gate2(void), r2_gate1(void), r1_isr(void);
extern void caller2(void), caller2_back(void), caller1(void);
extern void int61(void), int61_back(void), show_segs(void);
extern volatile u32 rc_frame[6], rc_esp, rc_cs, rc_ss, rc_flags, rc_result, rc_after, rc_far[2];
extern volatile u16 rc_segs[4];

static void clear(void)
{
    for (int i = 0; i < 6; i++)
        rc_frame[i] = 0;
    rc_esp = rc_cs = rc_ss = rc_flags = rc_result = rc_after = 0;
    for (int i = 0; i < 4; i++)
        rc_segs[i] = 0xffff;
}

/* ---- 1. call gates ---------------------------------------------------------------- */
static void gate_call(const char *what, u16 gate, u16 cs, u16 ss, u32 top, u32 inner_top)
{
    clear();
    rc_far[0] = 0;
    rc_far[1] = gate;
    rt_run_ring(caller2, cs, ss, top, 0x2);
    kprintf("%s: cs=%04x ss=%04x esp=top-%u\n", what, rc_cs & 0xffff, rc_ss & 0xffff,
            inner_top - rc_esp);
    kprintf("%s frame: eip=%s cs=%04x p=%08x,%08x esp=top-%u ss=%04x\n", what,
            rc_frame[0] == (u32)caller2_back ? "back" : "?", rc_frame[1] & 0xffff,
            rc_frame[2], rc_frame[3], top - rc_frame[4], rc_frame[5] & 0xffff);
    kprintf("%s back: result=%08x esp=top-%u ds=%04x es=%04x fs=%04x gs=%04x\n", what,
            rc_result, top - rc_after, rc_segs[0], rc_segs[1], rc_segs[2], rc_segs[3]);
}

static void gates(void)
{
    gdt_set_gate(10, SEL_CODE1, (u32)r1_gate1, 0xec, 2);     /* 32-bit call gate, DPL 3 */
    gdt_set_gate(11, SEL_CODE2, (u32)r2_gate1, 0xec, 2);
    gdt_set_gate(12, SEL_CODE1, (u32)r1_gate2, 0xcc, 1);     /* DPL 2 */
    gate_call("gate 3->1", SEL_GATE1, SEL_CODE3, SEL_DATA3, RUN3_TOP, STACK1_TOP);
    gate_call("gate 2->1", SEL_GATE1, SEL_CODE2, SEL_DATA2, RUN2_TOP, STACK1_TOP);
    gate_call("gate 3->2", SEL_GATE2, SEL_CODE3, SEL_DATA3, RUN3_TOP, STACK2_TOP);
    /* a gate of DPL 2 from ring 3: #GP(gate) at the call */
    clear();
    rc_far[1] = SEL_GATE3 | 3;
    rt_expect_reset();
    rt_resume = (u32)caller2_back;
    rt_run_ring(caller2, SEL_CODE3, SEL_DATA3, RUN3_TOP, 0x2);
    kprintf("gate of DPL 2 from ring 3: #%u err=0x%x cs=%04x\n", rt_exc.vector, rt_exc.err,
            rt_exc.cs);
    /* ... and from ring 2, one parameter, into ring 1 */
    clear();
    rc_far[1] = SEL_GATE3;
    rt_run_ring(caller1, SEL_CODE2, SEL_DATA2, RUN2_TOP, 0x2);
    kprintf("gate 2->1 (1 parameter): esp=top-%u p=%08x esp=top-%u ss=%04x result=%08x "
            "back esp=top-%u\n", STACK1_TOP - rc_esp, rc_frame[2], RUN2_TOP - rc_frame[3],
            rc_frame[4] & 0xffff, rc_result, RUN2_TOP - rc_after);
}

/* ---- 2. an interrupt handler at ring 1 --------------------------------------------- */
static void isr_from(const char *what, u16 cs, u16 ss, u32 top, int hring, u32 htop)
{
    clear();
    rt_run_ring(int61, cs, ss, top, 0x2);
    u32 inner = (int)(cs & 3) == hring ? top : htop;
    kprintf("int 0x61 from %s: cs=%04x ss=%04x esp=top-%u eflags=%x\n", what, rc_cs & 0xffff,
            rc_ss & 0xffff, inner - rc_esp, rc_flags);
    if ((int)(cs & 3) == hring)
        kprintf("int 0x61 from %s frame: eip=%s cs=%04x eflags=%x\n", what,
                rc_frame[0] == (u32)int61_back ? "back" : "?", rc_frame[1] & 0xffff, rc_frame[2]);
    else
        kprintf("int 0x61 from %s frame: eip=%s cs=%04x eflags=%x esp=top-%u ss=%04x\n", what,
                rc_frame[0] == (u32)int61_back ? "back" : "?", rc_frame[1] & 0xffff, rc_frame[2],
                top - rc_frame[3], rc_frame[4] & 0xffff);
    kprintf("int 0x61 from %s back: esp=top-%u\n", what, top - rc_after);
}

static void isr(void)
{
    idt_set(0x61, (u32)r1_isr, SEL_CODE1, 0xee);        /* interrupt gate, DPL 3 */
    isr_from("ring 3", SEL_CODE3, SEL_DATA3, RUN3_TOP, 1, STACK1_TOP);
    isr_from("ring 2", SEL_CODE2, SEL_DATA2, RUN2_TOP, 1, STACK1_TOP);
    isr_from("ring 1", SEL_CODE1, SEL_DATA1, RUN1_TOP, 1, STACK1_TOP);
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: int $0x61\n1:" ::: "memory");
    kprintf("int 0x61 from ring 0: #%u err=0x%x\n", rt_exc.vector, rt_exc.err);
    /* the same handler in a ring-2 code segment: SS2:ESP2 from ring 3, refused at ring 1 */
    idt_set(0x61, (u32)r1_isr, SEL_CODE2, 0xee);
    isr_from("ring 3 (ring-2 handler)", SEL_CODE3, SEL_DATA3, RUN3_TOP, 2, STACK2_TOP);
    isr_from("ring 2 (ring-2 handler)", SEL_CODE2, SEL_DATA2, RUN2_TOP, 2, STACK2_TOP);
    clear();
    rt_expect_reset();
    rt_resume = (u32)int61_back;
    rt_run_ring(int61, SEL_CODE1, SEL_DATA1, RUN1_TOP, 0x2);
    kprintf("int 0x61 from ring 1 (ring-2 handler): #%u err=0x%x cs=%04x\n",
            rt_exc.count ? rt_exc.vector : 0xff, rt_exc.err, rt_exc.cs);
}

/* ---- 3. IRET to rings 1 and 2: the data segments ------------------------------------ */
static void segs_at(int ring, u16 cs, u16 ss, u32 top, u16 ds, u16 es, u16 fs, u16 gs)
{
    clear();
    rt_ring_segs[0] = ds;
    rt_ring_segs[1] = es;
    rt_ring_segs[2] = fs;
    rt_ring_segs[3] = gs;
    rt_ring_segs_on = 1;
    rt_run_ring(show_segs, cs, ss, top, 0x2);
    kprintf("iret to ring %d with ds=%04x es=%04x fs=%04x gs=%04x: cs=%04x ss=%04x esp=top-%u "
            "ds=%04x es=%04x fs=%04x gs=%04x\n", ring, ds, es, fs, gs, rc_cs & 0xffff,
            rc_ss & 0xffff, top - rc_esp, rc_segs[0], rc_segs[1], rc_segs[2], rc_segs[3]);
}

/* ---- 4. faults at ring 2, 5. IOPL, 6. paging: run at ring 1 or 2 ------------------- */
static volatile u32 probe[8][5];
static volatile u32 word;

static void rec(int i)
{
    probe[i][0] = rt_exc.count ? rt_exc.vector : 0xff;
    probe[i][1] = rt_exc.err;
    probe[i][2] = rt_exc.count ? rt_exc.eip - rt_mark : 0;
    probe[i][3] = rt_exc.cs;
    probe[i][4] = rt_exc.cr2;
    rt_expect_reset();
}

static void faults2(void)
{
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: mov %%cr0, %%eax\n1:" ::: "eax", "memory");
    probe[5][0] = rt_exc.esp3;
    probe[5][1] = rt_exc.ss3;
    rec(0);
    __asm__ volatile(ARM(1f, 2f) "2: mov %0, %%es\n1:" :: "r"(SEL_DATA1) : "memory");
    rec(1);
    __asm__ volatile(ARM(1f, 2f) "2: mov %0, %%ss\n1:" :: "r"(SEL_DATA1) : "memory");
    rec(2);
    __asm__ volatile(ARM(1f, 2f) "2: mov %0, %%fs\n1:" :: "r"(SEL_DATA2 | 3) : "memory");
    rec(3);
    __asm__ volatile(ARM(1f, 2f) "2: movl $1, 0x00400010\n1:" ::: "memory");
    rec(4);
    __asm__ volatile("mov %0, %%gs" :: "r"(SEL_DATA3) : "memory");  /* DPL 3: allowed */
}

static void faults(void)
{
    rt_paging_init();
    rt_paging_on(0);
    rt_run_ring(faults2, SEL_CODE2, SEL_DATA2, RUN2_TOP, 0x2);
    rt_paging_off();
    kprintf("ring 2 mov from cr0: #%u err=0x%x eip=+%u cs=%04x esp=top-%u ss=%04x\n",
            probe[0][0], probe[0][1], probe[0][2], probe[0][3], RUN2_TOP - probe[5][0], probe[5][1]);
    kprintf("ring 2 DPL-1 data into es: #%u err=0x%x eip=+%u\n", probe[1][0], probe[1][1], probe[1][2]);
    kprintf("ring 2 DPL-1 data into ss: #%u err=0x%x eip=+%u\n", probe[2][0], probe[2][1], probe[2][2]);
    kprintf("ring 2 RPL-3 selector of DPL-2 data into fs: #%u err=0x%x\n", probe[3][0], probe[3][1]);
    kprintf("ring 2 store to a page not present: #%u err=0x%x cr2=%x\n", probe[4][0], probe[4][1],
            probe[4][4]);
}

static void iopl_probe(void)
{
    u32 before, after_cli, after_sti, after_popf;
    rt_expect_reset();
    __asm__ volatile("pushfl; popl %0" : "=r"(before));
    __asm__ volatile(ARM(1f, 2f) "2: cli\n1:" ::: "memory");
    __asm__ volatile("pushfl; popl %0" : "=r"(after_cli));
    rec(0);
    __asm__ volatile(ARM(1f, 2f) "2: sti\n1:" ::: "memory");
    __asm__ volatile("pushfl; popl %0" : "=r"(after_sti));
    rec(1);
    /* POPF asking for IOPL 3 and IF clear: IOPL is CPL 0's, IF CPL <= IOPL's */
    __asm__ volatile("pushl $0x3002; popfl; pushfl; popl %0" : "=r"(after_popf) :: "memory");
    __asm__ volatile(ARM(1f, 2f) "2: movb $0x5a, %%al; outb %%al, $0x80\n1:" ::: "eax", "memory");
    rec(2);
    probe[3][0] = before & 0x3200;        /* IOPL and IF */
    probe[3][1] = after_cli & 0x3200;
    probe[3][2] = after_sti & 0x3200;
    probe[3][3] = after_popf & 0x3200;
}

static void iopl(int ring, u16 cs, u16 ss, u32 top, u32 eflags)
{
    rt_run_ring(iopl_probe, cs, ss, top, eflags);
    kprintf("ring %d iopl %u: eflags=%x cli #%u (eflags=%x) sti #%u (eflags=%x) popf 3002 -> %x "
            "out #%u\n", ring, (eflags >> 12) & 3, probe[3][0], probe[0][0], probe[3][1],
            probe[1][0], probe[3][2], probe[3][3], probe[2][0]);
}

static void pages2(void)
{
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movl (%0), %%eax; movl %%eax, word\n1:"
                     :: "r"(SUPER_PAGE) : "eax", "memory");
    rec(0);
    __asm__ volatile(ARM(1f, 2f) "2: movl $0x2222, (%0)\n1:" :: "r"(RO_PAGE) : "memory");
    rec(1);
}

static void pages2_wp(void)
{
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movl $0x3333, (%0)\n1:" :: "r"(RO_PAGE) : "memory");
    rec(2);
}

static void pages3(void)
{
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movl (%0), %%eax\n1:" :: "r"(SUPER_PAGE) : "eax", "memory");
    rec(3);
}

static void paging(void)
{
    rt_paging_init();
    volatile u32 *pt0 = (volatile u32 *)PT0_ADDR;
    pt0[SUPER_PAGE >> 12] = SUPER_PAGE | PTE_P | PTE_W;
    pt0[RO_PAGE >> 12] = RO_PAGE | PTE_P | PTE_U;
    *(volatile u32 *)SUPER_PAGE = 0x5eed;
    *(volatile u32 *)RO_PAGE = 0x1111;
    rt_paging_on(0);
    word = 0;
    rt_expect_reset();
    rt_run_ring(pages2, SEL_CODE2, SEL_DATA2, RUN2_TOP, 0x2);
    u32 ro = *(volatile u32 *)RO_PAGE;
    rt_paging_off();
    rt_paging_on(1);
    rt_run_ring(pages2_wp, SEL_CODE2, SEL_DATA2, RUN2_TOP, 0x2);
    rt_run_ring(pages3, SEL_CODE3, SEL_DATA3, RUN3_TOP, 0x2);
    u32 ro2 = *(volatile u32 *)RO_PAGE;
    rt_paging_off();
    kprintf("ring 2 read of a supervisor page: #%u value=%x\n", probe[0][0], word);
    kprintf("ring 2 write to a read-only user page, wp=0: #%u value=%x\n", probe[1][0], ro);
    kprintf("ring 2 write to a read-only user page, wp=1: #%u err=0x%x cr2=%x value=%x\n",
            probe[2][0], probe[2][1], probe[2][4], ro2);
    kprintf("ring 3 read of a supervisor page: #%u err=0x%x\n", probe[3][0], probe[3][1]);
}

/* ---- 8. a task at ring 1 -------------------------------------------------------------- */
#define SEL_TSS1 0x68                   /* descriptor 13 */
#define TASK1_TOP 0x0029c000u
#define TASK1_KTOP 0x0029b000u          /* its SS0:ESP0 */
extern void task1_entry(void), task1_back(void), int62(void), int62_back(void);
struct tss tss1 __attribute__((aligned(128)));

static void task_report(const char *what)
{
    kprintf("%s: cs=%04x ss=%04x esp=top-%u ds=%04x es=%04x fs=%04x gs=%04x eflags=%x link=%04x\n",
            what, rc_cs & 0xffff, rc_ss & 0xffff, TASK1_TOP - rc_esp, rc_segs[0], rc_segs[1],
            rc_segs[2], rc_segs[3], rc_flags, rc_result);
    kprintf("%s mov from cr0: #%u err=0x%x eip=+%u cs=%04x\n", what,
            rt_exc.count ? rt_exc.vector : 0xff, rt_exc.err, rt_exc.eip - rt_mark, rt_exc.cs);
    kprintf("%s saved: eip=%s cs=%04x ss=%04x esp=top-%u\n", what,
            tss1.eip == (u32)task1_back ? "back" : "?", tss1.cs & 0xffff, tss1.ss & 0xffff,
            TASK1_TOP - tss1.esp);
}

static void tasks(void)
{
    memset(&tss1, 0, sizeof tss1);
    tss1.cs = SEL_CODE1;
    tss1.ss = SEL_DATA1;
    tss1.ds = SEL_DATA1;
    tss1.es = SEL_DATA2;
    tss1.fs = SEL_DATA3;
    tss1.gs = 0;
    tss1.eip = (u32)task1_entry;
    tss1.esp = TASK1_TOP;
    tss1.eflags = 0x2;
    tss1.ss0 = SEL_DATA0;
    tss1.esp0 = TASK1_KTOP;
    tss1.cr3 = read_cr3();
    tss1.iomap = 104;
    gdt_set(13, (u32)&tss1, 103, 0x89, 0);
    clear();
    rt_expect_reset();
    __asm__ volatile("lcall $0x68, $0" ::: "memory");
    task_report("task at ring 1 (call)");
    gdt_set(13, (u32)&tss1, 103, 0x89, 0);            /* (available again after the IRET) */
    idt_set(0x62, 0, SEL_TSS1, 0xe5);                  /* task gate, DPL 3 */
    clear();
    rt_expect_reset();
    rt_run_ring(int62, SEL_CODE3, SEL_DATA3, RUN3_TOP, 0x2);
    task_report("task at ring 1 (int from ring 3)");
    kprintf("task at ring 1 (int from ring 3) back: cs=%04x ss=%04x esp=top-%u\n",
            rc_frame[0] & 0xffff, rc_frame[1] & 0xffff, RUN3_TOP - rc_after);
    /* the same TSS made a ring-2 task */
    tss1.cs = SEL_CODE2;
    tss1.ss = SEL_DATA2;
    tss1.ds = SEL_DATA2;
    tss1.es = SEL_DATA3;
    tss1.fs = 0;
    tss1.gs = SEL_DATA2;
    tss1.eip = (u32)task1_entry;
    tss1.esp = TASK1_TOP;
    gdt_set(13, (u32)&tss1, 103, 0x89, 0);
    clear();
    rt_expect_reset();
    __asm__ volatile("lcall $0x68, $0" ::: "memory");
    task_report("task at ring 2 (call)");
}

static void catch_gp(struct frame *f)
{
    /* a #GP nobody armed for (MOV to CR0 at ring 2 in pages2): back to ring 0 */
    if (!rt_resume && (f->cs & 3)) {
        kprintf("ring %u #GP err=0x%x, leaving\n", f->cs & 3, f->err);
        rt_ring_return();
    }
    rt_exc.count++;
    rt_exc.vector = 13;
    rt_exc.err = f->err;
    rt_exc.eip = f->eip;
    rt_exc.cs = f->cs & 0xffff;
    rt_exc.esp3 = (f->cs & 3) ? f->esp3 : 0;
    rt_exc.ss3 = (f->cs & 3) ? f->ss3 & 0xffff : 0;
    if (rt_resume) {
        f->eip = rt_resume;
        rt_resume = 0;
    }
}

extern void r1_code16(void), r1_code16_gp(void), r1_code16_back(void);

/* ---- 9. 16-bit code at ring 1 (an IRET to a 16-bit DPL-1 code segment) -------------- */
static void seg16(void)
{
    gdt_set(14, (u32)r1_code16, 0xffff, ACC_CODE | ACC_DPL(1), 0);
    rt_expect_reset();
    rt_resume = (u32)r1_code16_back - (u32)r1_code16;
    rt_mark = (u32)r1_code16_gp - (u32)r1_code16;
    rt_run_ring((void (*)(void))0, 0x71, SEL_DATA1, RUN1_TOP, 0x2);
    kprintf("16-bit code at ring 1: cs=%04x eip=%x ax=%04x cli #%u err=0x%x eip=+%u cs=%04x\n",
            rt_ring_frame.cs & 0xffff, rt_ring_frame.eip, rt_ring_frame.eax & 0xffff,
            rt_exc.count ? rt_exc.vector : 0xff, rt_exc.err, rt_exc.eip - rt_mark, rt_exc.cs);
}

int main(void)
{
    kprintf("ringcalls: start\n");
    pic_remap_mask_all();
    gdt_set(8, 0, 0xfffff, ACC_CODE | ACC_DPL(2), FLG_4K32);
    gdt_set(9, 0, 0xfffff, ACC_DATA | ACC_DPL(2), FLG_4K32);
    TSS->ss2 = SEL_DATA2;
    TSS->esp2 = STACK2_TOP;
    rt_isr[13] = catch_gp;
    gates();
    isr();
    segs_at(2, SEL_CODE2, SEL_DATA2, RUN2_TOP, SEL_DATA2, SEL_DATA0, SEL_DATA1, SEL_DATA3);
    segs_at(1, SEL_CODE1, SEL_DATA1, RUN1_TOP, SEL_DATA2, SEL_DATA0, SEL_DATA1, SEL_DATA3);
    faults();
    iopl(1, SEL_CODE1, SEL_DATA1, RUN1_TOP, 0x1002);
    iopl(1, SEL_CODE1, SEL_DATA1, RUN1_TOP, 0x0002);
    iopl(2, SEL_CODE2, SEL_DATA2, RUN2_TOP, 0x1002);
    paging();
    tasks();
    seg16();
    /* a selector beyond the GDT's limit, from an immediate: #GP(selector) (what the
     * monitor keeps at the top of the real GDT must not show through) */
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "movl $0xffe0, %%eax\n2: movw %%ax, %%ds\n1:\n\t"
                     "movw %w0, %%ds" :: "r"(SEL_DATA0) : "eax", "memory");
    kprintf("ring 0 load of 0xffe0 into ds: #%u err=0x%x\n", rt_exc.count ? rt_exc.vector : 0xff,
            rt_exc.err);
    kprintf("ringcalls: done\n");
    return 0;
}

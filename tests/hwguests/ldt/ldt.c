/* ldt: a kernel that keeps segments in a local descriptor table.  LLDT and its
 * checks, SLDT, loads through TI=1 selectors with their faults, the accessed
 * bit, in-place edits seen at the next load, the LDT in the GDT's own page,
 * ring 3 running on LDT segments, an LDT behind paging, and LLDT of the null
 * selector.  Expected values (tests/test_monitor_guests.py) come from the SDM:
 * Vol. 2 LLDT/SLDT and MOV (segment loads), Vol. 3 3.4.2/3.4.5 (TI, the accessed
 * bit), 5.5 (privilege), 6.14 (#GP/#NP error codes: the selector, TI included).
 */
#include "rt.h"

#define LDT_GDT_INDEX 8
#define SEL_LDT    (LDT_GDT_INDEX << 3)          /* 0x40 */
#define SEL_LDT_NP 0x48                          /* an LDT descriptor, not present */
/* The LDT lies inside the GDT itself (entries 200-204, unused by the runtime): its
 * bytes are both tables' at once, and a store to one is a store to the other. */
#define MY_LDT     (GDT_ADDR + 200 * 8)
#define LDT_N      6
#define L_DATA0    0x0c   /* entry 1: data, DPL 0, base WINDOW, byte limit 0xfff */
#define L_DATA3    0x17   /* entry 2: data, DPL 3, flat (RPL 3) */
#define L_CODE3    0x1f   /* entry 3: code, DPL 3, flat (RPL 3) */
#define L_NP       0x24   /* entry 4: data, not present */
#define L_CODE0    0x2c   /* entry 5: code, DPL 0, flat */
#define L_BEYOND   0x34   /* entry 6: past the limit */
#define WINDOW     0x00230000u

static volatile u32 *ldt = (volatile u32 *)MY_LDT;

static void ldt_set(int i, u32 base, u32 limit, u8 access, u8 flags)
{
    ldt[2 * i] = (limit & 0xffff) | (base << 16);
    ldt[2 * i + 1] = ((base >> 16) & 0xff) | ((u32)access << 8) |
                     (limit & 0xf0000) | ((u32)flags << 20) | (base & 0xff000000u);
}

static u32 sldt(void)
{
    u32 s = 0xdead;
    __asm__ volatile("sldt %0" : "+r"(s));
    return s & 0xffff;
}

static u32 lldt_try(u32 sel)
{
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: lldt %w0\n1:" :: "r"(sel) : "memory");
    return rt_exc.count;
}

/* Load sel into FS and read the dword at offset 0x10 through it. */
static u32 fs_read(u32 sel)
{
    u32 v = 0;
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movw %w1, %%fs\n\tmovl %%fs:0x10, %0\n1:"
                     : "+r"(v) : "r"(sel) : "memory");
    __asm__ volatile("movw %w0, %%fs" :: "r"(SEL_DATA0));
    return v;
}

static volatile u32 user_ds, user_cs, user_read;

static void user_fn(void)
{
    u32 ds, cs;
    __asm__ volatile("movw %%ds, %w0\n\tmovw %%cs, %w1" : "=r"(ds), "=r"(cs));
    user_ds = ds & 0xffff;
    user_cs = cs & 0xffff;
    user_read = *(volatile u32 *)(WINDOW + 0x20);
}

static void show(const char *what, u32 v)
{
    kprintf("%s: 0x%x\n", what, v);
}

int main(void)
{
    kprintf("ldt: start\n");
    volatile u32 *window = (volatile u32 *)WINDOW;
    for (u32 i = 0; i < 0x100; i++)
        window[i] = 0x1000 + i;

    show("sldt at boot", sldt());
    /* LLDT's checks: a selector into the LDT, beyond the GDT, or naming anything but
     * an LDT descriptor is #GP(selector); a not-present LDT descriptor #NP(selector) */
    gdt_set(LDT_GDT_INDEX + 1, MY_LDT, LDT_N * 8 - 1, 0x02, 0);  /* P=0 */
    lldt_try(0x44);
    report_exc("lldt of a TI=1 selector");
    lldt_try(0x800);
    report_exc("lldt beyond the GDT");
    lldt_try(SEL_DATA0);
    report_exc("lldt of a data segment");
    lldt_try(SEL_LDT_NP);
    report_exc("lldt of a not-present LDT");
    lldt_try(SEL_TSS);
    report_exc("lldt of a TSS");

    for (int i = 0; i < LDT_N; i++)
        ldt_set(i, 0, 0, 0, 0);
    ldt_set(1, WINDOW, 0xfff, 0x92, FLG_BYTE32);          /* accessed clear */
    ldt_set(2, 0, 0xfffff, ACC_DATA | ACC_DPL(3), FLG_4K32);
    ldt_set(3, 0, 0xfffff, ACC_CODE | ACC_DPL(3), FLG_4K32);
    ldt_set(4, 0, 0xfff, 0x13, FLG_BYTE32);                    /* P=0 */
    ldt_set(5, 0, 0xfffff, ACC_CODE | ACC_DPL(0), FLG_4K32);
    gdt_set(LDT_GDT_INDEX, MY_LDT, LDT_N * 8 - 1, 0x82, 0);
    lldt_try(SEL_LDT | 3);      /* the RPL is ignored, and kept in LDTR's selector */
    report_exc("lldt of the LDT");
    show("sldt", sldt());

    show("accessed before the first load", (ldt[3] >> 8) & 1);
    show("read through the LDT", fs_read(L_DATA0));
    report_exc("load of an LDT data segment");
    show("accessed after it", (ldt[3] >> 8) & 1);

    fs_read(L_NP);
    report_exc("load of a not-present LDT entry");
    fs_read(L_BEYOND);
    report_exc("load past the LDT's limit");
    fs_read(L_DATA3 & ~3);      /* RPL 0 of a DPL-3 data segment: allowed */
    report_exc("load of a DPL-3 LDT data segment at CPL 0");

    /* an edit in place is seen at the next load, not before */
    u32 fs_now;
    __asm__ volatile("movw %w1, %%fs\n\tmovl %%fs:0x10, %0" : "=r"(fs_now) : "r"(L_DATA0));
    ldt_set(1, WINDOW + 0x100, 0xfff, 0x93, FLG_BYTE32);
    u32 before_reload;
    __asm__ volatile("movl %%fs:0x10, %0" : "=r"(before_reload));
    show("after the edit, before a reload", before_reload);
    show("after the edit, reloaded", fs_read(L_DATA0));
    (void)fs_now;

    /* a GDT edit in the same frame as the LDT, then an LDT edit */
    gdt_set(20, 0, 0xfffff, ACC_DATA | ACC_DPL(0), FLG_4K32);
    ldt_set(1, WINDOW + 0x200, 0xfff, 0x93, FLG_BYTE32);
    show("after a GDT and an LDT edit in one page", fs_read(L_DATA0));

    /* the kernel's own code through an LDT code segment: a far call and its return */
    u32 cs_in, cs_back;
    __asm__ volatile("lcall %2, $1f\n\t"
                     "jmp 2f\n"
                     "1:\tmovl %%cs, %0\n\t"
                     "lret\n"
                     "2:\tmovl %%cs, %1"
                     : "=&r"(cs_in), "=&r"(cs_back) : "i"(L_CODE0) : "memory");
    /* (the RPL left out: under trap-and-emulate MOV from CS shows the monitor's ring) */
    kprintf("far call through the LDT: cs=0x%x, back: cs=0x%x\n", cs_in & 0xfffc,
            cs_back & 0xfffc);

    /* ring 3 on the LDT's code and data segments */
    rt_run_ring(user_fn, L_CODE3, L_DATA3, USER_STACK_TOP, 0x2);
    kprintf("ring 3: cs=0x%x ds=0x%x read=0x%x frame cs=0x%x ss=0x%x\n", user_cs, user_ds,
            user_read, rt_ring_frame.cs & 0xffff, rt_ring_frame.ss3 & 0xffff);

    /* behind paging: the LDT's frame reached through a page table, edited, reloaded */
    rt_paging_init();
    rt_paging_on(1);
    ldt_set(1, WINDOW + 0x300, 0xfff, 0x93, FLG_BYTE32);
    show("with paging, after an edit", fs_read(L_DATA0));
    rt_paging_off();

    /* LLDT with the null selector: no LDT; a TI=1 load is #GP(selector) */
    lldt_try(0);
    report_exc("lldt of the null selector");
    show("sldt after it", sldt());
    fs_read(L_DATA0);
    report_exc("load through TI=1 with no LDT");

    kprintf("ldt: done\n");
    return 0;
}

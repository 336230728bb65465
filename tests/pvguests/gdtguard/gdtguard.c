/* gdtguard: a GDT frame is typed as Xen types it (PGT_seg_desc_page), and no
 * mapping of it may be writable while a vCPU names it (xen/arch/x86/mm.c).
 * The guest builds its own page tables (one L1 identity-mapping its first 4 MiB,
 * writable), turns paging on, then checks, printing "what value":
 *   - set_gdt of a page it maps writable: -EINVAL; after update_va_mapping made it
 *     read-only: 0;
 *   - mmu_update and update_va_mapping that would map the GDT page writable (at its
 *     own address and at an alias): -EINVAL; read-only: 0;
 *   - a direct store into its L1 (a "writable page table" store, trapped) that would
 *     map the GDT page writable: not done, the guest's #PF (error code 3, CR2 at the
 *     entry) instead; a read-only alias by the same store: done;
 *   - set_gdt of a second page moves the type: the first page may be mapped
 *     writable again, the second may not;
 *   - a table filled while it was an ordinary page, mapping the GDT page writable,
 *     cannot be pinned (L1 or L2) nor loaded by NEW_BASEPTR: -EINVAL; once it maps
 *     the page read-only it can; nor can paging be turned on over a directory that
 *     gained such a mapping after NEW_BASEPTR recorded it with paging off, nor (in a
 *     domain of two vCPUs) start a vCPU on one with VCPUOP_initialise.
 * Every answer is fixed by Xen's rules; the test compares them to Xen's errno. */
#include "pvlib.h"

#define PAGE 4096u
#define P 1u
#define W 2u
#define ALIAS_VA 0x3ff000u      /* the L1's last entry: a second mapping of a GDT page */

static u32 pd[1024] __attribute__((aligned(4096)));
static u32 pt[1024] __attribute__((aligned(4096)));
static u32 pd2[1024] __attribute__((aligned(4096)));    /* filled as ordinary pages */
static u32 pt2[1024] __attribute__((aligned(4096)));
static u32 pd3[1024] __attribute__((aligned(4096)));    /* recorded with paging off */
static u32 pt3[1024] __attribute__((aligned(4096)));
static u32 pd4[1024] __attribute__((aligned(4096)));    /* named by a vCPU context */
static u32 pt4[1024] __attribute__((aligned(4096)));
static unsigned char ctx[SIZEOF_vcpu_guest_context] __attribute__((aligned(8)));
#define CTX(field) (*(u32 *)(ctx + OFFSETOF_vcpu_guest_context_##field))
#define CTX16(field) (*(unsigned short *)(ctx + OFFSETOF_vcpu_guest_context_##field))
static unsigned char gdt_a[4096] __attribute__((aligned(4096)));
static unsigned char gdt_b[4096] __attribute__((aligned(4096)));

volatile u32 pf_count, pf_err, pf_cr2, pf_resume;
extern void pf_entry(void);
/* #PF: record the error code and CR2 (vcpu_info's), drop the frame, go on at pf_resume */
__asm__(".text\n.globl pf_entry\npf_entry:\n\t"
        "popl pf_err\n\t"
        "addl $12, %esp\n\t"
        "movl " "0xFFBFF008" ", %eax\n\t"
        "movl %eax, pf_cr2\n\t"
        "incl pf_count\n\t"
        "jmp *pf_resume\n");

static void line(const char *what, long v) { puts_(what); puts_(" "); puti(v); puts_("\n"); }
static long machine_op(u32 cmd, u32 a, u32 b) { return hypercall(__HYPERVISOR_rv_machine_op, cmd, a, b, 0, 0); }
static u32 mfn_of(const void *va) { return (u32)machine_op(RV_VA_TO_MFN, (u32)va, 0); }

static long set_gdt(const void *page)
{
    static xen_pfn_t frames[1];
    frames[0] = mfn_of(page);
    return hypercall(__HYPERVISOR_set_gdt, (u32)frames, 16, 0, 0, 0);
}

static long mmu_update(u32 va, u32 val)
{
    /* the entry of `va` in the L1, by its machine address */
    static struct mmu_update req;
    req.ptr = ((unsigned long long)mfn_of(pt) << 12) + ((va >> 12) & 1023) * 4;
    req.val = val;
    return hypercall(__HYPERVISOR_mmu_update, (u32)&req, 1, 0, DOMID_SELF, 0);
}

static long mmuext(u32 cmd, const void *table)
{
    static struct mmuext_op op;
    op.cmd = cmd;
    op.arg1.mfn = mfn_of(table);
    return hypercall(__HYPERVISOR_mmuext_op, (u32)&op, 1, 0, DOMID_SELF, 0);
}

static long uva(u32 va, u32 val)
{
    return hypercall(__HYPERVISOR_update_va_mapping, va, val, 0, UVMF_INVLPG, 0);
}

/* store `val` into the L1 entry of `va` with a plain MOV; the #PF handler, if the store
 * is refused, comes back at the label after it */
static void direct(u32 va, u32 val)
{
    volatile u32 *e = &pt[(va >> 12) & 1023];
    __asm__ volatile("movl $1f, pf_resume\n\t"
                     "movl %1, (%0)\n"
                     "1:" :: "r"(e), "r"(val) : "memory");
}

int main(void)
{
    puts_("gdtguard: start\n");
    static trap_info_t traps[2] = { { 14, 1, 0, (unsigned long)pf_entry }, { 0, 0, 0, 0 } };
    unsigned short cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    traps[0].cs = cs;                   /* the code segment it was started on */

    /* both GDT pages: flat kernel code and data at entries 1 and 2 (DPL 0: the kernel's virtual CPL) (the selectors
     * `--mode paravirt` starts a guest on; a domain's are Xen's FLAT_*, kept apart) */
    for (int k = 0; k < 2; k++) {
        volatile u32 *g = (volatile u32 *)(k ? gdt_b : gdt_a);
        g[2] = 0x0000ffff; g[3] = 0x00cf9b00;
        g[4] = 0x0000ffff; g[5] = 0x00cf9300;
    }
    line("set_trap_table", hypercall(__HYPERVISOR_set_trap_table, (u32)traps, 0, 0, 0, 0));

    for (u32 i = 0; i < 1024; i++)
        pt[i] = i < 1023 ? (i * PAGE) | P | W : 0;
    pd[0] = mfn_of(pt) << 12 | P | W;
    line("new_baseptr", mmuext(MMUEXT_NEW_BASEPTR, pd));
    long cr0 = machine_op(RV_READ_CR, 0, 0);
    line("paging on", machine_op(RV_WRITE_CR, 0, (u32)cr0 | 0x80000000u));

    {
        pf_count = 0;
        __asm__ volatile("movl $1f, pf_resume\n\tmovl 0x800000, %%eax\n1:" ::: "eax", "memory");
        line("probe fault", pf_count);
    }
    u32 a = (u32)gdt_a, b = (u32)gdt_b;
    u32 ma = mfn_of(gdt_a) << 12, mb = mfn_of(gdt_b) << 12;
    line("set_gdt of a writable page", set_gdt(gdt_a));
    line("update_va_mapping read-only", uva(a, ma | P));
    line("set_gdt of it read-only", set_gdt(gdt_a));
    line("update_va_mapping writable", uva(a, ma | P | W));
    line("mmu_update writable", mmu_update(a, ma | P | W));
    line("mmu_update writable alias", mmu_update(ALIAS_VA, ma | P | W));
    line("mmu_update read-only alias", mmu_update(ALIAS_VA, ma | P));
    line("mmu_update alias gone", mmu_update(ALIAS_VA, 0));

    pf_count = 0;
    direct(ALIAS_VA, ma | P | W);
    line("direct writable alias faults", pf_count);
    line("its error code", pf_err);
    line("its cr2 is the entry", pf_cr2 == (u32)&pt[ALIAS_VA >> 12]);
    line("the entry stays", pt[ALIAS_VA >> 12]);
    direct(ALIAS_VA, ma | P);
    line("direct read-only alias faults", pf_count - 1);
    line("the entry is", pt[ALIAS_VA >> 12] == (ma | P));
    direct(ALIAS_VA, 0);

    /* the GDT moves to b: a is a page like any other again, b is typed */
    line("update_va_mapping b read-only", uva(b, mb | P));
    line("set_gdt of b", set_gdt(gdt_b));
    line("a writable again", uva(a, ma | P | W));
    line("b writable", mmu_update(b, mb | P | W));
    pf_count = 0;
    direct(ALIAS_VA, mb | P | W);
    line("direct writable alias of b faults", pf_count);
    direct(ALIAS_VA, ma | P | W);
    line("direct writable alias of a faults", pf_count - 1);
    line("set_gdt of a mapped writable", set_gdt(gdt_a));

    /* tables filled by plain stores while they were ordinary pages: pt2 as pt, but
     * mapping b (the GDT) writable; Xen validates every entry when a frame becomes a
     * table (pinned, or loaded as the directory), so none of these may happen */
    for (u32 i = 0; i < 1024; i++)
        pt2[i] = pt[i];
    pt2[(b >> 12) & 1023] = mb | P | W;
    pd2[0] = mfn_of(pt2) << 12 | P | W;
    line("pin_l1 of a table mapping the gdt writable", mmuext(MMUEXT_PIN_L1_TABLE, pt2));
    line("pin_l2 of a directory bringing it in", mmuext(MMUEXT_PIN_L2_TABLE, pd2));
    line("new_baseptr of that directory", mmuext(MMUEXT_NEW_BASEPTR, pd2));
    pt2[(b >> 12) & 1023] = mb | P;
    line("new_baseptr once it maps the gdt read-only", mmuext(MMUEXT_NEW_BASEPTR, pd2));
    line("new_baseptr back", mmuext(MMUEXT_NEW_BASEPTR, pd));

    /* ringvisor's start state, which a Xen guest never has: with paging off a directory
     * NEW_BASEPTR records is validated then, and again when paging on makes it live --
     * pt3 gains a writable mapping of the GDT by a plain store in between */
    for (u32 i = 0; i < 1024; i++)
        pt3[i] = pt[i];
    pt3[(b >> 12) & 1023] = mb | P;
    pd3[0] = mfn_of(pt3) << 12 | P | W;
    line("paging off", machine_op(RV_WRITE_CR, 0, (u32)cr0));
    line("new_baseptr while paging is off", mmuext(MMUEXT_NEW_BASEPTR, pd3));
    pt3[(b >> 12) & 1023] = mb | P | W;
    line("paging on over a writable mapping of the gdt",
         machine_op(RV_WRITE_CR, 0, (u32)cr0 | 0x80000000u));
    pt3[(b >> 12) & 1023] = mb | P;
    line("paging on once it is read-only", machine_op(RV_WRITE_CR, 0, (u32)cr0 | 0x80000000u));
    line("new_baseptr back at last", mmuext(MMUEXT_NEW_BASEPTR, pd));

    /* in a domain of two vCPUs (not under --mode paravirt: one vCPU, -ENOENT): a vCPU
     * context with paging on names its directory, which takes the root type then
     * (Xen's arch_set_info_guest), validated as a NEW_BASEPTR's; vCPU 1 is not started */
    if (hypercall(__HYPERVISOR_vcpu_op, VCPUOP_is_up, 1, 0, 0, 0) == 0) {
        for (u32 i = 0; i < 1024; i++)
            pt4[i] = pt[i];
        pt4[(b >> 12) & 1023] = mb | P | W;
        pd4[0] = mfn_of(pt4) << 12 | P | W;
        CTX(flags) = VGCF_in_kernel;
        CTX(user_regs_eip) = (u32)main;
        CTX(user_regs_eflags) = 2;
        CTX16(user_regs_cs) = FLAT_KERNEL_CS;
        CTX16(user_regs_ss) = CTX16(user_regs_ds) = CTX16(user_regs_es) = FLAT_KERNEL_SS;
        CTX(ctrlreg) = (u32)cr0 | 0x80000000u;
        (&CTX(ctrlreg))[3] = mfn_of(pd4) << 12;
        line("initialise over a writable mapping of the gdt",
             hypercall(__HYPERVISOR_vcpu_op, VCPUOP_initialise, 1, (u32)ctx, 0, 0));
        pt4[(b >> 12) & 1023] = mb | P;
        line("initialise once it is read-only",
             hypercall(__HYPERVISOR_vcpu_op, VCPUOP_initialise, 1, (u32)ctx, 0, 0));
    }
    puts_("gdtguard: done\n");
    shutdown();
    return 0;
}

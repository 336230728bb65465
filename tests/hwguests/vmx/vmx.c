/* vmx: a tiny hypervisor that turns on VMX, builds a VMCS and enters a guest (its own
 * code snippets, vmx_asm.S), then prints every VM exit's reason, qualification,
 * instruction length, interruption and IDT-vectoring information, and the status
 * and VM-instruction error of every VMX instruction it tries.  QEMU's TCG has no
 * VMX, so the expected lines (tests/test_vmx_guest.py) come from the Intel SDM,
 * each with the rule it checks.
 */
#include "rt.h"

#define MSR_FEATURE_CONTROL 0x3a
#define MSR_VMX_BASIC 0x480
#define MSR_VMX_TRUE_PIN 0x48d
#define MSR_VMX_TRUE_PROC 0x48e
#define MSR_VMX_TRUE_EXIT 0x48f
#define MSR_VMX_TRUE_ENTRY 0x490
#define MSR_VMX_PROC2 0x48b
#define MSR_VMX_EPT_VPID_CAP 0x48c
#define CR4_VMXE 0x2000u

/* VMCS field encodings (SDM Appendix B) */
enum {
    GUEST_SEL = 0x800, HOST_SEL = 0xc00, IO_BITMAP_A = 0x2000, IO_BITMAP_B = 0x2002,
    MSR_BITMAP = 0x2004, TSC_OFFSET = 0x2010, EPTP = 0x201a, GUEST_PHYS = 0x2400, VMCS_LINK = 0x2800,
    PIN = 0x4000, PROC = 0x4002, EXC_BITMAP = 0x4004, PF_MASK = 0x4006, PF_MATCH = 0x4008,
    CR3_COUNT = 0x400a, EXIT_CTLS = 0x400c, ENTRY_CTLS = 0x4012, ENTRY_INFO = 0x4016,
    ENTRY_ERR = 0x4018, ENTRY_LEN = 0x401a, PROC2 = 0x401e,
    INSN_ERROR = 0x4400, EXIT_REASON = 0x4402, EXIT_INFO = 0x4404, EXIT_ERR = 0x4406,
    IDT_INFO = 0x4408, IDT_ERR = 0x440a, EXIT_LEN = 0x440c,
    GUEST_LIMIT = 0x4800, GUEST_GDTR_LIMIT = 0x4810, GUEST_IDTR_LIMIT = 0x4812,
    GUEST_AR = 0x4814, GUEST_INTR = 0x4824, GUEST_ACTIVITY = 0x4826, HOST_SYSENTER_CS = 0x4c00,
    CR0_MASK = 0x6000, CR4_MASK = 0x6002, CR0_SHADOW = 0x6004, CR4_SHADOW = 0x6006,
    CR3_TARGET0 = 0x6008, EXIT_QUAL = 0x6400, GUEST_LINEAR = 0x640a,
    GUEST_CR0 = 0x6800, GUEST_CR3 = 0x6802, GUEST_CR4 = 0x6804, GUEST_BASE = 0x6806,
    GUEST_GDTR_BASE = 0x6816, GUEST_IDTR_BASE = 0x6818, GUEST_DR7 = 0x681a, GUEST_RSP = 0x681c,
    GUEST_RIP = 0x681e, GUEST_RFLAGS = 0x6820,
    HOST_CR0 = 0x6c00, HOST_CR3 = 0x6c02, HOST_CR4 = 0x6c04, HOST_TR_BASE = 0x6c0a,
    HOST_GDTR_BASE = 0x6c0c, HOST_IDTR_BASE = 0x6c0e,
};

extern u32 vmx_run(u32 resume);
extern u32 g_regs[8], g_val, g_val2, g_val3;
extern u8 g_buf[];
extern char g_cpuid[], g_hlt[], g_outimm[], g_indx[], g_outpass[], g_insb[], g_cr3r[],
    g_cr3w_target[], g_cr3w_other[], g_crread[], g_cr0w[], g_clts[], g_lmsw[], g_cr4w[],
    g_dr7[], g_rdmsr_exit[], g_msr_pass[], g_wrmsr_exit[], g_rdtsc[], g_rdtsc_exit[],
    g_invlpg[], g_vmcall[], g_ud2[], g_int3[], g_pf[], g_nop[], g_window[], g_spin[],
    g_vmxon[], gh_soft[], gh_err[], gh_ext[], g_ept_rw[], g_ept_read[], g_ept_big[], g_invept[],
    g_lcall_tss[], g_ljmp_tss[], g_int_task[], g_lcall_busy[], g_iret[],
    g_nmi_self[], g_nmi_after[], gh_nmi[], g_nmi_iret[];

static u8 vmxon_region[4096] __attribute__((aligned(4096)));
static u8 vmcs[4096] __attribute__((aligned(4096)));
static u8 vmcs_bad[4096] __attribute__((aligned(4096)));
static u8 io_a[4096] __attribute__((aligned(4096)));
static u8 io_b[4096] __attribute__((aligned(4096)));
static u8 msr_bm[4096] __attribute__((aligned(4096)));
static u32 guest_idt[512] __attribute__((aligned(8)));
static u8 guest_stack[4096] __attribute__((aligned(16)));
static u32 host_idt_limit;
static u32 launched;

static u64 rdmsr(u32 n) { u32 a, d; __asm__ volatile("rdmsr" : "=a"(a), "=d"(d) : "c"(n)); return (u64)d << 32 | a; }
static void wrmsr(u32 n, u64 v) { __asm__ volatile("wrmsr" :: "c"(n), "a"((u32)v), "d"((u32)(v >> 32))); }

/* the status a VMX instruction leaves: 0 VMsucceed, "CF" VMfailInvalid, "ZF" VMfailValid */
static const char *status(u32 fl)
{
    return fl & EFLAGS_CF ? "VMfailInvalid" : fl & EFLAGS_ZF ? "VMfailValid" : "VMsucceed";
}

#define VMX_OP(insn, operand) ({ u32 _f; __asm__ volatile(insn " %1; pushfl; popl %0" \
    : "=r"(_f) : "m"(operand) : "memory", "cc"); _f; })

static u32 vmread_f(u32 field, u32 *value)
{
    u32 f, v = 0;
    __asm__ volatile("vmread %2, %1; pushfl; popl %0" : "=r"(f), "=r"(v) : "r"(field) : "cc");
    *value = v;
    return f;
}
static u32 vmwrite_f(u32 field, u32 value)
{
    u32 f;
    __asm__ volatile("vmwrite %1, %2; pushfl; popl %0" : "=r"(f) : "r"(value), "r"(field) : "cc");
    return f;
}
static u32 vmr(u32 field) { u32 v; u32 f = vmread_f(field, &v); if (f & 0x41) fail("vmread"); return v; }
static void vmw(u32 field, u32 value) { if (vmwrite_f(field, value) & 0x41) fail("vmwrite"); }
static void report_fail(const char *what, u32 fl)
{
    u32 err = 0;
    if (fl & EFLAGS_ZF)
        vmread_f(INSN_ERROR, &err);
    kprintf("%s: %s error=%u\n", what, status(fl), err);
}

static u32 ctl(u32 msr, u32 want)
{
    u64 v = rdmsr(msr);
    return (want | (u32)v) & (u32)(v >> 32);
}

static void gate(int vec, void *fn)
{
    u32 off = (u32)fn;
    guest_idt[vec * 2] = (SEL_CODE0 << 16) | (off & 0xffff);
    guest_idt[vec * 2 + 1] = (off & 0xffff0000u) | 0x8e00;
}

static void setup_vmcs(void)
{
    struct __attribute__((packed)) { u16 limit; u32 base; } gdtr, idtr;
    __asm__ volatile("sgdt %0; sidt %1" : "=m"(gdtr), "=m"(idtr));
    host_idt_limit = idtr.limit;
    vmw(PIN, ctl(MSR_VMX_TRUE_PIN, 0));
    vmw(PROC, ctl(MSR_VMX_TRUE_PROC, (1u << 7) | (1u << 16) | (1u << 25) | (1u << 28) | (1u << 31)));
    vmw(PROC2, ctl(MSR_VMX_PROC2, 0));
    vmw(EXIT_CTLS, ctl(MSR_VMX_TRUE_EXIT, 0));
    vmw(ENTRY_CTLS, ctl(MSR_VMX_TRUE_ENTRY, 0));
    vmw(IO_BITMAP_A, (u32)io_a);
    vmw(IO_BITMAP_A + 1, 0);
    vmw(IO_BITMAP_B, (u32)io_b);
    vmw(MSR_BITMAP, (u32)msr_bm);
    io_a[0x80 >> 3] |= 1;                      /* port 0x80 exits, 0x81 does not */
    msr_bm[0x10 >> 3] |= 1 << (0x10 & 7);      /* RDMSR of IA32_TSC exits */
    msr_bm[2048 + (0x174 >> 3)] |= 1 << (0x174 & 7);   /* WRMSR of SYSENTER_CS exits */
    vmw(VMCS_LINK, 0xffffffffu);
    vmw(VMCS_LINK + 1, 0xffffffffu);
    vmw(CR0_MASK, 0x80000029u);                /* PG NE TS PE owned by the host */
    vmw(CR0_SHADOW, read_cr0() | 0x8);         /* the guest believes TS is set */
    vmw(CR4_MASK, CR4_VMXE);
    vmw(CR4_SHADOW, read_cr4() & ~CR4_VMXE);   /* ... and VMXE clear */
    /* host state: the runtime's tables, this CPU's control registers */
    vmw(HOST_CR0, read_cr0());
    vmw(HOST_CR3, read_cr3());
    vmw(HOST_CR4, read_cr4());
    static const u16 hsel[7] = { SEL_DATA0, SEL_CODE0, SEL_DATA0, SEL_DATA0, SEL_DATA0, SEL_DATA0, SEL_TSS };
    for (int i = 0; i < 7; i++)
        vmw(HOST_SEL + 2 * i, hsel[i]);
    vmw(HOST_TR_BASE, TSS_ADDR);
    vmw(HOST_GDTR_BASE, gdtr.base);
    vmw(HOST_IDTR_BASE, idtr.base);
    vmw(HOST_SYSENTER_CS, 0);
    /* guest state: ring 0, flat, the same GDT and page tables, its own IDT and stack */
    vmw(GUEST_CR0, read_cr0());
    vmw(GUEST_CR3, read_cr3());
    vmw(GUEST_CR4, read_cr4());
    vmw(GUEST_DR7, 0x400);
    static const u16 gsel[8] = { SEL_DATA0, SEL_CODE0, SEL_DATA0, SEL_DATA0, SEL_DATA0, SEL_DATA0, 0, SEL_TSS };
    static const u32 gar[8] = { 0xc093, 0xc09b, 0xc093, 0xc093, 0xc093, 0xc093, 0x10000, 0x8b };
    for (int i = 0; i < 8; i++) {
        vmw(GUEST_SEL + 2 * i, gsel[i]);
        vmw(GUEST_BASE + 2 * i, i == 7 ? TSS_ADDR : 0);
        vmw(GUEST_LIMIT + 2 * i, i == 7 ? TSS_LIMIT : i == 6 ? 0 : 0xffffffffu);
        vmw(GUEST_AR + 2 * i, gar[i]);
    }
    vmw(GUEST_GDTR_BASE, gdtr.base);
    vmw(GUEST_GDTR_LIMIT, gdtr.limit);
    gate(13, gh_err);
    gate(0x40, gh_soft);
    gate(0x41, gh_ext);
    guest_idt[0x42 * 2 + 1] = 0x0e00;          /* a 32-bit interrupt gate, not present */
    vmw(GUEST_IDTR_BASE, (u32)guest_idt);
    vmw(GUEST_IDTR_LIMIT, sizeof guest_idt - 1);
    vmw(GUEST_RSP, (u32)guest_stack + sizeof guest_stack);
    vmw(GUEST_RFLAGS, 0x2);
}

static u32 entry_status;

/* enter the guest at ``rip``; 0 after a VM exit */
static u32 enter(void *rip)
{
    vmw(GUEST_RIP, (u32)rip);
    vmw(GUEST_RSP, (u32)guest_stack + sizeof guest_stack);
    entry_status = vmx_run(launched);
    if (!entry_status && !(vmr(EXIT_REASON) >> 31))
        launched = 1;                          /* (a VM-entry failure leaves it clear) */
    return entry_status;
}

static void show(const char *name, void *label)
{
    if (entry_status) {
        report_fail(name, entry_status >> 8);
        return;
    }
    u32 reason = vmr(EXIT_REASON), info = vmr(EXIT_INFO), idt = vmr(IDT_INFO);
    kprintf("%s: reason=%u qual=0x%x len=%u rip=+%u", name, reason & 0xffff, vmr(EXIT_QUAL),
            vmr(EXIT_LEN), vmr(GUEST_RIP) - (u32)label);
    if (reason >> 31)
        kprintf(" entry-failure");
    if (info >> 31)
        kprintf(" info=0x%x", info);
    if (info & 0x800)
        kprintf(" err=0x%x", vmr(EXIT_ERR));
    if (idt >> 31)
        kprintf(" idt=0x%x", idt);
    if (idt & 0x800)
        kprintf(" idt-err=0x%x", vmr(IDT_ERR));
    kprintf("\n");
}

#define RUN(name, label) do { enter(label); show(name, label); } while (0)

static void t_instructions(void)
{
    u64 vmxon_pa = (u32)vmxon_region, vmcs_pa = (u32)vmcs, bad = (u32)vmcs_bad, odd = (u32)vmcs + 8;
    u32 v;

    kprintf("cpuid.1:ecx.vmx=%u\n", ({ u32 a = 1, b, c, d = 0; __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "=c"(c), "+d"(d) :: ); (c >> 5) & 1; }));
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: vmxon %0\n1:" :: "m"(vmxon_pa));
    report_exc("vmxon with CR4.VMXE=0");
    write_cr4(read_cr4() | CR4_VMXE);
    kprintf("feature control=0x%x\n", (u32)rdmsr(MSR_FEATURE_CONTROL));
    u64 basic = rdmsr(MSR_VMX_BASIC);
    *(u32 *)vmxon_region = (u32)basic & 0x7fffffff;
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: vmxon %0\n1:" :: "m"(vmxon_pa));
    report_exc("vmxon unlocked");
    wrmsr(MSR_FEATURE_CONTROL, 5);
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: wrmsr\n1:" :: "c"(MSR_FEATURE_CONTROL), "a"(4), "d"(0));
    report_exc("wrmsr locked");
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: vmxon %0\n1:" :: "m"(vmxon_pa));
    report_exc("vmxon paging off");
    rt_paging_init();
    rt_paging_on(0);
    write_cr0(read_cr0() | 0x20);                  /* NE */
    kprintf("vmxon unaligned: %s\n", status(VMX_OP("vmxon", odd)));
    *(u32 *)vmxon_region = 0x7fffffff;
    kprintf("vmxon bad revision: %s\n", status(VMX_OP("vmxon", vmxon_pa)));
    *(u32 *)vmxon_region = (u32)basic & 0x7fffffff;
    kprintf("vmxon: %s\n", status(VMX_OP("vmxon", vmxon_pa)));
    kprintf("vmxon again: %s\n", status(VMX_OP("vmxon", vmxon_pa)));
    kprintf("vmread no vmcs: %s\n", status(vmread_f(EXIT_REASON, &v)));
    u64 cur = 0;
    __asm__ volatile("vmptrst %0" : "=m"(cur));
    kprintf("vmptrst: 0x%x%08x\n", (u32)(cur >> 32), (u32)cur);
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: mov %0, %%cr4\n1:" :: "r"(read_cr4() & ~CR4_VMXE));
    report_exc("clear CR4.VMXE");
    *(u32 *)vmcs = (u32)basic & 0x7fffffff;
    *(u32 *)vmcs_bad = 0x12345;
    kprintf("vmclear: %s\n", status(VMX_OP("vmclear", vmcs_pa)));
    kprintf("vmptrld: %s\n", status(VMX_OP("vmptrld", vmcs_pa)));
    __asm__ volatile("vmptrst %0" : "=m"(cur));
    kprintf("vmptrst = vmcs: %u\n", cur == vmcs_pa);
    report_fail("vmclear unaligned", VMX_OP("vmclear", odd));
    report_fail("vmclear vmxon region", VMX_OP("vmclear", vmxon_pa));
    report_fail("vmptrld unaligned", VMX_OP("vmptrld", odd));
    report_fail("vmptrld vmxon region", VMX_OP("vmptrld", vmxon_pa));
    report_fail("vmptrld bad revision", VMX_OP("vmptrld", bad));
    report_fail("vmxon in root", VMX_OP("vmxon", vmxon_pa));
    report_fail("vmread unsupported", vmread_f(0x10000, &v));
    report_fail("vmwrite read-only", vmwrite_f(EXIT_REASON, 1));
    { u32 f; __asm__ volatile("vmcall; pushfl; popl %0" : "=r"(f) :: "cc"); report_fail("vmcall in root", f); }
    kprintf("vmwrite/vmread 64-bit high: %s", status(vmwrite_f(TSC_OFFSET + 1, 0xabcd)));
    kprintf(" low=0x%x high=0x%x\n", vmr(TSC_OFFSET), vmr(TSC_OFFSET + 1));
    vmw(TSC_OFFSET, 0); vmw(TSC_OFFSET + 1, 0);
}

static void t_entry_checks(void)
{
    u32 fl;
    __asm__ volatile("vmresume; pushfl; popl %0" : "=r"(fl) :: "cc");
    report_fail("vmresume clear vmcs", fl);
    vmw(PIN, 0);                               /* default1 bits missing */
    enter(g_vmcall);
    show("bad pin controls", g_vmcall);
    vmw(PIN, ctl(MSR_VMX_TRUE_PIN, 0));
    vmw(HOST_SEL + 12, 0);                     /* host TR null */
    enter(g_vmcall);
    show("null host TR", g_vmcall);
    vmw(HOST_SEL + 12, SEL_TSS);
    vmw(GUEST_RFLAGS, 0);                      /* bit 1 must be 1 */
    enter(g_vmcall);
    show("guest RFLAGS bit 1 clear", g_vmcall);
    vmw(GUEST_RFLAGS, 2);
    vmw(VMCS_LINK, 0);
    vmw(VMCS_LINK + 1, 0);
    enter(g_vmcall);
    show("vmcs link pointer 0", g_vmcall);
    vmw(VMCS_LINK, 0xffffffffu);
    vmw(VMCS_LINK + 1, 0xffffffffu);
    vmw(ENTRY_INFO, 0x80000b0d);               /* #GP with an error code of 17 bits */
    vmw(ENTRY_ERR, 0x10000);
    enter(g_vmcall);
    show("inject error code > 16 bits", g_vmcall);
    vmw(ENTRY_INFO, 0);
}

static void t_exits(void)
{
    RUN("vmcall", g_vmcall);
    u32 fl;
    __asm__ volatile("vmlaunch; pushfl; popl %0" : "=r"(fl) :: "cc");
    report_fail("vmlaunch launched vmcs", fl);
    RUN("cpuid", g_cpuid);
    RUN("hlt", g_hlt);
    RUN("out imm8", g_outimm);
    RUN("in dx", g_indx);
    RUN("out bitmap clear", g_outpass);
    RUN("rep insb", g_insb);
    kprintf("  guest-linear=%u\n", vmr(GUEST_LINEAR) == (u32)g_buf);
    RUN("mov from cr3", g_cr3r);
    vmw(PROC, (vmr(PROC) & ~(1u << 16)) | (1u << 15));   /* CR3-load exiting, not store */
    vmw(CR3_TARGET0, read_cr3());
    vmw(CR3_COUNT, 1);
    RUN("mov to cr3 target", g_cr3w_target);
    RUN("mov to cr3 other", g_cr3w_other);
    RUN("read cr0 smsw cr4", g_crread);
    kprintf("  cr0=0x%x smsw=0x%x cr4=0x%x (real cr0=0x%x cr4=0x%x)\n", g_val, g_val2, g_val3,
            vmr(GUEST_CR0), vmr(GUEST_CR4));
    RUN("mov to cr0 TS", g_cr0w);
    RUN("clts", g_clts);
    RUN("lmsw", g_lmsw);
    RUN("mov cr4 keep", g_cr4w);
    kprintf("  cr4 read=0x%x real=0x%x\n", g_val, vmr(GUEST_CR4));
    RUN("mov from dr7 (no exiting)", g_dr7);
    vmw(PROC, vmr(PROC) | (1u << 23));
    RUN("mov from dr7", g_dr7);
    RUN("rdmsr tsc", g_rdmsr_exit);
    RUN("rdmsr bitmap clear", g_msr_pass);
    RUN("wrmsr sysenter_cs", g_wrmsr_exit);
    vmw(PROC, vmr(PROC) | (1u << 3));          /* use TSC offsetting */
    vmw(TSC_OFFSET + 1, 0x10000);
    RUN("rdtsc offset", g_rdtsc);
    kprintf("  tsc high >= 0x10000: %u\n", g_val >= 0x10000);
    vmw(PROC, vmr(PROC) | (1u << 12));
    RUN("rdtsc exiting", g_rdtsc_exit);
    vmw(PROC, vmr(PROC) | (1u << 9));
    RUN("invlpg", g_invlpg);
    RUN("vmxon in guest", g_vmxon);
    vmw(EXC_BITMAP, (1u << 6) | (1u << 3) | (1u << 14) | (1u << 11));
    RUN("ud2", g_ud2);
    RUN("int3", g_int3);
    RUN("#PF", g_pf);
    vmw(EXC_BITMAP, (1u << 6) | (1u << 11));   /* bit 14 clear ... */
    vmw(PF_MASK, 1);
    vmw(PF_MATCH, 1);                          /* ... and P=0 does not match: exits */
    RUN("#PF mask/match", g_pf);
    vmw(PF_MATCH, 0);                          /* matches, bit 14 clear: delivered (to #GP's gate?) */
}

static void t_injection(void)
{
    vmw(ENTRY_INFO, 0x80000440);               /* software interrupt 0x40 ... */
    vmw(ENTRY_LEN, 2);                         /* ... after a 2-byte instruction */
    RUN("inject int 0x40", g_nop);
    kprintf("  pushed eip=+%u\n", g_val - (u32)g_nop);
    vmw(ENTRY_INFO, 0x80000b0d);               /* #GP(0x1234) */
    vmw(ENTRY_ERR, 0x1234);
    RUN("inject #GP", g_nop);
    kprintf("  error=0x%x pushed eip=+%u\n", g_val, g_val2 - (u32)g_nop);
    vmw(ENTRY_INFO, 0x80000041);               /* external interrupt 0x41 */
    vmw(GUEST_RFLAGS, 0x202);
    RUN("inject external 0x41", g_nop);
    kprintf("  pushed eip=+%u\n", g_val - (u32)g_nop);
    vmw(ENTRY_INFO, 0x80000042);               /* vector 0x42: the guest's gate is not present */
    vmw(GUEST_RFLAGS, 0x202);                  /* (the 0x41 handler ran with IF=0) */
    RUN("inject into a missing gate", g_nop);
    vmw(GUEST_RFLAGS, 0x2);
    vmw(ENTRY_INFO, 0);
    vmw(PROC, vmr(PROC) | (1u << 2));          /* interrupt-window exiting */
    RUN("interrupt window", g_window);
    vmw(PROC, vmr(PROC) & ~(1u << 2));
    vmw(GUEST_RFLAGS, 0x2);
    /* external-interrupt exiting, acknowledged on exit: IRQ 0 of the PIT, guest IF=0 */
    vmw(PIN, vmr(PIN) | 1);
    vmw(EXIT_CTLS, vmr(EXIT_CTLS) | (1u << 15));
    outb(0x43, 0x34);
    outb(0x40, 0x00);
    outb(0x40, 0x10);
    outb(0x21, 0xfe);
    RUN("external interrupt", g_spin);
    outb(0x21, 0xff);
    pic_eoi(0);
    vmw(PIN, vmr(PIN) & ~1u);
    vmw(GUEST_IDTR_LIMIT, 0);                  /* nothing can be delivered */
    vmw(EXC_BITMAP, 0);
    RUN("triple fault", g_ud2);
}

/* ---- task switches (SDM Vol. 3C §25.4.2, §27.2.1 Table 27-2) ------------------------ */
#define SEL_TSS_A 0x48                         /* an available 32-bit TSS */
#define SEL_TSS_B 0x50                         /* a busy one, the back link of IRET */
static u8 tss_a[0x68] __attribute__((aligned(16)));

static u32 desc_type(u32 sel)
{
    struct __attribute__((packed)) { u16 limit; u32 base; } gdtr;
    __asm__ volatile("sgdt %0" : "=m"(gdtr));
    return (((volatile u32 *)gdtr.base)[(sel >> 3) * 2 + 1] >> 8) & 0xf;
}

static void t_tasks(void)
{
    gdt_set(SEL_TSS_A >> 3, (u32)tss_a, 0x67, 0x89, 0);
    gdt_set(SEL_TSS_B >> 3, (u32)tss_a, 0x67, 0x8b, 0);
    vmw(GUEST_IDTR_LIMIT, sizeof guest_idt - 1);
    guest_idt[0x43 * 2] = SEL_TSS_A << 16;     /* a task gate, DPL 0 */
    guest_idt[0x43 * 2 + 1] = 0x8500;
    vmw(GUEST_CR0, vmr(GUEST_CR0) & ~0x8u);
    RUN("lcall tss", g_lcall_tss);
    kprintf("  tr=0x%x tss a type=%x guest cr0.ts=%u\n", vmr(GUEST_SEL + 14), desc_type(SEL_TSS_A),
            (vmr(GUEST_CR0) >> 3) & 1);
    RUN("ljmp tss", g_ljmp_tss);
    RUN("int task gate", g_int_task);
    vmw(EXC_BITMAP, 1u << 13);
    RUN("lcall busy tss", g_lcall_busy);
    vmw(EXC_BITMAP, 0);
    ((volatile struct tss *)TSS_ADDR)->link = SEL_TSS_B;
    vmw(GUEST_RFLAGS, 0x4002);                 /* NT */
    RUN("iret nt", g_iret);
    vmw(GUEST_RFLAGS, 0x2);
}

/* ---- NMIs (SDM Vol. 3C §24.6.1, §25.3, §26.6.1.2, §27.2.2) ------------------------------ */
static void t_nmi(void)
{
    /* the local APIC's page: a 4-MiB page, uncached (host and guest share these tables) */
    ((volatile u32 *)(read_cr3() & ~0xfffu))[0xfee00000u >> 22] = 0xfec00000u | 0x93;
    __asm__ volatile("invlpg 0xfee00000" ::: "memory");
    *(volatile u32 *)0xfee000f0 = 0x1ff;      /* the local APIC software-enabled */
    vmw(GUEST_IDTR_LIMIT, sizeof guest_idt - 1);
    gate(2, gh_nmi);
    g_val = 0;
    vmw(PIN, vmr(PIN) | (1u << 5));            /* virtual NMIs without NMI exiting */
    RUN("virtual nmis alone", g_nop);
    vmw(PIN, vmr(PIN) & ~(1u << 5));
    vmw(PROC, vmr(PROC) | (1u << 22));         /* NMI-window exiting without virtual NMIs */
    RUN("nmi window alone", g_nop);
    vmw(PROC, vmr(PROC) & ~(1u << 22));
    vmw(PIN, vmr(PIN) | (1u << 3));            /* NMI exiting */
    RUN("nmi exiting", g_nmi_self);
    kprintf("  guest nmi handler ran=%u\n", g_val);
    /* NMIs stay blocked after the exit until an IRET of the host's */
    __asm__ volatile("pushfl; pushl %%cs; pushl $1f; iret; 1:" ::: "memory");
    vmw(PIN, vmr(PIN) | (1u << 5));            /* ... and virtual NMIs */
    vmw(ENTRY_INFO, 0x80000202);               /* inject an NMI */
    RUN("inject nmi", g_nmi_after);
    kprintf("  in handler=%u blocking by nmi=%u\n", vmr(GUEST_RIP) == (u32)gh_nmi + 6,
            (vmr(GUEST_INTR) >> 3) & 1);
    vmw(GUEST_RIP, vmr(GUEST_RIP) + 3);        /* on past its VMCALL: its IRET, then a VMCALL */
    entry_status = vmx_run(1);
    kprintf("  after its iret: reason=%u at g_nmi_after=%u blocking by nmi=%u\n",
            vmr(EXIT_REASON), vmr(GUEST_RIP) == (u32)g_nmi_after, (vmr(GUEST_INTR) >> 3) & 1);
    vmw(ENTRY_INFO, 0x80000202);
    vmw(GUEST_INTR, 8);                        /* ... not while NMIs are blocked */
    RUN("inject nmi while blocked", g_nop);
    vmw(ENTRY_INFO, 0);
    vmw(PROC, vmr(PROC) | (1u << 22));         /* NMI-window exiting, virtual-NMI blocking */
    RUN("nmi window", g_nmi_iret);
    vmw(PROC, vmr(PROC) & ~(1u << 22));
    vmw(PIN, vmr(PIN) & ~((1u << 3) | (1u << 5)));
    vmw(GUEST_INTR, 0);
}

/* ---- EPT (SDM Vol. 3C §28.3) ------------------------------------------------------ */
#define EPT_RWX 7u
#define EPT_WB (6u << 3)                       /* memory type in a leaf (bits 5:3) */
u8 ept_target[4096] __attribute__((aligned(4096)));
static u8 ept_alt[4096] __attribute__((aligned(4096)));
static u64 ept_pml4[512] __attribute__((aligned(4096)));
static u64 ept_pdpt[512] __attribute__((aligned(4096)));
static u64 ept_pd[512] __attribute__((aligned(4096)));
static u64 ept_pt[2][512] __attribute__((aligned(4096)));   /* 0..4 MiB in 4-KiB pages */
static u64 ept2_pml4[512] __attribute__((aligned(4096)));
static u64 ept2_pdpt[512] __attribute__((aligned(4096)));
u32 ept_desc[4];                               /* the INVEPT descriptor: EPTP, reserved */

static u64 *ept_pte(const void *p) { u32 a = (u32)p; return &ept_pt[a >> 21][(a >> 12) & 511]; }

static u32 invept(u32 type, u32 eptp)
{
    u32 f;
    ept_desc[0] = eptp;
    __asm__ volatile("invept ept_desc, %1; pushfl; popl %0" : "=r"(f) : "r"(type) : "memory", "cc");
    return f;
}

static void show_gpa(const void *base)
{
    kprintf("  gpa=+0x%x high=0x%x gla=+0x%x\n", vmr(GUEST_PHYS) - (u32)base, vmr(GUEST_PHYS + 1),
            vmr(GUEST_LINEAR) - (u32)base);
}

static void t_ept(void)
{
    u32 eptp = (u32)ept_pml4 | 6 | (3 << 3);  /* WB, page-walk length 4 (§24.6.11) */
    u64 cap = rdmsr(MSR_VMX_EPT_VPID_CAP);
    kprintf("ept/vpid cap=0x%x high=0x%x proc2 ept allowed=%u\n", (u32)cap, (u32)(cap >> 32),
            (u32)(rdmsr(MSR_VMX_PROC2) >> 33) & 1);
    if ((u32)ept_target >> 22 || (u32)ept_pt >> 22)
        fail("layout: the EPT test pages must lie below 4 MiB");
    /* identity EPT: 0..4 MiB in 4-KiB pages, 4..32 MiB in 2-MiB pages, read/write/execute */
    ept_pml4[0] = (u32)ept_pdpt | EPT_RWX;
    ept_pdpt[0] = (u32)ept_pd | EPT_RWX;
    ept_pd[0] = (u32)ept_pt[0] | EPT_RWX;
    ept_pd[1] = (u32)ept_pt[1] | EPT_RWX;
    for (u32 i = 2; i < 16; i++)
        ept_pd[i] = (i << 21) | 0x80 | EPT_WB | EPT_RWX;
    for (u32 i = 0; i < 1024; i++)
        ept_pt[i >> 9][i & 511] = (i << 12) | EPT_WB | EPT_RWX;
    /* the guest: ring 0 on the host's page tables (guest-physical = host-physical) */
    vmw(PROC, vmr(PROC) | (1u << 31));         /* activate secondary controls */
    vmw(PROC2, ctl(MSR_VMX_PROC2, 1u << 1));   /* enable EPT */
    vmw(GUEST_IDTR_LIMIT, sizeof guest_idt - 1);
    vmw(GUEST_CR3, read_cr3());
    vmw(EPTP, eptp & ~(3u << 3) | (2 << 3));   /* a 3-level walk */
    RUN("ept eptp walk length 3", g_vmcall);
    vmw(EPTP, eptp | 0x40);                    /* EPT A/D enable, not supported */
    RUN("ept eptp a/d", g_vmcall);
    vmw(EPTP, eptp);
    vmw(EPTP + 1, 0);
    *(volatile u32 *)ept_target = 0x1234abcd;
    *ept_pte(ept_target) = 0;                  /* not present */
    invept(2, 0);
    RUN("ept read unmapped", g_ept_rw);
    show_gpa(ept_target);
    *ept_pte(ept_target) = (u32)ept_target | EPT_WB | 1;   /* read-only; resume at the read */
    entry_status = vmx_run(1);
    show("ept write read-only", g_ept_rw);
    show_gpa(ept_target);
    kprintf("  read=0x%x\n", g_val);
    *ept_pte(ept_target) = (u32)ept_target | EPT_WB | 3;   /* (more permissive: no INVEPT) */
    entry_status = vmx_run(1);
    show("ept write mapped", g_ept_rw);
    kprintf("  target=0x%x\n", *(volatile u32 *)ept_target);
    ept_target[0] = 0x0f; ept_target[1] = 0x01; ept_target[2] = 0xc1;   /* vmcall */
    RUN("ept fetch not executable", ept_target);
    show_gpa(ept_target);
    *ept_pte(ept_target) = (u32)ept_target | EPT_WB | EPT_RWX;
    kprintf("invept single: %s\n", status(invept(1, eptp)));
    entry_status = vmx_run(1);
    show("ept fetch mapped", ept_target);
    *ept_pte((void *)PT0_ADDR) = 0;            /* the guest's page table, not its page */
    invept(1, eptp);                           /* (a mapping made less permissive: §28.4.3.3) */
    RUN("ept guest page table", g_nop);
    u32 pte_gpa = PT0_ADDR + (((u32)g_nop >> 12) & 1023) * 4;
    kprintf("  gpa=pte %u gla=+0x%x\n", vmr(GUEST_PHYS) == pte_gpa, vmr(GUEST_LINEAR) - (u32)g_nop);
    *ept_pte((void *)PT0_ADDR) = PT0_ADDR | EPT_WB | EPT_RWX;
    *ept_pte(ept_target) = (u32)ept_target | EPT_WB | 2;   /* write without read */
    invept(1, eptp);
    RUN("ept misconfiguration", g_ept_rw);
    kprintf("  gpa=+0x%x\n", vmr(GUEST_PHYS) - (u32)ept_target);
    *(volatile u32 *)ept_alt = 0x77777777;
    *ept_pte(ept_target) = (u32)ept_alt | EPT_WB | EPT_RWX;   /* the same page, another frame */
    invept(2, 0);
    RUN("ept remapped", g_ept_read);
    kprintf("  read=0x%x\n", g_val);
    *(volatile u32 *)0x800000 = 0xb16b00b5;
    RUN("ept 2-MiB page", g_ept_big);
    kprintf("  read=0x%x\n", g_val);
    report_fail("invept type 3", invept(3, eptp));
    report_fail("invept single bad eptp", invept(1, eptp | 0x80));
    kprintf("invept all: %s\n", status(invept(2, 0)));
    RUN("invept in guest", g_invept);
    ept2_pml4[0] = (u32)ept2_pdpt | EPT_RWX;
    ept2_pdpt[0] = 0x80 | EPT_WB | EPT_RWX;    /* one 1-GiB page */
    vmw(EPTP, (u32)ept2_pml4 | 6 | (3 << 3));
    RUN("ept 1-GiB page", g_ept_read);
    kprintf("  read=0x%x\n", g_val);
    ept2_pdpt[0] |= 1u << 12;                  /* bits 29:12 of a 1-GiB page are reserved */
    invept(2, 0);
    RUN("ept 1-GiB reserved bit", g_ept_read);
    vmw(PROC2, 0);
}

int main(void)
{
    t_instructions();
    setup_vmcs();
    t_entry_checks();
    t_exits();
    t_injection();
    t_tasks();
    t_nmi();
    t_ept();
    u32 fl;
    __asm__ volatile("vmxoff; pushfl; popl %0" : "=r"(fl) :: "cc");
    kprintf("vmxoff: %s\n", status(fl));
    u32 v;
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: vmread %1, %0\n1:" : "=r"(v) : "r"(EXIT_REASON));
    report_exc("vmread after vmxoff");
    kprintf("done\n");
    rt_exit(0);
}

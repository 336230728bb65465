/* Shared runtime of the hardware conformance guests (tests/hwguests).
 *
 * Fixed physical memory map (chosen by us so that table addresses printed by
 * the guests are deterministic):
 *   0x00100000  kernel image (.text/.data/.bss, boot stack in .bss)
 *   0x00200000  GDT, 256 descriptors (limit 0x7ff)
 *   0x00200800  IDT, 256 gates (limit 0x7ff)
 *   0x00201000  TSS, 104 bytes + 8 KiB I/O bitmap + 0xff terminator (limit 0x2068)
 *   0x00204000  LDT (used by sysinsn)
 *   0x00280000  top of the ring-0 stack in the TSS (ESP0)
 *   0x00290000  top of the ring-3 stack used by rt_run_ring()
 *   0x002a0000  top of the ring-1 stack (ESP1)
 *   0x00300000  page directory and page tables (rt_paging_init)
 *   0x00800000+ frames used by the paging tests (identity mapped by 4 MiB pages)
 */
#ifndef RT_H
#define RT_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed char s8;
typedef short s16;
typedef int s32;
typedef long long s64;
typedef unsigned int size_t;

#define GDT_ADDR        0x00200000u
#define IDT_ADDR        0x00200800u
#define TSS_ADDR        0x00201000u
#define LDT_ADDR        0x00204000u
#define GDT_LIMIT       0x7ffu
#define IDT_LIMIT       0x7ffu
#define TSS_LIMIT       0x2068u
#define STACK0_TOP      0x00280000u
#define USER_STACK_TOP  0x00290000u
#define STACK1_TOP      0x002a0000u
#define PD_ADDR         0x00300000u
#define PT0_ADDR        0x00301000u   /* identity map of 0..4 MiB, 4 KiB pages */
#define PT1_ADDR        0x00302000u   /* 4..8 MiB: empty, for the tests */

/* Selectors of the runtime GDT. */
#define SEL_NULL   0x00
#define SEL_CODE0  0x08   /* ring-0 code, flat, 32-bit, readable */
#define SEL_DATA0  0x10   /* ring-0 data, flat */
#define SEL_CODE3  0x1b   /* ring-3 code (descriptor 3, RPL 3) */
#define SEL_DATA3  0x23   /* ring-3 data (descriptor 4, RPL 3) */
#define SEL_TSS    0x28
#define SEL_CODE1  0x31   /* ring-1 code (descriptor 6, RPL 1) */
#define SEL_DATA1  0x39   /* ring-1 data (descriptor 7, RPL 1) */
/* Descriptors 8.. are free for the tests. */

/* Descriptor access bytes (accessed bit preset so that LAR results and the
 * GDT contents never depend on when the CPU sets it). */
#define ACC_CODE   0x9b   /* P=1 S=1 code, readable, accessed */
#define ACC_DATA   0x93   /* P=1 S=1 data, writable, accessed */
#define ACC_DPL(n) ((n) << 5)
#define FLG_4K32   0xc    /* G=1 D/B=1 */
#define FLG_BYTE32 0x4    /* G=0 D/B=1 */

#define RT_RET_VEC 0xf0   /* int 0xf0 (DPL 3 gate): leave rt_run_ring() */

#define EFLAGS_CF 0x1
#define EFLAGS_ZF 0x40
#define EFLAGS_TF 0x100
#define EFLAGS_IF 0x200
#define EFLAGS_OF 0x800
#define EFLAGS_NT 0x4000
#define EFLAGS_RF 0x10000

/* Register frame built by the interrupt stubs (rt/isr.S). */
struct frame {
    u32 gs, fs, es, ds;              /* pushed as 32-bit: use the low 16 bits */
    u32 edi, esi, ebp, esp_pusha, ebx, edx, ecx, eax;
    u32 vector, err;                 /* err is 0 for vectors without one */
    u32 eip, cs, eflags;             /* pushed by the CPU */
    u32 esp3, ss3;                   /* only on a privilege change */
};

struct exc_record {
    u32 count, vector, err, eip, cs, eflags, cr2, esp3, ss3;
};

typedef void (*isr_fn)(struct frame *);
extern isr_fn rt_isr[256];

/* Fault expectation: when an exception arrives with rt_resume != 0 and no
 * handler in rt_isr[], it is recorded in rt_exc and execution continues at
 * rt_resume (which is then cleared).  rt_mark is the address of the
 * instruction under test; saved EIPs are printed relative to it. */
extern volatile u32 rt_resume;
extern volatile u32 rt_mark;
extern volatile struct exc_record rt_exc;

/* "movl $RESUME, rt_resume; movl $MARK, rt_mark" for inline asm. */
#define ARM(resume, mark) "movl $" #resume ", rt_resume\n\tmovl $" #mark ", rt_mark\n\t"

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" :: "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }
static inline u32 read_cr0(void) { u32 v; __asm__ volatile("mov %%cr0, %0" : "=r"(v)); return v; }
static inline u32 read_cr2(void) { u32 v; __asm__ volatile("mov %%cr2, %0" : "=r"(v)); return v; }
static inline u32 read_cr3(void) { u32 v; __asm__ volatile("mov %%cr3, %0" : "=r"(v)); return v; }
static inline u32 read_cr4(void) { u32 v; __asm__ volatile("mov %%cr4, %0" : "=r"(v)); return v; }
static inline void write_cr0(u32 v) { __asm__ volatile("mov %0, %%cr0" :: "r"(v) : "memory"); }
static inline void write_cr3(u32 v) { __asm__ volatile("mov %0, %%cr3" :: "r"(v) : "memory"); }
static inline void write_cr4(u32 v) { __asm__ volatile("mov %0, %%cr4" :: "r"(v) : "memory"); }
static inline void invlpg(u32 a) { __asm__ volatile("invlpg (%0)" :: "r"(a) : "memory"); }
static inline u32 read_eflags(void) { u32 v; __asm__ volatile("pushfl; popl %0" : "=r"(v)); return v; }
static inline void write_eflags(u32 v) { __asm__ volatile("pushl %0; popfl" :: "r"(v) : "memory", "cc"); }
static inline u16 read_cs(void) { u16 v; __asm__ volatile("mov %%cs, %0" : "=r"(v)); return v; }
static inline u16 read_ss(void) { u16 v; __asm__ volatile("mov %%ss, %0" : "=r"(v)); return v; }
static inline u16 read_ds(void) { u16 v; __asm__ volatile("mov %%ds, %0" : "=r"(v)); return v; }
static inline u16 read_es(void) { u16 v; __asm__ volatile("mov %%es, %0" : "=r"(v)); return v; }
static inline u16 read_fs(void) { u16 v; __asm__ volatile("mov %%fs, %0" : "=r"(v)); return v; }
static inline u16 read_gs(void) { u16 v; __asm__ volatile("mov %%gs, %0" : "=r"(v)); return v; }

/* Serial console on COM1 (polling). */
#define COM1 0x3f8
void putch(char c);
void puts(const char *s);              /* no newline added */
void kprintf(const char *fmt, ...);    /* %s %c %u %d %x %08x %02x ... */

void rt_exit(u32 code) __attribute__((noreturn));   /* out 0xf4 */

/* The Multiboot command line: rt_arg("key", &v) finds "key=<number>" (decimal or 0x hex)
 * and returns 1, or returns 0 if the key is absent. */
extern u32 rt_mbi;
int rt_arg(const char *key, u32 *value);
void fail(const char *what) __attribute__((noreturn)); /* "FAIL: what", exit 1 */
#define CHECK(cond) do { if (!(cond)) fail(#cond); } while (0)

/* Descriptor tables. */
void gdt_set(int idx, u32 base, u32 limit, u8 access, u8 flags);
void gdt_set_gate(int idx, u16 sel, u32 offset, u8 access, u8 params);
void gdt_clear(int idx);
u32 *gdt_entry(int idx);
void idt_set(int vec, u32 offset, u16 sel, u8 access);   /* access e.g. 0x8e */
void idt_set_default(int vec, u8 access);                 /* runtime stub */
u32 rt_stub_addr(int vec);
void tss_set_io(u16 port, int allowed);

struct tss {
    u32 link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    u32 eax, ecx, edx, ebx, esp, ebp, esi, edi;
    u32 es, cs, ss, ds, fs, gs, ldt;
    u16 trap, iomap;
};
#define TSS ((volatile struct tss *)TSS_ADDR)

/* Run fn at another privilege level: iret to cs:fn with ss:esp and eflags.
 * fn returns (its return address is a stub that does int 0xf0) or executes
 * int 0xf0 itself; rt_run_ring then returns in ring 0 with the kernel
 * segments reloaded.  rt_ring_frame holds the frame of that int 0xf0. */
void rt_run_ring(void (*fn)(void), u32 cs, u32 ss, u32 esp, u32 eflags);
void rt_run_user(void (*fn)(void));  /* ring 3, user stack, EFLAGS=0x2 */
extern struct frame rt_ring_frame;
extern u32 rt_ring_segs_on;     /* set to 1 to use rt_ring_segs for the next rt_run_ring */
extern u16 rt_ring_segs[4];     /* ds, es, fs, gs */

/* Virtual-8086 mode.  RT_DEFINE_VM86_ENTER (once, at file scope, in a guest that uses
 * it) defines void v86_enter(const u32 frame[9]): an IRET to virtual-8086 mode with EIP,
 * CS, EFLAGS (VM set), ESP, SS, ES, DS, FS, GS; the guest's handler of its way out calls
 * rt_ring_return() to come back from v86_enter.  The frame of an interrupt from VM86 has
 * ES, DS, FS and GS above the usual one (SDM Vol. 3 Figure 20-2). */
struct vframe {
    struct frame f;              /* ... eip, cs, eflags, esp3, ss3 */
    u32 es, ds, fs, gs;          /* pushed only when leaving virtual-8086 mode */
};
void v86_enter(const u32 *frame9);
extern void rt_ring_return(void) __attribute__((noreturn));
extern u32 rt_saved_kesp;
#define RT_DEFINE_VM86_ENTER                                                              \
    __asm__(".text\n.code32\n.globl v86_enter\nv86_enter:\n\t"                           \
            "pushl %ebp\n\tpushl %ebx\n\tpushl %esi\n\tpushl %edi\n\t"                     \
            "movl %esp, rt_saved_kesp\n\tmovl 20(%esp), %esi\n\tsubl $36, %esp\n\t"        \
            "movl %esp, %edi\n\tmovl $9, %ecx\n\tcld\n\trep movsl\n\tiret\n")

/* Paging: PD at PD_ADDR; PDE0 -> PT0 (identity 0..4 MiB, 4 KiB pages, P|RW|U),
 * PDE1 -> PT1 (all not present), PDE2..7 identity 4 MiB pages (8..32 MiB)
 * with P|RW|U.  rt_paging_on sets CR4.PSE, CR3 and CR0.PG (and WP if asked). */
#define PTE_P 0x1
#define PTE_W 0x2
#define PTE_U 0x4
#define PTE_A 0x20
#define PTE_D 0x40
#define PDE_PS 0x80
#define PD ((volatile u32 *)PD_ADDR)
#define PT1 ((volatile u32 *)PT1_ADDR)
void rt_paging_init(void);
void rt_paging_on(int wp);
void rt_paging_off(void);

/* PIC / misc */
void pic_remap_mask_all(void);
void pic_eoi(int irq);

void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

/* Print the last recorded exception: "<name>: #<vec> err=0x<e> eip=mark+<d>". */
void report_exc(const char *name);
void report_exc_noeip(const char *name);
void rt_expect_reset(void);

int main(void);

#endif

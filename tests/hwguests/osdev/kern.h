/* osdev: what the three kernels share (kern.c) -- a console on COM1, the descriptor
 * tables and the trap frame.  Selectors: 0x08 kernel code, 0x10 kernel data, 0x1b user
 * code, 0x23 user data, 0x28 the TSS; the programs add their own from 6 up. */
#ifndef KERN_H
#define KERN_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define KCODE 0x08
#define KDATA 0x10
#define UCODE 0x1b
#define UDATA 0x23
#define TSSSEL 0x28

struct regs {                       /* what boot.S's common stub builds */
    u32 es, ds;
    u32 edi, esi, ebp, esp0, ebx, edx, ecx, eax;
    u32 vec, err;
    u32 eip, cs, eflags;
    u32 esp, ss;                    /* from user mode only */
};

struct tss32 {
    u32 link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    u32 eax, ecx, edx, ebx, esp, ebp, esi, edi;
    u32 es, cs, ss, ds, fs, gs, ldt;
    u16 trap, iomap;
};

extern u64 gdt[16];
extern struct tss32 tss;
typedef struct regs *(*handler_t)(struct regs *);
extern handler_t handlers[256];

void kprintf(const char *fmt, ...);
void halt_exit(u32 code) __attribute__((noreturn));
void seg_desc(int i, u32 base, u32 limit, u8 access, u8 flags);   /* flags: G, D/B nibble */
void gate_desc(u64 *slot, u16 sel, u32 off, u8 access, u8 params);
void set_idt(int vec, u8 access);   /* access 0x8e interrupt gate, 0xee user-callable */
void tables_init(void);             /* GDT, IDT (every vector to trap()), TSS, LTR */
void prog_main(void);

static inline void outb(u16 p, u8 v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(p)); }
static inline u8 inb(u16 p) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline u32 cr2(void) { u32 v; __asm__ volatile("mov %%cr2, %0" : "=r"(v)); return v; }
static inline u32 getcr(int n) { u32 v = 0; if (n == 0) __asm__ volatile("mov %%cr0, %0" : "=r"(v)); else if (n == 3) __asm__ volatile("mov %%cr3, %0" : "=r"(v)); else if (n == 4) __asm__ volatile("mov %%cr4, %0" : "=r"(v)); return v; }
static inline void setcr0(u32 v) { __asm__ volatile("mov %0, %%cr0" :: "r"(v) : "memory"); }
static inline void setcr3(u32 v) { __asm__ volatile("mov %0, %%cr3" :: "r"(v) : "memory"); }
static inline void setcr4(u32 v) { __asm__ volatile("mov %0, %%cr4" :: "r"(v) : "memory"); }
static inline void invlpg(u32 a) { __asm__ volatile("invlpg (%0)" :: "r"(a) : "memory"); }

#endif

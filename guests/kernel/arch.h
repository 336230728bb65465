/*
 * arch.h: every privileged or sensitive IA-32 instruction the kernel uses.
 *
 * Nothing else in the kernel contains such instructions (grep for asm:
 * only arch.h, and the ARCH_* macros in the .S files).  The kernel is plain
 * native x86; a para-virtualized build can rewrite exactly these spots.
 *
 * Interrupt state is saved and restored the way Linux does it:
 *   local_irq_save:    pushf; pop reg; cli
 *   local_irq_restore: push reg; popf
 * so a full-virtualization monitor sees popf (not sti) re-enable
 * interrupts.
 */
#ifndef RV_ARCH_H
#define RV_ARCH_H

#define EFLAGS_IF  0x00000200u
#define EFLAGS_RF  0x00010000u

#define CR0_PE     0x00000001u
#define CR0_ET     0x00000010u
#define CR0_WP     0x00010000u
#define CR0_PG     0x80000000u

#ifdef __ASSEMBLER__

/* For the assembly files (boot.S, entry.S). */
#define ARCH_CLI            cli
#define ARCH_STI            sti
#define ARCH_HLT            hlt
#define ARCH_IRET           iret
#define ARCH_LOAD_CR3(reg)  movl reg, %cr3
#define ARCH_READ_CR0(reg)  movl %cr0, reg
#define ARCH_LOAD_CR0(reg)  movl reg, %cr0

#else

#include <stdint.h>

/* ---- interrupt flag ---- */

static inline void arch_cli(void)
{
    __asm__ volatile("cli" ::: "memory");
}

static inline void arch_sti(void)
{
    __asm__ volatile("sti" ::: "memory");
}

static inline uint32_t arch_save_flags(void)
{
    uint32_t flags;
    __asm__ volatile("pushfl\n\tpopl %0" : "=rm"(flags) : : "memory");
    return flags;
}

/* local_irq_save(): pushf; pop; cli */
static inline uint32_t arch_irq_save(void)
{
    uint32_t flags;
    __asm__ volatile("pushfl\n\tpopl %0\n\tcli" : "=rm"(flags) : : "memory");
    return flags;
}

/* local_irq_restore(): push; popf */
static inline void arch_irq_restore(uint32_t flags)
{
    __asm__ volatile("pushl %0\n\tpopfl" : : "g"(flags) : "memory", "cc");
}

/* Enable interrupts and wait for one: sti's one-instruction shadow makes
 * the pair atomic, so a wakeup cannot slip in between. */
static inline void arch_safe_halt(void)
{
    __asm__ volatile("sti\n\thlt" ::: "memory");
}

static inline void arch_halt(void)
{
    __asm__ volatile("hlt" ::: "memory");
}

/* ---- port I/O ---- */

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

static inline void outw(uint16_t port, uint16_t v)
{
    __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline uint16_t inw(uint16_t port)
{
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

/* ---- descriptor tables ---- */

struct __attribute__((packed)) dtr {
    uint16_t limit;
    uint32_t base;
};

static inline void arch_lgdt(const struct dtr *d)
{
    __asm__ volatile("lgdt %0" : : "m"(*d) : "memory");
}

static inline void arch_lidt(const struct dtr *d)
{
    __asm__ volatile("lidt %0" : : "m"(*d) : "memory");
}

static inline void arch_ltr(uint16_t sel)
{
    __asm__ volatile("ltr %0" : : "rm"(sel) : "memory");
}

/* Reload every segment register after lgdt (far return to reload CS). */
static inline void arch_load_segments(uint16_t code, uint16_t data)
{
    __asm__ volatile("movw %w1, %%ds\n\t"
                     "movw %w1, %%es\n\t"
                     "movw %w1, %%fs\n\t"
                     "movw %w1, %%gs\n\t"
                     "movw %w1, %%ss\n\t"
                     "pushl %0\n\t"
                     "pushl $1f\n\t"
                     "lret\n"
                     "1:"
                     : : "r"((uint32_t)code), "r"((uint32_t)data) : "memory");
}

/* ---- control registers and the TLB ---- */

static inline uint32_t arch_read_cr0(void)
{
    uint32_t v;
    __asm__ volatile("movl %%cr0, %0" : "=r"(v));
    return v;
}

static inline void arch_write_cr0(uint32_t v)
{
    __asm__ volatile("movl %0, %%cr0" : : "r"(v) : "memory");
}

static inline uint32_t arch_read_cr2(void)
{
    uint32_t v;
    __asm__ volatile("movl %%cr2, %0" : "=r"(v));
    return v;
}

static inline uint32_t arch_read_cr3(void)
{
    uint32_t v;
    __asm__ volatile("movl %%cr3, %0" : "=r"(v));
    return v;
}

static inline void arch_write_cr3(uint32_t v)
{
    __asm__ volatile("movl %0, %%cr3" : : "r"(v) : "memory");
}

static inline uint32_t arch_read_cr4(void)
{
    uint32_t v;
    __asm__ volatile("movl %%cr4, %0" : "=r"(v));
    return v;
}

static inline void arch_invlpg(uint32_t va)
{
    __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
}

/* ---- time stamp counter ---- */

static inline uint64_t arch_rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

#endif /* __ASSEMBLER__ */
#endif

/* frt: the small runtime of the "foreign" test kernels (tests/foreign).
 *
 * Deliberately not tests/hwguests/rt: these kernels look like kernels written
 * elsewhere (each has its own entry, linker script, GDT, IDT, TSS and page
 * tables).  The runtime only gives them a serial console, a formatter, the
 * trap-entry stubs and a few helpers; no fixed memory map, no fixed selectors.
 */
#ifndef FRT_H
#define FRT_H

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef int int32_t;
typedef unsigned int size_t;

static inline void outb(uint16_t port, uint8_t v) { asm volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void cli(void) { asm volatile("cli" ::: "memory"); }
static inline void sti(void) { asm volatile("sti" ::: "memory"); }
static inline uint32_t rcr0(void) { uint32_t v; asm volatile("mov %%cr0, %0" : "=r"(v)); return v; }
static inline void lcr0(uint32_t v) { asm volatile("mov %0, %%cr0" :: "r"(v) : "memory"); }
static inline uint32_t rcr2(void) { uint32_t v; asm volatile("mov %%cr2, %0" : "=r"(v)); return v; }
static inline uint32_t rcr3(void) { uint32_t v; asm volatile("mov %%cr3, %0" : "=r"(v)); return v; }
static inline void lcr3(uint32_t v) { asm volatile("mov %0, %%cr3" :: "r"(v) : "memory"); }
static inline uint32_t rcr4(void) { uint32_t v; asm volatile("mov %%cr4, %0" : "=r"(v)); return v; }
static inline void lcr4(uint32_t v) { asm volatile("mov %0, %%cr4" :: "r"(v) : "memory"); }
static inline void invlpg(uint32_t va) { asm volatile("invlpg (%0)" :: "r"(va) : "memory"); }

/* The frame every trap stub builds (xv6's struct trapframe, field for field). */
struct trapframe {
    uint32_t edi, esi, ebp, oesp, ebx, edx, ecx, eax;
    uint16_t gs, pad1, fs, pad2, es, pad3, ds, pad4;
    uint32_t trapno, err;
    uint32_t eip;
    uint16_t cs, pad5;
    uint32_t eflags;
    uint32_t esp;          /* only when the trap came from an outer ring */
    uint16_t ss, pad6;
};

/* vectors.S: the address of each vector's stub, and the common return path. */
extern uint32_t frt_vectors[256];
void frt_trapret(void);
/* Each kernel defines: called by every stub with the frame; the data segment it loads first.
 * (A kernel with trap entry code of its own defines FRT_OWN_TRAP and its own trap.) */
#ifndef FRT_OWN_TRAP
void trap(struct trapframe *tf);
#endif
extern uint16_t frt_kdata;

/* descriptors */
uint64_t seg_desc(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags);
uint64_t gate_desc(uint16_t sel, uint32_t off, uint8_t access);
struct __attribute__((packed)) pseudo_desc { uint16_t limit; uint32_t base; };

/* console (COM1) and exit (isa-debug-exit) */
void console_init(void);
void putc(char c);
void puts(const char *s);
void printf(const char *fmt, ...);
void __attribute__((noreturn)) frt_exit(uint8_t code);

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);

#endif

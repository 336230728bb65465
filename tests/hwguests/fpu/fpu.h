/* Shared helpers of the fpu guest: FPU control, printing of raw values. */
#ifndef FPU_H
#define FPU_H
#include "rt.h"

#define NOINL __attribute__((noinline, noclone))

typedef struct { u64 m; u16 se; } __attribute__((packed)) f80;

/* CR0: MP EM TS NE; CR4: OSFXSR OSXMMEXCPT */
#define CR0_MP 0x2u
#define CR0_EM 0x4u
#define CR0_TS 0x8u
#define CR0_NE 0x20u
#define CR4_OSFXSR 0x200u
#define CR4_OSXMMEXCPT 0x400u

static inline void fninit(void) { __asm__ volatile("fninit" ::: "memory"); }
static inline void fnclex(void) { __asm__ volatile("fnclex" ::: "memory"); }
static inline u16 fnstsw(void) { u16 v; __asm__ volatile("fnstsw %0" : "=a"(v) :: "memory"); return v; }
static inline u16 fnstcw(void) { u16 v; __asm__ volatile("fnstcw %0" : "=m"(v) :: "memory"); return v; }
static inline void fldcw(u16 v) { __asm__ volatile("fldcw %0" :: "m"(v) : "memory"); }
static inline u32 stmxcsr(void) { u32 v; __asm__ volatile("stmxcsr %0" : "=m"(v) :: "memory"); return v; }
static inline void ldmxcsr(u32 v) { __asm__ volatile("ldmxcsr %0" :: "m"(v) : "memory"); }
static inline void fld80(const f80 *p) { __asm__ volatile("fldt %0" :: "m"(*p) : "memory"); }
static inline void fstp80(f80 *p) { __asm__ volatile("fstpt %0" : "=m"(*p) :: "memory"); }

/* "sign+exponent:significand" of an 80-bit value, e.g. 3fff:8000000000000000 */
void put80(const f80 *v);
void put80_masked(const f80 *v, u64 keep);     /* significand bits not in keep printed as 0 */
void put64(u64 v);
void put128(const u32 *v);
u32 rng(void);                                 /* LCG, seeded with rng_seed */
extern u32 rng_seed;

void fpu_enable(u32 cr0_set, u32 cr0_clear);   /* EM/TS/MP/NE, plus OSFXSR|OSXMMEXCPT in CR4 */

int part_x87(void);
int part_sse(void);
int part_sys(void);
int part_c(void);
int part_random(u32 n);

#endif

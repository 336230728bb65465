/* The sensitive-instruction probe (after Robin & Irvine, USENIX Security
 * 2000): shared between boot.S, probes.S and probe.c. */
#ifndef PROBE_H
#define PROBE_H

/* GDT selectors */
#define SEL_KCODE 0x08      /* ring-0 code, flat */
#define SEL_KDATA 0x10      /* ring-0 data, flat */
#define SEL_UCODE 0x1b      /* ring-3 code, flat (descriptor 3, RPL 3) */
#define SEL_UDATA 0x23      /* ring-3 data, flat (descriptor 4, RPL 3) */
#define SEL_TSS   0x28

#define VEC_INT   0x30      /* the INT probe's DPL-3 gate */
#define VEC_EXIT  0x80      /* ring 3 -> kernel: the probe is over */
#define NSTUBS    48        /* exceptions 0-31 and the 16 PIC vectors */

#define USER_EFLAGS 0x202   /* ring 3 runs with IF=1, IOPL=0 */

#ifndef __ASSEMBLER__
#include <stdint.h>

/* Results written by the probes (probes.S); read by probe.c. */
extern volatile uint32_t pv[4];
extern volatile uint16_t home_cs;          /* 0x08 in ring 0, 0x1b in ring 3 */
extern volatile struct __attribute__((packed)) dtr {
    uint16_t limit;
    uint32_t base;
} dtr_buf;

/* boot.S */
extern uint64_t gdt[6];
extern uint64_t idt[256];
extern uint32_t tss[26];
extern char fault_stubs[];                 /* NSTUBS stubs, 16 bytes apart */
extern char kstack0_top[];
void int30_handler(void);
void exit_handler(void);
void load_tables(void);
/* Run fn in ring 0 (user = 0) or ring 3 (user = 1); 0 when it returned,
 * 1 when an exception ended it (probe_fault has then been called). */
int probe_run(void (*fn)(void), int user);
#endif

#endif

/*
 * The built-in programs of the teaching kernel, as one X-macro list shared
 * by the kernel (exec looks names up here) and by user space (init, the
 * shell and the dispatch table in user/progtab.c).
 *
 * X(ident, "name", group, default_iters, "description")
 * (default_iters 0: the workload's own default, see workloads/)
 *
 * The order is the program index passed to the user image's _start.
 */
#ifndef RV_PROGRAMS_H
#define RV_PROGRAMS_H

#define GRP_SYSTEM  0   /* init, sh: not part of any group */
#define GRP_NANO    1   /* nanobenchmarks after Adams & Agesen */
#define GRP_LMBENCH 2   /* lmbench-style OS benchmarks */
#define GRP_CPU     3   /* CPU-bound workloads (shared with the bench images) */
#define GRP_FAULT   4   /* programs that the kernel must kill */
#define GRP_TEST    5   /* self tests and demos */

#define PROGRAM_LIST(X) \
    X(init,       "init",       GRP_SYSTEM,  1,   "first process: runs the kernel command line") \
    X(sh,         "sh",         GRP_SYSTEM,  1,   "interactive shell on the serial console") \
    X(syscall,    "syscall",    GRP_NANO,    20000, "null system call (int 0x80, no work)") \
    X(in,         "in",         GRP_NANO,    200000, "port read (inb 0x21) in a kernel-mode loop") \
    X(crwr,       "crwr",       GRP_NANO,    200000, "control-register write (mov to cr0) in a kernel-mode loop") \
    X(callret,    "callret",    GRP_NANO,    400000, "call/ret pair in user mode") \
    X(pgfault,    "pgfault",    GRP_NANO,    1500, "demand-zero page fault on fresh heap") \
    X(divzero,    "divzero",    GRP_NANO,    10000, "divide error (#DE) handled by the kernel") \
    X(ptemod,     "ptemod",     GRP_NANO,    150000, "PTE change plus invlpg in a kernel-mode loop") \
    X(null,       "null",       GRP_LMBENCH, 20000, "lmbench null system call (getpid)") \
    X(ctxsw,      "ctxsw",      GRP_LMBENCH, 2500, "context switch between two processes (yield)") \
    X(forkwait,   "forkwait",   GRP_LMBENCH, 50, "process creation: fork, exit, wait") \
    X(pagefault,  "pagefault",  GRP_LMBENCH, 1536, "copy-on-write page-fault latency after fork") \
    X(sieve,      "sieve",      GRP_CPU,     0,  "sieve of Eratosthenes") \
    X(crc32,      "crc32",      GRP_CPU,     0, "table-driven CRC-32 over 1 KiB") \
    X(matmul,     "matmul",     GRP_CPU,     0,  "16x16 integer matrix multiply") \
    X(qsort,      "qsort",      GRP_CPU,     0,  "quicksort of 512 integers") \
    X(strings,    "strings",    GRP_CPU,     0, "string copy/concatenate/compare/search") \
    X(dhrystone,  "dhrystone",  GRP_CPU,     0, "Dhrystone-like integer and record mix") \
    X(fault_null, "fault-null", GRP_FAULT,   1,   "dereferences NULL: must be killed") \
    X(fault_priv, "fault-priv", GRP_FAULT,   1,   "executes hlt in user mode: must be killed") \
    X(fault_div,  "fault-div",  GRP_FAULT,   1,   "divides by zero without a handler: must be killed") \
    X(hello,      "hello",      GRP_TEST,    1,   "prints a greeting and its pid") \
    X(selftest,   "selftest",   GRP_TEST,    1,   "checks fork/COW, wait, sbrk, sleep, preemption, exec, faults, 64-bit division") \
    X(panic,      "panic",      GRP_TEST,    1,   "makes the kernel dereference NULL: kernel panic") \
    X(blk,        "blk",        GRP_TEST,    1,   "checks the disk's data, writes the next generation, reads it back") \
    X(blkbench,   "blkbench",   GRP_TEST,    64,  "sequential 16 KiB disk writes then reads, cycles per request") \
    X(xlist,      "xlist",      GRP_SYSTEM,  1,   "lists the Xen hypervisor's domains (domctl/sysctl through privcmd)") \
    X(disks,      "disks",      GRP_SYSTEM,  1,   "lists the disks: each one's size and the start of its sector 0")

#define PROG_ENUM(id, name, grp, iters, desc) PROG_##id,
enum { PROGRAM_LIST(PROG_ENUM) NPROGRAMS };
#undef PROG_ENUM

#endif

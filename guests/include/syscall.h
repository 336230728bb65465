/* System-call ABI shared by the kernel and user space.
 * int $0x80 with the number in eax, arguments in ebx, ecx, edx, esi, edi;
 * the result comes back in eax (negative = error). */
#ifndef RV_SYSCALL_H
#define RV_SYSCALL_H

#define SYS_exit      1   /* exit(status) */
#define SYS_write     2   /* write(fd, buf, len) -> len */
#define SYS_read      3   /* read(fd, buf, len) -> n >= 1, blocks */
#define SYS_getpid    4
#define SYS_yield     5
#define SYS_sleep     6   /* sleep(milliseconds) */
#define SYS_fork      7
#define SYS_wait      8   /* wait(&status) -> pid, -1 without children */
#define SYS_exec      9   /* exec(name, args): only returns on error */
#define SYS_sbrk      10  /* sbrk(increment) -> old break, -1 on error */
#define SYS_time      11  /* time() -> milliseconds since boot */
#define SYS_nop       12  /* does nothing, returns 0: the null system call */
#define SYS_kbench    13  /* kbench(op, n, &cycles) -> checksum */
#define SYS_fhandler  14  /* fhandler(addr): user fault handler, 0 = none */
#define SYS_stats     15  /* stats(&struct rv_stats) */
#define SYS_kill      16  /* kill(pid): it exits with KILLED_STATUS(9) */
#define SYS_disk      17  /* disk(op, lba, buf, count): DISK_* below */
#define SYS_privcmd   18  /* privcmd(&struct privcmd_hypercall) -> the hypercall's result
                             (Xen's -errno), -ENODEV without a hypervisor (privcmd.h) */
#define NSYSCALLS     19

/* disk operations, on disk N (0..3) as op | N << 8: the ATA drives of the two IDE
 * channels (primary master, slave; secondary master, slave -- a DomU's xvda..xvdd);
 * disk 0 is the virtio disk instead if there is one.
 * DISK_SIZE -> sectors (-1: no disk); READ/WRITE count (1..256) 512-byte
 * sectors at lba -> 0 (-1: refused); FLUSH -> 0 (-1: refused). */
#define DISK_ON(op, n) ((op) | (n) << 8)
#define DISK_SIZE  0
#define DISK_READ  1
#define DISK_WRITE 2
#define DISK_FLUSH 3
#define DISK_SECTOR 512

/* kbench operations: loops that run in kernel mode because the
 * instruction is privileged. */
#define KB_IN     1   /* inb from the master PIC mask register (0x21) */
#define KB_CRWR   2   /* mov %eax,%cr0 with cr0's own value */
#define KB_PTEMOD 3   /* rewrite a kernel PTE between two frames + invlpg + read */
#define KB_PANIC  4   /* dereference NULL in kernel mode: kernel panic */

/* Exit status of a process killed by a CPU exception: 128 + vector. */
#define KILLED_STATUS(vec) (128 + (vec))

/* A user fault handler is entered with esp pointing at
 *   [esp+0] vector  [esp+4] fault address (cr2)  [esp+8] faulting eip
 * and every other register as at the fault.  It resumes with
 * "lea 8(%esp),%esp; ret" after adjusting [esp+8] as it likes. */

struct rv_stats {
    unsigned int ticks;       /* timer interrupts since boot */
    unsigned int hz;          /* timer rate */
    unsigned int syscalls;
    unsigned int ctxsw;       /* context switches */
    unsigned int pgfaults;    /* page faults resolved (demand-zero + COW) */
    unsigned int forks;
    unsigned int irqs;        /* hardware interrupts */
    unsigned int procs;       /* live processes */
    unsigned int free_kib;
    unsigned int total_kib;
    unsigned int boot_tsc_lo;   /* time stamp counter at kernel entry */
    unsigned int boot_tsc_hi;
};

#endif

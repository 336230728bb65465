/* User-space runtime of the built-in programs. */
#ifndef RV_ULIB_H
#define RV_ULIB_H

#include <stdint.h>
#include "rvlib.h"
#include "syscall.h"
#include "programs.h"

static inline int32_t syscall3(uint32_t n, uint32_t a, uint32_t b, uint32_t c)
{
    int32_t r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}

void exit(int status) __attribute__((noreturn));
int write(int fd, const void *buf, uint32_t len);
int read(int fd, void *buf, uint32_t len);
int getpid(void);
int yield(void);
int sleep_ms(uint32_t ms);
int fork(void);                    /* flushes stdout first */
int wait(int *status);
int exec(const char *name, const char *args);
void *sbrk(int32_t incr);
uint32_t time_ms(void);
int32_t kbench(uint32_t op, uint32_t n, uint64_t *cycles);
int set_fault_handler(void (*handler)(void));
int get_stats(struct rv_stats *s);
int kill(int pid);

int printf(const char *fmt, ...);
void fflush_out(void);

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

/* The program table (progtab.c). */
struct program {
    const char *name;
    int group;
    uint32_t default_iters;
    const char *desc;
};
extern const struct program programs[NPROGRAMS];
int program_find(const char *name);
const char *group_name(int group);

/* Iterations from the argument string ("N" or "iters=N"), else the
 * program's default. */
uint32_t get_iters(const char *args, int prog);

/* Print the untagged result line and the [timing] line (cycles per op =
 * cycles / ops). */
void report(const char *name, uint32_t iters, uint32_t checksum, uint64_t cycles, uint32_t ops);

#endif

/* What the para-virtual test guests share: the hypercall, console output
 * through the hypervisor, and a number from the command line. */
#ifndef PVLIB_H
#define PVLIB_H
#include "xen_abi.h"

typedef unsigned int u32;

static inline long hypercall(u32 nr, u32 a, u32 b, u32 c, u32 d, u32 e)
{
    long r;
    __asm__ volatile("int $0x82" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
                     : "memory");
    return r;
}

static inline void outb_(unsigned short port, unsigned char v)
{
    __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port));    /* emulated: I/O privilege */
}

static inline u32 slen(const char *s) { u32 n = 0; while (s[n]) n++; return n; }

static inline void puts_(const char *s)
{
    hypercall(__HYPERVISOR_console_io, CONSOLEIO_write, slen(s), (u32)s, 0, 0);
}

static inline void putn(u32 v)
{
    char b[12]; int i = 11; b[i] = 0;
    do { b[--i] = '0' + v % 10; v /= 10; } while (v);
    puts_(b + i);
}

static inline void puti(long v)
{
    if (v < 0) { puts_("-"); putn((u32)-v); } else putn((u32)v);
}

static inline u32 number_after(const char *s, const char *key)
{
    for (; *s; s++) {
        const char *k = key, *p = s;
        while (*k && *p == *k) { k++; p++; }
        if (!*k) { u32 v = 0; while (*p >= '0' && *p <= '9') v = v * 10 + (*p++ - '0'); return v; }
    }
    return 0;
}

static inline void shutdown(void)
{
    struct sched_shutdown sd = { SHUTDOWN_poweroff };
    hypercall(__HYPERVISOR_sched_op, SCHEDOP_shutdown, (u32)&sd, 0, 0, 0);
}
#endif

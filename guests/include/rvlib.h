/* Freestanding helpers shared by the kernel, user space and the bench
 * images: memory/string functions (gcc may emit calls to memcpy, memset,
 * memmove and memcmp by itself), a small formatter and number parsing.
 * 64-bit division helpers (__udivdi3, __umoddi3, __divdi3, __moddi3,
 * __udivmoddi4, __divmoddi4) live in common/div64.c. */
#ifndef RV_LIB_H
#define RV_LIB_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strncpy0(char *dst, const char *src, size_t size);  /* always NUL-terminates */

/* vformat: printf-like formatting, calling out(c, ctx) for each character.
 * Supports %d %i %u %x %X %c %s %p %% with flags '0' '-' and a width,
 * and the length modifiers l (ignored) and ll (64-bit). */
typedef void (*fmt_out)(char c, void *ctx);
int vformat(fmt_out out, void *ctx, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...);

/* Parse a decimal (or 0x-prefixed hex) unsigned number; *end gets the
 * first unparsed character.  Returns 0 digits -> *end == s. */
uint32_t parse_u32(const char *s, const char **end);

/* Find "key=" as a whitespace-separated token of line; copy its value
 * (up to the next blank) into val.  Returns 1 if found. */
int cmdline_get(const char *line, const char *key, char *val, size_t size);

uint64_t __udivdi3(uint64_t n, uint64_t d);
uint64_t __umoddi3(uint64_t n, uint64_t d);
int64_t __divdi3(int64_t n, int64_t d);
int64_t __moddi3(int64_t n, int64_t d);
uint64_t __udivmoddi4(uint64_t n, uint64_t d, uint64_t *rem);
int64_t __divmoddi4(int64_t n, int64_t d, int64_t *rem);

#endif

/* A small printf engine used by the kernel, user space and bench images. */
#include "rvlib.h"

struct sink {
    fmt_out out;
    void *ctx;
    int count;
};

static void put(struct sink *s, char c)
{
    s->out(c, s->ctx);
    s->count++;
}

static void put_number(struct sink *s, uint64_t v, unsigned base, int upper,
                       int neg, int width, int zero, int left)
{
    char tmp[24];
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    int n = 0;
    if (v == 0)
        tmp[n++] = '0';
    if (v >> 32) {
        while (v) {
            tmp[n++] = digits[v % base];   /* __umoddi3 */
            v /= base;                     /* __udivdi3 */
        }
    } else {
        uint32_t w = (uint32_t)v;
        while (w) {
            tmp[n++] = digits[w % base];
            w /= base;
        }
    }
    int len = n + (neg ? 1 : 0);
    if (!left && !zero)
        for (; width > len; width--)
            put(s, ' ');
    if (neg)
        put(s, '-');
    if (!left && zero)
        for (; width > len; width--)
            put(s, '0');
    while (n)
        put(s, tmp[--n]);
    if (left)
        for (; width > len; width--)
            put(s, ' ');
}

int vformat(fmt_out out, void *ctx, const char *fmt, va_list ap)
{
    struct sink s = { out, ctx, 0 };
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(&s, *fmt);
            continue;
        }
        fmt++;
        int zero = 0, left = 0, width = 0, longlong = 0;
        for (;; fmt++) {
            if (*fmt == '0') zero = 1;
            else if (*fmt == '-') left = 1;
            else break;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') {
            longlong += 1;
            fmt++;
        }
        longlong = longlong >= 2;
        switch (*fmt) {
        case 'd':
        case 'i': {
            int64_t v = longlong ? va_arg(ap, int64_t) : va_arg(ap, int);
            uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
            put_number(&s, u, 10, 0, v < 0, width, zero, left);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v = longlong ? va_arg(ap, uint64_t) : va_arg(ap, unsigned int);
            put_number(&s, v, *fmt == 'u' ? 10 : 16, *fmt == 'X', 0, width, zero, left);
            break;
        }
        case 'p':
            put(&s, '0');
            put(&s, 'x');
            put_number(&s, (uintptr_t)va_arg(ap, void *), 16, 0, 0, 8, 1, 0);
            break;
        case 'c':
            put(&s, (char)va_arg(ap, int));
            break;
        case 's': {
            const char *str = va_arg(ap, const char *);
            int len;
            if (!str)
                str = "(null)";
            len = (int)strlen(str);
            if (!left)
                for (; width > len; width--)
                    put(&s, ' ');
            while (*str)
                put(&s, *str++);
            if (left)
                for (; width > len; width--)
                    put(&s, ' ');
            break;
        }
        case '%':
            put(&s, '%');
            break;
        case 0:
            return s.count;
        default:
            put(&s, '%');
            put(&s, *fmt);
        }
    }
    return s.count;
}

struct bufctx {
    char *buf;
    size_t size, pos;
};

static void buf_out(char c, void *ctx)
{
    struct bufctx *b = ctx;
    if (b->pos + 1 < b->size)
        b->buf[b->pos] = c;
    b->pos++;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    struct bufctx b = { buf, size, 0 };
    va_list ap;
    va_start(ap, fmt);
    int n = vformat(buf_out, &b, fmt, ap);
    va_end(ap);
    if (size)
        buf[b.pos < size ? b.pos : size - 1] = 0;
    return n;
}

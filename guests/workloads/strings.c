/* String copy/concatenate/compare/search with hand-written routines (the
 * same code on every platform, independent of any library).  Iteration i
 * builds a sentence of 12 words, words[(i + 5k) % 16] separated by ' ' and
 * ended by '.', copies and reverses it, compares, and searches for
 * words[i % 16]:  chk = chk * 131 + len + (pos + 1) * 7 + (cmp + 1)
 * where cmp is the sign of compare(sentence, reversed) and pos the index
 * of the first match (-1 if none). */
#include "workloads.h"

static const char *const words[16] = {
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
};

static char sbuf[256], sbuf2[256];

static uint32_t s_len(const char *s)
{
    const char *p = s;
    while (*p)
        p++;
    return (uint32_t)(p - s);
}

static char *s_copy(char *d, const char *s)
{
    char *r = d;
    while ((*d++ = *s++))
        ;
    return r;
}

static char *s_cat(char *d, const char *s)
{
    s_copy(d + s_len(d), s);
    return d;
}

static int s_cmp(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    int diff = (unsigned char)*a - (unsigned char)*b;
    return (diff > 0) - (diff < 0);
}

static int s_find(const char *hay, const char *needle)
{
    for (int i = 0; hay[i]; i++) {
        int j = 0;
        while (needle[j] && hay[i + j] == needle[j])
            j++;
        if (!needle[j])
            return i;
    }
    return -1;
}

static void s_rev(char *s)
{
    uint32_t n = s_len(s);
    for (uint32_t i = 0; i < n / 2; i++) {
        char t = s[i];
        s[i] = s[n - 1 - i];
        s[n - 1 - i] = t;
    }
}

static uint32_t strings_run(uint32_t iters)
{
    uint32_t chk = 0;
    for (uint32_t it = 0; it < iters; it++) {
        sbuf[0] = 0;
        for (uint32_t k = 0; k < 12; k++) {
            s_cat(sbuf, words[(it + k * 5) % 16]);
            s_cat(sbuf, k == 11 ? "." : " ");
        }
        uint32_t len = s_len(sbuf);
        s_copy(sbuf2, sbuf);
        s_rev(sbuf2);
        int cmp = s_cmp(sbuf, sbuf2);
        int pos = s_find(sbuf, words[it % 16]);
        chk = chk * 131 + len + (uint32_t)(pos + 1) * 7 + (uint32_t)(cmp + 1);
    }
    return chk;
}

const struct workload wl_strings = { "strings", strings_run, 400 };

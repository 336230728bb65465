/* A Dhrystone-like integer mix (written for this project, not the original
 * benchmark): record assignment through pointers, an enumeration switch,
 * character and string handling, one- and two-dimensional arrays, small
 * procedures with in/out parameters, multiplication and division.  All
 * arithmetic is unsigned or stays far from overflow, so the result is
 * defined and identical at every optimisation level. */
#include "workloads.h"

enum colour { RED, GREEN, BLUE, CYAN, MAGENTA };

struct record {
    struct record *next;
    enum colour colour;
    uint32_t number;
    uint32_t weight;
    char text[32];
};

static struct record rec_a, rec_b;
static uint32_t arr1[50];
static uint32_t arr2[50][50];
static char glob_char1, glob_char2;
static uint32_t glob_int;
static int glob_bool;

static void copy_text(char *d, const char *s)
{
    while ((*d++ = *s++))
        ;
}

static int text_equal(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

static __attribute__((noinline)) enum colour next_colour(enum colour c, uint32_t n)
{
    switch (c) {
    case RED:     return n & 1 ? GREEN : BLUE;
    case GREEN:   return CYAN;
    case BLUE:    return n & 2 ? MAGENTA : RED;
    case CYAN:    return RED;
    default:      return GREEN;
    }
}

static __attribute__((noinline)) void proc_values(uint32_t a, uint32_t b, uint32_t *out)
{
    uint32_t t = a * 3 + b;
    *out = t / 7 + t % 5;
}

static __attribute__((noinline)) void proc_record(struct record *r, uint32_t i)
{
    struct record *n = r->next;
    *n = *r;                          /* structure copy */
    n->number = r->number + i;
    n->colour = next_colour(r->colour, i);
    proc_values(n->number, glob_int, &n->weight);
    if (n->colour == RED)
        n->weight += 10;
    else
        r->weight ^= n->weight;
}

static __attribute__((noinline)) void proc_arrays(uint32_t i, uint32_t v)
{
    uint32_t k = (i % 40) + 5;
    arr1[k] = v;
    arr1[k + 1] = arr1[k] + 1;
    arr1[k + 30 - 30] += k;
    for (uint32_t j = k; j < k + 3; j++)
        arr2[k][j] = k * j;
    arr2[k][k - 1] += 1;
    arr2[k + 3][k] = arr1[k];
    glob_int = arr2[k][k] + arr1[k + 1];
}

static __attribute__((noinline)) char proc_chars(char a, char b)
{
    char c = (char)(a + 1);
    if (c == b)
        return 'X';
    glob_char2 = c;
    return c > 'Z' ? 'A' : c;
}

static uint32_t dhrystone_run(uint32_t iters)
{
    uint32_t chk = 0;
    char s1[32], s2[32];

    rec_a.next = &rec_b;
    rec_b.next = &rec_a;
    rec_a.colour = RED;
    rec_a.number = 40;
    rec_a.weight = 0;
    copy_text(rec_a.text, "RINGVISOR DHRY-LIKE RECORD TEXT");
    glob_int = 0;
    glob_bool = 0;
    glob_char1 = 'A';
    glob_char2 = 'A';
    for (int i = 0; i < 50; i++) {
        arr1[i] = 0;
        for (int j = 0; j < 50; j++)
            arr2[i][j] = 0;
    }
    copy_text(s1, "RINGVISOR, 1ST STRING OF THIRTY");

    for (uint32_t i = 0; i < iters; i++) {
        uint32_t a = 2 + (i & 7), b = 3, c;
        glob_bool = (glob_char1 == 'A') ^ (i & 1);
        glob_char1 = proc_chars(glob_char1, 'C');
        copy_text(s2, (i & 1) ? "RINGVISOR, 2ND STRING OF THIRTY" : "RINGVISOR, 1ST STRING OF THIRTY");
        glob_bool = !text_equal(s1, s2);
        while (a < b) {
            c = 5 * a - b;
            proc_values(a, c, &c);
            a++;
        }
        c = a * b;
        b = c / a;
        c = 7 * (c - b) - a;
        proc_arrays(i, c);
        proc_record(&rec_a, i);
        struct record *t = rec_a.next;
        if (glob_bool)
            chk += t->number + t->weight;
        else
            chk ^= t->weight * 31;
        chk = chk * 17 + (uint32_t)t->colour + (uint32_t)(unsigned char)glob_char1 + c;
        rec_a.number = t->number % 1000;
    }
    chk ^= glob_int + (uint32_t)(unsigned char)glob_char2;
    for (int k = 0; k < 50; k++)
        chk += arr1[k] + arr2[k][k];
    return chk;
}

const struct workload wl_dhrystone = { "dhrystone", dhrystone_run, 3500 };

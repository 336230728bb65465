/* Quicksort (median-of-three, insertion sort below 8 elements) of 512
 * integers drawn from one LCG stream (seed 42) that runs on across
 * iterations.  After each sort: s = sum of a[i] * (i + 1),
 * chk = chk * 31 + s; an unsorted result adds 0xDEADBEEF. */
#include "workloads.h"

#define QN 512

static uint32_t qarr[QN];

static void insertion_sort(uint32_t *a, int n)
{
    for (int i = 1; i < n; i++) {
        uint32_t v = a[i];
        int j = i - 1;
        while (j >= 0 && a[j] > v) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = v;
    }
}

static void swap(uint32_t *a, int i, int j)
{
    uint32_t t = a[i];
    a[i] = a[j];
    a[j] = t;
}

static void quicksort(uint32_t *a, int n)
{
    while (n > 8) {
        int mid = n / 2;
        if (a[mid] < a[0]) swap(a, mid, 0);
        if (a[n - 1] < a[0]) swap(a, n - 1, 0);
        if (a[n - 1] < a[mid]) swap(a, n - 1, mid);
        uint32_t pivot = a[mid];
        int i = 0, j = n - 1;
        for (;;) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i >= j) break;
            swap(a, i, j);
            i++;
            j--;
        }
        /* Recurse into the smaller part, loop on the larger one. */
        int left = j + 1;
        if (left < n - left) {
            quicksort(a, left);
            a += left;
            n -= left;
        } else {
            quicksort(a + left, n - left);
            n = left;
        }
    }
    insertion_sort(a, n);
}

static uint32_t qsort_run(uint32_t iters)
{
    uint32_t seed = 42, chk = 0;
    for (uint32_t it = 0; it < iters; it++) {
        for (int i = 0; i < QN; i++)
            qarr[i] = lcg_next(&seed);
        quicksort(qarr, QN);
        uint32_t s = 0;
        for (int i = 0; i < QN; i++) {
            s += qarr[i] * (uint32_t)(i + 1);
            if (i && qarr[i - 1] > qarr[i])
                chk += 0xDEADBEEFu;
        }
        chk = chk * 31 + s;
    }
    return chk;
}

const struct workload wl_qsort = { "qsort", qsort_run, 40 };

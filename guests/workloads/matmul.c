/* Integer (mod 2^32) matrix multiply, 16x16.  A and B come from the LCG
 * (seed 7, A first, row-major, values (x >> 16) & 0xFF).  Each iteration:
 *   C = A * B;  s = sum of (C[i][j] ^ (16*i + j));  chk = chk * 33 + s;
 *   A[it % 16][(it * 7) % 16] = s & 0xFFFF. */
#include "workloads.h"

#define N 16

static uint32_t mA[N][N], mB[N][N], mC[N][N];

static uint32_t matmul_run(uint32_t iters)
{
    uint32_t seed = 7, chk = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            mA[i][j] = (lcg_next(&seed) >> 16) & 0xFF;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            mB[i][j] = (lcg_next(&seed) >> 16) & 0xFF;

    for (uint32_t it = 0; it < iters; it++) {
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                uint32_t acc = 0;
                for (int k = 0; k < N; k++)
                    acc += mA[i][k] * mB[k][j];
                mC[i][j] = acc;
            }
        uint32_t s = 0;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++)
                s += mC[i][j] ^ (uint32_t)(N * i + j);
        chk = chk * 33 + s;
        mA[it % N][(it * 7) % N] = s & 0xFFFF;
    }
    return chk;
}

const struct workload wl_matmul = { "matmul", matmul_run, 60 };

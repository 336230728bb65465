/* Table-driven CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, the
 * one zlib uses).  A 1 KiB buffer is filled from the LCG (seed 1, one
 * byte = top 8 bits of each step) and fed iters times through one running
 * CRC, so the checksum equals zlib.crc32(buf * iters). */
#include "workloads.h"

#define CRC_BUF 1024

static uint32_t crc_table[256];
static uint8_t crc_buf[CRC_BUF];

static uint32_t crc32_run(uint32_t iters)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
    uint32_t seed = 1;
    for (uint32_t i = 0; i < CRC_BUF; i++)
        crc_buf[i] = (uint8_t)(lcg_next(&seed) >> 24);

    uint32_t crc = 0xFFFFFFFFu;
    for (uint32_t it = 0; it < iters; it++) {
        const uint8_t *p = crc_buf;
        for (uint32_t i = 0; i < CRC_BUF; i++)
            crc = crc_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    }
    return crc ^ 0xFFFFFFFFu;
}

const struct workload wl_crc32 = { "crc32", crc32_run, 250 };

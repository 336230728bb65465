/* pvfront.h: what the PV runtime's front-ends share (io.c, xenbus.c, blkfront.c). */
#ifndef RV_PVFRONT_H
#define RV_PVFRONT_H

#include <stdint.h>

void pv_notify(uint32_t port);              /* EVTCHNOP_send */
void pv_yield(void);                        /* SCHEDOP_yield: let Domain 0 work */
void pv_port_mask(uint32_t port, int masked);

int xs_read(const char *path, char *buf, uint32_t cap);   /* length, -1 */
int xs_write(const char *path, const char *value);        /* 0, -1 */
long xs_read_num(const char *path);                       /* value, -1 */

/* blkfront.c: the ATA disks' ports (0x1F0-0x1F7, 0x3F6; 0x170-0x177, 0x376) in a DomU */
int blkfront_port(uint32_t port, uint32_t *reg);           /* the channel, -1: not a disk's */
uint32_t blkfront_in(uint32_t size, uint32_t port);
void blkfront_out(uint32_t size, uint32_t port, uint32_t value);

/* privcmd.c: the privcmd device (guests/include/privcmd.h) */
void privcmd_out(uint32_t linear);
uint32_t privcmd_in(uint32_t port);

/* balloon.c: the balloon device */
uint32_t balloon_in(uint32_t port);
void balloon_out(uint32_t port, uint32_t phys);

#endif

/* A xenstore client for the PV runtime's front-ends (Xen's xenbus, reduced
 * to what a front-end's handshake needs): XS_READ and XS_WRITE over the
 * domain's xenstore ring (io/xs_wire.h), mapped by the hypervisor at
 * PV_XENSTORE_VA, its event channel from start_info.  One request at a
 * time, waiting for the reply with SCHEDOP_yield (xenstored runs in Domain
 * 0 and answers when it is told through the channel); watch events are
 * never asked for, and skipped if one comes. */
#include "pv.h"
#include "pvfront.h"

static volatile struct xenstore_domain_interface *const xs =
    (volatile struct xenstore_domain_interface *)PV_XENSTORE_VA;
static uint32_t req_id;

static uint32_t store_port(void)
{
    return ((const volatile start_info_t *)PV_START_INFO_VA)->store_evtchn;
}

static void ring_put(const void *data, uint32_t n)
{
    const uint8_t *p = data;
    for (uint32_t i = 0; i < n; i++) {
        while (xs->req_prod - xs->req_cons >= XENSTORE_RING_SIZE)
            pv_yield();
        xs->req[xs->req_prod % XENSTORE_RING_SIZE] = (char)p[i];
        __asm__ volatile("" ::: "memory");
        xs->req_prod++;
    }
}

static void ring_get(void *data, uint32_t n)
{
    uint8_t *p = data;
    for (uint32_t i = 0; i < n; i++) {
        while (xs->rsp_prod == xs->rsp_cons)
            pv_yield();
        uint8_t c = (uint8_t)xs->rsp[xs->rsp_cons % XENSTORE_RING_SIZE];
        __asm__ volatile("" ::: "memory");
        xs->rsp_cons++;
        if (p)
            p[i] = c;
    }
}

static uint32_t slen(const char *s)
{
    uint32_t n = 0;
    while (s[n])
        n++;
    return n;
}

/* One request; the reply's payload into reply (at most cap - 1 bytes, NUL-ended).
 * The reply's length, or -1 for an XS_ERROR reply. */
static int xs_request(uint32_t type, const char *path, const char *value, char *reply,
                      uint32_t cap)
{
    uint32_t plen = slen(path) + 1, vlen = value ? slen(value) : 0;
    struct xsd_sockmsg m = { .type = type, .req_id = ++req_id, .tx_id = 0, .len = plen + vlen };
    ring_put(&m, sizeof(m));
    ring_put(path, plen);
    if (value)
        ring_put(value, vlen);
    pv_notify(store_port());
    for (;;) {
        struct xsd_sockmsg r;
        ring_get(&r, sizeof(r));
        uint32_t keep = r.len < cap ? r.len : (cap ? cap - 1 : 0);
        ring_get(reply, keep);
        ring_get(0, r.len - keep);
        pv_notify(store_port());
        if (r.type == XS_WATCH_EVENT || r.req_id != req_id)
            continue;                      /* not the answer to this request */
        if (cap)
            reply[keep] = 0;
        return r.type == XS_ERROR ? -1 : (int)keep;
    }
}

int xs_read(const char *path, char *buf, uint32_t cap)
{
    return xs_request(XS_READ, path, 0, buf, cap);
}

int xs_write(const char *path, const char *value)
{
    char ok[8];
    return xs_request(XS_WRITE, path, value, ok, sizeof(ok)) < 0 ? -1 : 0;
}

/* The number a node holds, or -1 (absent, not a number). */
long xs_read_num(const char *path)
{
    char buf[24];
    if (xs_read(path, buf, sizeof(buf)) <= 0)
        return -1;
    long v = 0;
    for (char *p = buf; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

/* blkfront: the block split driver's front-end, behind the ATA disks' ports.
 *
 * The teaching kernel drives ATA disks by programmed I/O (kernel/ata.c); in
 * a DomU of `ringvisor xen` there are no disks, so -- as the console ring
 * stands behind COM1 -- this front-end stands behind the two IDE channels:
 * xvda and xvdb are the primary channel's master and slave (0x1F0-0x1F7,
 * 0x3F6), xvdc and xvdd the secondary's (0x170-0x177, 0x376), as QEMU's
 * -hda..-hdd are.  For each channel it keeps the task file, and turns READ
 * SECTORS, WRITE SECTORS and FLUSH CACHE for the selected drive into Xen
 * blkif requests (io/blkif.h) on that disk's ring, shared with that disk's
 * back-end, whose pages it grants.  Native kernel, same driver, same data;
 * a different machine underneath.
 *
 * Connecting (each disk on the first access to its channel's ports; Xen's
 * xenbus handshake, io/xenbus.h): device/vbd/DEV (51712 for xvda, 51728 for
 * xvdb: Linux's 202 << 8 | index * 16) names the back-end's directory; once
 * it says InitWait (2), with the disk's size in `sectors`, the front-end
 * sets up its grant table once (GNTTABOP_setup_table, then the frame placed
 * over a page of its own with XENMEM_add_to_physmap, as a translated guest
 * does), grants the disk's ring page to the back-end's domain, allocates an
 * unbound event channel for it, writes ring-ref, event-channel and
 * protocol, and says Initialised (3); when the back-end says Connected (4),
 * so does it.  Without a device/vbd/DEV there is no such disk: a channel
 * with neither of its disks reads as an empty bus (0xFF), the absent drive
 * beside a present one reads status 0 (QEMU's IDE).
 *
 * Each command's data move through the channel's 11 data pages (a channel
 * runs one command at a time: ATA's host does not select the other device
 * while BSY or DRQ is set), at most 88 sectors per request, granted to the
 * disk's back-end for that request only; the front-end waits for each
 * response (SCHEDOP_yield: the back-end runs in Domain 0 or in the
 * hypervisor).  A BLKIF_RSP_ERROR aborts the command the way a disk does
 * (status DRDY|ERR, error ABRT); a write past the end is aborted before any
 * data move, as QEMU's IDE does.
 *
 * After xl restore or xl migrate a ring's back-end is gone: a request that
 * gets no answer finds its event channel unbound, and the front-end
 * connects that disk to its new back-end and issues the request again
 * (resumed(), below). */
#include "pv.h"
#include "pvfront.h"

#define NDISK 4                             /* xvda..xvdd: two channels, two drives each */
#define NSEG BLKIF_MAX_SEGMENTS_PER_REQUEST
#define BATCH (NSEG * 8)                   /* sectors per request */
#define REF_RING 8                         /* the first entry after the reserved ones: */
#define REF_DATA (REF_RING + NDISK)        /* a ring each, then each channel's data pages */
#define VBD_FIRST 51712                    /* xvda's device number (202 << 8) */
#define WAIT_YIELDS 2000000u
#define RESUME_CHECK 64u                    /* yields without a response before asking why */

#define BSY 0x80
#define DRDY 0x40
#define DSC 0x10
#define DRQ 0x08
#define ERR 0x01
#define ABRT 0x04

struct vbd {                                /* one virtual disk: its connection */
    int state;                              /* 0: not tried, 1: connected, -1: none */
    uint32_t port, backend_id, sectors, readonly, req_prod, rsp_cons;
    uint64_t next_id;
    char front[24];                         /* device/vbd/DEV */
    char bpath[96];                         /* its back-end's directory */
};

struct channel {                            /* one IDE channel: the task file, the command */
    uint8_t st, error, nsector, sector, lcyl, hcyl, select, control, cmd;
    uint32_t pos, avail, remaining, batch_lba;   /* bytes in the batch, sectors to go */
};

static uint8_t ring_page[NDISK][4096] __attribute__((aligned(4096)));
static uint8_t data[2][NSEG][4096] __attribute__((aligned(4096)));
/* its frame is replaced by the grant table's frame 0 (XENMEM_add_to_physmap) */
static volatile grant_entry_v1_t gnttab[512] __attribute__((aligned(4096)));

static struct vbd vbds[NDISK];
static struct channel chans[2] = {
    { DRDY | DSC, 1, 1, 1, 0, 0, 0xA0, 0, 0, 0, 0, 0, 0 },
    { DRDY | DSC, 1, 1, 1, 0, 0, 0xA0, 0, 0, 0, 0, 0, 0 },
};
static int gnttab_ready;
static uint32_t data_gpfn[2][NSEG];

#define RING(v) ((volatile struct blkif_sring_header *)ring_page[(v) - vbds])
#define SLOT(v, i) (ring_page[(v) - vbds] + BLKIF_RING_HEADER + ((i) % BLKIF_RING_SIZE) * BLKIF_SLOT_SIZE)

static void cat(char *dst, const char *a, const char *b)
{
    while (*a)
        *dst++ = *a++;
    while (*b)
        *dst++ = *b++;
    *dst = 0;
}

static void utoa(uint32_t v, char *out)
{
    char tmp[12];
    int n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while (v /= 10);
    while (n)
        *out++ = tmp[--n];
    *out = 0;
}

static long node_num(const char *dir, const char *leaf)
{
    char p[128];
    cat(p, dir, leaf);
    return xs_read_num(p);
}

static int node_write(const char *dir, const char *leaf, const char *value)
{
    char p[64];
    cat(p, dir, leaf);
    return xs_write(p, value);
}

static int wait_backend(struct vbd *v, long want)
{
    for (uint32_t i = 0; i < WAIT_YIELDS; i++) {
        long s = node_num(v->bpath, "/state");
        if (s == want)
            return 0;
        if (s > XenbusStateConnected)
            return -1;                      /* closing or closed: it gave up */
        pv_yield();
    }
    return -1;
}

static uint32_t gpfn_of(const void *va)
{
    long f = HYPERVISOR_rv_machine_op(RV_VA_TO_MFN, (uint32_t)va, 0);
    if (f < 0)
        pv_panic("blkfront: a page of the runtime has no frame\n");
    return (uint32_t)f;
}

static void grant(uint32_t ref, uint32_t gpfn, uint32_t domid, int ro)
{
    gnttab[ref].domid = (domid_t)domid;
    gnttab[ref].frame = gpfn;
    __asm__ volatile("" ::: "memory");      /* the entry before the flags that enable it */
    gnttab[ref].flags = (uint16_t)(GTF_permit_access | (ro ? GTF_readonly : 0));
}

/* Why a disk is not there: one line in the hypervisor's console (xl dmesg). */
static int fail(const char *why)
{
    uint32_t n = 0;
    while (why[n])
        n++;
    HYPERVISOR_console_io(CONSOLEIO_write, n, why);
    return -1;
}

/* The grant table: frame 0, put where gnttab[] is (once: a save keeps it there). */
static int gnttab_setup(void)
{
    if (gnttab_ready)
        return 0;
    uint32_t frame;
    struct gnttab_setup_table su = { .dom = DOMID_SELF, .nr_frames = 1, .frame_list = (uint32_t)&frame };
    if (pv_hypercall4(__HYPERVISOR_grant_table_op, GNTTABOP_setup_table, (uint32_t)&su, 1, 0) < 0
        || su.status != 0)
        return fail("blkfront: GNTTABOP_setup_table refused\n");
    struct xen_add_to_physmap ap = { .domid = DOMID_SELF, .space = XENMAPSPACE_grant_table,
                                     .idx = 0, .gpfn = gpfn_of((const void *)gnttab) };
    if (pv_hypercall4(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, (uint32_t)&ap, 0, 0) < 0)
        return fail("blkfront: the grant table frame could not be placed\n");
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < NSEG; i++)
            data_gpfn[c][i] = gpfn_of(data[c][i]);
    gnttab_ready = 1;
    return 0;
}

static int connect(struct vbd *v)
{
    uint32_t d = (uint32_t)(v - vbds);
    char num[12];
    utoa(VBD_FIRST + 16 * d, num);
    cat(v->front, "device/vbd/", num);
    char p[48];
    cat(p, v->front, "/backend");
    if (xs_read(p, v->bpath, sizeof(v->bpath) - 16) <= 0)
        return -1;                          /* no such virtual disk configured: quietly none */
    long id = node_num(v->front, "/backend-id");
    if (id < 0 || wait_backend(v, XenbusStateInitWait) < 0)
        return fail("blkfront: the back-end did not reach InitWait\n");
    long n = node_num(v->bpath, "/sectors"), info = node_num(v->bpath, "/info");
    if (n <= 0)
        return fail("blkfront: the back-end published no size\n");
    v->backend_id = (uint32_t)id;
    v->sectors = (uint32_t)n;
    v->readonly = info > 0 && (info & 4);
    if (gnttab_setup() < 0)
        return -1;
    /* the shared ring (SHARED_RING_INIT) and its grant */
    RING(v)->req_prod = RING(v)->rsp_prod = 0;
    RING(v)->req_event = RING(v)->rsp_event = 1;
    v->req_prod = v->rsp_cons = 0;
    grant(REF_RING + d, gpfn_of(ring_page[d]), v->backend_id, 0);
    struct evtchn_alloc_unbound au = { .dom = DOMID_SELF, .remote_dom = (domid_t)v->backend_id };
    if (HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, &au) < 0)
        return fail("blkfront: no event channel for the back-end\n");
    v->port = au.port;
    pv_port_mask(v->port, 1);               /* responses are polled: no upcall for them */
    utoa(REF_RING + d, num);
    if (node_write(v->front, "/ring-ref", num) < 0)
        return fail("blkfront: xenstore refused the front-end's nodes\n");
    utoa(v->port, num);
    if (node_write(v->front, "/event-channel", num) < 0
        || node_write(v->front, "/protocol", "x86_32-abi") < 0
        || node_write(v->front, "/state", "3") < 0)
        return fail("blkfront: xenstore refused the front-end's nodes\n");
    if (wait_backend(v, XenbusStateConnected) < 0)
        return fail("blkfront: the back-end did not connect\n");
    node_write(v->front, "/state", "4");
    return 0;
}

static int connected(struct vbd *v)
{
    if (!v->state)
        v->state = connect(v) == 0 ? 1 : -1;
    return v->state > 0;
}

/* Resumed on another back-end (xl restore, xl migrate)?  The domain is saved
 * without its cooperation, so the front-end learns it when a response does
 * not come: its event channel, bound to the old back-end's, came back
 * unbound (an inter-domain channel cannot follow its peer: docs/xen.md), and
 * the new back-end waits in InitWait.  Linux's blkfront learns it from the
 * suspend hypercall's return and does what reconnect() does: blkfront_resume
 * frees the old ring and channel, talk_to_blkback sets up new ones and says
 * Initialised, and blkif_recover issues the requests that were out again. */
static int resumed(struct vbd *v)
{
    struct evtchn_status s = { .dom = DOMID_SELF, .port = v->port };
    return HYPERVISOR_event_channel_op(EVTCHNOP_status, &s) < 0
           || s.status != EVTCHNSTAT_interdomain;
}

static int reconnect(struct vbd *v)
{
    struct evtchn_close c = { .port = v->port };
    HYPERVISOR_event_channel_op(EVTCHNOP_close, &c);   /* the old one, unbound */
    v->state = connect(v) == 0 ? 1 : -1;
    return v->state > 0;
}

/* -- blkif requests ---------------------------------------------------------------- */
static int16_t request(struct vbd *v, int chan, uint8_t op, uint32_t lba, uint32_t count)
{
    uint32_t segs = (count + 7) / 8, ref0 = REF_DATA + (uint32_t)chan * NSEG;
again:;
    volatile struct blkif_request *r = (volatile struct blkif_request *)SLOT(v, v->req_prod);
    r->operation = op;
    r->nr_segments = (uint8_t)segs;
    r->handle = (uint16_t)(VBD_FIRST + 16 * (v - vbds));
    r->id = ++v->next_id;
    r->sector_number = lba;
    for (uint32_t i = 0; i < segs; i++) {
        grant(ref0 + i, data_gpfn[chan][i], v->backend_id, op != BLKIF_OP_read);
        r->seg[i].gref = ref0 + i;
        r->seg[i].first_sect = 0;
        r->seg[i].last_sect = (uint8_t)((count - 8 * i >= 8 ? 8 : count - 8 * i) - 1);
    }
    __asm__ volatile("" ::: "memory");
    uint32_t old = v->req_prod++;
    RING(v)->req_prod = v->req_prod;
    __asm__ volatile("mfence" ::: "memory");
    if ((uint32_t)(v->req_prod - RING(v)->req_event) < (uint32_t)(v->req_prod - old))
        pv_notify(v->port);                 /* RING_PUSH_REQUESTS_AND_CHECK_NOTIFY */
    int16_t status = BLKIF_RSP_ERROR;
    for (uint32_t i = 0; i < WAIT_YIELDS; i++) {
        if (RING(v)->rsp_prod != v->rsp_cons) {
            volatile struct blkif_response *rsp =
                (volatile struct blkif_response *)SLOT(v, v->rsp_cons);
            status = rsp->id == v->next_id ? rsp->status : BLKIF_RSP_ERROR;
            v->rsp_cons++;
            RING(v)->rsp_event = v->rsp_cons + 1;
            break;
        }
        if (i % RESUME_CHECK == RESUME_CHECK - 1 && resumed(v)) {
            if (!reconnect(v))
                return BLKIF_RSP_ERROR;     /* the new back-end refused: the disk is gone */
            goto again;                     /* the request again, on the new ring */
        }
        pv_yield();
    }
    for (uint32_t i = 0; i < segs; i++)
        gnttab[ref0 + i].flags = 0;         /* the back-end's access ends with the request */
    return status;
}

/* -- the task file --------------------------------------------------------------------- */
static struct vbd *selected(struct channel *c)
{
    return &vbds[2 * (c - chans) + ((c->select >> 4) & 1)];
}

static uint32_t lba_now(struct channel *c)
{
    return (uint32_t)(c->select & 0x0F) << 24 | (uint32_t)c->hcyl << 16
           | (uint32_t)c->lcyl << 8 | c->sector;
}

static void lba_set(struct channel *c, uint32_t lba)
{
    c->select = (uint8_t)((c->select & 0xF0) | ((lba >> 24) & 0x0F));
    c->hcyl = (uint8_t)(lba >> 16);
    c->lcyl = (uint8_t)(lba >> 8);
    c->sector = (uint8_t)lba;
}

static void abort_cmd(struct channel *c)
{
    c->st = DRDY | ERR;
    c->error = ABRT;
    c->remaining = c->avail = c->pos = 0;
}

static void next_batch(struct channel *c)
{
    uint32_t n = c->remaining < BATCH ? c->remaining : BATCH;
    c->batch_lba = lba_now(c);
    c->pos = 0;
    c->avail = n * 512;
    if (c->cmd == 0x20
        && request(selected(c), (int)(c - chans), BLKIF_OP_read, c->batch_lba, n) != BLKIF_RSP_OKAY)
        abort_cmd(c);
    else
        c->st = DRDY | DSC | DRQ;
}

static void identify(struct channel *c)
{
    struct vbd *v = selected(c);
    volatile uint16_t *w = (volatile uint16_t *)data[c - chans][0];
    char model[41] = "Xen blkfront xvda                       ";
    model[16] = (char)('a' + (v - vbds));
    for (int i = 0; i < 256; i++)
        w[i] = 0;
    w[0] = 0x0040;
    for (int i = 0; i < 20; i++)
        w[27 + i] = (uint16_t)(model[2 * i] << 8 | model[2 * i + 1]);
    w[47] = 0x8000 | 16;
    w[49] = 1 << 9;                         /* LBA */
    w[60] = (uint16_t)v->sectors;
    w[61] = (uint16_t)(v->sectors >> 16);
    w[83] = 1 << 14 | 1 << 12;              /* FLUSH CACHE */
    w[100] = (uint16_t)v->sectors;
    w[101] = (uint16_t)(v->sectors >> 16);
    c->pos = 0;
    c->avail = 512;
    c->remaining = 0;
    c->st = DRDY | DSC | DRQ;
}

static void command(struct channel *c, uint8_t cmd)
{
    struct vbd *v = selected(c);
    uint32_t count = c->nsector ? c->nsector : 256;
    c->cmd = cmd;
    c->error = 0;
    if (!(c->select & 0x40) && cmd != 0xEC && cmd != 0xE7 && cmd != 0xEA) {
        abort_cmd(c);                       /* CHS: no geometry behind a virtual disk */
        return;
    }
    switch (cmd) {
    case 0xEC:
        identify(c);
        break;
    case 0x20: case 0x21:
        c->cmd = 0x20;
        c->remaining = count;
        next_batch(c);
        break;
    case 0x30: case 0x31:
        c->cmd = 0x30;
        if (v->readonly || lba_now(c) + count > v->sectors) {
            abort_cmd(c);
            return;
        }
        c->remaining = count;
        next_batch(c);
        break;
    case 0xE7: case 0xEA:
        if (request(v, (int)(c - chans), BLKIF_OP_flush_diskcache, 0, 0) == BLKIF_RSP_ERROR)
            abort_cmd(c);
        else
            c->st = DRDY | DSC;
        break;
    default:
        abort_cmd(c);
    }
}

/* A batch's bytes have all moved: the sectors are done (a write's go out now). */
static void batch_done(struct channel *c)
{
    uint32_t n = c->avail / 512;
    if (c->cmd == 0xEC) {
        c->st = DRDY | DSC;
        c->avail = 0;
        return;
    }
    if (c->cmd == 0x30
        && request(selected(c), (int)(c - chans), BLKIF_OP_write, c->batch_lba, n) != BLKIF_RSP_OKAY) {
        abort_cmd(c);
        return;
    }
    lba_set(c, c->batch_lba + n);
    c->nsector = (uint8_t)(c->nsector - n);
    c->remaining -= n;
    if (c->remaining)
        next_batch(c);
    else {
        c->st = DRDY | DSC;
        c->avail = c->pos = 0;
    }
}

/* The channel a port belongs to (0: primary, 1: secondary), -1 for none; the
 * register: 0-7 the task file, 8 the control block (status / device control). */
int blkfront_port(uint32_t port, uint32_t *reg)
{
    for (int c = 0; c < 2; c++) {
        uint32_t base = c ? 0x170 : 0x1F0, ctl = c ? 0x376 : 0x3F6;
        if (port >= base && port <= base + 7) {
            *reg = port - base;
            return c;
        }
        if (port == ctl) {
            *reg = 8;
            return c;
        }
    }
    return -1;
}

/* Whether the selected drive is there: -1 neither of the channel's, 0 the other only. */
static int present(struct channel *c)
{
    int d = 2 * (int)(c - chans), a = connected(&vbds[d]), b = connected(&vbds[d + 1]);
    if (!a && !b)
        return -1;
    return selected(c)->state > 0;
}

uint32_t blkfront_in(uint32_t size, uint32_t port)
{
    uint32_t reg;
    struct channel *c = &chans[blkfront_port(port, &reg)];
    int p = present(c);
    if (p <= 0)
        return p < 0 ? (size == 1 ? 0xFF : size == 2 ? 0xFFFF : 0xFFFFFFFF) : 0;
    if (reg == 0) {
        if (!(c->st & DRQ) || c->cmd == 0x30)
            return 0;
        uint32_t v = 0;
        for (uint32_t i = 0; i < size; i++)
            v |= (uint32_t)((uint8_t *)data[c - chans])[c->pos + i] << (8 * i);
        c->pos += size;
        if (c->pos >= c->avail)
            batch_done(c);
        return v;
    }
    switch (reg) {
    case 1: return c->error;
    case 2: return c->nsector;
    case 3: return c->sector;
    case 4: return c->lcyl;
    case 5: return c->hcyl;
    case 6: return c->select;
    default: return c->st;                  /* status, alternate status */
    }
}

void blkfront_out(uint32_t size, uint32_t port, uint32_t v)
{
    uint32_t reg;
    struct channel *c = &chans[blkfront_port(port, &reg)];
    if (reg == 8) {
        if ((c->control & 0x04) && !(v & 0x04)) {     /* the end of a software reset */
            c->st = DRDY | DSC;
            c->error = 1;
            c->nsector = c->sector = 1;
            c->lcyl = c->hcyl = 0;
            c->remaining = c->avail = c->pos = 0;
        }
        c->control = (uint8_t)v;
        return;
    }
    if (reg == 6) {
        c->select = (uint8_t)(v | 0xA0);
        return;
    }
    if (present(c) <= 0)
        return;
    switch (reg) {
    case 0:
        if ((c->st & DRQ) && c->cmd == 0x30) {
            for (uint32_t i = 0; i < size; i++)
                ((uint8_t *)data[c - chans])[c->pos + i] = (uint8_t)(v >> (8 * i));
            c->pos += size;
            if (c->pos >= c->avail)
                batch_done(c);
        }
        break;
    case 2: c->nsector = (uint8_t)v; break;
    case 3: c->sector = (uint8_t)v; break;
    case 4: c->lcyl = (uint8_t)v; break;
    case 5: c->hcyl = (uint8_t)v; break;
    case 7: command(c, (uint8_t)v); break;
    default: break;
    }
}

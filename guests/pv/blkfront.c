/* blkfront: the block split driver's front-end, behind the ATA disk's ports.
 *
 * The teaching kernel drives an ATA disk by programmed I/O (kernel/ata.c);
 * in a DomU of `ringvisor xen` there is no disk, so -- as the console ring
 * stands behind COM1 -- this front-end stands behind the primary IDE
 * channel: it keeps the task file, and turns READ SECTORS, WRITE SECTORS
 * and FLUSH CACHE into Xen blkif requests (io/blkif.h) on a ring shared with
 * the back-end, whose pages it grants.  Native kernel, same driver, same
 * data; a different machine underneath.
 *
 * Connecting (on the first access to the ports; Xen's xenbus handshake,
 * io/xenbus.h): device/vbd/51712/backend names the back-end's directory;
 * once it says InitWait (2), with the disk's size in `sectors`, the
 * front-end sets up its grant table (GNTTABOP_setup_table, then the frame
 * placed over a page of its own with XENMEM_add_to_physmap, as a
 * translated guest does), grants the ring page and 11 data pages to the
 * back-end's domain, allocates an unbound event channel for it, writes
 * ring-ref, event-channel and protocol, and says Initialised (3); when the
 * back-end says Connected (4), so does it.  Without a device/vbd/51712
 * there is no disk: the ports read as an empty bus (0xFF).
 *
 * Each command's data move through the 11 data pages, at most 88 sectors
 * per request; the front-end waits for each response (SCHEDOP_yield: the
 * back-end runs in Domain 0 or in the hypervisor) and revokes the grants
 * of the data pages between requests, so the back-end holds access only
 * while a request is out.  A BLKIF_RSP_ERROR aborts the command the way a
 * disk does (status DRDY|ERR, error ABRT); a write past the end is aborted
 * before any data move, as QEMU's IDE does.
 *
 * After xl restore or xl migrate the ring's back-end is gone: a request that
 * gets no answer finds its event channel unbound, and the front-end connects
 * to the new back-end and issues the request again (resumed(), below). */
#include "pv.h"
#include "pvfront.h"

#define VBD "device/vbd/51712"
#define NSEG BLKIF_MAX_SEGMENTS_PER_REQUEST
#define BATCH (NSEG * 8)                   /* sectors per request */
#define REF_RING 8                         /* the first entry after the reserved ones */
#define REF_DATA 9
#define WAIT_YIELDS 2000000u
#define RESUME_CHECK 64u                    /* yields without a response before asking why */

#define BSY 0x80
#define DRDY 0x40
#define DSC 0x10
#define DRQ 0x08
#define ERR 0x01
#define ABRT 0x04

static uint8_t ring_page[4096] __attribute__((aligned(4096)));
static uint8_t data[NSEG][4096] __attribute__((aligned(4096)));
/* its frame is replaced by the grant table's frame 0 (XENMEM_add_to_physmap) */
static volatile grant_entry_v1_t gnttab[512] __attribute__((aligned(4096)));

static int state;                           /* 0: not tried, 1: connected, -1: no disk */
static uint32_t port, backend_id, sectors, readonly, ring_gpfn, data_gpfn[NSEG];
static uint32_t req_prod, rsp_cons;
static uint64_t next_id;
static char bpath[96];

/* the task file */
static uint8_t st = DRDY | DSC, error = 1, nsector = 1, sector = 1, lcyl, hcyl, select = 0xA0;
static uint8_t control, cmd;
static uint32_t pos, avail, remaining, batch_lba;   /* bytes in the batch, sectors to go */

#define RING ((volatile struct blkif_sring_header *)ring_page)
#define SLOT(i) (ring_page + BLKIF_RING_HEADER + ((i) % BLKIF_RING_SIZE) * BLKIF_SLOT_SIZE)

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

static long back_num(const char *leaf)
{
    char p[128];
    cat(p, bpath, leaf);
    return xs_read_num(p);
}

static int wait_backend(long want)
{
    for (uint32_t i = 0; i < WAIT_YIELDS; i++) {
        long s = back_num("/state");
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

static void grant(uint32_t ref, uint32_t gpfn, int ro)
{
    gnttab[ref].domid = (domid_t)backend_id;
    gnttab[ref].frame = gpfn;
    __asm__ volatile("" ::: "memory");      /* the entry before the flags that enable it */
    gnttab[ref].flags = (uint16_t)(GTF_permit_access | (ro ? GTF_readonly : 0));
}

/* Why the disk is not there: one line in the hypervisor's console (xl dmesg). */
static int fail(const char *why)
{
    uint32_t n = 0;
    while (why[n])
        n++;
    HYPERVISOR_console_io(CONSOLEIO_write, n, why);
    return -1;
}

static int connect(void)
{
    if (xs_read(VBD "/backend", bpath, sizeof(bpath) - 16) <= 0)
        return -1;                          /* no virtual disk configured: quietly none */
    long id = xs_read_num(VBD "/backend-id");
    if (id < 0 || wait_backend(XenbusStateInitWait) < 0)
        return fail("blkfront: the back-end did not reach InitWait\n");
    long n = back_num("/sectors"), info = back_num("/info");
    if (n <= 0)
        return fail("blkfront: the back-end published no size\n");
    backend_id = (uint32_t)id;
    sectors = (uint32_t)n;
    readonly = info > 0 && (info & 4);
    /* the grant table: frame 0, put where gnttab[] is */
    uint32_t frame;
    struct gnttab_setup_table su = { .dom = DOMID_SELF, .nr_frames = 1, .frame_list = (uint32_t)&frame };
    if (pv_hypercall4(__HYPERVISOR_grant_table_op, GNTTABOP_setup_table, (uint32_t)&su, 1, 0) < 0
        || su.status != 0)
        return fail("blkfront: GNTTABOP_setup_table refused\n");
    struct xen_add_to_physmap ap = { .domid = DOMID_SELF, .space = XENMAPSPACE_grant_table,
                                     .idx = 0, .gpfn = gpfn_of((const void *)gnttab) };
    if (pv_hypercall4(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, (uint32_t)&ap, 0, 0) < 0)
        return fail("blkfront: the grant table frame could not be placed\n");
    /* the shared ring (SHARED_RING_INIT) and its grant; the data pages' frames */
    RING->req_prod = RING->rsp_prod = 0;
    RING->req_event = RING->rsp_event = 1;
    ring_gpfn = gpfn_of(ring_page);
    grant(REF_RING, ring_gpfn, 0);
    for (int i = 0; i < NSEG; i++)
        data_gpfn[i] = gpfn_of(data[i]);
    struct evtchn_alloc_unbound au = { .dom = DOMID_SELF, .remote_dom = (domid_t)backend_id };
    if (HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, &au) < 0)
        return fail("blkfront: no event channel for the back-end\n");
    port = au.port;
    pv_port_mask(port, 1);                  /* responses are polled: no upcall for them */
    char num[12];
    utoa(REF_RING, num);
    if (xs_write(VBD "/ring-ref", num) < 0)
        return fail("blkfront: xenstore refused the front-end's nodes\n");
    utoa(port, num);
    if (xs_write(VBD "/event-channel", num) < 0 || xs_write(VBD "/protocol", "x86_32-abi") < 0
        || xs_write(VBD "/state", "3") < 0)
        return fail("blkfront: xenstore refused the front-end's nodes\n");
    if (wait_backend(XenbusStateConnected) < 0)
        return fail("blkfront: the back-end did not connect\n");
    xs_write(VBD "/state", "4");
    return 0;
}

static int present(void)
{
    if (!state)
        state = connect() == 0 ? 1 : -1;
    return state > 0 && !(select & 0x10);
}

/* Resumed on another back-end (xl restore, xl migrate)?  The domain is saved
 * without its cooperation, so the front-end learns it when a response does
 * not come: its event channel, bound to the old back-end's, came back
 * unbound (an inter-domain channel cannot follow its peer: docs/xen.md), and
 * the new back-end waits in InitWait.  Linux's blkfront learns it from the
 * suspend hypercall's return and does what reconnect() does: blkfront_resume
 * frees the old ring and channel, talk_to_blkback sets up new ones and says
 * Initialised, and blkif_recover issues the requests that were out again. */
static int resumed(void)
{
    struct evtchn_status s = { .dom = DOMID_SELF, .port = port };
    return HYPERVISOR_event_channel_op(EVTCHNOP_status, &s) < 0
           || s.status != EVTCHNSTAT_interdomain;
}

static int reconnect(void)
{
    struct evtchn_close c = { .port = port };
    HYPERVISOR_event_channel_op(EVTCHNOP_close, &c);   /* the old one, unbound */
    req_prod = rsp_cons = 0;
    state = connect() == 0 ? 1 : -1;
    return state > 0;
}

/* -- blkif requests ---------------------------------------------------------------- */
static int16_t request(uint8_t op, uint32_t lba, uint32_t count)
{
    uint32_t segs = (count + 7) / 8;
again:;
    volatile struct blkif_request *r = (volatile struct blkif_request *)SLOT(req_prod);
    r->operation = op;
    r->nr_segments = (uint8_t)segs;
    r->handle = 0;
    r->id = ++next_id;
    r->sector_number = lba;
    for (uint32_t i = 0; i < segs; i++) {
        grant(REF_DATA + i, data_gpfn[i], op != BLKIF_OP_read);
        r->seg[i].gref = REF_DATA + i;
        r->seg[i].first_sect = 0;
        r->seg[i].last_sect = (uint8_t)((count - 8 * i >= 8 ? 8 : count - 8 * i) - 1);
    }
    __asm__ volatile("" ::: "memory");
    uint32_t old = req_prod++;
    RING->req_prod = req_prod;
    __asm__ volatile("mfence" ::: "memory");
    if ((uint32_t)(req_prod - RING->req_event) < (uint32_t)(req_prod - old))
        pv_notify(port);                    /* RING_PUSH_REQUESTS_AND_CHECK_NOTIFY */
    int16_t status = BLKIF_RSP_ERROR;
    for (uint32_t i = 0; i < WAIT_YIELDS; i++) {
        if (RING->rsp_prod != rsp_cons) {
            volatile struct blkif_response *rsp = (volatile struct blkif_response *)SLOT(rsp_cons);
            status = rsp->id == next_id ? rsp->status : BLKIF_RSP_ERROR;
            rsp_cons++;
            RING->rsp_event = rsp_cons + 1;
            break;
        }
        if (i % RESUME_CHECK == RESUME_CHECK - 1 && resumed()) {
            if (!reconnect())
                return BLKIF_RSP_ERROR;     /* the new back-end refused: the disk is gone */
            goto again;                     /* the request again, on the new ring */
        }
        pv_yield();
    }
    for (uint32_t i = 0; i < segs; i++)
        gnttab[REF_DATA + i].flags = 0;     /* the back-end's access ends with the request */
    return status;
}

/* -- the task file --------------------------------------------------------------------- */
static uint32_t lba_now(void)
{
    return (uint32_t)(select & 0x0F) << 24 | (uint32_t)hcyl << 16 | (uint32_t)lcyl << 8 | sector;
}

static void lba_set(uint32_t lba)
{
    select = (uint8_t)((select & 0xF0) | ((lba >> 24) & 0x0F));
    hcyl = (uint8_t)(lba >> 16);
    lcyl = (uint8_t)(lba >> 8);
    sector = (uint8_t)lba;
}

static void abort_cmd(void)
{
    st = DRDY | ERR;
    error = ABRT;
    remaining = avail = pos = 0;
}

static void next_batch(void)
{
    uint32_t n = remaining < BATCH ? remaining : BATCH;
    batch_lba = lba_now();
    pos = 0;
    avail = n * 512;
    if (cmd == 0x20 && request(BLKIF_OP_read, batch_lba, n) != BLKIF_RSP_OKAY)
        abort_cmd();
    else
        st = DRDY | DSC | DRQ;
}

static void identify(void)
{
    volatile uint16_t *w = (volatile uint16_t *)data[0];
    static const char model[] = "Xen blkfront xvda                       ";
    for (int i = 0; i < 256; i++)
        w[i] = 0;
    w[0] = 0x0040;
    for (int i = 0; i < 20; i++)
        w[27 + i] = (uint16_t)(model[2 * i] << 8 | model[2 * i + 1]);
    w[47] = 0x8000 | 16;
    w[49] = 1 << 9;                         /* LBA */
    w[60] = (uint16_t)sectors;
    w[61] = (uint16_t)(sectors >> 16);
    w[83] = 1 << 14 | 1 << 12;              /* FLUSH CACHE */
    w[100] = (uint16_t)sectors;
    w[101] = (uint16_t)(sectors >> 16);
    pos = 0;
    avail = 512;
    remaining = 0;
    st = DRDY | DSC | DRQ;
}

static void command(uint8_t c)
{
    uint32_t count = nsector ? nsector : 256;
    cmd = c;
    error = 0;
    if (!(select & 0x40) && c != 0xEC && c != 0xE7 && c != 0xEA) {
        abort_cmd();                        /* CHS: no geometry behind a virtual disk */
        return;
    }
    switch (c) {
    case 0xEC:
        identify();
        break;
    case 0x20: case 0x21:
        cmd = 0x20;
        remaining = count;
        next_batch();
        break;
    case 0x30: case 0x31:
        cmd = 0x30;
        if (readonly || lba_now() + count > sectors) {
            abort_cmd();
            return;
        }
        remaining = count;
        next_batch();
        break;
    case 0xE7: case 0xEA:
        if (request(BLKIF_OP_flush_diskcache, 0, 0) == BLKIF_RSP_ERROR)
            abort_cmd();
        else
            st = DRDY | DSC;
        break;
    default:
        abort_cmd();
    }
}

/* A batch's bytes have all moved: the sectors are done (a write's go out now). */
static void batch_done(void)
{
    uint32_t n = avail / 512;
    if (cmd == 0xEC) {
        st = DRDY | DSC;
        avail = 0;
        return;
    }
    if (cmd == 0x30 && request(BLKIF_OP_write, batch_lba, n) != BLKIF_RSP_OKAY) {
        abort_cmd();
        return;
    }
    lba_set(batch_lba + n);
    nsector = (uint8_t)(nsector - n);
    remaining -= n;
    if (remaining)
        next_batch();
    else {
        st = DRDY | DSC;
        avail = pos = 0;
    }
}

uint32_t blkfront_in(uint32_t size, uint32_t p)
{
    if (!present())
        return state < 0 ? (size == 1 ? 0xFF : size == 2 ? 0xFFFF : 0xFFFFFFFF) : 0;
    if (p == 0x1F0) {
        if (!(st & DRQ) || cmd == 0x30)
            return 0;
        uint32_t v = 0;
        for (uint32_t i = 0; i < size; i++)
            v |= (uint32_t)((uint8_t *)data)[pos + i] << (8 * i);
        pos += size;
        if (pos >= avail)
            batch_done();
        return v;
    }
    switch (p) {
    case 0x1F1: return error;
    case 0x1F2: return nsector;
    case 0x1F3: return sector;
    case 0x1F4: return lcyl;
    case 0x1F5: return hcyl;
    case 0x1F6: return select;
    default:    return st;                  /* status, alternate status */
    }
}

void blkfront_out(uint32_t size, uint32_t p, uint32_t v)
{
    if (p == 0x3F6) {
        if ((control & 0x04) && !(v & 0x04)) {     /* the end of a software reset */
            st = DRDY | DSC;
            error = 1;
            nsector = sector = 1;
            lcyl = hcyl = 0;
            remaining = avail = pos = 0;
        }
        control = (uint8_t)v;
        return;
    }
    if (p == 0x1F6) {
        select = (uint8_t)(v | 0xA0);
        return;
    }
    if (!present())
        return;
    switch (p) {
    case 0x1F0:
        if ((st & DRQ) && cmd == 0x30) {
            for (uint32_t i = 0; i < size; i++)
                ((uint8_t *)data)[pos + i] = (uint8_t)(v >> (8 * i));
            pos += size;
            if (pos >= avail)
                batch_done();
        }
        break;
    case 0x1F2: nsector = (uint8_t)v; break;
    case 0x1F3: sector = (uint8_t)v; break;
    case 0x1F4: lcyl = (uint8_t)v; break;
    case 0x1F5: hcyl = (uint8_t)v; break;
    case 0x1F7: command((uint8_t)v); break;
    default: break;
    }
}

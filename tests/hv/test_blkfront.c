/*
 * test_blkfront.c - libblkfront against a real hvsimd (in a child process) and a small backend
 * written here (a thread acting as dom0), so each part of the frontend's contract can be checked
 * under control: the keys it publishes, data through granted pages, split requests, errors,
 * backpressure, a live resize, a backend that leaves and comes back with requests in flight, a
 * backend that restarts without closing, and a detach.
 */
#include "hv/blkfront.h"
#include "hv/hv.h"
#include "hv/hvsim.h"
#include "hv/hvsim_msg.h"
#include "tests/harness.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <xenstore.h>
#include <xen/io/blkif.h>
#include <xen/io/ring.h>
#include <xen/io/xenbus.h>

#undef xen_mb
#undef xen_rmb
#undef xen_wmb
#define xen_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)

static char simdir[256];
static pid_t simpid = -1;
static domid_t gdom;
static struct hv *ghv;  /* the guest context: one per process */
static uint8_t *gmem;   /* guest memory */
static size_t gmem_len;

/* ---- the test backend ---- */

#define FB_MAX_Q 4
#define FB_MAX_HELD 1024
#define FB_MAX_PGNT 1056 /* Linux blkback's max_persistent_grants */
#define FB_MAX_IND 256

struct fb_ring {
	void *sring;
	unsigned int npages;
	struct blkif_back_ring br;
	evtchn_port_t lport;
};

struct fb_held {
	unsigned int q;
	struct blkif_request req;
};

struct fb {
	pthread_t th;
	int cmd[2];
	pthread_mutex_t lock;
	struct hv *hv;
	struct xs_handle *xs;
	struct hv_gnttab *gt;
	struct hv_evtchn *ev;
	uint32_t devid;
	char fpath[128], bpath[128];

	/* configuration, set before fb_start */
	unsigned int max_queues, max_order;
	int flush, discard, ro, indirect, persist_offer;
	uint64_t sectors;

	/* persistent grants: kept mapped read-write until disconnect */
	int persistent;
	struct {
		grant_ref_t gref;
		void *addr;
	} pg[FB_MAX_PGNT];
	unsigned int npg;

	/* thread state */
	int bstate;
	int connected;
	int removing;
	unsigned int nq, order;
	struct fb_ring rings[FB_MAX_Q];
	uint8_t *disk;
	size_t disk_bytes;
	uint64_t new_sectors;

	/* shared with the test thread, under lock */
	int hold;
	struct fb_held held[FB_MAX_HELD];
	unsigned int nheld;
	unsigned int nreq[8];
	unsigned int connects;
	unsigned int max_nseg;
	unsigned int nmaps;   /* grant maps done (persistent ones count once) */
	char fail_msg[160];
};

static void fb_failf(struct fb *b, const char *msg)
{
	pthread_mutex_lock(&b->lock);
	if (!b->fail_msg[0])
		snprintf(b->fail_msg, sizeof(b->fail_msg), "%s", msg);
	pthread_mutex_unlock(&b->lock);
}

static int fb_read_uint(struct fb *b, const char *dir, const char *key, unsigned int def,
			unsigned int *out)
{
	char path[256];
	unsigned int len;
	char *s;

	snprintf(path, sizeof(path), "%s/%s", dir, key);
	s = xs_read(b->xs, XBT_NULL, path, &len);
	if (!s) {
		*out = def;
		return -ENOENT;
	}
	*out = (unsigned int)strtoul(s, NULL, 10);
	free(s);
	return 0;
}

static void fb_write(struct fb *b, xs_transaction_t t, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void fb_write(struct fb *b, xs_transaction_t t, const char *key, const char *fmt, ...)
{
	char path[256], val[64];
	va_list ap;
	int n;

	snprintf(path, sizeof(path), "%s/%s", b->bpath, key);
	va_start(ap, fmt);
	n = vsnprintf(val, sizeof(val), fmt, ap);
	va_end(ap);
	if (!xs_write(b->xs, t, path, val, (unsigned int)n))
		fb_failf(b, "backend xs_write failed");
}

static void fb_set_state(struct fb *b, int st)
{
	fb_write(b, XBT_NULL, "state", "%d", st);
	b->bstate = st;
}

static void fb_disconnect(struct fb *b)
{
	if (!b->connected)
		return;
	for (unsigned int q = 0; q < b->nq; q++) {
		hv_evtchn_unbind(b->ev, b->rings[q].lport);
		hv_gnttab_unmap_contig(b->gt, b->rings[q].sring, b->rings[q].npages);
	}
	for (unsigned int i = 0; i < b->npg; i++)
		hv_gnttab_unmap_pages(b->gt, gdom, 1, &b->pg[i].gref, HV_PROT_READ | HV_PROT_WRITE,
				      &b->pg[i].addr);
	b->npg = 0;
	b->connected = 0;
	pthread_mutex_lock(&b->lock);
	b->nheld = 0; /* requests of the old rings are gone with them: the frontend re-issues */
	pthread_mutex_unlock(&b->lock);
}

static int fb_connect(struct fb *b)
{
	unsigned int order, nq;
	xs_transaction_t t;

	fb_read_uint(b, b->fpath, "ring-page-order", 0, &order);
	fb_read_uint(b, b->fpath, "multi-queue-num-queues", 1, &nq);
	if (order > b->max_order || nq > b->max_queues || nq < 1 || nq > FB_MAX_Q) {
		fb_failf(b, "frontend asked for more than the backend offered");
		return -1;
	}
	for (unsigned int q = 0; q < nq; q++) {
		struct fb_ring *r = &b->rings[q];
		char dir[200], key[32];
		grant_ref_t refs[16];
		unsigned int port, v;

		if (nq > 1)
			snprintf(dir, sizeof(dir), "%s/queue-%u", b->fpath, q);
		else
			snprintf(dir, sizeof(dir), "%s", b->fpath);
		r->npages = 1u << order;
		for (unsigned int p = 0; p < r->npages; p++) {
			if (order)
				snprintf(key, sizeof(key), "ring-ref%u", p);
			else
				snprintf(key, sizeof(key), "ring-ref");
			if (fb_read_uint(b, dir, key, 0, &v)) {
				fb_failf(b, "frontend ring-ref missing");
				return -1;
			}
			refs[p] = v;
		}
		if (fb_read_uint(b, dir, "event-channel", 0, &port)) {
			fb_failf(b, "frontend event-channel missing");
			return -1;
		}
		if (hv_gnttab_map_contig(b->gt, gdom, r->npages, refs, HV_PROT_READ | HV_PROT_WRITE,
					 &r->sring)) {
			fb_failf(b, "cannot map the ring");
			return -1;
		}
		/* Attach where the ring stands (a fresh ring stands at 0): a restarted backend
		 * picks up what its predecessor left unanswered, as Linux blkback does. */
		BACK_RING_ATTACH(&r->br, (struct blkif_sring *)r->sring,
				 __atomic_load_n(&((struct blkif_sring *)r->sring)->rsp_prod,
						 __ATOMIC_ACQUIRE),
				 (size_t)HV_PAGE_SIZE * r->npages);
		if (hv_evtchn_bind_interdomain(b->ev, gdom, port, &r->lport)) {
			fb_failf(b, "cannot bind the event channel");
			return -1;
		}
	}
	b->nq = nq;
	b->order = order;
	b->connected = 1;
	{
		unsigned int fp = 0;

		fb_read_uint(b, b->fpath, "feature-persistent", 0, &fp);
		b->persistent = b->persist_offer && fp == 1;
	}
	t = xs_transaction_start(b->xs);
	fb_write(b, t, "feature-persistent", "%d", b->persist_offer);
	fb_write(b, t, "sectors", "%llu", (unsigned long long)b->sectors);
	fb_write(b, t, "sector-size", "512");
	fb_write(b, t, "info", "%d", b->ro ? VDISK_READONLY : 0);
	fb_write(b, t, "feature-flush-cache", "%d", b->flush);
	fb_write(b, t, "feature-discard", "%d", b->discard);
	fb_write(b, t, "discard-granularity", "4096");
	fb_write(b, t, "state", "%d", XenbusStateConnected);
	xs_transaction_end(b->xs, t, false);
	b->bstate = XenbusStateConnected;
	pthread_mutex_lock(&b->lock);
	b->connects++;
	pthread_mutex_unlock(&b->lock);
	return 0;
}

/*
 * Map one granted page. With persistent grants, as Linux blkback: a page stays mapped
 * (read-write) and is found again, up to FB_MAX_PGNT pages; beyond that pages are mapped for the
 * request only.
 */
static void *fb_map(struct fb *b, grant_ref_t ref, unsigned int prot, int *persisted)
{
	void *addr;
	int st;

	*persisted = b->persistent && b->npg < FB_MAX_PGNT;
	if (b->persistent) {
		for (unsigned int i = 0; i < b->npg; i++) {
			if (b->pg[i].gref == ref) {
				*persisted = 1;
				return b->pg[i].addr;
			}
		}
	}
	if (*persisted)
		prot = HV_PROT_READ | HV_PROT_WRITE;
	if (hv_gnttab_map_pages(b->gt, gdom, 1, &ref, prot, &addr, &st))
		return NULL;
	pthread_mutex_lock(&b->lock);
	b->nmaps++;
	pthread_mutex_unlock(&b->lock);
	if (*persisted) {
		b->pg[b->npg].gref = ref;
		b->pg[b->npg++].addr = addr;
	}
	return addr;
}

static void fb_unmap(struct fb *b, grant_ref_t ref, unsigned int prot, void *addr, int persisted)
{
	if (!persisted)
		hv_gnttab_unmap_pages(b->gt, gdom, 1, &ref, prot, &addr);
}

/* Read, write through the segments @sv (validated here). */
static int16_t fb_rw(struct fb *b, uint8_t op, uint64_t sect,
		     const struct blkif_request_segment *sv, unsigned int n)
{
	unsigned int prot = op == BLKIF_OP_READ ? HV_PROT_READ | HV_PROT_WRITE : HV_PROT_READ;

	pthread_mutex_lock(&b->lock);
	if (n > b->max_nseg)
		b->max_nseg = n;
	pthread_mutex_unlock(&b->lock);
	for (unsigned int i = 0; i < n; i++) {
		const struct blkif_request_segment *sg = &sv[i];
		size_t len = (size_t)(sg->last_sect - sg->first_sect + 1) * 512;
		void *addr;
		int pers;

		if (sg->last_sect > 7 || sg->first_sect > sg->last_sect)
			return BLKIF_RSP_ERROR;
		if ((sect * 512 + len) > b->sectors * 512)
			return BLKIF_RSP_ERROR;
		addr = fb_map(b, sg->gref, prot, &pers);
		if (!addr)
			return BLKIF_RSP_ERROR;
		if (op == BLKIF_OP_READ)
			memcpy((uint8_t *)addr + sg->first_sect * 512, b->disk + sect * 512, len);
		else
			memcpy(b->disk + sect * 512, (uint8_t *)addr + sg->first_sect * 512, len);
		fb_unmap(b, sg->gref, prot, addr, pers);
		sect += len / 512;
	}
	return BLKIF_RSP_OKAY;
}

static int16_t fb_indirect(struct fb *b, const struct blkif_request_indirect *ir)
{
	struct blkif_request_segment sv[FB_MAX_IND];
	unsigned int n = ir->nr_segments, pages = (n + 511) / 512;

	if (!b->indirect || n < 1 || n > FB_MAX_IND ||
	    (ir->indirect_op != BLKIF_OP_READ && ir->indirect_op != BLKIF_OP_WRITE))
		return BLKIF_RSP_ERROR;
	for (unsigned int k = 0; k < pages; k++) {
		unsigned int cnt = n - k * 512 < 512 ? n - k * 512 : 512;
		void *addr;
		int pers;

		addr = fb_map(b, ir->indirect_grefs[k], HV_PROT_READ, &pers);
		if (!addr)
			return BLKIF_RSP_ERROR;
		memcpy(&sv[k * 512], addr, cnt * sizeof(sv[0])); /* copy once, then validate */
		fb_unmap(b, ir->indirect_grefs[k], HV_PROT_READ, addr, pers);
	}
	return fb_rw(b, ir->indirect_op, ir->sector_number, sv, n);
}

static int16_t fb_do(struct fb *b, const struct blkif_request *req)
{

	switch (req->operation) {
	case BLKIF_OP_FLUSH_DISKCACHE:
		return b->flush ? BLKIF_RSP_OKAY : BLKIF_RSP_EOPNOTSUPP;
	case BLKIF_OP_DISCARD: {
		const struct blkif_request_discard *d = (const void *)req;

		if (d->sector_number + d->nr_sectors > b->sectors)
			return BLKIF_RSP_ERROR;
		memset(b->disk + d->sector_number * 512, 0, d->nr_sectors * 512);
		return BLKIF_RSP_OKAY;
	}
	case BLKIF_OP_INDIRECT:
		return fb_indirect(b, (const struct blkif_request_indirect *)req);
	case BLKIF_OP_READ:
	case BLKIF_OP_WRITE:
		if (req->nr_segments < 1 || req->nr_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST)
			return BLKIF_RSP_ERROR;
		return fb_rw(b, req->operation, req->sector_number, req->seg, req->nr_segments);
	default:
		return BLKIF_RSP_EOPNOTSUPP;
	}
}

static void fb_respond(struct fb *b, unsigned int q, const struct blkif_request *req)
{
	struct fb_ring *r = &b->rings[q];
	struct blkif_response *rsp = RING_GET_RESPONSE(&r->br, r->br.rsp_prod_pvt);

	rsp->id = req->id;
	rsp->operation = req->operation == BLKIF_OP_INDIRECT ?
				 ((const struct blkif_request_indirect *)req)->indirect_op :
				 req->operation;
	rsp->status = fb_do(b, req);
	r->br.rsp_prod_pvt++;
}

static void fb_push(struct fb *b, unsigned int q)
{
	struct fb_ring *r = &b->rings[q];
	int notify;

	RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&r->br, notify);
	if (notify)
		hv_evtchn_notify(b->ev, r->lport);
}

static void fb_serve(struct fb *b, unsigned int q)
{
	struct fb_ring *r = &b->rings[q];
	int more;

	do {
		RING_IDX rp = r->br.sring->req_prod;

		xen_rmb();
		while (r->br.req_cons != rp) {
			struct blkif_request req;
			int hold;

			RING_COPY_REQUEST(&r->br, r->br.req_cons, &req);
			r->br.req_cons++;
			pthread_mutex_lock(&b->lock);
			b->nreq[req.operation & 7]++;
			hold = b->hold && b->nheld < FB_MAX_HELD;
			if (hold)
				b->held[b->nheld++] = (struct fb_held){ q, req };
			pthread_mutex_unlock(&b->lock);
			if (!hold)
				fb_respond(b, q, &req);
		}
		RING_FINAL_CHECK_FOR_REQUESTS(&r->br, more);
	} while (more);
	fb_push(b, q);
}

static void fb_frontend_changed(struct fb *b)
{
	unsigned int fst;

	if (fb_read_uint(b, b->fpath, "state", 0, &fst))
		return; /* removed */
	switch (fst) {
	case XenbusStateInitialised:
	case XenbusStateConnected:
		if (!b->connected && b->bstate == XenbusStateInitWait)
			fb_connect(b);
		break;
	case XenbusStateClosing:
		if (b->bstate != XenbusStateClosing && b->bstate != XenbusStateClosed)
			fb_set_state(b, XenbusStateClosing);
		break;
	case XenbusStateClosed:
		fb_disconnect(b);
		if (b->bstate != XenbusStateClosed)
			fb_set_state(b, XenbusStateClosed);
		if (b->removing) {
			xs_rm(b->xs, XBT_NULL, b->fpath);
			xs_rm(b->xs, XBT_NULL, b->bpath);
		}
		break;
	case XenbusStateInitialising:
		if (b->bstate == XenbusStateClosed && !b->removing)
			fb_set_state(b, XenbusStateInitWait);
		break;
	default:
		break;
	}
}

static void fb_command(struct fb *b, char c)
{
	switch (c) {
	case 'c': /* close: the Closing/Closed handshake, then wait for Initialising */
		fb_set_state(b, XenbusStateClosing);
		break;
	case 'd': /* detach: close, then remove both directories */
		b->removing = 1;
		fb_set_state(b, XenbusStateClosing);
		break;
	case 'k': /* a backend that died and was restarted: InitWait, then it finds the frontend
		   * Connected and attaches to the live ring */
		fb_disconnect(b);
		fb_set_state(b, XenbusStateInitWait);
		fb_frontend_changed(b);
		for (unsigned int q = 0; q < b->nq && b->connected; q++)
			fb_serve(b, q); /* what the dead one left unanswered */
		break;
	case 'r': { /* online resize, as Linux blkback: sectors and state in one transaction */
		xs_transaction_t t = xs_transaction_start(b->xs);
		uint8_t *nd = realloc(b->disk, b->new_sectors * 512);

		if (!nd)
			break;
		if (b->new_sectors > b->sectors)
			memset(nd + b->sectors * 512, 0, (b->new_sectors - b->sectors) * 512);
		b->disk = nd;
		b->sectors = b->new_sectors;
		fb_write(b, t, "sectors", "%llu", (unsigned long long)b->sectors);
		fb_write(b, t, "state", "%d", XenbusStateConnected);
		xs_transaction_end(b->xs, t, false);
		break;
	}
	case 'x': { /* answer the held requests */
		unsigned int n;

		pthread_mutex_lock(&b->lock);
		n = b->nheld;
		b->nheld = 0;
		b->hold = 0;
		pthread_mutex_unlock(&b->lock);
		for (unsigned int i = 0; i < n && b->connected; i++)
			fb_respond(b, b->held[i].q, &b->held[i].req);
		for (unsigned int q = 0; q < b->nq && b->connected; q++)
			fb_push(b, q);
		for (unsigned int q = 0; q < b->nq && b->connected; q++)
			fb_serve(b, q); /* requests that arrived while holding */
		break;
	}
	default:
		break;
	}
}

static void *fb_thread(void *arg)
{
	struct fb *b = arg;

	for (;;) {
		struct pollfd p[3] = {
			{ .fd = xs_fileno(b->xs), .events = POLLIN },
			{ .fd = hv_evtchn_fd(b->ev), .events = POLLIN },
			{ .fd = b->cmd[0], .events = POLLIN },
		};
		evtchn_port_t port;
		char **vec;

		if (poll(p, 3, -1) < 0)
			continue;
		while ((vec = xs_check_watch(b->xs))) {
			free(vec);
			fb_frontend_changed(b);
		}
		while (hv_evtchn_pending(b->ev, &port) == 1) {
			hv_evtchn_unmask(b->ev, port);
			for (unsigned int q = 0; q < b->nq && b->connected; q++)
				if (b->rings[q].lport == port)
					fb_serve(b, q);
		}
		if (p[2].revents & POLLIN) {
			char c;

			if (read(b->cmd[0], &c, 1) != 1 || c == 'q')
				break;
			fb_command(b, c);
		}
	}
	fb_disconnect(b);
	return NULL;
}

static bool perms_set(struct xs_handle *xs, const char *path, domid_t owner, domid_t reader)
{
	struct xs_permissions p[2] = {
		{ .id = owner, .perms = XS_PERM_NONE },
		{ .id = reader, .perms = XS_PERM_READ },
	};

	return xs_set_permissions(xs, XBT_NULL, path, p, 2);
}

#define FB_NOFLUSH 1u
#define FB_RO 2u
#define FB_INDIRECT 4u /* offer feature-max-indirect-segments = FB_MAX_IND */
#define FB_PERSIST 8u  /* offer feature-persistent */

/* Create the vbd as a toolstack does and start a backend for it. */
static struct fb *fb_start(const char *vdev, unsigned int max_queues, unsigned int max_order,
			   unsigned int flags)
{
	struct fb *b = calloc(1, sizeof(*b));
	char path[256];
	const char *keys[][2] = { { "backend", NULL }, { "backend-id", "0" },
				  { "virtual-device", NULL }, { "device-type", "disk" },
				  { "state", "1" } };
	char devid_s[16];

	CU_ASSERT_FATAL(b != NULL);
	CU_ASSERT_FATAL(blkfront_vdev_to_devid(vdev, &b->devid) == 0);
	pthread_mutex_init(&b->lock, NULL);
	b->max_queues = max_queues;
	b->max_order = max_order;
	b->flush = !(flags & FB_NOFLUSH);
	b->ro = !!(flags & FB_RO);
	b->indirect = !!(flags & FB_INDIRECT);
	b->persist_offer = !!(flags & FB_PERSIST);
	b->discard = 1;
	b->sectors = 2048; /* 1 MiB */
	b->disk_bytes = b->sectors * 512;
	b->disk = calloc(1, b->disk_bytes);
	CU_ASSERT_FATAL(pipe(b->cmd) == 0);
	CU_ASSERT_FATAL(hv_open(&b->hv, HV_KIND_SIM, simdir) == 0);
	b->xs = hv_xs_open(b->hv);
	CU_ASSERT_FATAL(b->xs != NULL);
	CU_ASSERT_FATAL(hv_gnttab_open(b->hv, &b->gt) == 0);
	CU_ASSERT_FATAL(hv_evtchn_open(b->hv, &b->ev) == 0);
	snprintf(b->fpath, sizeof(b->fpath), "/local/domain/%u/device/vbd/%u", gdom, b->devid);
	snprintf(b->bpath, sizeof(b->bpath), "/local/domain/0/backend/vbd/%u/%u", gdom, b->devid);
	snprintf(devid_s, sizeof(devid_s), "%u", b->devid);
	keys[0][1] = b->bpath;
	keys[2][1] = devid_s;

	CU_ASSERT_FATAL(xs_write(b->xs, XBT_NULL, b->bpath, "", 0));
	CU_ASSERT_FATAL(perms_set(b->xs, b->bpath, 0, gdom));
	CU_ASSERT_FATAL(xs_write(b->xs, XBT_NULL, b->fpath, "", 0));
	CU_ASSERT_FATAL(perms_set(b->xs, b->fpath, gdom, 0));
	for (unsigned int i = 0; i < 5; i++) {
		snprintf(path, sizeof(path), "%s/%s", b->fpath, keys[i][0]);
		CU_ASSERT_FATAL(xs_write(b->xs, XBT_NULL, path, keys[i][1], strlen(keys[i][1])));
	}
	snprintf(path, sizeof(path), "%s/frontend", b->bpath);
	CU_ASSERT_FATAL(xs_write(b->xs, XBT_NULL, path, b->fpath, strlen(b->fpath)));
	if (max_order)
		fb_write(b, XBT_NULL, "max-ring-page-order", "%u", max_order);
	if (max_queues > 1)
		fb_write(b, XBT_NULL, "multi-queue-max-queues", "%u", max_queues);
	if (b->indirect)
		fb_write(b, XBT_NULL, "feature-max-indirect-segments", "%u", FB_MAX_IND);
	fb_set_state(b, XenbusStateInitWait);
	snprintf(path, sizeof(path), "%s/state", b->fpath);
	CU_ASSERT_FATAL(xs_watch(b->xs, path, "fb"));
	CU_ASSERT_FATAL(pthread_create(&b->th, NULL, fb_thread, b) == 0);
	return b;
}

static void fb_cmd(struct fb *b, char c)
{
	CU_ASSERT_EQUAL(write(b->cmd[1], &c, 1), 1);
}

static void fb_stop(struct fb *b)
{
	fb_cmd(b, 'q');
	pthread_join(b->th, NULL);
	CU_ASSERT_STRING_EQUAL(b->fail_msg, "");
	xs_rm(b->xs, XBT_NULL, b->fpath);
	xs_rm(b->xs, XBT_NULL, b->bpath);
	hv_evtchn_close(b->ev);
	hv_gnttab_close(b->gt);
	xs_close(b->xs);
	hv_close(b->hv);
	close(b->cmd[0]);
	close(b->cmd[1]);
	pthread_mutex_destroy(&b->lock);
	free(b->disk);
	free(b);
}

static unsigned int fb_get(struct fb *b, const unsigned int *field)
{
	unsigned int v;

	pthread_mutex_lock(&b->lock);
	v = *field;
	pthread_mutex_unlock(&b->lock);
	return v;
}

static void fb_set_hold(struct fb *b, int hold)
{
	pthread_mutex_lock(&b->lock);
	b->hold = hold;
	pthread_mutex_unlock(&b->lock);
}

/* ---- the frontend side ---- */

#define MAX_DONE 2048

struct done_log {
	unsigned int n;
	uint64_t id[MAX_DONE];
	int status[MAX_DONE];
	unsigned int resizes;
	uint64_t old_sectors, new_sectors;
};

static void on_done(void *arg, uint64_t id, int status)
{
	struct done_log *d = arg;

	if (d->n < MAX_DONE) {
		d->id[d->n] = id;
		d->status[d->n] = status;
	}
	d->n++;
}

static void on_resize(void *arg, uint64_t old_sectors, uint64_t new_sectors)
{
	struct done_log *d = arg;

	d->resizes++;
	d->old_sectors = old_sectors;
	d->new_sectors = new_sectors;
}

static int open_dev_x(const char *vdev, struct done_log *log, unsigned int queues,
		      unsigned int order, unsigned int indirect, bool persistent, struct blkfront **out)
{
	struct blkfront_opts o = {
		.queues = queues,
		.ring_order = order,
		.indirect_segs = indirect,
		.persistent = persistent,
		.timeout_ms = 5000,
		.done = on_done,
		.resized = on_resize,
		.arg = log,
	};

	return blkfront_open(out, ghv, vdev, &o);
}

static int open_dev(const char *vdev, struct done_log *log, unsigned int queues,
		    unsigned int order, struct blkfront **out)
{
	return open_dev_x(vdev, log, queues, order, 0, false, out);
}

/* Process @bf until @cond(arg) holds; bounded (5 s) so a bug fails instead of hanging. */
static bool run_until(struct blkfront *bf, bool (*cond)(void *), void *arg)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!cond(arg)) {
		blkfront_kick(bf);
		blkfront_wait(bf, 20);
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec > 5)
			return cond(arg);
	}
	return true;
}

struct want_done {
	struct done_log *log;
	unsigned int n;
};

static bool done_reached(void *arg)
{
	struct want_done *w = arg;

	return w->log->n >= w->n;
}

static bool wait_done(struct blkfront *bf, struct done_log *log, unsigned int n)
{
	struct want_done w = { log, n };

	return run_until(bf, done_reached, &w);
}

struct want_held {
	struct fb *b;
	unsigned int n;
};

static bool held_reached(void *arg)
{
	struct want_held *w = arg;

	return fb_get(w->b, &w->b->nheld) >= w->n;
}

static bool wait_held(struct blkfront *bf, struct fb *b, unsigned int n)
{
	struct want_held w = { b, n };

	return run_until(bf, held_reached, &w);
}

/* A page-aligned buffer of @pages in guest memory. */
static uint8_t *gbuf(uint32_t pages, uint32_t *frame)
{
	CU_ASSERT_FATAL(hv_guest_alloc_frames(ghv, pages, frame) == 0);
	return gmem + (size_t)*frame * HV_PAGE_SIZE;
}

static char *fread_key(struct fb *b, const char *key)
{
	char path[256];
	unsigned int len;

	snprintf(path, sizeof(path), "%s/%s", b->fpath, key);
	return xs_read(b->xs, XBT_NULL, path, &len);
}

static bool key_is(struct fb *b, const char *key, const char *want)
{
	char *s = fread_key(b, key);
	bool eq = s && !strcmp(s, want);

	free(s);
	return eq;
}

static void test_handshake(void)
{
	struct fb *b = fb_start("xvda", 1, 0, 0);
	struct done_log log = { 0 };
	struct blkfront_info in;
	struct blkfront *bf;
	char *s;

	CU_ASSERT_FATAL(open_dev("xvda", &log, 0, 0, &bf) == 0);
	CU_ASSERT_TRUE(blkfront_connected(bf));
	blkfront_info(bf, &in);
	CU_ASSERT_EQUAL(in.devid, 51712);
	CU_ASSERT_EQUAL(in.sectors, 2048);
	CU_ASSERT_EQUAL(in.sector_size, 512);
	CU_ASSERT_EQUAL(in.nr_queues, 1);
	CU_ASSERT_EQUAL(in.ring_order, 0);
	CU_ASSERT_EQUAL(in.ring_slots, 32);
	CU_ASSERT_TRUE(in.flush);
	CU_ASSERT_TRUE(in.discard);
	CU_ASSERT_EQUAL(in.discard_granularity, 4096);
	/* What a one-page, one-queue frontend publishes (and nothing of the other layouts). */
	CU_ASSERT_TRUE(key_is(b, "protocol", "x86_64-abi"));
	CU_ASSERT_TRUE(key_is(b, "state", "4"));
	s = fread_key(b, "ring-ref");
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	s = fread_key(b, "event-channel");
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	s = fread_key(b, "ring-page-order");
	CU_ASSERT_PTR_NULL(s);
	free(s);
	s = fread_key(b, "multi-queue-num-queues");
	CU_ASSERT_PTR_NULL(s);
	free(s);

	/* Close runs the Closing/Closed handshake: the backend ends Closed with the ring unmapped. */
	blkfront_close(bf);
	CU_ASSERT_TRUE(key_is(b, "state", "6"));
	fb_stop(b);
}

static void test_io_roundtrip(void)
{
	struct fb *b = fb_start("xvdb", 1, 0, 0);
	struct done_log log = { 0 };
	struct blkfront *bf;
	uint32_t frame;
	uint8_t *buf = gbuf(32, &frame);
	struct iovec two[2] = { { buf, 4096 }, { buf + 8192, 1024 } };
	struct iovec rd = { buf + 16 * 4096, 5120 };
	struct iovec big = { buf, 16 * 4096 };

	CU_ASSERT_FATAL(open_dev("xvdb", &log, 0, 0, &bf) == 0);
	for (unsigned int i = 0; i < 32 * 4096; i++)
		buf[i] = (uint8_t)(i * 7 + 3);
	/* Two buffers, one request, at sector 8. */
	CU_ASSERT_EQUAL(blkfront_writev(bf, 8, two, 2, 100), 0);
	CU_ASSERT_TRUE(wait_done(bf, &log, 1));
	CU_ASSERT_EQUAL(log.id[0], 100);
	CU_ASSERT_EQUAL(log.status[0], 0);
	CU_ASSERT_EQUAL(memcmp(b->disk + 8 * 512, buf, 4096), 0);
	CU_ASSERT_EQUAL(memcmp(b->disk + 16 * 512, buf + 8192, 1024), 0);
	CU_ASSERT_EQUAL(fb_get(b, &b->nreq[BLKIF_OP_WRITE]), 1);

	CU_ASSERT_EQUAL(blkfront_readv(bf, 8, &rd, 1, 101), 0);
	CU_ASSERT_TRUE(wait_done(bf, &log, 2));
	CU_ASSERT_EQUAL(log.status[1], 0);
	CU_ASSERT_EQUAL(memcmp(buf + 16 * 4096, buf, 4096), 0);
	CU_ASSERT_EQUAL(memcmp(buf + 16 * 4096 + 4096, buf + 8192, 1024), 0);

	/* 16 pages do not fit one blkif request: two ring requests, one completion. */
	CU_ASSERT_EQUAL(blkfront_writev(bf, 64, &big, 1, 102), 0);
	CU_ASSERT_TRUE(wait_done(bf, &log, 3));
	CU_ASSERT_EQUAL(log.id[2], 102);
	CU_ASSERT_EQUAL(log.status[2], 0);
	CU_ASSERT_EQUAL(fb_get(b, &b->nreq[BLKIF_OP_WRITE]), 3);
	CU_ASSERT_EQUAL(fb_get(b, &b->max_nseg), BLKIF_MAX_SEGMENTS_PER_REQUEST);
	CU_ASSERT_EQUAL(memcmp(b->disk + 64 * 512, buf, 16 * 4096), 0);

	CU_ASSERT_EQUAL(blkfront_flush(bf, 103), 0);
	CU_ASSERT_EQUAL(blkfront_discard(bf, 64, 8, 104), 0);
	CU_ASSERT_TRUE(wait_done(bf, &log, 5));
	CU_ASSERT_EQUAL(log.status[3], 0);
	CU_ASSERT_EQUAL(log.status[4], 0);
	CU_ASSERT_EQUAL(fb_get(b, &b->nreq[BLKIF_OP_FLUSH_DISKCACHE]), 1);
	CU_ASSERT_EQUAL(fb_get(b, &b->nreq[BLKIF_OP_DISCARD]), 1);
	CU_ASSERT_EQUAL(b->disk[64 * 512], 0);
	CU_ASSERT_EQUAL(blkfront_inflight(bf), 0);

	blkfront_close(bf);
	hv_guest_free_frames(ghv, frame, 32);
	fb_stop(b);
}

static void test_errors(void)
{
	struct fb *b = fb_start("xvdc", 1, 0, FB_NOFLUSH);
	struct done_log log = { 0 };
	struct blkfront *bf;
	uint32_t frame;
	uint8_t *buf = gbuf(1, &frame);
	static uint8_t outside[8192] __attribute__((aligned(4096)));
	struct iovec ok = { buf, 4096 };
	struct iovec mis = { buf + 100, 512 };
	struct iovec out = { outside, 4096 };

	CU_ASSERT_FATAL(open_dev("xvdc", &log, 0, 0, &bf) == 0);
	/* Refused at submission: nothing reaches the ring, no callback. */
	CU_ASSERT_EQUAL(blkfront_readv(bf, 0, &mis, 1, 1), -EINVAL);
	CU_ASSERT_EQUAL(blkfront_readv(bf, 0, &out, 1, 1), -EFAULT);
	CU_ASSERT_EQUAL(blkfront_readv(bf, 0, NULL, 0, 1), -EINVAL);
	CU_ASSERT_EQUAL(blkfront_flush(bf, 1), -EOPNOTSUPP);
	CU_ASSERT_EQUAL(blkfront_discard(bf, 0, 0, 1), -EINVAL);
	/* Past the end: the backend answers BLKIF_RSP_ERROR, the caller gets -EIO. */
	CU_ASSERT_EQUAL(blkfront_readv(bf, 2048, &ok, 1, 7), 0);
	CU_ASSERT_TRUE(wait_done(bf, &log, 1));
	CU_ASSERT_EQUAL(log.id[0], 7);
	CU_ASSERT_EQUAL(log.status[0], -EIO);
	CU_ASSERT_EQUAL(log.n, 1);
	blkfront_close(bf);
	fb_stop(b);

	/* A read-only disk refuses writes and discards before the ring. */
	b = fb_start("xvdc", 1, 0, FB_RO);
	CU_ASSERT_FATAL(open_dev("xvdc", &log, 0, 0, &bf) == 0);
	CU_ASSERT_EQUAL(blkfront_writev(bf, 0, &ok, 1, 1), -EROFS);
	CU_ASSERT_EQUAL(blkfront_discard(bf, 0, 8, 1), -EROFS);
	CU_ASSERT_EQUAL(blkfront_readv(bf, 0, &ok, 1, 8), 0);
	CU_ASSERT_TRUE(wait_done(bf, &log, 2));
	CU_ASSERT_EQUAL(log.status[1], 0);
	blkfront_close(bf);
	fb_stop(b);
	hv_guest_free_frames(ghv, frame, 1);

	/* No such vbd. */
	CU_ASSERT_EQUAL(open_dev("xvdz", &log, 0, 0, &bf), -ENOENT);
	CU_ASSERT_EQUAL(open_dev("xvd1", &log, 0, 0, &bf), -EINVAL);
}

static void test_backpressure(void)
{
	struct fb *b = fb_start("xvdd", 1, 0, 0);
	struct done_log log = { 0 };
	struct blkfront *bf;
	uint32_t frame;
	uint8_t *buf = gbuf(1, &frame);
	struct iovec io = { buf, 4096 };
	unsigned int accepted = 0;
	int ret;

	CU_ASSERT_FATAL(open_dev("xvdd", &log, 0, 0, &bf) == 0);
	fb_set_hold(b, 1);
	/* 32 on the ring, the rest held in order until the pool runs out: then -EAGAIN. */
	while ((ret = blkfront_readv(bf, accepted % 2048, &io, 1, accepted)) == 0)
		accepted++;
	CU_ASSERT_EQUAL(ret, -EAGAIN);
	CU_ASSERT_TRUE(accepted > 32);
	CU_ASSERT_EQUAL(blkfront_inflight(bf), accepted);
	blkfront_kick(bf);
	/* Let the backend take the 32 it can see, then release: everything completes, in order
	 * of submission within what the ring carried. */
	CU_ASSERT_FATAL(wait_held(bf, b, 32));
	CU_ASSERT_FALSE(blkfront_has_responses(bf)); /* the backend holds every one */
	fb_cmd(b, 'x');
	{
		/* Responses show in shared memory before anything is reaped. */
		struct timespec t0, t;
		bool seen = false;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		do {
			seen = blkfront_has_responses(bf);
			clock_gettime(CLOCK_MONOTONIC, &t);
		} while (!seen && t.tv_sec - t0.tv_sec < 5);
		CU_ASSERT_TRUE(seen);
		CU_ASSERT_EQUAL(log.n, 0);
	}
	CU_ASSERT_TRUE(wait_done(bf, &log, accepted));
	CU_ASSERT_EQUAL(log.n, accepted);
	for (unsigned int i = 0; i < accepted && i < MAX_DONE; i++) {
		CU_ASSERT_EQUAL(log.status[i], 0);
		if (log.id[i] != i) {
			CU_FAIL("completions out of order");
			break;
		}
	}
	CU_ASSERT_EQUAL(fb_get(b, &b->nreq[BLKIF_OP_READ]), accepted);
	CU_ASSERT_EQUAL(blkfront_inflight(bf), 0);
	blkfront_close(bf);
	hv_guest_free_frames(ghv, frame, 1);
	fb_stop(b);
}

static bool resized(void *arg)
{
	return ((struct done_log *)arg)->resizes > 0;
}

static void test_resize(void)
{
	struct fb *b = fb_start("xvde", 1, 0, 0);
	struct done_log log = { 0 };
	struct blkfront_info in;
	struct blkfront *bf;
	uint32_t frame;
	uint8_t *buf = gbuf(1, &frame);
	struct iovec io = { buf, 4096 };

	CU_ASSERT_FATAL(open_dev("xvde", &log, 0, 0, &bf) == 0);
	b->new_sectors = 4096;
	fb_cmd(b, 'r');
	CU_ASSERT_TRUE(run_until(bf, resized, &log));
	CU_ASSERT_EQUAL(log.resizes, 1);
	CU_ASSERT_EQUAL(log.old_sectors, 2048);
	CU_ASSERT_EQUAL(log.new_sectors, 4096);
	blkfront_info(bf, &in);
	CU_ASSERT_EQUAL(in.sectors, 4096);
	CU_ASSERT_TRUE(blkfront_connected(bf));
	/* Past the old end now works, on the same connection. */
	memset(buf, 0x5a, 4096);
	CU_ASSERT_EQUAL(blkfront_writev(bf, 3000, &io, 1, 1), 0);
	CU_ASSERT_TRUE(wait_done(bf, &log, 1));
	CU_ASSERT_EQUAL(log.status[0], 0);
	CU_ASSERT_EQUAL(b->disk[3000 * 512], 0x5a);
	CU_ASSERT_EQUAL(fb_get(b, &b->connects), 1);
	blkfront_close(bf);
	hv_guest_free_frames(ghv, frame, 1);
	fb_stop(b);
}

static bool connects_2(void *arg)
{
	struct fb *b = arg;

	return fb_get(b, &b->connects) >= 2;
}

/*
 * Requests in flight when the backend leaves complete once each: issued again on new rings after
 * a close ('c'), or answered on the same ring by a restarted backend that attached to it ('k').
 */
static void reconnect_case(char how)
{
	const char *vdev = how == 'c' ? "xvdf" : "xvdg";
	struct fb *b = fb_start(vdev, 1, 0, 0);
	struct done_log log = { 0 };
	struct blkfront_info in;
	struct blkfront *bf;
	uint32_t frame;
	uint8_t *buf = gbuf(8, &frame);

	CU_ASSERT_FATAL(open_dev(vdev, &log, 0, 0, &bf) == 0);
	fb_set_hold(b, 1);
	for (unsigned int i = 0; i < 8; i++) {
		struct iovec io = { buf + i * 4096, 4096 };

		memset(buf + i * 4096, 'a' + i, 4096);
		CU_ASSERT_EQUAL(blkfront_writev(bf, i * 8, &io, 1, i), 0);
	}
	blkfront_kick(bf);
	CU_ASSERT_FATAL(wait_held(bf, b, 8));
	CU_ASSERT_EQUAL(log.n, 0);
	fb_set_hold(b, 0);
	fb_cmd(b, how); /* held requests are dropped with the old rings */
	CU_ASSERT_TRUE(run_until(bf, connects_2, b));
	CU_ASSERT_TRUE(wait_done(bf, &log, 8));
	CU_ASSERT_EQUAL(log.n, 8);
	for (unsigned int i = 0; i < 8; i++) {
		CU_ASSERT_EQUAL(log.id[i], i);
		CU_ASSERT_EQUAL(log.status[i], 0);
		CU_ASSERT_EQUAL(b->disk[i * 8 * 512], 'a' + i);
	}
	/* 8 first sent, 8 again: re-issued by us, or re-read from the ring by the new backend. */
	CU_ASSERT_EQUAL(fb_get(b, &b->nreq[BLKIF_OP_WRITE]), 16);
	blkfront_info(bf, &in);
	CU_ASSERT_EQUAL(in.reconnects, how == 'c' ? 1 : 0);
	CU_ASSERT_TRUE(key_is(b, "state", "4"));
	CU_ASSERT_TRUE(blkfront_connected(bf));
	blkfront_close(bf);
	hv_guest_free_frames(ghv, frame, 8);
	fb_stop(b);
}

static void test_reconnect_after_close(void)
{
	reconnect_case('c');
}

static void test_reconnect_after_restart(void)
{
	reconnect_case('k');
}

static void test_multiqueue_order(void)
{
	struct fb *b = fb_start("xvdh", 2, 2, 0);
	struct done_log log = { 0 };
	struct blkfront_info in;
	struct blkfront *bf;
	uint32_t frame;
	uint8_t *buf = gbuf(64, &frame);
	char *s;

	/* Asking for more than offered gets what is offered. */
	CU_ASSERT_FATAL(open_dev("xvdh", &log, 4, 4, &bf) == 0);
	blkfront_info(bf, &in);
	CU_ASSERT_EQUAL(in.nr_queues, 2);
	CU_ASSERT_EQUAL(in.ring_order, 2);
	CU_ASSERT_EQUAL(in.ring_slots, 128);
	CU_ASSERT_TRUE(key_is(b, "multi-queue-num-queues", "2"));
	CU_ASSERT_TRUE(key_is(b, "ring-page-order", "2"));
	s = fread_key(b, "queue-1/ring-ref3");
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	s = fread_key(b, "queue-1/event-channel");
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	s = fread_key(b, "ring-ref");
	CU_ASSERT_PTR_NULL(s);
	free(s);
	for (unsigned int i = 0; i < 64; i++) {
		struct iovec io = { buf + i * 4096, 4096 };

		memset(buf + i * 4096, i, 4096);
		CU_ASSERT_EQUAL(blkfront_writev(bf, i * 8, &io, 1, i), 0);
	}
	CU_ASSERT_TRUE(wait_done(bf, &log, 64));
	for (unsigned int i = 0; i < 64; i++)
		CU_ASSERT_EQUAL(b->disk[i * 8 * 512 + 17], i);
	blkfront_close(bf);

	/* Reopening after a close reconnects through Initialising -> InitWait. */
	CU_ASSERT_FATAL(open_dev("xvdh", &log, 1, 0, &bf) == 0);
	blkfront_info(bf, &in);
	CU_ASSERT_EQUAL(in.nr_queues, 1);
	s = fread_key(b, "ring-ref");
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	s = fread_key(b, "multi-queue-num-queues");
	CU_ASSERT_PTR_NULL(s); /* stale keys of the earlier layout are gone */
	free(s);
	s = fread_key(b, "queue-0/ring-ref0");
	CU_ASSERT_PTR_NULL(s);
	free(s);
	blkfront_close(bf);
	hv_guest_free_frames(ghv, frame, 64);
	fb_stop(b);
}

static void test_detach(void)
{
	struct fb *b = fb_start("xvdi", 1, 0, 0);
	struct done_log log = { 0 };
	struct blkfront *bf;
	uint32_t frame;
	uint8_t *buf = gbuf(1, &frame);
	struct iovec io = { buf, 4096 };
	int ret = 0;

	CU_ASSERT_FATAL(open_dev("xvdi", &log, 0, 0, &bf) == 0);
	fb_set_hold(b, 1);
	CU_ASSERT_EQUAL(blkfront_readv(bf, 0, &io, 1, 9), 0);
	blkfront_kick(bf);
	CU_ASSERT_FATAL(wait_held(bf, b, 1));
	fb_cmd(b, 'd');
	/* The vbd goes away: the outstanding request completes with -ENODEV, once. */
	for (int i = 0; i < 250 && ret != -ENODEV; i++)
		ret = blkfront_wait(bf, 20);
	CU_ASSERT_EQUAL(ret, -ENODEV);
	CU_ASSERT_EQUAL(log.n, 1);
	CU_ASSERT_EQUAL(log.status[0], -ENODEV);
	CU_ASSERT_EQUAL(blkfront_readv(bf, 0, &io, 1, 10), -ENODEV);
	CU_ASSERT_EQUAL(blkfront_inflight(bf), 0);
	blkfront_close(bf);
	CU_ASSERT_EQUAL(log.n, 1);
	hv_guest_free_frames(ghv, frame, 1);
	fb_stop(b);
}

static void test_give_up(void)
{
	struct fb *b = fb_start("xvdl", 1, 0, 0);
	struct done_log log = { 0 };
	struct blkfront *bf;
	uint32_t frame;
	uint8_t *buf = gbuf(1, &frame);
	struct iovec io = { buf, 4096 };

	CU_ASSERT_FATAL(open_dev("xvdl", &log, 0, 0, &bf) == 0);
	fb_set_hold(b, 1);
	for (unsigned int i = 0; i < 40; i++) /* 32 on the ring, 8 held for a slot */
		CU_ASSERT_EQUAL(blkfront_readv(bf, i * 8, &io, 1, i), 0);
	blkfront_kick(bf);
	CU_ASSERT_FATAL(wait_held(bf, b, 32));
	/* A backend that never answers: everything completes now, once, with the error. */
	CU_ASSERT_EQUAL(blkfront_fail(bf, -ECANCELED), 40);
	CU_ASSERT_EQUAL(log.n, 40);
	for (unsigned int i = 0; i < 40; i++)
		CU_ASSERT_EQUAL(log.status[i], -ECANCELED);
	CU_ASSERT_EQUAL(blkfront_inflight(bf), 0);
	CU_ASSERT_EQUAL(blkfront_readv(bf, 0, &io, 1, 99), -ECANCELED);
	CU_ASSERT_EQUAL(blkfront_process(bf), -ECANCELED);
	CU_ASSERT_EQUAL(blkfront_fail(bf, -ECANCELED), 0);
	blkfront_close(bf);
	CU_ASSERT_EQUAL(log.n, 40);
	hv_guest_free_frames(ghv, frame, 1);
	fb_stop(b);
}

static void test_indirect(void)
{
	struct fb *b = fb_start("xvdj", 1, 0, FB_INDIRECT);
	struct done_log log = { 0 };
	struct blkfront_info in;
	struct blkfront *bf;
	uint32_t frame;
	uint8_t *buf = gbuf(2 * 256, &frame);
	struct iovec w64 = { buf, 64 * 4096 };
	struct iovec w256 = { buf, 256 * 4096 };
	struct iovec r256 = { buf + 256 * 4096, 256 * 4096 };
	struct iovec w5 = { buf, 5 * 4096 };

	for (size_t i = 0; i < 256 * 4096; i++)
		buf[i] = (uint8_t)(i * 13 + i / 4096);
	CU_ASSERT_FATAL(open_dev_x("xvdj", &log, 1, 0, 256, false, &bf) == 0);
	blkfront_info(bf, &in);
	CU_ASSERT_EQUAL(in.max_indirect_segs, FB_MAX_IND);
	CU_ASSERT_EQUAL(in.indirect_segs, 256);
	/* 64 pages: one indirect request instead of six direct ones. */
	CU_ASSERT_EQUAL(blkfront_writev(bf, 0, &w64, 1, 1), 0);
	CU_ASSERT_TRUE(wait_done(bf, &log, 1));
	CU_ASSERT_EQUAL(log.status[0], 0);
	CU_ASSERT_EQUAL(fb_get(b, &b->nreq[BLKIF_OP_INDIRECT]), 1);
	CU_ASSERT_EQUAL(fb_get(b, &b->max_nseg), 64);
	/* 1 MiB, the largest request, is one ring request too; read it back whole. */
	CU_ASSERT_EQUAL(blkfront_writev(bf, 0, &w256, 1, 2), 0);
	CU_ASSERT_EQUAL(blkfront_readv(bf, 0, &r256, 1, 3), 0);
	CU_ASSERT_TRUE(wait_done(bf, &log, 3));
	CU_ASSERT_EQUAL(log.status[1], 0);
	CU_ASSERT_EQUAL(log.status[2], 0);
	CU_ASSERT_EQUAL(fb_get(b, &b->nreq[BLKIF_OP_INDIRECT]), 3);
	CU_ASSERT_EQUAL(memcmp(buf, buf + 256 * 4096, 256 * 4096), 0);
	/* Small requests stay direct. */
	CU_ASSERT_EQUAL(blkfront_writev(bf, 0, &w5, 1, 4), 0);
	CU_ASSERT_TRUE(wait_done(bf, &log, 4));
	CU_ASSERT_EQUAL(fb_get(b, &b->nreq[BLKIF_OP_WRITE]), 1);
	blkfront_close(bf);

	/* A smaller indirect limit splits into indirect parts of that size. */
	memset(&log, 0, sizeof(log));
	CU_ASSERT_FATAL(open_dev_x("xvdj", &log, 1, 0, 32, false, &bf) == 0);
	blkfront_info(bf, &in);
	CU_ASSERT_EQUAL(in.indirect_segs, 32);
	CU_ASSERT_EQUAL(blkfront_writev(bf, 0, &w64, 1, 5), 0);
	CU_ASSERT_TRUE(wait_done(bf, &log, 1));
	CU_ASSERT_EQUAL(log.status[0], 0);
	CU_ASSERT_EQUAL(fb_get(b, &b->nreq[BLKIF_OP_INDIRECT]), 5);
	CU_ASSERT_EQUAL(memcmp(b->disk, buf, 64 * 4096), 0);
	blkfront_close(bf);
	hv_guest_free_frames(ghv, frame, 2 * 256);
	fb_stop(b);
}

static void test_persistent(void)
{
	struct fb *b = fb_start("xvdk", 1, 0, FB_PERSIST | FB_INDIRECT);
	struct done_log log = { 0 };
	struct blkfront_info in;
	struct blkfront *bf;
	uint32_t frame;
	uint8_t *buf = gbuf(4 + 32, &frame);
	struct iovec big = { buf + 4 * 4096, 32 * 4096 };

	CU_ASSERT_FATAL(open_dev_x("xvdk", &log, 1, 0, 256, true, &bf) == 0);
	blkfront_info(bf, &in);
	CU_ASSERT_TRUE(in.backend_persistent);
	CU_ASSERT_TRUE(in.persistent);
	/* 100 writes cycling over 4 pages: the backend maps each page once, not 100 times. */
	for (unsigned int i = 0; i < 100; i++) {
		struct iovec io = { buf + (i % 4) * 4096, 4096 };

		memset(io.iov_base, (int)i, 4096);
		CU_ASSERT_EQUAL(blkfront_writev(bf, (i % 4) * 8, &io, 1, i), 0);
		CU_ASSERT_TRUE(wait_done(bf, &log, i + 1));
		CU_ASSERT_EQUAL(log.status[i], 0);
	}
	CU_ASSERT_EQUAL(fb_get(b, &b->nmaps), 4);
	CU_ASSERT_EQUAL(b->disk[3 * 8 * 512], 99);
	/* Indirect requests with persistent grants: data pages and the indirect page map once. */
	for (unsigned int i = 0; i < 3; i++) {
		CU_ASSERT_EQUAL(blkfront_writev(bf, 64, &big, 1, 1000 + i), 0);
		CU_ASSERT_TRUE(wait_done(bf, &log, 101 + i));
	}
	CU_ASSERT_EQUAL(fb_get(b, &b->nreq[BLKIF_OP_INDIRECT]), 3);
	CU_ASSERT_TRUE(fb_get(b, &b->nmaps) <= 4 + 32 + 3);
	blkfront_close(bf);

	/* The frontend does not want them: per-request grants even though the backend offers. */
	memset(&log, 0, sizeof(log));
	CU_ASSERT_FATAL(open_dev_x("xvdk", &log, 1, 0, 0, false, &bf) == 0);
	blkfront_info(bf, &in);
	CU_ASSERT_FALSE(in.persistent);
	pthread_mutex_lock(&b->lock);
	b->nmaps = 0;
	pthread_mutex_unlock(&b->lock);
	for (unsigned int i = 0; i < 10; i++) {
		struct iovec io = { buf, 4096 };

		CU_ASSERT_EQUAL(blkfront_writev(bf, 0, &io, 1, i), 0);
		CU_ASSERT_TRUE(wait_done(bf, &log, i + 1));
	}
	CU_ASSERT_EQUAL(fb_get(b, &b->nmaps), 10);
	blkfront_close(bf);
	hv_guest_free_frames(ghv, frame, 4 + 32);
	fb_stop(b);
}

/* ---- suite ---- */

static volatile sig_atomic_t sim_stop;

static void on_term(int sig)
{
	(void)sig;
	sim_stop = 1;
}

static int suite_init(void)
{
	struct hvsim_dom_create req = { .mem_bytes = 64ull << 20 };
	struct hvsim_domid_msg rep;
	struct hvsim_chan c = { .fd = -1 };
	char sock[300];
	int rc = -1;

	snprintf(simdir, sizeof(simdir), "%s/blkfront-sim", harness_tmpdir());
	simpid = fork();
	if (simpid < 0)
		return -1;
	if (simpid == 0) {
		struct hvsim *s;

		signal(SIGTERM, on_term);
		signal(SIGPIPE, SIG_IGN);
		if (hvsim_new(&s, simdir))
			_exit(1);
		hvsim_run(s, &sim_stop);
		hvsim_free(s);
		_exit(0);
	}
	snprintf(sock, sizeof(sock), "%s/hv.sock", simdir);
	for (int i = 0; i < 500; i++) {
		if (hvsim_chan_connect(&c, sock) == 0) {
			rc = 0;
			break;
		}
		usleep(10000);
	}
	if (rc)
		return -1;
	snprintf(req.name, sizeof(req.name), "bfguest");
	rc = hvsim_chan_call(&c, HVSIM_DOMAIN_CREATE, &req, sizeof(req), NULL, 0, &rep,
			     sizeof(rep), NULL, NULL, 0);
	hvsim_chan_close(&c);
	if (rc)
		return -1;
	gdom = (domid_t)rep.domid;
	if (hv_guest_open(&ghv, simdir, "bfguest"))
		return -1;
	gmem = hv_guest_mem(ghv, &gmem_len);
	return gmem ? 0 : -1;
}

static int suite_clean(void)
{
	hv_close(ghv);
	if (simpid > 0) {
		kill(simpid, SIGTERM);
		waitpid(simpid, NULL, 0);
	}
	return 0;
}

static CU_TestInfo tests[] = {
	{ "handshake", test_handshake },
	{ "io_roundtrip", test_io_roundtrip },
	{ "errors", test_errors },
	{ "backpressure", test_backpressure },
	{ "resize", test_resize },
	{ "reconnect_after_close", test_reconnect_after_close },
	{ "reconnect_after_restart", test_reconnect_after_restart },
	{ "multiqueue_order", test_multiqueue_order },
	{ "detach", test_detach },
	{ "give_up", test_give_up },
	{ "indirect", test_indirect },
	{ "persistent", test_persistent },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("blkfront", suite_init, suite_clean, tests)

/*
 * blkfront.c - libblkfront: the frontend half of the blkif protocol for one guest vbd.
 *
 * Three layers, as in Linux xen-blkfront:
 *   - xenbus: a watch on the backend's state drives bf_backend_changed(), a level-triggered
 *     state machine (it re-reads the state on every event, so duplicate or coalesced events
 *     are harmless);
 *   - rings: one shared ring per queue, each with its event channel and a shadow slot per ring
 *     entry that remembers what was granted for it;
 *   - requests: a pool of caller requests (struct bf_ureq) sized at open. A request is copied
 *     into its pool entry once (as page segments), so it can be put on a ring again after a
 *     reconnect without the caller's iovec; a request waiting for ring slots sits in a FIFO.
 * Requests come from the pool, slots and indirect pages are set up with the rings, and grant
 * refs are recycled through a pool that only grows until it covers the most refs in flight at
 * once: after warm-up the I/O path allocates nothing. With persistent grants a page's grant is
 * looked up by frame and reused, so a warm request makes no grant calls at all.
 */
#define LOG_TAG "blkfront"

#include "hv/blkfront.h"
#include "hv/blkfront_internal.h"

#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <xenstore.h>
#include <xen/io/blkif.h>
#include <xen/io/protocols.h>
#include <xen/io/ring.h>
#include <xen/io/xenbus.h>

/*
 * ring.h leaves the barriers to the includer; with the default (old) interface version it maps
 * them to mb()/rmb()/wmb(), which userspace does not have. The peer is another process on the
 * same machine, so CPU fences are what is needed: a full fence for xen_mb (our producer index
 * store must be visible before we load the peer's event index), acquire and release fences for
 * the read and write barriers around index updates.
 */
#undef xen_mb
#undef xen_rmb
#undef xen_wmb
#define xen_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)

#define BF_NSEG BLKIF_MAX_SEGMENTS_PER_REQUEST
#define BF_GREF_NONE ((grant_ref_t)-1)
#define BF_TIMEOUT_MS_DEFAULT 10000
#define BF_MAX_UREQS 2048u
#define BF_PATH 256

/* A request accepted from the caller; lives in bf->ureqs until its completion runs. */
struct bf_ureq {
	struct bf_ureq *next; /* FIFO of held requests, or the free list */
	uint64_t id;          /* the caller's id */
	uint64_t seq;         /* submission order, to re-issue in order after a reconnect */
	uint64_t sector;      /* 512-byte units */
	uint64_t nr_sectors;  /* discard length; for reads/writes the sum of the segments */
	uint8_t op;           /* BLKIF_OP_* */
	uint16_t nr_segs;
	uint16_t parts_out;   /* ring requests not yet answered */
	int status;           /* first error of any part */
	struct bf_seg segs[BLKFRONT_MAX_SEGS];
};

/* Grant refs a slot may hold for one request: its data pages and its indirect pages. */
#define BF_SLOT_GREFS (BLKFRONT_MAX_SEGS + BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST)
/* Segments one indirect page holds. */
#define BF_SEGS_PER_IND_PAGE (HV_PAGE_SIZE / sizeof(struct blkif_request_segment))

/* Shadow of one ring entry: which request part it carries and what to end when it completes. */
struct bf_slot {
	struct bf_ureq *ureq; /* NULL when free */
	uint8_t op;           /* operation on the ring (BLKIF_OP_INDIRECT for an indirect one) */
	uint8_t ind_op;       /* the READ or WRITE an indirect request carries */
	uint16_t nr_granted;  /* gref[0 .. nr_granted): granted for this request only */
	grant_ref_t *gref;    /* BF_SLOT_GREFS entries in bf_ring.gref_store */
};

/* A page that keeps its grant across requests (persistent grants). */
struct bf_pgnt {
	uint32_t frame;
	grant_ref_t gref;
	int32_t next; /* hash chain, -1 ends it */
};

struct bf_ring {
	struct blkif_front_ring fr;
	uint32_t frame;                          /* first frame of the ring pages */
	unsigned int nr_pages;
	grant_ref_t ring_gref[1u << BLKFRONT_MAX_RING_ORDER];
	evtchn_port_t port;
	bool port_valid;
	struct bf_slot *slots;                   /* RING_SIZE */
	grant_ref_t *gref_store;                 /* nr_slots * BF_SLOT_GREFS */
	uint16_t *free;                          /* stack of free slot indices */
	unsigned int nr_free;
	unsigned int nr_slots;
	bool dirty;                              /* requests queued since the last kick */
	bool leaked;                             /* backend kept the ring mapped: frames not reused */

	/* Indirect descriptors: ind_ipp pages per slot from ind_frame (none when ind_ipp is 0). */
	uint32_t ind_frame;
	unsigned int ind_ipp;
	grant_ref_t *ind_pgref;                  /* persistent mode: their stable grants */

	/* Persistent grants: frame -> ref, at most BLKFRONT_PERSISTENT_PER_RING, never evicted
	 * while connected (the backend keeps them mapped: that is the point). */
	struct bf_pgnt *pg;
	unsigned int pg_n;
	int32_t *pg_hash;
	unsigned int pg_mask;
};

struct blkfront {
	struct hv *hv;
	struct xs_handle *xs;
	struct hv_evtchn *evt;
	int epfd;
	uint8_t *mem;
	size_t mem_len;

	char name[32];
	uint32_t devid;
	domid_t domid;
	char fpath[BF_PATH];
	char bpath[BF_PATH];
	char watch_path[BF_PATH + 8];

	struct blkfront_opts opts;
	struct blkfront_info info;

	enum xenbus_state fstate; /* what we last wrote (Unknown until we wrote anything) */
	bool rings_up;            /* rings allocated and granted: responses are reaped */
	bool connected;           /* backend Connected and we wrote Connected: requests are sent */
	int failed;               /* 0, or the -errno that made the device unusable */

	unsigned int nr_rings;
	struct bf_ring rings[BLKFRONT_MAX_QUEUES];
	unsigned int next_ring;

	grant_ref_t *gpool;       /* refs granted to nobody, reused before allocating new ones */
	unsigned int gpool_n, gpool_cap;

	struct bf_ureq *ureqs;
	unsigned int nr_ureqs;
	struct bf_ureq *free_ureqs;
	struct bf_ureq *held_head, *held_tail; /* accepted, waiting for ring slots */
	unsigned int inflight;
	uint64_t next_seq;

	struct log_ratelimit rl;
};

static int bf_backend_changed(struct blkfront *bf);
static int bf_reap_ring(struct blkfront *bf, struct bf_ring *r);

/*
 * ---- xenstore helpers ----
 */

/* Read DIR/KEY as a whole decimal number in [min, max]; -ENOENT if absent, -EPROTO if bad. */
static int bf_read_u64(struct blkfront *bf, const char *dir, const char *key, uint64_t min,
		       uint64_t max, uint64_t *out)
{
	char path[BF_PATH + 64];
	unsigned int len;
	char *s;
	int ret;

	snprintf(path, sizeof(path), "%s/%s", dir, key);
	s = xs_read(bf->xs, XBT_NULL, path, &len);
	if (!s)
		return errno == ENOENT ? -ENOENT : -(errno ? errno : EIO);
	ret = util_parse_u64(s, min, max, out);
	free(s);
	if (ret) {
		log_warn("d%u/%s: %s is not a number in [%" PRIu64 ", %" PRIu64 "]", bf->domid,
			 bf->name, path, min, max);
		return -EPROTO;
	}
	return 0;
}

/* As bf_read_u64 with a default for an absent node. */
static int bf_read_u64_def(struct blkfront *bf, const char *dir, const char *key, uint64_t min,
			   uint64_t max, uint64_t def, uint64_t *out)
{
	int ret = bf_read_u64(bf, dir, key, min, max, out);

	if (ret == -ENOENT) {
		*out = def;
		return 0;
	}
	return ret;
}

static int bf_read_bool(struct blkfront *bf, const char *dir, const char *key, bool *out)
{
	uint64_t v;
	int ret = bf_read_u64_def(bf, dir, key, 0, 1, 0, &v);

	*out = v == 1;
	return ret;
}

static bool bf_printf_write(struct blkfront *bf, xs_transaction_t t, const char *key,
			    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static bool bf_printf_write(struct blkfront *bf, xs_transaction_t t, const char *key,
			    const char *fmt, ...)
{
	char path[BF_PATH + 64], val[64];
	va_list ap;
	int n;

	snprintf(path, sizeof(path), "%s/%s", bf->fpath, key);
	va_start(ap, fmt);
	n = vsnprintf(val, sizeof(val), fmt, ap);
	va_end(ap);
	return xs_write(bf->xs, t, path, val, (unsigned int)n);
}

/* The backend's state, or -1 when its node is missing (backend gone or not created yet). */
static int bf_backend_state(struct blkfront *bf)
{
	uint64_t v;

	if (bf_read_u64(bf, bf->bpath, "state", 0, XenbusStateReconfigured, &v))
		return -1;
	return (int)v;
}

/* Does our frontend directory still exist (the vbd is still attached)? */
static bool bf_frontend_exists(struct blkfront *bf, xs_transaction_t t)
{
	char path[BF_PATH + 16];
	unsigned int len;
	char *s;

	snprintf(path, sizeof(path), "%s/backend", bf->fpath);
	s = xs_read(bf->xs, t, path, &len);
	free(s);
	return s != NULL;
}

/*
 * Write our state, but only while the vbd exists: a plain write after the toolstack removed
 * the directory would re-create a stray node. -ENODEV when it is gone.
 */
static int bf_set_state(struct blkfront *bf, enum xenbus_state st)
{
	for (int tries = 0; tries < 100; tries++) {
		xs_transaction_t t = xs_transaction_start(bf->xs);

		if (t == XBT_NULL)
			return -(errno ? errno : EIO);
		if (!bf_frontend_exists(bf, t)) {
			xs_transaction_end(bf->xs, t, true);
			return -ENODEV;
		}
		if (!bf_printf_write(bf, t, "state", "%d", (int)st)) {
			int err = errno ? errno : EIO;

			xs_transaction_end(bf->xs, t, true);
			return -err;
		}
		if (xs_transaction_end(bf->xs, t, false)) {
			log_debug("d%u/%s: frontend state %d", bf->domid, bf->name, (int)st);
			bf->fstate = st;
			return 0;
		}
		if (errno != EAGAIN)
			return -(errno ? errno : EIO);
	}
	return -EAGAIN;
}

/*
 * ---- requests ----
 */

static void bf_held_push_tail(struct blkfront *bf, struct bf_ureq *u)
{
	u->next = NULL;
	if (bf->held_tail)
		bf->held_tail->next = u;
	else
		bf->held_head = u;
	bf->held_tail = u;
}

/* Insert by submission order: requests taken back from a ring go before younger held ones. */
static void bf_held_insert_ordered(struct blkfront *bf, struct bf_ureq *u)
{
	struct bf_ureq **pp = &bf->held_head;

	while (*pp && (*pp)->seq < u->seq)
		pp = &(*pp)->next;
	u->next = *pp;
	*pp = u;
	if (!u->next)
		bf->held_tail = u;
}

static void bf_ureq_complete(struct blkfront *bf, struct bf_ureq *u)
{
	uint64_t id = u->id;
	int status = u->status;

	u->next = bf->free_ureqs;
	bf->free_ureqs = u;
	bf->inflight--;
	/* The pool entry is free before the callback, which may submit again. */
	bf->opts.done(bf->opts.arg, id, status);
}

/*
 * ---- grant refs ----
 */

/* A grant ref to use: a pooled one, else a new one from the guest's table (-ENOSPC if full). */
static int bf_gref_get(struct blkfront *bf, grant_ref_t *ref)
{
	if (bf->gpool_n) {
		*ref = bf->gpool[--bf->gpool_n];
		return 0;
	}
	return hv_guest_alloc_gref(bf->hv, ref);
}

/* Return an ended (not granted) ref to the pool; the pool only grows to the high-water mark. */
static void bf_gref_put(struct blkfront *bf, grant_ref_t ref)
{
	if (bf->gpool_n == bf->gpool_cap) {
		unsigned int cap = bf->gpool_cap ? 2 * bf->gpool_cap : 256;
		grant_ref_t *n = realloc(bf->gpool, cap * sizeof(*n));

		if (!n) {
			hv_guest_free_gref(bf->hv, ref);
			return;
		}
		bf->gpool = n;
		bf->gpool_cap = cap;
	}
	bf->gpool[bf->gpool_n++] = ref;
}

/*
 * End a grant and recycle its ref. A grant the backend still maps cannot be ended: its ref is
 * given up (the sim parks a ref freed while mapped until the mapping goes away, as Linux
 * defers such refs) and -EBUSY tells the caller the page may still be touched.
 */
static int bf_gref_end(struct blkfront *bf, grant_ref_t ref)
{
	int err = hv_guest_end_access(bf->hv, ref);

	if (!err) {
		bf_gref_put(bf, ref);
		return 0;
	}
	LOG_RATELIMITED(&bf->rl, LOG_LVL_ERR,
			"d%u/%s: grant %u still in use by the backend (%s); leaving it", bf->domid,
			bf->name, ref, hv_strerror(err));
	hv_guest_free_gref(bf->hv, ref);
	return -EBUSY;
}

/*
 * End the per-request grants of a slot on ring @r. With persistent grants a backend may keep any
 * grant mapped (Linux blkback keeps up to its own limit): a grant still mapped is then the
 * backend's choice, not an error, and its ref is given up until the backend lets go (as Linux
 * blkfront moves such grants to its persistent list). Without them it is a backend bug: -EIO,
 * since the backend may still touch the page.
 */
static int bf_slot_end_grants(struct blkfront *bf, struct bf_ring *r, struct bf_slot *s)
{
	int ret = 0;

	for (unsigned int i = 0; i < s->nr_granted; i++) {
		if (r->pg) {
			if (hv_guest_end_access(bf->hv, s->gref[i]))
				hv_guest_free_gref(bf->hv, s->gref[i]); /* parked while mapped */
			else
				bf_gref_put(bf, s->gref[i]);
		} else if (bf_gref_end(bf, s->gref[i])) {
			ret = -EIO;
		}
	}
	s->nr_granted = 0;
	return ret;
}

static unsigned int bf_pg_bucket(const struct bf_ring *r, uint32_t frame)
{
	return (frame * 2654435761u) & r->pg_mask; /* Knuth's multiplicative hash */
}

static int bf_pg_find(const struct bf_ring *r, uint32_t frame)
{
	for (int32_t i = r->pg_hash[bf_pg_bucket(r, frame)]; i >= 0; i = r->pg[i].next)
		if (r->pg[i].frame == frame)
			return i;
	return -1;
}

/*
 * The grant ref for data page @frame of a request part in slot @s. Persistent: the page's
 * standing grant, or a new read-write one that stays (while the ring has room for it). Else a
 * grant for this request only (read-only when the backend only reads it), ended at completion.
 */
static int bf_data_gref(struct blkfront *bf, struct bf_ring *r, struct bf_slot *s,
			uint32_t frame, bool ro, grant_ref_t *out)
{
	grant_ref_t ref;
	int err;

	if (r->pg) {
		int i = bf_pg_find(r, frame);

		if (i >= 0) {
			*out = r->pg[i].gref;
			return 0;
		}
		ro = false; /* the backend maps persistent grants read-write */
	}
	err = bf_gref_get(bf, &ref);
	if (err)
		return err;
	err = hv_guest_grant(bf->hv, ref, bf->info.backend_id, frame, ro);
	if (err) {
		bf_gref_put(bf, ref);
		return err;
	}
	if (r->pg && r->pg_n < BLKFRONT_PERSISTENT_PER_RING) {
		unsigned int b = bf_pg_bucket(r, frame);

		r->pg[r->pg_n] = (struct bf_pgnt){ frame, ref, r->pg_hash[b] };
		r->pg_hash[b] = (int32_t)r->pg_n++;
	} else {
		s->gref[s->nr_granted++] = ref;
	}
	*out = ref;
	return 0;
}

/* The grant ref for indirect page @k of slot @idx. */
static int bf_ind_gref(struct blkfront *bf, struct bf_ring *r, struct bf_slot *s, unsigned int idx,
		       unsigned int k, grant_ref_t *out)
{
	grant_ref_t ref;
	int err;

	if (r->ind_pgref) {
		*out = r->ind_pgref[idx * r->ind_ipp + k];
		return 0;
	}
	err = bf_gref_get(bf, &ref);
	if (err)
		return err;
	err = hv_guest_grant(bf->hv, ref, bf->info.backend_id, r->ind_frame + idx * r->ind_ipp + k,
			     1);
	if (err) {
		bf_gref_put(bf, ref);
		return err;
	}
	s->gref[s->nr_granted++] = ref;
	*out = ref;
	return 0;
}

static struct bf_ring *bf_pick_ring(struct blkfront *bf, unsigned int parts)
{
	struct bf_ring *best = NULL;

	/* The ring with most free slots: spreads requests over the queues and keeps order of
	 * a single queue trivially. */
	for (unsigned int i = 0; i < bf->nr_rings; i++) {
		struct bf_ring *r = &bf->rings[(bf->next_ring + i) % bf->nr_rings];

		if (r->nr_free >= parts && (!best || r->nr_free > best->nr_free))
			best = r;
	}
	if (best)
		bf->next_ring = (unsigned int)(best - bf->rings + 1) % bf->nr_rings;
	return best;
}

/* Pages one ring request carries for @u: 11 direct, or the negotiated indirect count. */
static unsigned int bf_part_segs(const struct blkfront *bf, const struct bf_ureq *u)
{
	if (u->nr_segs <= BF_NSEG || bf->info.indirect_segs <= BF_NSEG)
		return BF_NSEG;
	return bf->info.indirect_segs;
}

static unsigned int bf_parts(const struct blkfront *bf, const struct bf_ureq *u)
{
	if (u->op != BLKIF_OP_READ && u->op != BLKIF_OP_WRITE)
		return 1;
	return bf_parts_for_segs(u->nr_segs, bf_part_segs(bf, u));
}

/*
 * Put @u on ring @r as one or more ring requests (direct, or indirect when it has more pages
 * than a direct request holds and indirect descriptors were negotiated). Each request is built
 * in a local copy and copied onto the ring whole. All or nothing: on a failure the parts
 * already placed are taken back (they were not pushed yet).
 */
static int bf_place(struct blkfront *bf, struct bf_ring *r, struct bf_ureq *u)
{
	unsigned int parts = bf_parts(bf, u);
	unsigned int per = bf_part_segs(bf, u);
	bool ro = u->op == BLKIF_OP_WRITE;
	uint64_t sector = u->sector;
	unsigned int seg = 0;
	uint16_t taken[BLKFRONT_MAX_SEGS / BF_NSEG + 1];
	unsigned int p;
	int err = 0;

	for (p = 0; p < parts; p++) {
		union {
			struct blkif_request rw;
			struct blkif_request_discard d;
			struct blkif_request_indirect ind;
		} q;
		uint16_t idx = r->free[--r->nr_free];
		struct bf_slot *s = &r->slots[idx];
		struct blkif_request_segment *sv;
		unsigned int n;

		taken[p] = idx;
		s->ureq = u;
		s->op = u->op;
		s->ind_op = 0;
		s->nr_granted = 0;
		memset(&q, 0, sizeof(q));
		if (u->op == BLKIF_OP_DISCARD) {
			q.d.operation = BLKIF_OP_DISCARD;
			q.d.handle = (blkif_vdev_t)bf->devid;
			q.d.id = idx;
			q.d.sector_number = u->sector;
			q.d.nr_sectors = u->nr_sectors;
			goto copy;
		}
		if (u->op == BLKIF_OP_FLUSH_DISKCACHE) {
			q.rw.operation = BLKIF_OP_FLUSH_DISKCACHE;
			q.rw.handle = (blkif_vdev_t)bf->devid;
			q.rw.id = idx;
			goto copy;
		}
		n = u->nr_segs - seg < per ? u->nr_segs - seg : per;
		if (n > BF_NSEG) {
			/* The segments go in the slot's indirect pages, in guest memory. */
			sv = (struct blkif_request_segment *)(bf->mem + (size_t)(r->ind_frame +
									  idx * r->ind_ipp) *
									 HV_PAGE_SIZE);
			s->op = BLKIF_OP_INDIRECT;
			s->ind_op = u->op;
			q.ind.operation = BLKIF_OP_INDIRECT;
			q.ind.indirect_op = u->op;
			q.ind.nr_segments = (uint16_t)n;
			q.ind.id = idx;
			q.ind.sector_number = sector;
			q.ind.handle = (blkif_vdev_t)bf->devid;
		} else {
			sv = q.rw.seg;
			q.rw.operation = u->op;
			q.rw.nr_segments = (uint8_t)n;
			q.rw.handle = (blkif_vdev_t)bf->devid;
			q.rw.id = idx;
			q.rw.sector_number = sector;
		}
		for (unsigned int i = 0; i < n; i++, seg++) {
			const struct bf_seg *sg = &u->segs[seg];
			grant_ref_t ref;

			err = bf_data_gref(bf, r, s, sg->frame, ro, &ref);
			if (err)
				goto undo;
			sv[i].gref = ref;
			sv[i].first_sect = sg->first_sect;
			sv[i].last_sect = sg->last_sect;
			sector += (uint64_t)(sg->last_sect - sg->first_sect + 1);
		}
		for (unsigned int k = 0; n > BF_NSEG && k * BF_SEGS_PER_IND_PAGE < n; k++) {
			err = bf_ind_gref(bf, r, s, idx, k, &q.ind.indirect_grefs[k]);
			if (err)
				goto undo;
		}
copy:
		memcpy(RING_GET_REQUEST(&r->fr, r->fr.req_prod_pvt + p), &q, sizeof(q.rw));
	}
	r->fr.req_prod_pvt += parts;
	u->parts_out = (uint16_t)parts;
	r->dirty = true;
	return 0;

undo:
	for (unsigned int q = 0; q <= p; q++) {
		struct bf_slot *s = &r->slots[taken[q]];

		bf_slot_end_grants(bf, r, s);
		s->ureq = NULL;
		r->free[r->nr_free++] = taken[q];
	}
	if (err != -ENOSPC)
		LOG_RATELIMITED(&bf->rl, LOG_LVL_ERR, "d%u/%s: cannot grant a page: %s", bf->domid,
				bf->name, hv_strerror(err));
	return err;
}

/* Move held requests onto rings while slots last, in order (no overtaking). */
static void bf_dispatch(struct blkfront *bf)
{
	while (bf->connected && bf->held_head) {
		struct bf_ureq *u = bf->held_head;
		struct bf_ring *r = bf_pick_ring(bf, bf_parts(bf, u));
		int err;

		if (!r)
			break;
		bf->held_head = u->next;
		if (!bf->held_head)
			bf->held_tail = NULL;
		err = bf_place(bf, r, u);
		if (!err)
			continue;
		if (err == -ENOSPC && r->nr_free < r->nr_slots) {
			/* The grant table is full: completions will give refs back. Backpressure. */
			u->next = bf->held_head;
			bf->held_head = u;
			if (!bf->held_tail)
				bf->held_tail = u;
			break;
		}
		u->status = err == -ENOSPC ? -ENOSPC : -EIO;
		bf_ureq_complete(bf, u);
	}
}

static int bf_submit(struct blkfront *bf, struct bf_ureq *u)
{
	u->seq = bf->next_seq++;
	u->status = 0;
	u->parts_out = 0;
	bf->inflight++;
	bf_held_push_tail(bf, u);
	bf_dispatch(bf);
	return 0;
}

static struct bf_ureq *bf_ureq_get(struct blkfront *bf, int *err)
{
	struct bf_ureq *u;

	if (bf->failed) {
		*err = bf->failed;
		return NULL;
	}
	u = bf->free_ureqs;
	if (!u) {
		*err = -EAGAIN;
		return NULL;
	}
	return u;
}

static void bf_ureq_take(struct blkfront *bf, struct bf_ureq *u)
{
	bf->free_ureqs = u->next;
}

static int bf_rw(struct blkfront *bf, uint8_t op, uint64_t sector, const struct iovec *iov,
		 int iovcnt, uint64_t id)
{
	struct bf_ureq *u;
	unsigned int nr;
	uint64_t nsect;
	int err;

	if (op == BLKIF_OP_WRITE && bf->info.readonly)
		return -EROFS;
	if ((sector * 512) % bf->info.sector_size)
		return -EINVAL;
	u = bf_ureq_get(bf, &err);
	if (!u)
		return err;
	err = bf_iov_to_segs(bf->mem, bf->mem_len, bf->info.sector_size, iov, iovcnt, u->segs,
			     BLKFRONT_MAX_SEGS, &nr, &nsect);
	if (err)
		return err;
	bf_ureq_take(bf, u);
	u->op = op;
	u->id = id;
	u->sector = sector;
	u->nr_sectors = nsect;
	u->nr_segs = (uint16_t)nr;
	return bf_submit(bf, u);
}

int blkfront_readv(struct blkfront *bf, uint64_t sector, const struct iovec *iov, int iovcnt,
		   uint64_t id)
{
	return bf_rw(bf, BLKIF_OP_READ, sector, iov, iovcnt, id);
}

int blkfront_writev(struct blkfront *bf, uint64_t sector, const struct iovec *iov, int iovcnt,
		    uint64_t id)
{
	return bf_rw(bf, BLKIF_OP_WRITE, sector, iov, iovcnt, id);
}

int blkfront_flush(struct blkfront *bf, uint64_t id)
{
	struct bf_ureq *u;
	int err;

	if (!bf->info.flush)
		return bf->failed ? bf->failed : -EOPNOTSUPP;
	u = bf_ureq_get(bf, &err);
	if (!u)
		return err;
	bf_ureq_take(bf, u);
	u->op = BLKIF_OP_FLUSH_DISKCACHE;
	u->id = id;
	u->sector = 0;
	u->nr_sectors = 0;
	u->nr_segs = 0;
	return bf_submit(bf, u);
}

int blkfront_discard(struct blkfront *bf, uint64_t sector, uint64_t nr_sectors, uint64_t id)
{
	uint64_t ss = bf->info.sector_size / 512;
	struct bf_ureq *u;
	int err;

	if (!bf->info.discard)
		return bf->failed ? bf->failed : -EOPNOTSUPP;
	if (bf->info.readonly)
		return -EROFS;
	if (!nr_sectors || sector % ss || nr_sectors % ss || sector + nr_sectors < sector)
		return -EINVAL;
	u = bf_ureq_get(bf, &err);
	if (!u)
		return err;
	bf_ureq_take(bf, u);
	u->op = BLKIF_OP_DISCARD;
	u->id = id;
	u->sector = sector;
	u->nr_sectors = nr_sectors;
	u->nr_segs = 0;
	return bf_submit(bf, u);
}

int blkfront_kick(struct blkfront *bf)
{
	int ret = 0;

	if (!bf->connected)
		return 0;
	for (unsigned int i = 0; i < bf->nr_rings; i++) {
		struct bf_ring *r = &bf->rings[i];
		int notify;

		if (!r->dirty)
			continue;
		r->dirty = false;
		RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&r->fr, notify);
		if (notify) {
			int err = hv_evtchn_notify(bf->evt, r->port);

			if (err && !ret)
				ret = err;
		}
	}
	return ret;
}

/* Status of a blkif response as an errno. */
static int bf_status(int16_t st)
{
	switch (st) {
	case BLKIF_RSP_OKAY:
		return 0;
	case BLKIF_RSP_EOPNOTSUPP:
		return -EOPNOTSUPP;
	default:
		return -EIO;
	}
}

/*
 * Reap one ring. The backend is another domain: every response is copied off the ring once
 * and its id checked against our shadow before we act on it (as Linux blkfront does since
 * XSA-376). Returns the number of requests completed.
 */
static int bf_reap_ring(struct blkfront *bf, struct bf_ring *r)
{
	int done = 0;
	int more;

	do {
		RING_IDX rp = r->fr.sring->rsp_prod;
		RING_IDX i;

		xen_rmb(); /* read responses only after the producer index that covers them */
		if (RING_RESPONSE_PROD_OVERFLOW(&r->fr, rp)) {
			LOG_RATELIMITED(&bf->rl, LOG_LVL_ERR,
					"d%u/%s: backend claims %u responses for %u outstanding",
					bf->domid, bf->name, rp - r->fr.rsp_cons,
					r->fr.req_prod_pvt - r->fr.rsp_cons);
			bf->failed = -EIO;
			return done;
		}
		for (i = r->fr.rsp_cons; i != rp; i++) {
			struct blkif_response rsp;
			struct bf_slot *s;
			struct bf_ureq *u;
			int st;

			RING_COPY_RESPONSE(&r->fr, i, &rsp);
			if (rsp.id >= r->nr_slots || !r->slots[rsp.id].ureq ||
			    (r->slots[rsp.id].op != rsp.operation &&
			     !(r->slots[rsp.id].op == BLKIF_OP_INDIRECT &&
			       rsp.operation == r->slots[rsp.id].ind_op))) {
				LOG_RATELIMITED(&bf->rl, LOG_LVL_ERR,
						"d%u/%s: response with bad id %" PRIu64
						" or operation %u ignored",
						bf->domid, bf->name, (uint64_t)rsp.id, rsp.operation);
				continue;
			}
			s = &r->slots[rsp.id];
			u = s->ureq;
			st = bf_status(rsp.status);
			if (bf_slot_end_grants(bf, r, s) && !st)
				st = -EIO;
			s->ureq = NULL;
			r->free[r->nr_free++] = (uint16_t)rsp.id;
			if (st == -EOPNOTSUPP && u->op == BLKIF_OP_FLUSH_DISKCACHE && bf->info.flush) {
				log_warn("d%u/%s: backend refused a flush; not sending more",
					 bf->domid, bf->name);
				bf->info.flush = false;
			}
			if (st == -EOPNOTSUPP && u->op == BLKIF_OP_DISCARD && bf->info.discard) {
				log_warn("d%u/%s: backend refused a discard; not sending more",
					 bf->domid, bf->name);
				bf->info.discard = false;
			}
			if (st && !u->status)
				u->status = st;
			if (--u->parts_out == 0) {
				bf_ureq_complete(bf, u);
				done++;
			}
		}
		r->fr.rsp_cons = i;
		/* Sets rsp_event so the next response notifies us, then looks once more: closes
		 * the window where the backend pushed after our last look but before rsp_event. */
		RING_FINAL_CHECK_FOR_RESPONSES(&r->fr, more);
	} while (more);
	return done;
}

/*
 * ---- rings ----
 */

/* Give back what bf_ring_extras() set up: persistent grants and indirect pages. */
static void bf_ring_extras_free(struct blkfront *bf, struct bf_ring *r)
{
	bool busy = false;

	for (unsigned int i = 0; r->pg && i < r->pg_n; i++)
		bf_gref_end(bf, r->pg[i].gref);
	free(r->pg);
	free(r->pg_hash);
	r->pg = NULL;
	r->pg_hash = NULL;
	r->pg_n = 0;
	for (unsigned int i = 0; r->ind_pgref && i < r->nr_slots * r->ind_ipp; i++)
		if (r->ind_pgref[i] != BF_GREF_NONE && bf_gref_end(bf, r->ind_pgref[i]))
			busy = true;
	free(r->ind_pgref);
	r->ind_pgref = NULL;
	if (r->ind_ipp && !busy)
		hv_guest_free_frames(bf->hv, r->ind_frame, r->nr_slots * r->ind_ipp);
	r->ind_ipp = 0;
}

/*
 * Set up indirect pages (@ind_segs > 11) and the persistent grant table (@persistent) of a ring
 * after the backend connected (Linux blkfront does this in blkfront_setup_indirect).
 */
static int bf_ring_extras(struct blkfront *bf, struct bf_ring *r, unsigned int ind_segs,
			  bool persistent)
{
	int err;

	if (ind_segs > BF_NSEG) {
		unsigned int ipp = (ind_segs + BF_SEGS_PER_IND_PAGE - 1) / BF_SEGS_PER_IND_PAGE;

		err = hv_guest_alloc_frames(bf->hv, r->nr_slots * ipp, &r->ind_frame);
		if (err)
			return err;
		r->ind_ipp = ipp;
		if (persistent) {
			/* Stable grants: the backend keeps indirect pages mapped like data. */
			r->ind_pgref = calloc((size_t)r->nr_slots * ipp, sizeof(*r->ind_pgref));
			if (!r->ind_pgref)
				return -ENOMEM;
			for (unsigned int i = 0; i < r->nr_slots * ipp; i++)
				r->ind_pgref[i] = BF_GREF_NONE;
			for (unsigned int i = 0; i < r->nr_slots * ipp; i++) {
				grant_ref_t ref;

				err = bf_gref_get(bf, &ref);
				if (err)
					return err;
				err = hv_guest_grant(bf->hv, ref, bf->info.backend_id,
						     r->ind_frame + i, 0);
				if (err) {
					bf_gref_put(bf, ref);
					return err;
				}
				r->ind_pgref[i] = ref;
			}
		}
	}
	if (persistent) {
		unsigned int buckets = 1;

		while (buckets < 2 * BLKFRONT_PERSISTENT_PER_RING)
			buckets <<= 1;
		r->pg = calloc(BLKFRONT_PERSISTENT_PER_RING, sizeof(*r->pg));
		r->pg_hash = malloc(buckets * sizeof(*r->pg_hash));
		if (!r->pg || !r->pg_hash)
			return -ENOMEM;
		memset(r->pg_hash, 0xff, buckets * sizeof(*r->pg_hash)); /* all -1: empty */
		r->pg_mask = buckets - 1;
	}
	return 0;
}

static void bf_ring_free(struct blkfront *bf, struct bf_ring *r)
{
	bf_ring_extras_free(bf, r);
	free(r->slots);
	free(r->gref_store);
	free(r->free);
	for (unsigned int p = 0; p < r->nr_pages; p++) {
		if (r->ring_gref[p] == BF_GREF_NONE)
			continue;
		if (hv_guest_end_access(bf->hv, r->ring_gref[p])) {
			/* The backend still maps the ring: neither the page nor the ref may be
			 * reused, or its late writes would land in someone else's memory. */
			r->leaked = true;
			hv_guest_free_gref(bf->hv, r->ring_gref[p]);
			continue;
		}
		hv_guest_free_gref(bf->hv, r->ring_gref[p]);
	}
	if (r->nr_pages && !r->leaked)
		hv_guest_free_frames(bf->hv, r->frame, r->nr_pages);
	else if (r->leaked)
		log_err("d%u/%s: backend still maps a ring; %u pages left granted", bf->domid,
			bf->name, r->nr_pages);
	if (r->port_valid)
		hv_evtchn_unbind(bf->evt, r->port);
	memset(r, 0, sizeof(*r));
}

static int bf_ring_alloc(struct blkfront *bf, struct bf_ring *r, unsigned int order)
{
	size_t bytes = (size_t)HV_PAGE_SIZE << order;
	struct blkif_sring *sring;
	int err;

	memset(r, 0, sizeof(*r));
	for (unsigned int p = 0; p < ARRAY_SIZE(r->ring_gref); p++)
		r->ring_gref[p] = BF_GREF_NONE;
	err = hv_guest_alloc_frames(bf->hv, 1u << order, &r->frame);
	if (err)
		return err;
	r->nr_pages = 1u << order;
	sring = (struct blkif_sring *)(bf->mem + (size_t)r->frame * HV_PAGE_SIZE);
	memset(sring, 0, bytes);
	SHARED_RING_INIT(sring);
	FRONT_RING_INIT(&r->fr, sring, bytes);
	r->nr_slots = RING_SIZE(&r->fr);

	r->slots = calloc(r->nr_slots, sizeof(*r->slots));
	r->gref_store = calloc((size_t)r->nr_slots * BF_SLOT_GREFS, sizeof(*r->gref_store));
	r->free = calloc(r->nr_slots, sizeof(*r->free));
	if (!r->slots || !r->gref_store || !r->free)
		return -ENOMEM;
	for (unsigned int i = 0; i < r->nr_slots; i++) {
		r->slots[i].gref = r->gref_store + (size_t)i * BF_SLOT_GREFS;
		r->free[r->nr_free++] = (uint16_t)(r->nr_slots - 1 - i);
	}
	for (unsigned int p = 0; p < r->nr_pages; p++) {
		err = hv_guest_alloc_gref(bf->hv, &r->ring_gref[p]);
		if (err) {
			r->ring_gref[p] = BF_GREF_NONE;
			return err;
		}
		err = hv_guest_grant(bf->hv, r->ring_gref[p], bf->info.backend_id, r->frame + p, 0);
		if (err)
			return err;
	}
	err = hv_evtchn_alloc_unbound(bf->evt, bf->info.backend_id, &r->port);
	if (err)
		return err;
	r->port_valid = true;
	return 0;
}

/*
 * The backend left (or restarted): take every request off the rings, to be issued again on the
 * next connection in submission order (Linux blkif_recover), and give the rings back.
 */
static void bf_rings_down(struct blkfront *bf)
{
	unsigned int requeued = 0;

	if (!bf->rings_up)
		return;
	bf->connected = false;
	for (unsigned int i = 0; i < bf->nr_rings; i++) {
		struct bf_ring *r = &bf->rings[i];

		/* What the backend finished before it let go completes normally. */
		if (r->slots && r->fr.sring && !bf->failed)
			bf_reap_ring(bf, r);
		for (unsigned int k = 0; k < r->nr_slots; k++) {
			struct bf_slot *s = &r->slots[k];
			struct bf_ureq *u = s->ureq;

			if (!u)
				continue;
			bf_slot_end_grants(bf, r, s);
			s->ureq = NULL;
			/* A request split over several slots is requeued once, whole. */
			if (u->parts_out) {
				u->parts_out = 0;
				u->status = 0;
				bf_held_insert_ordered(bf, u);
				requeued++;
			}
		}
		bf_ring_free(bf, r);
	}
	bf->nr_rings = 0;
	bf->rings_up = false;
	bf->connected = false;
	if (requeued && !bf->failed)
		log_info("d%u/%s: backend left; %u requests held for re-issue", bf->domid, bf->name,
			 requeued);
}

/* Complete everything we hold with @err: the device is gone for good. */
static void bf_fail_all(struct blkfront *bf, int err)
{
	bf->failed = err; /* first: the rings come down without a last reap or re-issue */
	bf_rings_down(bf);
	while (bf->held_head) {
		struct bf_ureq *u = bf->held_head;

		bf->held_head = u->next;
		if (!bf->held_head)
			bf->held_tail = NULL;
		u->status = err;
		bf_ureq_complete(bf, u);
	}
}

/*
 * ---- xenbus: the frontend half of the handshake ----
 */

/* Backend InitWait: read its transport limits, set up rings, publish them, go Initialised. */
static int bf_talk_to_backend(struct blkfront *bf)
{
	uint64_t max_q, max_order, pages;
	unsigned int nq, order;
	int err;

	err = bf_read_u64_def(bf, bf->bpath, "multi-queue-max-queues", 1, 1u << 16, 1, &max_q);
	if (!err)
		err = bf_read_u64(bf, bf->bpath, "max-ring-page-order", 0, 32, &max_order);
	if (err == -ENOENT) {
		/* The Amazon/RedHat spelling, in pages. */
		err = bf_read_u64_def(bf, bf->bpath, "max-ring-pages", 1, 1u << 16, 1, &pages);
		max_order = bf_pages_to_order(pages);
	}
	if (err)
		return err;
	nq = bf->opts.queues ? bf->opts.queues : 1;
	if (nq > max_q)
		nq = (unsigned int)max_q;
	if (nq > BLKFRONT_MAX_QUEUES)
		nq = BLKFRONT_MAX_QUEUES;
	order = bf->opts.ring_order;
	if (order > max_order)
		order = (unsigned int)max_order;
	if (order > BLKFRONT_MAX_RING_ORDER)
		order = BLKFRONT_MAX_RING_ORDER;

	bf->nr_rings = nq;
	bf->rings_up = true; /* from here bf_rings_down() undoes partial setup */
	for (unsigned int i = 0; i < nq; i++) {
		err = bf_ring_alloc(bf, &bf->rings[i], order);
		if (err) {
			log_err("d%u/%s: cannot set up ring %u (order %u): %s", bf->domid, bf->name,
				i, order, hv_strerror(err));
			bf_rings_down(bf);
			return err;
		}
	}
	bf->info.nr_queues = nq;
	bf->info.ring_order = order;
	bf->info.ring_slots = bf->rings[0].nr_slots;

	for (int tries = 0;; tries++) {
		static const char *const stale[] = { "ring-ref", "ring-page-order", "event-channel",
						      "multi-queue-num-queues", "num-ring-pages" };
		xs_transaction_t t = xs_transaction_start(bf->xs);
		char path[BF_PATH + 64], key[64];
		bool ok = true;

		if (t == XBT_NULL) {
			err = -(errno ? errno : EIO);
			goto fail;
		}
		if (!bf_frontend_exists(bf, t)) {
			xs_transaction_end(bf->xs, t, true);
			err = -ENODEV;
			goto fail;
		}
		/* Keys of an earlier connection with another layout would mislead the backend. */
		for (unsigned int k = 0; k < ARRAY_SIZE(stale); k++) {
			snprintf(path, sizeof(path), "%s/%s", bf->fpath, stale[k]);
			xs_rm(bf->xs, t, path);
		}
		for (unsigned int k = 0; k < (1u << BLKFRONT_MAX_RING_ORDER); k++) {
			snprintf(path, sizeof(path), "%s/ring-ref%u", bf->fpath, k);
			xs_rm(bf->xs, t, path);
		}
		for (unsigned int k = 0; k < BLKFRONT_MAX_QUEUES; k++) {
			snprintf(path, sizeof(path), "%s/queue-%u", bf->fpath, k);
			xs_rm(bf->xs, t, path);
		}

		if (order)
			ok = ok && bf_printf_write(bf, t, "ring-page-order", "%u", order);
		if (nq > 1)
			ok = ok && bf_printf_write(bf, t, "multi-queue-num-queues", "%u", nq);
		for (unsigned int q = 0; q < nq; q++) {
			struct bf_ring *r = &bf->rings[q];
			char pre[32] = "";

			if (nq > 1)
				snprintf(pre, sizeof(pre), "queue-%u/", q);
			if (!order) {
				snprintf(key, sizeof(key), "%sring-ref", pre);
				ok = ok && bf_printf_write(bf, t, key, "%u", r->ring_gref[0]);
			}
			for (unsigned int p = 0; order && p < r->nr_pages; p++) {
				snprintf(key, sizeof(key), "%sring-ref%u", pre, p);
				ok = ok && bf_printf_write(bf, t, key, "%u", r->ring_gref[p]);
			}
			snprintf(key, sizeof(key), "%sevent-channel", pre);
			ok = ok && bf_printf_write(bf, t, key, "%u", r->port);
		}
		ok = ok && bf_printf_write(bf, t, "protocol", "%s", XEN_IO_PROTO_ABI_X86_64);
		ok = ok && bf_printf_write(bf, t, "feature-persistent", "%u",
					   bf->opts.persistent ? 1u : 0u);
		ok = ok && bf_printf_write(bf, t, "state", "%d", (int)XenbusStateInitialised);
		if (!ok) {
			err = -(errno ? errno : EIO);
			xs_transaction_end(bf->xs, t, true);
			goto fail;
		}
		if (xs_transaction_end(bf->xs, t, false))
			break;
		if (errno != EAGAIN || tries > 100) {
			err = -(errno ? errno : EIO);
			goto fail;
		}
	}
	bf->fstate = XenbusStateInitialised;
	log_debug("d%u/%s: Initialised: %u queue(s), ring order %u, %u slots", bf->domid,
		  bf->name, nq, order, bf->info.ring_slots);
	return 0;

fail:
	bf_rings_down(bf);
	return err;
}

/* Read sectors, sector-size and the rest that the backend writes when it connects. */
static int bf_read_disk_info(struct blkfront *bf, struct blkfront_info *in)
{
	uint64_t v;
	int err;

	err = bf_read_u64(bf, bf->bpath, "sectors", 0, UINT64_MAX / 512, &in->sectors);
	if (err)
		return err == -ENOENT ? -EPROTO : err;
	err = bf_read_u64_def(bf, bf->bpath, "sector-size", 512, 4096, 512, &v);
	if (err)
		return err;
	if (v & (v - 1))
		return -EPROTO;
	in->sector_size = (uint32_t)v;
	err = bf_read_u64_def(bf, bf->bpath, "physical-sector-size", in->sector_size, 1u << 20,
			      in->sector_size, &v);
	if (err)
		return err;
	in->physical_sector_size = (uint32_t)v;
	err = bf_read_u64_def(bf, bf->bpath, "info", 0, UINT32_MAX, 0, &v);
	if (err)
		return err;
	in->vdisk_info = (uint32_t)v;
	in->readonly = (v & VDISK_READONLY) != 0;
	err = bf_read_bool(bf, bf->bpath, "feature-flush-cache", &in->flush);
	if (!err)
		err = bf_read_bool(bf, bf->bpath, "feature-barrier", &in->barrier);
	if (!err)
		err = bf_read_bool(bf, bf->bpath, "feature-discard", &in->discard);
	if (!err)
		err = bf_read_bool(bf, bf->bpath, "feature-persistent", &in->backend_persistent);
	if (err)
		return err;
	err = bf_read_u64_def(bf, bf->bpath, "discard-granularity", 0, UINT32_MAX,
			      in->sector_size, &v);
	if (err)
		return err;
	in->discard_granularity = (uint32_t)(v ? v : in->sector_size);
	err = bf_read_u64_def(bf, bf->bpath, "discard-alignment", 0, UINT32_MAX, 0, &v);
	if (err)
		return err;
	in->discard_alignment = (uint32_t)v;
	err = bf_read_u64_def(bf, bf->bpath, "feature-max-indirect-segments", 0, UINT32_MAX, 0, &v);
	if (err)
		return err;
	in->max_indirect_segs = (uint32_t)v;
	return 0;
}

/* Backend Connected while we are Initialised: read the disk, go Connected, issue held I/O. */
static int bf_connect(struct blkfront *bf)
{
	struct blkfront_info in = bf->info;
	bool first = bf->info.sector_size == 0;
	int err;

	err = bf_read_disk_info(bf, &in);
	if (err) {
		log_err("d%u/%s: backend %s connected with bad disk nodes: %s", bf->domid, bf->name,
			bf->bpath, strerror(-err));
		return err;
	}
	if (!first && in.sector_size != bf->info.sector_size) {
		/* Held requests were aligned for the old size; the disk changed under us. */
		log_err("d%u/%s: sector size changed from %u to %u across a reconnect", bf->domid,
			bf->name, bf->info.sector_size, in.sector_size);
		return -EPROTO;
	}
	if (!first && in.sectors != bf->info.sectors)
		log_info("d%u/%s: capacity %" PRIu64 " -> %" PRIu64 " sectors after reconnect",
			 bf->domid, bf->name, bf->info.sectors, in.sectors);
	/* Indirect descriptors and persistent grants: both ends must want them. */
	in.indirect_segs = bf->opts.indirect_segs;
	if (in.indirect_segs > in.max_indirect_segs)
		in.indirect_segs = in.max_indirect_segs;
	if (in.indirect_segs > BLKFRONT_MAX_SEGS)
		in.indirect_segs = BLKFRONT_MAX_SEGS;
	if (in.indirect_segs <= BF_NSEG)
		in.indirect_segs = 0;
	in.persistent = bf->opts.persistent && in.backend_persistent;
	for (unsigned int i = 0; i < bf->nr_rings; i++) {
		err = bf_ring_extras(bf, &bf->rings[i], in.indirect_segs, in.persistent);
		if (err) {
			log_warn("d%u/%s: no memory or grants for indirect descriptors / persistent "
				 "grants (%s); using neither",
				 bf->domid, bf->name, hv_strerror(err));
			for (unsigned int j = 0; j <= i; j++)
				bf_ring_extras_free(bf, &bf->rings[j]);
			in.indirect_segs = 0;
			in.persistent = false;
			break;
		}
	}
	err = bf_set_state(bf, XenbusStateConnected);
	if (err)
		return err;
	if (!first)
		in.reconnects++;
	{
		uint64_t old = bf->info.sectors;

		bf->info = in;
		bf->connected = true;
		if (!first && old != in.sectors && bf->opts.resized)
			bf->opts.resized(bf->opts.arg, old, in.sectors);
	}
	log_info("d%u/%s: connected: %" PRIu64 " sectors of 512 B, sector size %u, %u queue(s) of "
		 "%u slots, %u segments per request%s%s%s%s",
		 bf->domid, bf->name, in.sectors, in.sector_size, in.nr_queues, in.ring_slots,
		 in.indirect_segs ? in.indirect_segs : BF_NSEG,
		 in.indirect_segs ? " (indirect)" : "", in.persistent ? ", persistent grants" : "",
		 in.flush ? ", flush" : "", in.discard ? ", discard" : "");
	bf_dispatch(bf);
	return blkfront_kick(bf);
}

/* Backend Connected while we are Connected: the backend re-wrote state to announce a resize. */
static void bf_check_resize(struct blkfront *bf)
{
	uint64_t sectors, old = bf->info.sectors;

	if (bf_read_u64(bf, bf->bpath, "sectors", 0, UINT64_MAX / 512, &sectors) ||
	    sectors == old)
		return;
	bf->info.sectors = sectors;
	log_info("d%u/%s: setting capacity to %" PRIu64 " sectors (was %" PRIu64 ")", bf->domid,
		 bf->name, sectors, old);
	if (bf->opts.resized)
		bf->opts.resized(bf->opts.arg, old, sectors);
}

/*
 * Backend Closing: stop sending and go Closed, as Linux blkfront does. The rings stay up and
 * are still reaped: the backend finishes what it has in flight before it unmaps them and says
 * Closed (only then can the grants be ended); what it did not finish is issued again later.
 */
static int bf_closing(struct blkfront *bf)
{
	bf->connected = false;
	if (bf->fstate == XenbusStateClosed || bf->fstate == XenbusStateInitialising)
		return 0;
	return bf_set_state(bf, XenbusStateClosed);
}

static int bf_backend_changed(struct blkfront *bf)
{
	int bstate = bf_backend_state(bf);
	int err = 0;

	if (bf->failed)
		return bf->failed;
	switch (bstate) {
	case XenbusStateInitWait:
		/* Our keys are published; a second InitWait event must not set up rings twice
		 * (Linux a9b54bb9). */
		if (bf->fstate == XenbusStateInitialised)
			break;
		/*
		 * InitWait while we are Connected: a backend that died without closing was started
		 * again. It finds us Connected and attaches to the live ring where it stands
		 * (Linux blkback's restart model, and blkbackd's), answering what its predecessor
		 * left unanswered. Tearing the ring down now would race with that attach (it may
		 * already have read our keys) and leave each side on a different ring; like Linux
		 * blkfront we keep it and wait. A backend that wants a fresh handshake closes
		 * first, which the Closing/Closed cases handle.
		 */
		if (bf->fstate == XenbusStateConnected) {
			log_info("d%u/%s: backend restarted; keeping the ring for it to reattach",
				 bf->domid, bf->name);
			break;
		}
		bf_rings_down(bf);
		err = bf_talk_to_backend(bf);
		break;
	case XenbusStateConnected:
		if (bf->fstate == XenbusStateInitialised)
			err = bf_connect(bf);
		else if (bf->fstate == XenbusStateConnected)
			bf_check_resize(bf);
		else if (bf->fstate == XenbusStateUnknown)
			err = bf_set_state(bf, XenbusStateClosed); /* a stale connection: reset it */
		break;
	case XenbusStateInitialised:
		if (bf->fstate == XenbusStateUnknown)
			err = bf_set_state(bf, XenbusStateClosed);
		break;
	case XenbusStateClosing:
		err = bf_closing(bf);
		break;
	case XenbusStateClosed:
		/* Linux blkback goes back to InitWait when a closed frontend says Initialising:
		 * that is how we ask a backend that closed (or a new one) to serve us again. */
		bf_rings_down(bf);
		if (bf->fstate != XenbusStateInitialising)
			err = bf_set_state(bf, XenbusStateInitialising);
		break;
	case -1:
		/* No backend node: either being created, or the vbd is being removed. */
		if (bf->rings_up)
			bf_rings_down(bf);
		if (!bf_frontend_exists(bf, XBT_NULL))
			err = -ENODEV;
		break;
	default:
		break;
	}
	if (err == -ENODEV) {
		log_info("d%u/%s: device detached", bf->domid, bf->name);
		bf_fail_all(bf, -ENODEV);
	} else if (err) {
		log_err("d%u/%s: handshake step failed (backend state %d): %s", bf->domid,
			bf->name, bstate, strerror(-err));
	}
	return err;
}

/* Drain xenstore watch events; returns 1 if any fired, 0 if none, or -errno. */
static int bf_drain_watches(struct blkfront *bf)
{
	int fired = 0;
	char **vec;

	while ((vec = xs_check_watch(bf->xs)) != NULL) {
		free(vec);
		fired = 1;
	}
	if (errno != EAGAIN)
		return -(errno ? errno : EIO);
	return fired;
}

/* Take every fired port (masked as it fires) and unmask it; the rings are checked anyway. */
static int bf_drain_evtchn(struct blkfront *bf)
{
	evtchn_port_t port;
	int ret;

	while ((ret = hv_evtchn_pending(bf->evt, &port)) == 1)
		hv_evtchn_unmask(bf->evt, port); /* before reaping: a later push signals again */
	return ret;
}

/* Wait up to @ms for any event and drain xenstore and event-channel notices (no reaping). */
static int bf_wait_notices(struct blkfront *bf, int ms)
{
	struct pollfd pfd = { .fd = bf->epfd, .events = POLLIN };
	int ret = poll(&pfd, 1, ms);

	if (ret < 0 && errno != EINTR)
		return -errno;
	ret = bf_drain_watches(bf);
	if (ret < 0)
		return ret;
	ret = bf_drain_evtchn(bf);
	return ret < 0 ? ret : 0;
}

int blkfront_process(struct blkfront *bf)
{
	int done = 0, ret;

	if (bf->failed)
		return bf->failed;
	ret = bf_drain_watches(bf);
	if (ret > 0)
		ret = bf_backend_changed(bf);
	if (ret < 0)
		goto fatal;
	ret = bf_drain_evtchn(bf);
	if (ret < 0)
		goto fatal;
	if (bf->rings_up) {
		for (unsigned int i = 0; i < bf->nr_rings; i++)
			done += bf_reap_ring(bf, &bf->rings[i]);
		if (bf->failed) {
			ret = bf->failed;
			bf->failed = 0;
			goto fatal;
		}
		bf_dispatch(bf);
		ret = blkfront_kick(bf);
		if (ret)
			goto fatal;
	}
	return done;

fatal:
	/*
	 * A lost xenstore or event-channel connection, a handshake that cannot complete, or a
	 * backend that broke the ring: nothing outstanding can finish any more. Complete it all
	 * with the error, so the caller is never left waiting for callbacks that will not come.
	 */
	if (!bf->failed) {
		if (ret != -ENODEV)
			log_err("d%u/%s: device failed: %s", bf->domid, bf->name, strerror(-ret));
		bf_fail_all(bf, ret);
	}
	return bf->failed;
}

int blkfront_fail(struct blkfront *bf, int err)
{
	unsigned int before = bf->inflight;

	if (err >= 0)
		err = -ECANCELED;
	if (!bf->failed) {
		log_warn("d%u/%s: giving up on %u outstanding requests (%s)", bf->domid, bf->name,
			 bf->inflight, strerror(-err));
		bf_fail_all(bf, err);
	}
	return (int)(before - bf->inflight);
}

int blkfront_wait(struct blkfront *bf, int timeout_ms)
{
	struct pollfd pfd = { .fd = bf->epfd, .events = POLLIN };
	int n = poll(&pfd, 1, timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	if (n == 0)
		return 0;
	return blkfront_process(bf);
}

/*
 * ---- open / close ----
 */

/* Run the state machine until @pred holds, with a deadline that restarts on each step. */
static int bf_run_until(struct blkfront *bf, bool (*pred)(struct blkfront *), int timeout_ms)
{
	enum xenbus_state seen = bf->fstate;
	uint64_t deadline = util_now_ns() + (uint64_t)timeout_ms * 1000000;

	for (;;) {
		uint64_t now = util_now_ns();
		int ret;

		ret = bf_backend_changed(bf);
		if (ret)
			return ret;
		if (pred(bf))
			return 0;
		if (bf->fstate != seen) {
			seen = bf->fstate;
			deadline = now + (uint64_t)timeout_ms * 1000000;
		}
		if (now >= deadline)
			return -ETIMEDOUT;
		ret = bf_wait_notices(bf, (int)((deadline - now + 999999) / 1000000));
		if (ret < 0)
			return ret;
	}
}

static bool bf_is_connected(struct blkfront *bf)
{
	return bf->connected;
}

static void bf_free(struct blkfront *bf)
{
	bf_rings_down(bf);
	if (bf->xs) {
		xs_unwatch(bf->xs, bf->watch_path, "bf");
		xs_close(bf->xs);
	}
	if (bf->evt)
		hv_evtchn_close(bf->evt);
	if (bf->epfd >= 0)
		close(bf->epfd);
	for (unsigned int i = 0; i < bf->gpool_n; i++)
		hv_guest_free_gref(bf->hv, bf->gpool[i]);
	free(bf->gpool);
	free(bf->ureqs);
	free(bf);
}

int blkfront_open(struct blkfront **out, struct hv *hv, const char *vdev,
		  const struct blkfront_opts *opts)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct blkfront *bf;
	uint64_t bid;
	unsigned int len;
	char path[BF_PATH + 16];
	char *s;
	int err;

	if (!opts || !opts->done || opts->queues > BLKFRONT_MAX_QUEUES * 64 || !vdev ||
	    strlen(vdev) >= sizeof(bf->name))
		return -EINVAL;
	bf = calloc(1, sizeof(*bf));
	if (!bf)
		return -ENOMEM;
	bf->epfd = -1;
	bf->hv = hv;
	bf->opts = *opts;
	if (bf->opts.timeout_ms <= 0)
		bf->opts.timeout_ms = BF_TIMEOUT_MS_DEFAULT;
	snprintf(bf->name, sizeof(bf->name), "%s", vdev);
	bf->domid = hv_domid(hv);
	bf->fstate = XenbusStateUnknown;
	err = blkfront_vdev_to_devid(vdev, &bf->devid);
	if (err)
		goto out;
	bf->info.devid = bf->devid;
	bf->mem = hv_guest_mem(hv, &bf->mem_len);
	if (!bf->mem) {
		err = -ENXIO;
		goto out;
	}

	/* The request pool: as many as the largest rings could hold, within reason. */
	bf->nr_ureqs = (1u << BLKFRONT_MAX_RING_ORDER) * 32u * (opts->queues ? opts->queues : 1);
	if (bf->nr_ureqs > BF_MAX_UREQS)
		bf->nr_ureqs = BF_MAX_UREQS;
	bf->ureqs = calloc(bf->nr_ureqs, sizeof(*bf->ureqs));
	if (!bf->ureqs) {
		err = -ENOMEM;
		goto out;
	}
	for (unsigned int i = bf->nr_ureqs; i-- > 0;) {
		bf->ureqs[i].next = bf->free_ureqs;
		bf->free_ureqs = &bf->ureqs[i];
	}

	bf->xs = hv_xs_open(hv);
	if (!bf->xs) {
		err = -(errno ? errno : ECONNREFUSED);
		goto out;
	}
	err = hv_evtchn_open(hv, &bf->evt);
	if (err)
		goto out;

	snprintf(bf->fpath, sizeof(bf->fpath), "/local/domain/%u/device/vbd/%u", bf->domid,
		 bf->devid);
	snprintf(path, sizeof(path), "%s/backend", bf->fpath);
	s = xs_read(bf->xs, XBT_NULL, path, &len);
	if (!s) {
		err = errno == ENOENT ? -ENOENT : -(errno ? errno : EIO);
		if (err == -ENOENT)
			log_err("d%u/%s: no such virtual device (%s missing)", bf->domid, vdev,
				bf->fpath);
		goto out;
	}
	if (len == 0 || len >= sizeof(bf->bpath) || s[0] != '/' || memchr(s, 0, len)) {
		free(s);
		err = -EPROTO;
		goto out;
	}
	memcpy(bf->bpath, s, len);
	bf->bpath[len] = 0;
	free(s);
	err = bf_read_u64(bf, bf->fpath, "backend-id", 0, DOMID_FIRST_RESERVED - 1, &bid);
	if (err)
		goto out;
	bf->info.backend_id = (domid_t)bid;

	bf->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (bf->epfd < 0) {
		err = -errno;
		goto out;
	}
	ev.data.u32 = 0;
	if (epoll_ctl(bf->epfd, EPOLL_CTL_ADD, hv_evtchn_fd(bf->evt), &ev)) {
		err = -errno;
		goto out;
	}
	ev.data.u32 = 1;
	if (epoll_ctl(bf->epfd, EPOLL_CTL_ADD, xs_fileno(bf->xs), &ev)) {
		err = -errno;
		goto out;
	}
	snprintf(bf->watch_path, sizeof(bf->watch_path), "%s/state", bf->bpath);
	if (!xs_watch(bf->xs, bf->watch_path, "bf")) {
		err = -(errno ? errno : EIO);
		goto out;
	}

	err = bf_run_until(bf, bf_is_connected, bf->opts.timeout_ms);
	if (err) {
		if (err == -ETIMEDOUT)
			log_err("d%u/%s: backend %s did not connect within %d ms (state %d)",
				bf->domid, vdev, bf->bpath, bf->opts.timeout_ms,
				bf_backend_state(bf));
		goto out;
	}
	*out = bf;
	return 0;

out:
	if (bf->fstate == XenbusStateInitialised || bf->fstate == XenbusStateConnected)
		bf_set_state(bf, XenbusStateClosed);
	bf_free(bf);
	return err;
}

static bool bf_backend_closed(struct blkfront *bf)
{
	int st = bf_backend_state(bf);

	return st == XenbusStateClosed || st < 0;
}

static bool bf_backend_closing(struct blkfront *bf)
{
	int st = bf_backend_state(bf);

	return st == XenbusStateClosing || st == XenbusStateClosed || st < 0;
}

static bool bf_drained(struct blkfront *bf)
{
	return bf->inflight == 0 || !bf->connected;
}

/* Process until @pred holds or @timeout_ms passes (a bound, not a synchronisation). */
static void bf_process_until(struct blkfront *bf, bool (*pred)(struct blkfront *), int timeout_ms)
{
	uint64_t deadline = util_now_ns() + (uint64_t)timeout_ms * 1000000;

	blkfront_kick(bf);
	while (!pred(bf) && !bf->failed) {
		uint64_t now = util_now_ns();

		if (now >= deadline)
			break;
		if (blkfront_wait(bf, (int)((deadline - now + 999999) / 1000000)) < 0)
			break;
	}
}

void blkfront_close(struct blkfront *bf)
{
	if (!bf)
		return;
	if (bf->connected)
		bf_process_until(bf, bf_drained, bf->opts.timeout_ms);
	if (!bf->failed && bf->rings_up) {
		/* Closing, then Closed once the backend mirrored it, as Linux blkfront does on
		 * removal; the backend unmaps the ring before it reports Closed. Writing the state
		 * directly (not through the state machine) keeps a Closed backend from being asked
		 * to reconnect. */
		bf->connected = false;
		if (!bf_set_state(bf, XenbusStateClosing)) {
			uint64_t deadline = util_now_ns() + (uint64_t)bf->opts.timeout_ms * 1000000;

			while (!bf_backend_closing(bf) && util_now_ns() < deadline)
				if (bf_wait_notices(bf, 100) < 0)
					break;
			if (!bf_set_state(bf, XenbusStateClosed)) {
				while (!bf_backend_closed(bf) && util_now_ns() < deadline)
					if (bf_wait_notices(bf, 100) < 0)
						break;
			}
		}
	}
	bf_fail_all(bf, -ENODEV);
	bf_free(bf);
}

/*
 * ---- getters ----
 */

void blkfront_info(const struct blkfront *bf, struct blkfront_info *info)
{
	*info = bf->info;
}

const char *blkfront_name(const struct blkfront *bf)
{
	return bf->name;
}

int blkfront_fd(const struct blkfront *bf)
{
	return bf->epfd;
}

bool blkfront_has_responses(const struct blkfront *bf)
{
	if (!bf->rings_up)
		return false;
	for (unsigned int i = 0; i < bf->nr_rings; i++) {
		const struct bf_ring *r = &bf->rings[i];

		/* The backend moves rsp_prod concurrently: one relaxed load, no ordering needed
		 * here since blkfront_process() reads it again behind its own barrier. */
		if (__atomic_load_n(&r->fr.sring->rsp_prod, __ATOMIC_RELAXED) != r->fr.rsp_cons)
			return true;
	}
	return false;
}

unsigned int blkfront_inflight(const struct blkfront *bf)
{
	return bf->inflight;
}

bool blkfront_connected(const struct blkfront *bf)
{
	return bf->connected;
}

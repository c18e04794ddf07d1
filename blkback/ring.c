/*
 * ring.c - one shared ring: its thread, its request pool and the request path.
 *
 * A pass over the ring (bb_ring_pass) reaps target completions and turns them into responses,
 * resubmits what waited for room in the target queue, then consumes new requests: copy the slot
 * once, validate the copy, map the data pages' grants in one batch, point the iovecs at the
 * mapped guest pages (no bounce buffer), queue the I/O. The whole pass is sent to the target
 * with one commit, and the responses are published with one push, notifying the frontend only
 * when its rsp_event asks for it. Before sleeping, RING_FINAL_CHECK_FOR_REQUESTS sets req_event
 * so the frontend's next request wakes us (the lost-wakeup race ring.h describes).
 *
 * The request pool has one entry per ring slot, allocated at connect; RING_REQUEST_CONS_OVERFLOW
 * keeps consumption within it, so the data path never allocates. A full target queue is
 * backpressure: the request waits in the deferred list (counted in oo_req) and nothing more is
 * consumed until it has gone out.
 *
 * QoS (qos/qos.h, docs/qos.md): before a request's first step goes to the target, the vbd's
 * scheduler admits it. A refusal is the same backpressure as a full target queue: the request
 * waits at the head of the deferred list (not counted in oo_req) and the ring consumes nothing
 * more until the scheduler's wake callback (wake_efd) or its retry time (timer_fd) lets it go.
 * The guest sees a slower disk; nothing is dropped or reordered. With a simulated device
 * (--sim-device) each admitted request is also booked on it, and its response is held until
 * the simulated completion time even when the real I/O finished earlier.
 */
#define LOG_TAG "blkback"
#include "blkback/blkback_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "qos/simdev.h"

/*
 * ---- The hypervisor seams (hv.h) ----
 */

static int hv_ops_map(struct bb_ring *r, uint32_t count, const grant_ref_t *refs, unsigned prot,
		      void **addrs, int *status)
{
	return hv_gnttab_map_pages(r->gnt, r->domid, count, refs, prot, addrs, status);
}

static void hv_ops_unmap(struct bb_ring *r, uint32_t count, const grant_ref_t *refs,
			 unsigned prot, void *const *addrs)
{
	int rc = hv_gnttab_unmap_pages(r->gnt, r->domid, count, refs, prot, addrs);

	if (rc < 0)
		LOG_RATELIMITED(&r->rl, LOG_LVL_ERR, "%s: unmapping %u guest pages failed: %s",
				r->name, count, hv_strerror(rc));
}

static void hv_ops_notify(struct bb_ring *r)
{
	int rc = hv_evtchn_notify(r->evt, r->port);

	if (rc < 0)
		LOG_RATELIMITED(&r->rl, LOG_LVL_ERR, "%s: event channel notify failed: %s",
				r->name, hv_strerror(rc));
}

const struct bb_ring_ops bb_ring_hv_ops = {
	.map = hv_ops_map,
	.unmap = hv_ops_unmap,
	.notify = hv_ops_notify,
};

/*
 * ---- Persistent grants ----
 *
 * With feature-persistent negotiated the frontend keeps granting the same pages, so a mapping
 * is kept after its request completes and found again by grant ref. Entries in use by requests
 * in flight are pinned (users > 0); unused ones sit on an LRU list, least recently used first.
 * The cache holds at most pg_max entries: a new grant then takes the place of the least
 * recently used unused one, or, when every entry is in use, is mapped for its request only.
 * Entries unused for BB_PGNT_UNUSED_NS are unmapped (Linux blkback's rule), so an idle guest
 * gets its pages back. Persistent mappings are always read-write, as Linux maps them: the
 * frontend grants those pages read-write.
 */

static void ring_unmap_set(struct bb_ring *r, uint32_t n, const grant_ref_t *refs, unsigned prot,
			   void **pages, struct bb_pgnt **pgnts);

static unsigned pg_bucket(const struct bb_ring *r, grant_ref_t ref)
{
	return (ref * 2654435761u) & r->pg_mask; /* Knuth's multiplicative hash */
}

static struct bb_pgnt *pg_find(const struct bb_ring *r, grant_ref_t ref)
{
	for (struct bb_pgnt *e = r->pg_hash[pg_bucket(r, ref)]; e; e = e->hnext)
		if (e->ref == ref)
			return e;
	return NULL;
}

static void pg_lru_remove(struct bb_ring *r, struct bb_pgnt *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		r->lru_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		r->lru_tail = e->prev;
	e->prev = e->next = NULL;
}

static void pg_lru_push_tail(struct bb_ring *r, struct bb_pgnt *e)
{
	e->next = NULL;
	e->prev = r->lru_tail;
	if (r->lru_tail)
		r->lru_tail->next = e;
	else
		r->lru_head = e;
	r->lru_tail = e;
}

/* Unmap an unused entry and return it to the free list. */
static void pg_evict(struct bb_ring *r, struct bb_pgnt *e)
{
	struct bb_pgnt **pp = &r->pg_hash[pg_bucket(r, e->ref)];

	pg_lru_remove(r, e);
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	r->ops->unmap(r, 1, &e->ref, HV_PROT_READ | HV_PROT_WRITE, &e->addr);
	e->addr = NULL;
	e->next = r->pg_free;
	r->pg_free = e;
	r->pg_count--;
}

/* A free entry: from the free list, else by evicting the least recently used unused one. */
static struct bb_pgnt *pg_alloc(struct bb_ring *r)
{
	struct bb_pgnt *e = r->pg_free;

	if (e) {
		r->pg_free = e->next;
		e->next = NULL;
		return e;
	}
	if (!r->lru_head)
		return NULL; /* every entry is in use by a request in flight */
	pg_evict(r, r->lru_head);
	e = r->pg_free;
	r->pg_free = e->next;
	e->next = NULL;
	return e;
}

/* Unmap what has not been used for BB_PGNT_UNUSED_NS (the LRU list is in last-use order). */
static void pg_purge(struct bb_ring *r, uint64_t now)
{
	while (r->lru_head && now - r->lru_head->last_ns >= BB_PGNT_UNUSED_NS)
		pg_evict(r, r->lru_head);
}

static int pg_init(struct bb_ring *r)
{
	unsigned buckets = 1;

	if (!r->pg_max)
		r->pg_max = BB_MAX_PGNT;
	while (buckets < 2 * r->pg_max)
		buckets <<= 1;
	r->pg_pool = calloc(r->pg_max, sizeof(*r->pg_pool));
	r->pg_hash = calloc(buckets, sizeof(*r->pg_hash));
	if (!r->pg_pool || !r->pg_hash)
		return -ENOMEM;
	r->pg_mask = buckets - 1;
	r->pg_free = NULL;
	for (uint32_t i = r->pg_max; i-- > 0;) {
		r->pg_pool[i].next = r->pg_free;
		r->pg_free = &r->pg_pool[i];
	}
	r->pg_count = 0;
	r->lru_head = r->lru_tail = NULL;
	return 0;
}

/* Unmap every kept grant (nothing is in flight any more). */
static void pg_fini(struct bb_ring *r)
{
	if (r->pg_pool) {
		while (r->lru_head)
			pg_evict(r, r->lru_head);
	}
	free(r->pg_pool);
	free(r->pg_hash);
	r->pg_pool = NULL;
	r->pg_hash = NULL;
	r->pg_free = NULL;
	r->pg_count = 0;
}

/*
 * Map @n grant refs for one request: kept mappings are reused, the rest mapped in one batch
 * (and kept when persistent grants are on and the cache has room). pages[i] is the address,
 * pgnts[i] the cache entry or NULL for a mapping of this request only. All or nothing: on a
 * refusal everything is released, *bad is the first refused index and its error returned.
 */
static int ring_map_set(struct bb_ring *r, uint32_t n, const grant_ref_t *refs, unsigned prot,
			void **pages, struct bb_pgnt **pgnts, uint32_t *bad)
{
	grant_ref_t mref[BB_MAX_SEGS];
	void *maddr[BB_MAX_SEGS];
	uint32_t midx[BB_MAX_SEGS];
	int *status = r->status_arena;
	uint32_t nm = 0;
	int err = 0, failed;

	for (uint32_t i = 0; i < n; i++) {
		struct bb_pgnt *e = r->persistent ? pg_find(r, refs[i]) : NULL;

		pgnts[i] = e;
		pages[i] = NULL;
		if (e) {
			if (e->users++ == 0)
				pg_lru_remove(r, e);
			pages[i] = e->addr;
			continue;
		}
		mref[nm] = refs[i];
		maddr[nm] = NULL;
		status[nm] = 0;
		midx[nm++] = i;
	}
	if (nm == 0)
		return 0;
	failed = r->ops->map(r, nm, mref, prot, maddr, status);
	for (uint32_t j = 0; j < nm; j++) {
		uint32_t i = midx[j];
		struct bb_pgnt *e;

		if (status[j] < 0 || !maddr[j]) {
			if (!err) {
				err = status[j] < 0 ? status[j] : -EIO;
				*bad = i;
			}
			continue;
		}
		pages[i] = maddr[j];
		/* A ref twice in one request is kept once; the second mapping stays private. */
		if (!r->persistent || pg_find(r, mref[j]) || !(e = pg_alloc(r)))
			continue;
		e->ref = mref[j];
		e->addr = maddr[j];
		e->users = 1;
		e->hnext = r->pg_hash[pg_bucket(r, e->ref)];
		r->pg_hash[pg_bucket(r, e->ref)] = e;
		r->pg_count++;
		pgnts[i] = e;
	}
	if (failed && !err) {
		err = failed < 0 ? failed : -EIO;
		*bad = 0;
	}
	if (err)
		ring_unmap_set(r, n, refs, prot, pages, pgnts); /* skips what did not map */
	return err;
}

/* Release what ring_map_set mapped (NULL pages are skipped): unpin kept ones, unmap the rest. */
static void ring_unmap_set(struct bb_ring *r, uint32_t n, const grant_ref_t *refs, unsigned prot,
			   void **pages, struct bb_pgnt **pgnts)
{
	grant_ref_t tref[BB_MAX_SEGS];
	void *taddr[BB_MAX_SEGS];
	uint32_t nt = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct bb_pgnt *e = pgnts[i];

		if (!pages[i])
			continue;
		if (e) {
			if (--e->users == 0) {
				e->last_ns = r->now_ns;
				pg_lru_push_tail(r, e);
			}
		} else {
			tref[nt] = refs[i];
			taddr[nt++] = pages[i];
		}
		pages[i] = NULL;
		pgnts[i] = NULL;
	}
	if (nt)
		r->ops->unmap(r, nt, tref, prot, taddr);
}

/*
 * ---- Pool ----
 */

int bb_ring_init(struct bb_ring *r)
{
	blkif_sring_t *s = r->sring;
	RING_IDX rsp_prod, req_prod;
	size_t per;
	uint32_t n;

	/*
	 * Attach where the ring stands instead of assuming a fresh one, as Linux blkback does: the
	 * frontend initialised the page, and a backend that reconnects to a live ring must continue
	 * from its current rsp_prod. A ring that claims more requests than it holds is refused.
	 */
	rsp_prod = __atomic_load_n(&s->rsp_prod, __ATOMIC_ACQUIRE);
	req_prod = __atomic_load_n(&s->req_prod, __ATOMIC_ACQUIRE);
	BACK_RING_ATTACH(&r->br, s, rsp_prod, (size_t)r->nr_pages * HV_PAGE_SIZE);
	n = RING_SIZE(&r->br);
	if (n == 0 || req_prod - rsp_prod > n)
		return -EPROTO;
	if (r->max_segs < BB_DIRECT_SEGS || r->max_segs > BB_MAX_SEGS)
		r->max_segs = BB_DIRECT_SEGS;
	per = r->max_segs;

	r->wake_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	r->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	r->timer_ns = 0;
	if (r->wake_efd < 0 || r->timer_fd < 0) {
		int err = -errno;

		bb_ring_fini(r);
		return err;
	}
	r->nr_reqs = n;
	r->reqs = calloc(n, sizeof(*r->reqs));
	r->gref_arena = calloc((size_t)n * per, sizeof(*r->gref_arena));
	r->page_arena = calloc((size_t)n * per, sizeof(*r->page_arena));
	r->pgnt_arena = calloc((size_t)n * per, sizeof(*r->pgnt_arena));
	r->status_arena = calloc(BB_MAX_SEGS, sizeof(*r->status_arena));
	r->iov_arena = calloc((size_t)n * per, sizeof(*r->iov_arena));
	if (!r->reqs || !r->gref_arena || !r->page_arena || !r->pgnt_arena || !r->status_arena ||
	    !r->iov_arena || (r->persistent && pg_init(r) < 0)) {
		bb_ring_fini(r);
		return -ENOMEM;
	}
	r->free = NULL;
	for (uint32_t i = n; i-- > 0;) {
		struct bb_req *q = &r->reqs[i];

		q->ring = r;
		q->grefs = &r->gref_arena[(size_t)i * per];
		q->pages = &r->page_arena[(size_t)i * per];
		q->pgnts = &r->pgnt_arena[(size_t)i * per];
		q->iov = &r->iov_arena[(size_t)i * per];
		q->next = r->free;
		r->free = q;
	}
	r->defer_head = NULL;
	r->defer_tail = &r->defer_head;
	r->barrier = NULL;
	r->barrier_active = 0;
	r->qos_held = 0;
	r->qos_retry_ns = 0;
	r->sim_head = NULL;
	r->inflight = 0;
	r->submitted = 0;
	r->dead = 0;
	r->stopping = 0;
	r->now_ns = util_now_ns();
	r->pg_next_purge_ns = r->now_ns;
	return 0;
}

void bb_ring_fini(struct bb_ring *r)
{
	pg_fini(r);
	free(r->reqs);
	free(r->gref_arena);
	free(r->page_arena);
	free(r->pgnt_arena);
	free(r->status_arena);
	free(r->iov_arena);
	r->reqs = NULL;
	r->gref_arena = NULL;
	r->page_arena = NULL;
	r->pgnt_arena = NULL;
	r->status_arena = NULL;
	r->iov_arena = NULL;
	r->free = NULL;
	r->nr_reqs = 0;
	if (r->wake_efd >= 0)
		close(r->wake_efd);
	if (r->timer_fd >= 0)
		close(r->timer_fd);
	r->wake_efd = r->timer_fd = -1;
}

/*
 * ---- Responses ----
 */

static void ring_respond(struct bb_ring *r, uint64_t id, uint8_t op, int16_t status)
{
	struct blkif_response *rsp = RING_GET_RESPONSE(&r->br, r->br.rsp_prod_pvt);

	rsp->id = id;
	rsp->operation = op;
	rsp->status = status;
	r->br.rsp_prod_pvt++;
	if (status != BLKIF_RSP_OKAY)
		bb_cnt_add(&r->st.errors, 1);
}

static void ring_unmap_req(struct bb_ring *r, struct bb_req *q)
{
	if (q->nr_segs)
		ring_unmap_set(r, q->nr_segs, q->grefs, q->prot, q->pages, q->pgnts);
	q->nr_segs = 0;
}

/* Answer @q and return it to the pool. */
static void ring_complete(struct bb_ring *r, struct bb_req *q, int status)
{
	if (q->qos_admitted) {
		/*
		 * The vbd's handle outlives its rings' threads (qos_daemon.c). A simulated device's
		 * completion time is known: the scheduler measures the device by it, not by when
		 * this thread got round to the response.
		 */
		qos_vbd_complete_at(r->vbd->qos, &q->qos, q->sim_done_ns);
		q->qos_admitted = 0;
	}
	q->sim_done_ns = 0;
	ring_unmap_req(r, q);
	if (status == 0) {
		uint64_t lat = util_now_ns() - q->start_ns;

		if (q->op == BLKIF_OP_READ) {
			bb_cnt_add(&r->st.rd_sect, q->nr_sect);
			bb_hist_record(&r->st.rd_lat, lat);
		} else if (q->op == BLKIF_OP_WRITE) {
			bb_cnt_add(&r->st.wr_sect, q->nr_sect);
			bb_hist_record(&r->st.wr_lat, lat);
		} else if (q->op != BLKIF_OP_DISCARD) {
			/* data carried by a flush or barrier */
			bb_cnt_add(&r->st.wr_sect, q->nr_sect);
		}
	}
	if (q->op == BLKIF_OP_WRITE_BARRIER)
		r->barrier_active = 0;
	ring_respond(r, q->id, q->op, bb_req_status(status));
	q->next = r->free;
	r->free = q;
	r->inflight--;
	bb_cnt_add(&r->st.inflight, (uint64_t)-1);
}

/*
 * ---- Submission ----
 */

static void defer_push_tail(struct bb_ring *r, struct bb_req *q)
{
	q->next = NULL;
	*r->defer_tail = q;
	r->defer_tail = &q->next;
}

static void defer_push_head(struct bb_ring *r, struct bb_req *q)
{
	q->next = r->defer_head;
	r->defer_head = q;
	if (!q->next)
		r->defer_tail = &q->next;
}

static struct bb_req *defer_pop(struct bb_ring *r)
{
	struct bb_req *q = r->defer_head;

	if (q) {
		r->defer_head = q->next;
		if (!r->defer_head)
			r->defer_tail = &r->defer_head;
		q->next = NULL;
	}
	return q;
}

static void ring_io_done(struct target_io *io, int status);

static void log_io_error(struct bb_ring *r, const struct bb_req *q, int status)
{
	char opbuf[16];

	LOG_RATELIMITED(&r->rl, LOG_LVL_ERR,
			"%s: %s of %llu sectors at %llu (id %llu) failed: %s", r->name,
			bb_op_name(q->op, opbuf, sizeof(opbuf)), (unsigned long long)q->nr_sect,
			(unsigned long long)q->sector, (unsigned long long)q->id,
			strerror(-status));
}

/* What the scheduler and the simulated device see of @q (its whole cost, at its first step). */
static void ring_qos_io(const struct bb_req *q, struct qos_io *io)
{
	io->offset_bytes = q->sector << BB_SECT_SHIFT;
	io->len_bytes = q->nr_sect << BB_SECT_SHIFT;
	switch (q->op) {
	case BLKIF_OP_READ:
		io->op = QOS_OP_READ;
		break;
	case BLKIF_OP_DISCARD:
		io->op = QOS_OP_DISCARD;
		break;
	case BLKIF_OP_WRITE:
		io->op = QOS_OP_WRITE;
		break;
	default: /* FLUSH_DISKCACHE, WRITE_BARRIER: a write when they carry data */
		io->op = q->nr_segs ? QOS_OP_WRITE : QOS_OP_FLUSH;
		if (!q->nr_segs)
			io->len_bytes = 0;
		break;
	}
}

/*
 * Ask the scheduler for @q (first step only). Returns 0 when it may go (or the vbd has no
 * scheduler), -EAGAIN when it must wait: r->qos_retry_ns says until when at the latest.
 */
static int ring_admit(struct bb_ring *r, struct bb_req *q)
{
	struct qos_vbd *qv = __atomic_load_n(&r->vbd->qos, __ATOMIC_ACQUIRE);
	struct qos_io io;
	uint64_t retry = 0;
	int rc;

	if (!qv || q->qos_admitted || q->step != 0)
		return 0;
	ring_qos_io(q, &io);
	rc = qos_vbd_admit(qv, &io, &q->qos, &retry);
	if (rc == -EAGAIN) {
		r->qos_held = 1;
		r->qos_retry_ns = retry;
		return -EAGAIN;
	}
	/* -EINVAL (an op the scheduler does not know) cannot happen: ring_qos_io maps them all. */
	q->qos_admitted = rc == 0;
	return 0;
}

/* Book @q's first step on the simulated device (after the target took it). */
static void ring_sim_book(struct bb_ring *r, struct bb_req *q)
{
	struct qos_simdev *dev = r->vbd->bb ? r->vbd->bb->simdev : NULL;
	struct qos_io io;

	if (!dev || q->step != 0 || q->sim_done_ns)
		return;
	ring_qos_io(q, &io);
	/* Each volume has its own region, so that sequential streams interleave as on one disk. */
	io.offset_bytes += (uint64_t)(r->vbd->vol ? r->vbd->vol->sim_idx : 0) << 40;
	q->sim_done_ns = qos_simdev_submit(dev, &io, NULL);
}

/*
 * Queue @q's current step. Returns 0 when it is queued or already answered (an error), or
 * -EAGAIN when the target queue is full or the scheduler holds it back (r->qos_held): the
 * caller keeps @q in the deferred list.
 */
static int ring_submit(struct bb_ring *r, struct bb_req *q)
{
	struct target_io *io = &q->tio;
	int rc;

	if (ring_admit(r, q) == -EAGAIN)
		return -EAGAIN;

	io->op = (enum target_op)q->steps[q->step];
	io->iov = NULL;
	io->iovcnt = 0;
	io->offset_bytes = 0;
	io->len_bytes = 0;
	switch (io->op) {
	case TARGET_OP_READ:
	case TARGET_OP_WRITE:
		io->iov = q->iov;
		io->iovcnt = q->nr_segs;
		/* fallthrough */
	case TARGET_OP_DISCARD:
		io->offset_bytes = q->sector << BB_SECT_SHIFT;
		io->len_bytes = q->nr_sect << BB_SECT_SHIFT;
		break;
	case TARGET_OP_FLUSH:
		break;
	}
	io->done = ring_io_done;
	io->priv = q;

	rc = target_submit(r->tq, io);
	if (rc == -EAGAIN && r->submitted) {
		/* The submission queue may be full of our own uncommitted entries: send them. */
		target_queue_commit(r->tq);
		r->submitted = 0;
		rc = target_submit(r->tq, io);
	}
	if (rc == -EAGAIN) {
		if (target_queue_inflight(r->tq) > 0) {
			/* A completion will make room; the device time was not spent. */
			if (q->qos_admitted && q->step == 0) {
				qos_vbd_cancel(r->vbd->qos, &q->qos);
				q->qos_admitted = 0;
			}
			return -EAGAIN;
		}
		rc = -EIO; /* nothing will ever make room: do not wait forever */
	}
	if (rc < 0) {
		log_io_error(r, q, rc);
		ring_complete(r, q, rc);
		return 0;
	}
	ring_sim_book(r, q);
	r->submitted++;
	return 0;
}

/* Send what waited for the target, in order, until the queue is full again. */
static void ring_run_deferred(struct bb_ring *r)
{
	struct bb_req *q;

	r->qos_held = 0;
	while ((q = defer_pop(r))) {
		if (ring_submit(r, q) == -EAGAIN) {
			defer_push_head(r, q);
			if (!r->qos_held)
				bb_cnt_add(&r->st.oo_req, 1);
			break;
		}
	}
}

/* Hold @q's response until the simulated device completes it (sim_head is sorted by time). */
static void sim_hold(struct bb_ring *r, struct bb_req *q, int status)
{
	struct bb_req **pp = &r->sim_head;

	q->sim_status = status;
	while (*pp && (*pp)->sim_done_ns <= q->sim_done_ns)
		pp = &(*pp)->next;
	q->next = *pp;
	*pp = q;
}

/* Answer the held requests whose simulated completion time has come. */
static void sim_release(struct bb_ring *r, uint64_t now)
{
	struct bb_req *q;

	while ((q = r->sim_head) && q->sim_done_ns <= now) {
		r->sim_head = q->next;
		q->next = NULL;
		ring_complete(r, q, q->sim_status);
	}
}

/* Arm timer_fd for the earlier of the scheduler's retry time and the next held response. */
static void ring_timer_update(struct bb_ring *r)
{
	struct itimerspec its = { 0 };
	uint64_t at = 0;

	if (r->qos_held && r->defer_head)
		at = r->qos_retry_ns;
	if (r->sim_head && (!at || r->sim_head->sim_done_ns < at))
		at = r->sim_head->sim_done_ns;
	if (at == r->timer_ns || r->timer_fd < 0)
		return;
	its.it_value.tv_sec = (time_t)(at / 1000000000ull);
	its.it_value.tv_nsec = (long)(at % 1000000000ull);

	/* An absolute time already past fires at once; 0 disarms. */
	if (timerfd_settime(r->timer_fd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
		LOG_RATELIMITED(&r->rl, LOG_LVL_ERR, "%s: arming the QoS timer failed: %s",
				r->name, strerror(errno));
	else
		r->timer_ns = at;
}

/* Target completion (from target_queue_poll, on the ring thread). */
static void ring_io_done(struct target_io *io, int status)
{
	struct bb_req *q = io->priv;
	struct bb_ring *r = q->ring;

	if (status == 0 && q->step + 1 < q->nsteps) {
		/* Next step of a flush-with-data or barrier: submitted after the poll returns. */
		q->step++;
		defer_push_tail(r, q);
		return;
	}
	if (status < 0)
		log_io_error(r, q, status);
	if (q->sim_done_ns && q->sim_done_ns > util_now_ns()) { /* no clock read without one */
		sim_hold(r, q, status);
		return;
	}
	ring_complete(r, q, status);
}

/*
 * ---- Consumption ----
 */

static void ring_limits(const struct bb_ring *r, struct bb_limits *lim)
{
	const struct bb_vbd *v = r->vbd;

	lim->size_sect = __atomic_load_n(&v->size_sect, __ATOMIC_ACQUIRE);
	lim->logical_block = v->logical_block;
	lim->ro = v->ro ? 1 : 0;
	lim->discard = v->feat_discard;
	lim->barrier = v->feat_barrier;
	lim->max_indirect_segs = r->max_segs > BB_DIRECT_SEGS ? r->max_segs : 0;
}

static void count_op(struct bb_ring *r, uint8_t op)
{
	switch (op) {
	case BLKIF_OP_READ:
		bb_cnt_add(&r->st.rd_req, 1);
		break;
	case BLKIF_OP_WRITE:
		bb_cnt_add(&r->st.wr_req, 1);
		break;
	case BLKIF_OP_FLUSH_DISKCACHE:
	case BLKIF_OP_WRITE_BARRIER:
		bb_cnt_add(&r->st.f_req, 1);
		break;
	case BLKIF_OP_DISCARD:
		bb_cnt_add(&r->st.ds_req, 1);
		break;
	default:
		break;
	}
}

/* Map @q's data pages in one batch; on a refusal nothing stays mapped and the error returns. */
static int ring_map_req(struct bb_ring *r, struct bb_req *q, const struct bb_parsed *p)
{
	uint32_t n = p->nr_segs, bad = 0;
	int rc;

	for (uint32_t i = 0; i < n; i++)
		q->grefs[i] = p->seg[i].gref;
	rc = ring_map_set(r, n, q->grefs, q->prot, q->pages, q->pgnts, &bad);
	if (rc < 0) {
		LOG_RATELIMITED(&r->rl, LOG_LVL_WARN,
				"%s: request id %llu: grant ref %u (segment %u) refused: %s; "
				"answered error",
				r->name, (unsigned long long)p->id, (unsigned)p->seg[bad].gref, bad,
				hv_strerror(rc));
		return rc;
	}
	for (uint32_t i = 0; i < n; i++) {
		q->iov[i].iov_base = (char *)q->pages[i] + p->seg[i].off_bytes;
		q->iov[i].iov_len = p->seg[i].len_bytes;
	}
	q->nr_segs = n;
	return 0;
}

/*
 * An INDIRECT request's segments: map its indirect pages (read-only: we only read them), copy
 * the segments once into a private array, unmap, validate the copy like direct segments.
 */
static int ring_read_indirect(struct bb_ring *r, struct bb_parsed *p, const struct bb_limits *lim,
			      const char **why)
{
	struct blkif_request_segment segs[BB_MAX_SEGS];
	void *ipages[BB_MAX_INDIRECT_PAGES];
	struct bb_pgnt *ipg[BB_MAX_INDIRECT_PAGES];
	unsigned prot = r->persistent ? HV_PROT_READ | HV_PROT_WRITE : HV_PROT_READ;
	uint32_t bad = 0;
	int rc;

	_Static_assert(sizeof(struct blkif_request_segment) == sizeof(uint64_t),
		       "a segment is copied as one word");
	rc = ring_map_set(r, p->nr_indirect, p->indirect_grefs, prot, ipages, ipg, &bad);
	if (rc < 0) {
		LOG_RATELIMITED(&r->rl, LOG_LVL_WARN,
				"%s: request id %llu: indirect page grant ref %u refused: %s",
				r->name, (unsigned long long)p->id,
				(unsigned)p->indirect_grefs[bad], hv_strerror(rc));
		*why = "an indirect page's grant was refused";
		return rc;
	}
	for (uint32_t k = 0; k < p->nr_segs; k++) {
		const volatile uint64_t *src = (const volatile uint64_t *)
			ipages[k / BB_SEGS_PER_INDIRECT_PAGE] + k % BB_SEGS_PER_INDIRECT_PAGE;
		uint64_t w = *src;

		memcpy(&segs[k], &w, sizeof(w));
	}
	ring_unmap_set(r, p->nr_indirect, p->indirect_grefs, prot, ipages, ipg);
	return bb_req_parse_segs(segs, lim, p, why);
}

/* Handle one validated-or-not request taken off the ring. */
static void ring_handle(struct bb_ring *r, const union bb_req_slot *slot,
			const struct bb_limits *lim)
{
	struct bb_parsed p; /* 2 KiB with its segments: fine on the ring thread's stack */
	struct bb_req *q;
	const char *why;
	char opbuf[16];
	int rc;

	rc = bb_req_parse(slot, lim, &p, &why);
	/* An indirect request counts as the read or write it carries. */
	if (slot->rw.operation != BLKIF_OP_INDIRECT || p.op == BLKIF_OP_READ ||
	    p.op == BLKIF_OP_WRITE)
		count_op(r, p.op);
	if (rc == 0 && p.indirect)
		rc = ring_read_indirect(r, &p, lim, &why);
	if (rc < 0) {
		LOG_RATELIMITED(&r->rl, LOG_LVL_WARN,
				"%s: bad request id %llu (%s): %s; answered %s", r->name,
				(unsigned long long)p.id, bb_op_name(p.op, opbuf, sizeof(opbuf)),
				why, rc == -EOPNOTSUPP ? "not supported" : "error");
		ring_respond(r, p.id, p.op, bb_req_status(rc));
		return;
	}
	if (p.op == BLKIF_OP_DISCARD && p.nr_sect == 0) {
		ring_respond(r, p.id, p.op, BLKIF_RSP_OKAY); /* nothing to discard */
		return;
	}

	/* Cannot be empty: consumption stops at RING_REQUEST_CONS_OVERFLOW, one entry per slot. */
	q = r->free;
	r->free = q->next;
	q->next = NULL;
	q->id = p.id;
	q->op = p.op;
	q->sector = p.sector;
	q->nr_sect = p.nr_sect;
	q->nr_segs = 0;
	q->step = 0;
	q->qos_admitted = 0;
	q->sim_done_ns = 0;
	q->start_ns = util_now_ns();
	r->inflight++;
	bb_cnt_add(&r->st.inflight, 1);

	switch (p.op) {
	case BLKIF_OP_READ:
		q->steps[0] = TARGET_OP_READ;
		q->nsteps = 1;
		/* The disk writes into the guest's page. */
		q->prot = HV_PROT_READ | HV_PROT_WRITE;
		break;
	case BLKIF_OP_WRITE:
		q->steps[0] = TARGET_OP_WRITE;
		q->nsteps = 1;
		q->prot = HV_PROT_READ;
		break;
	case BLKIF_OP_DISCARD:
		q->steps[0] = TARGET_OP_DISCARD;
		q->nsteps = 1;
		q->prot = 0;
		break;
	default: /* FLUSH_DISKCACHE, WRITE_BARRIER */
		q->prot = HV_PROT_READ;
		if (p.nr_segs == 0) {
			q->steps[0] = TARGET_OP_FLUSH;
			q->nsteps = 1;
		} else {
			/*
			 * Linux blkfront sends REQ_PREFLUSH|REQ_FUA writes as FLUSH_DISKCACHE
			 * with data: earlier writes must be stable before this one (pre-flush),
			 * and this one stable when acknowledged (post-flush).
			 */
			q->steps[0] = TARGET_OP_FLUSH;
			q->steps[1] = TARGET_OP_WRITE;
			q->steps[2] = TARGET_OP_FLUSH;
			q->nsteps = 3;
		}
		break;
	}

	if (r->persistent)
		q->prot = HV_PROT_READ | HV_PROT_WRITE; /* kept mappings serve reads and writes */
	if (p.nr_segs) {
		rc = ring_map_req(r, q, &p);
		if (rc < 0) {
			ring_complete(r, q, rc);
			return;
		}
	}
	if (p.op == BLKIF_OP_WRITE_BARRIER) {
		/* Every earlier request completes before the barrier starts (see the pass). */
		r->barrier = q;
		r->barrier_active = 1;
		return;
	}
	if (ring_submit(r, q) == -EAGAIN) {
		defer_push_tail(r, q);
		if (!r->qos_held)
			bb_cnt_add(&r->st.oo_req, 1);
	}
}

static void ring_kill(struct bb_ring *r, RING_IDX rp)
{
	struct bb_vbd *v = r->vbd;

	r->dead = 1;
	log_err("%s: frontend claims %u requests on a ring of %u (req_prod %u, rsp_prod %u): "
		"halting the ring and disconnecting",
		r->name, rp - r->br.rsp_prod_pvt, RING_SIZE(&r->br), rp, r->br.rsp_prod_pvt);
	__atomic_store_n(&v->need_disconnect, 1, __ATOMIC_RELEASE);
	if (v->bb) {
		uint64_t one = 1;

		if (write(v->bb->wake_efd, &one, sizeof(one)) < 0)
			log_err("%s: cannot wake the control thread: %s", r->name, strerror(errno));
	}
}

static void ring_consume(struct bb_ring *r)
{
	union bb_req_slot slot;
	struct bb_limits lim;
	RING_IDX rc = r->br.req_cons;
	RING_IDX rp = __atomic_load_n(&r->br.sring->req_prod, __ATOMIC_RELAXED);

	xen_rmb(); /* Ensure we see the requests up to rp after reading rp. */
	if (RING_REQUEST_PROD_OVERFLOW(&r->br, rp)) {
		ring_kill(r, rp);
		return;
	}
	ring_limits(r, &lim);
	while (rc != rp) {
		if (RING_REQUEST_CONS_OVERFLOW(&r->br, rc))
			break;
		if (r->defer_head || r->barrier_active)
			break;
		bb_req_copy(&r->br, rc, &slot);
		r->br.req_cons = ++rc;
		ring_handle(r, &slot, &lim);
	}
}

int bb_ring_pass(struct bb_ring *r)
{
	int more = 0, notify = 0;
	int stopping = __atomic_load_n(&r->stopping, __ATOMIC_ACQUIRE);

	r->now_ns = util_now_ns();
	if (r->pg_pool && r->now_ns >= r->pg_next_purge_ns) {
		pg_purge(r, r->now_ns);
		r->pg_next_purge_ns = r->now_ns + 1000000000ull;
	}

	if (r->inflight) {
		int n = target_queue_poll(r->tq, 0);

		if (n < 0)
			LOG_RATELIMITED(&r->rl, LOG_LVL_ERR, "%s: reaping completions failed: %s",
					r->name, strerror(-n));
	}
	/* A barrier starts once it is the only request left in flight. */
	if (r->barrier && r->inflight == 1) {
		defer_push_tail(r, r->barrier);
		r->barrier = NULL;
	}
	if (r->sim_head)
		sim_release(r, r->now_ns);
	ring_run_deferred(r);
	if (!stopping && !r->dead)
		ring_consume(r);
	if (r->submitted) {
		int n = target_queue_commit(r->tq);

		if (n < 0)
			LOG_RATELIMITED(&r->rl, LOG_LVL_ERR,
					"%s: submitting to the target failed: %s", r->name,
					strerror(-n));
		r->submitted = 0;
	}

	RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&r->br, notify);
	if (notify)
		r->ops->notify(r);
	ring_timer_update(r);

	if (stopping || r->dead || r->defer_head || r->barrier_active)
		return 0; /* woken by a completion, not by the frontend */
	RING_FINAL_CHECK_FOR_REQUESTS(&r->br, more);
	return more ? 1 : 0;
}

/*
 * ---- Thread ----
 */

static void ring_drain_evtchn(struct bb_ring *r)
{
	evtchn_port_t port;
	int rc;

	while ((rc = hv_evtchn_pending(r->evt, &port)) > 0) {
		rc = hv_evtchn_unmask(r->evt, port);
		if (rc < 0)
			LOG_RATELIMITED(&r->rl, LOG_LVL_ERR, "%s: unmask of port %u failed: %s",
					r->name, port, hv_strerror(rc));
	}
	if (rc < 0)
		LOG_RATELIMITED(&r->rl, LOG_LVL_ERR, "%s: event channel failed: %s", r->name,
				hv_strerror(rc));
}

/*
 * Adaptive polling: before sleeping, look for work for up to poll_ns, without a system call
 * for new requests (req_prod is in shared memory) and with a zero-timeout poll for target
 * completions. At low queue depth this saves the two wake-ups of a round trip (the frontend's
 * kick and the completion's eventfd); it costs CPU, so it is off unless asked for. Returns 1
 * when work showed up.
 */
static int ring_spin(struct bb_ring *r, struct pollfd *tq)
{
	uint64_t end = util_now_ns() + r->poll_ns;

	do {
		if (!r->dead && !r->defer_head && !r->barrier_active &&
		    __atomic_load_n(&r->br.sring->req_prod, __ATOMIC_ACQUIRE) != r->br.req_cons)
			return 1;
		if (r->inflight && poll(tq, 1, 0) == 1)
			return 1;
		if (r->sim_head && r->sim_head->sim_done_ns <= util_now_ns())
			return 1;
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	} while (util_now_ns() < end);
	return 0;
}

static void *ring_thread(void *arg)
{
	struct bb_ring *r = arg;
	struct pollfd pfd[5];

	/*
	 * A simulated device completes at exact times: without this the kernel may fire the ring's
	 * timer up to 50 us late (the default timer slack), which would add to every simulated
	 * latency and to what the scheduler measures as the device's.
	 */
	if (r->vbd->bb && r->vbd->bb->simdev && prctl(PR_SET_TIMERSLACK, 1000ul) < 0)
		log_warn("%s: cannot tighten the timer slack: %s", r->name, strerror(errno));
	r->start_rc = target_queue_open(r->target, r->nr_reqs, &r->tq);
	sem_post(&r->ready);
	if (r->start_rc < 0)
		return NULL;

	pfd[0].fd = hv_evtchn_fd(r->evt);
	pfd[0].events = POLLIN;
	pfd[1].fd = target_queue_fd(r->tq);
	pfd[1].events = POLLIN;
	pfd[2].fd = r->stop_efd;
	pfd[2].events = POLLIN;
	pfd[3].fd = r->wake_efd;
	pfd[3].events = POLLIN;
	pfd[4].fd = r->timer_fd;
	pfd[4].events = POLLIN;

	/* A frontend may have queued requests and kicked before we were bound. */
	for (;;) {
		int more = bb_ring_pass(r);

		if (__atomic_load_n(&r->stopping, __ATOMIC_ACQUIRE) && r->inflight == 0)
			break;
		if (more > 0)
			continue;
		if (r->poll_ns && !__atomic_load_n(&r->stopping, __ATOMIC_ACQUIRE) &&
		    ring_spin(r, &pfd[1]))
			continue;
		/* Wake once a second while kept grants may need purging. */
		if (poll(pfd, 5, r->pg_count ? 1000 : -1) < 0) {
			if (errno == EINTR)
				continue;
			log_err("%s: poll failed: %s", r->name, strerror(errno));
			break;
		}
		if (pfd[0].revents & (POLLIN | POLLERR | POLLHUP))
			ring_drain_evtchn(r);
		/*
		 * A target can signal its fd after the pass already reaped the completion it was
		 * for; with nothing in flight the pass does not poll the target, so clear it here
		 * or this loop would spin until the guest's next request.
		 */
		if ((pfd[1].revents & POLLIN) && !r->inflight)
			target_queue_poll(r->tq, 0);
		for (int k = 2; k < 5; k++) {
			uint64_t v;

			if ((pfd[k].revents & POLLIN) && read(pfd[k].fd, &v, sizeof(v)) < 0 &&
			    errno != EAGAIN)
				log_err("%s: reading a wake-up fd: %s", r->name, strerror(errno));
		}
		if (pfd[4].revents & POLLIN)
			r->timer_ns = 0; /* fired: re-armed by the next pass if still needed */
	}
	/* A failed poll above leaves requests in flight: close waits for them (target.h). */
	while (r->inflight && target_queue_inflight(r->tq) > 0) {
		if (target_queue_poll(r->tq, 1) < 0)
			break;
		RING_PUSH_RESPONSES(&r->br);
	}
	sim_release(r, UINT64_MAX); /* held responses of a failed poll: answer them now */
	RING_PUSH_RESPONSES(&r->br);
	target_queue_close(r->tq);
	r->tq = NULL;
	return NULL;
}

int bb_ring_start(struct bb_ring *r)
{
	sigset_t all, old;
	int rc;

	r->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->stop_efd < 0)
		return -errno;
	if (sem_init(&r->ready, 0, 0) < 0) {
		rc = -errno;
		goto err_efd;
	}
	__atomic_store_n(&r->stopping, 0, __ATOMIC_RELAXED);
	/* Signals (SIGTERM) belong to the control thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = -pthread_create(&r->thread, NULL, ring_thread, r);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc < 0)
		goto err_sem;
	while (sem_wait(&r->ready) < 0 && errno == EINTR)
		;
	if (r->start_rc < 0) {
		rc = r->start_rc;
		pthread_join(r->thread, NULL);
		goto err_sem;
	}
	r->thread_running = 1;
	return 0;

err_sem:
	sem_destroy(&r->ready);
err_efd:
	close(r->stop_efd);
	r->stop_efd = -1;
	return rc;
}

void bb_ring_stop(struct bb_ring *r)
{
	uint64_t one = 1;

	if (!r->thread_running)
		return;
	__atomic_store_n(&r->stopping, 1, __ATOMIC_RELEASE);
	if (write(r->stop_efd, &one, sizeof(one)) < 0)
		log_err("%s: cannot wake the ring thread: %s", r->name, strerror(errno));
	pthread_join(r->thread, NULL);
	r->thread_running = 0;
	sem_destroy(&r->ready);
	close(r->stop_efd);
	r->stop_efd = -1;
}

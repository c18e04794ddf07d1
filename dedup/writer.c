/*
 * writer.c - the writer thread: the store's only LMDB writer.
 *
 * Callers' threads queue prepared writes, discards and flushes (their container data already
 * written); the writer takes everything queued (up to group_max_blk blocks) as one group:
 *
 *   1. fdatasync every container the group wrote new blocks into,
 *   2. apply the whole group in one LMDB write transaction and commit it (one fdatasync of the
 *      index, see NOMETASYNC in store.c),
 *   3. if the group holds flushes, sync the index's meta page too,
 *   4. complete every request to its context's queue.
 *
 * So data is durable before any committed index state points at it, commits are one per group
 * (however many requests and rings fed it), and a request completes only once committed. While
 * the writer commits one group the next one accumulates: the group size follows the load.
 *
 * Between groups the writer runs admin operations (volume changes, gc, fsck) and, when idle,
 * background work: the reclaim queue and the automatic collector.
 */
#define LOG_TAG "dedup"
#include "common/log.h"
#include "dedup/dedup_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RQ_SLICE 4096      /* reclaim items per background transaction */
#define RQ_BACKLOG 65536   /* above this, reclaim also runs between busy groups */
#define RQ_BUSY_SLICE 1024

struct wstate {
	struct wtx w;
	uint64_t rq_len;  /**< items in the reclaim queue */
	int bg_more;      /**< background work may be possible */
	struct dedup_req **batch;
	size_t cap_batch;
	struct ctr **syncs;
	size_t cap_syncs;
};

static const uint8_t zero_hash[HASH_BYTES];

/* ---- completions --------------------------------------------------------------------------- */

void req_release_ctrs(struct dedup_req *r)
{
	for (uint64_t i = 0; i < r->nr_blk && r->kind == REQ_WRITE; i++) {
		if (r->blk[i].ctr) {
			atomic_fetch_sub_explicit(&r->blk[i].ctr->inflight, 1, memory_order_release);
			r->blk[i].ctr = NULL;
		}
	}
}

void req_complete(struct dedup_req *r, int status)
{
	struct dedup_ctx *c = r->ctx;
	uint64_t one = 1;
	int was_empty;

	req_release_ctrs(r);
	pthread_mutex_lock(&c->lock);
	r->status = status;
	r->state = RS_DONE;
	r->next = NULL;
	was_empty = !c->done_head;
	if (c->done_tail)
		c->done_tail->next = r;
	else
		c->done_head = r;
	c->done_tail = r;
	/* The eventfd counts "queue became non-empty": reap drains the queue and clears it. */
	if (was_empty && write(c->efd, &one, sizeof(one)) < 0)
		log_err("eventfd write: %m");
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

void writer_enqueue(struct dedup_store *s, struct dedup_req *r)
{
	pthread_mutex_lock(&s->wq_lock);
	r->state = RS_QUEUED;
	r->next = NULL;
	if (s->wq_tail)
		s->wq_tail->next = r;
	else
		s->wq_head = r;
	s->wq_tail = r;
	pthread_cond_signal(&s->wq_cond);
	pthread_mutex_unlock(&s->wq_lock);
}

/* ---- transactions with map growth ---------------------------------------------------------- */

int writer_txn(struct dedup_store *s, int (*fn)(struct wtx *w, void *arg), void *arg)
{
	struct wtx *w = &s->w->w;
	int rc;

	for (;;) {
		rc = wtx_begin(s, w);
		if (rc)
			return rc;
		rc = fn(w, arg);
		if (rc == 0)
			rc = wtx_commit(w);
		else
			wtx_abort(w);
		if (rc == 0) {
			s->w->rq_len += (uint64_t)w->rq_delta;
			s->w->bg_more = 1;
			return 0;
		}
		/* MDB_MAP_FULL: remap larger and redo the whole transaction */
		if (rc != -ENOSPC || dedup_map_grow(s))
			return rc;
	}
}

/* ---- applying requests --------------------------------------------------------------------- */

static int apply_write(struct wtx *w, struct dedup_req *r, int *st)
{
	struct wvol *wv;
	struct vol_rec *vr;
	int rc;

	rc = wvol_get(w, r->vol->name, &wv);
	if (rc)
		return rc;
	vr = &wv->rec;
	if (!wv->exists || wv->deleted) {
		*st = -ENOENT;
		return 0;
	}
	if (vr->flags & VOL_READONLY) {
		*st = -EROFS;
		return 0;
	}
	if (r->first_blk + r->nr_blk > vr->size_bytes / DEDUP_BLOCK_BYTES) {
		*st = -EINVAL; /* the volume shrank after the write was prepared */
		return 0;
	}
	for (uint64_t i = 0; i < r->nr_blk; i++) {
		struct req_blk *b = &r->blk[i];
		const uint8_t *nh = b->kind == BLK_ZERO ? zero_hash : b->hash;
		uint64_t lba = r->first_blk + i;
		uint8_t old[HASH_BYTES];
		int old_zero, new_zero = b->kind == BLK_ZERO;

		if (b->kind == BLK_NEW)
			ctr_used_bump(w, b->loc);
		if (new_zero)
			w->zero_writes++;
		rc = map_get(w, vr, lba, old);
		if (rc)
			return rc;
		if (memcmp(old, nh, HASH_BYTES) == 0)
			continue; /* rewriting the same content changes nothing */
		old_zero = dedup_hash_is_zero(old);
		if (b->kind == BLK_NEW) {
			rc = content_add_new(w, nh, b->loc);
		} else if (!new_zero) {
			/* a duplicate hit: the container's inflight count kept the collector
			 * from deleting the entry since prepare, so it must be there */
			rc = content_incref(w, nh);
			if (rc == -ENOENT) {
				log_err("duplicate hit vanished from the index");
				rc = -EIO;
			}
		}
		if (rc)
			return rc;
		rc = map_set(w, vr, lba, nh);
		if (rc)
			return rc;
		if (!old_zero) {
			/* the old content's reference is dropped later, off the I/O path */
			rc = rq_push_hash(w, old);
			if (rc)
				return rc;
		}
		vr->nonzero = vr->nonzero + (old_zero && !new_zero) - (!old_zero && new_zero);
		wv->dirty = 1;
	}
	*st = 0;
	return 0;
}

static int apply_discard(struct wtx *w, struct dedup_req *r, int *st)
{
	struct wvol *wv;
	struct vol_rec *vr;
	uint64_t nr_vol, n, removed = 0;
	int rc;

	rc = wvol_get(w, r->vol->name, &wv);
	if (rc)
		return rc;
	vr = &wv->rec;
	if (!wv->exists || wv->deleted) {
		*st = -ENOENT;
		return 0;
	}
	if (vr->flags & VOL_READONLY) {
		*st = -EROFS;
		return 0;
	}
	nr_vol = vr->size_bytes / DEDUP_BLOCK_BYTES;
	*st = 0;
	if (r->first_blk >= nr_vol)
		return 0; /* shrunk away meanwhile: nothing left to discard */
	n = r->nr_blk > nr_vol - r->first_blk ? nr_vol - r->first_blk : r->nr_blk;
	rc = map_discard(w, vr, r->first_blk, n, &removed);
	if (rc)
		return rc;
	vr->nonzero -= removed <= vr->nonzero ? removed : vr->nonzero;
	wv->dirty = 1;
	return 0;
}

struct group {
	struct dedup_req **reqs;
	size_t n;
};

static int apply_group(struct wtx *w, void *arg)
{
	struct group *g = arg;
	int rc = 0;

	for (size_t i = 0; i < g->n && rc == 0; i++) {
		struct dedup_req *r = g->reqs[i];

		if (r->status)
			continue; /* failed before the transaction (container sync) */
		if (r->kind == REQ_WRITE)
			rc = apply_write(w, r, &r->status);
		else if (r->kind == REQ_DISCARD)
			rc = apply_discard(w, r, &r->status);
	}
	return rc;
}

static int sync_add(struct wstate *ws, size_t *n, struct ctr *c)
{
	for (size_t i = 0; i < *n; i++)
		if (ws->syncs[i] == c)
			return 0;
	if (*n == ws->cap_syncs) {
		size_t cap = ws->cap_syncs ? ws->cap_syncs * 2 : 8;
		struct ctr **p = realloc(ws->syncs, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		ws->syncs = p;
		ws->cap_syncs = cap;
	}
	ws->syncs[(*n)++] = c;
	return 0;
}

static int req_uses_ctr(const struct dedup_req *r, const struct ctr *c)
{
	for (uint64_t i = 0; i < r->nr_blk; i++)
		if (r->blk[i].kind == BLK_NEW && r->blk[i].ctr == c)
			return 1;
	return 0;
}

/* Step 1: container data of the group durable before the transaction that points at it. */
static void group_sync_containers(struct dedup_store *s, struct group *g)
{
	struct wstate *ws = s->w;
	size_t nsync = 0;

	for (size_t i = 0; i < g->n; i++) {
		struct dedup_req *r = g->reqs[i];

		if (r->kind != REQ_WRITE)
			continue;
		for (uint64_t b = 0; b < r->nr_blk; b++) {
			if (r->blk[b].kind == BLK_NEW && sync_add(ws, &nsync, r->blk[b].ctr)) {
				/* no memory for the list: fall back to failing the request */
				r->status = -ENOMEM;
				break;
			}
		}
	}
	for (size_t j = 0; j < nsync; j++) {
		struct ctr *c = ws->syncs[j];

		if (fdatasync(c->fd) == 0)
			continue;
		int err = -errno;

		log_err("container %llx: fdatasync: %s", (unsigned long long)c->cid, strerror(-err));
		for (size_t i = 0; i < g->n; i++)
			if (g->reqs[i]->kind == REQ_WRITE && !g->reqs[i]->status &&
			    req_uses_ctr(g->reqs[i], c))
				g->reqs[i]->status = err;
	}
}

static void process_group(struct dedup_store *s, struct group *g)
{
	int updates = 0, flushes = 0, rc;

	for (size_t i = 0; i < g->n; i++) {
		g->reqs[i]->status = 0;
		if (g->reqs[i]->kind == REQ_FLUSH)
			flushes = 1;
		else
			updates = 1;
	}
	if (updates) {
		group_sync_containers(s, g);
		rc = writer_txn(s, apply_group, g);
		if (rc) {
			/* the transaction is gone: every update in it failed together */
			for (size_t i = 0; i < g->n; i++)
				if (g->reqs[i]->kind != REQ_FLUSH && !g->reqs[i]->status)
					g->reqs[i]->status = rc;
			if (rc != -ENOSPC)
				log_err("commit of %zu requests failed: %s", g->n, strerror(-rc));
		}
	}
	if (flushes) {
		/* Everything completed before the flush was committed (by this group or an
		 * earlier one) with its container data synced; what remains volatile is the last
		 * commit's meta page. */
		rc = dedup_mdb_err(mdb_env_sync(s->env, 1));
		for (size_t i = 0; i < g->n; i++)
			if (g->reqs[i]->kind == REQ_FLUSH)
				g->reqs[i]->status = rc;
	}
	for (size_t i = 0; i < g->n; i++)
		req_complete(g->reqs[i], g->reqs[i]->status);
}

static int reclaim_slice(struct wtx *w, void *arg)
{
	unsigned *budget = arg, done;
	int rc = rq_process(w, *budget, &done);

	*budget = done;
	return rc;
}

/* One reclaim transaction of up to @budget items. Returns items done or -errno. */
static int writer_reclaim(struct dedup_store *s, unsigned budget)
{
	int rc = writer_txn(s, reclaim_slice, &budget);

	return rc ? rc : (int)budget;
}

/* Take and commit one group. Returns 1 if there was one. */
static int writer_one_group(struct dedup_store *s)
{
	struct wstate *ws = s->w;
	struct group g = { ws->batch, 0 };
	uint64_t blocks = 0;

	pthread_mutex_lock(&s->wq_lock);
	while (s->wq_head) {
		struct dedup_req *r = s->wq_head;
		uint64_t cost = r->kind == REQ_WRITE ? r->nr_blk : r->kind == REQ_DISCARD ? 16 : 0;

		if (g.n && blocks + cost > s->group_max_blk)
			break;
		if (g.n == ws->cap_batch) {
			size_t cap = ws->cap_batch ? ws->cap_batch * 2 : 256;
			struct dedup_req **b = realloc(ws->batch, cap * sizeof(*b));

			if (!b)
				break; /* commit what we have; the rest waits */
			ws->batch = g.reqs = b;
			ws->cap_batch = cap;
		}
		s->wq_head = r->next;
		if (!s->wq_head)
			s->wq_tail = NULL;
		g.reqs[g.n++] = r;
		blocks += cost;
	}
	pthread_mutex_unlock(&s->wq_lock);
	if (!g.n)
		return 0;
	process_group(s, &g);
	if (ws->rq_len > RQ_BACKLOG)
		writer_reclaim(s, RQ_BUSY_SLICE);
	return 1;
}

/* Commit everything queued now (long operations call this between their steps). */
void writer_service_io(struct dedup_store *s)
{
	while (writer_one_group(s))
		;
}

static int writer_background(struct dedup_store *s)
{
	struct wstate *ws = s->w;
	int rc;

	if (ws->rq_len) {
		rc = writer_reclaim(s, RQ_SLICE);
		if (rc > 0)
			return 1;
		if (rc == 0)
			ws->rq_len = 0; /* the count drifted: the queue is empty */
		else
			log_err("reclaim: %s", strerror(-rc));
	}
	if (s->gc_dead_pct)
		return gc_background(s) > 0;
	return 0;
}

static void *writer_main(void *arg)
{
	struct dedup_store *s = arg;

	pthread_mutex_lock(&s->wq_lock);
	for (;;) {
		if (s->wq_head) {
			pthread_mutex_unlock(&s->wq_lock);
			writer_one_group(s);
			pthread_mutex_lock(&s->wq_lock);
			continue;
		}
		if (s->op_head) {
			struct wop *op = s->op_head;
			int rc;

			s->op_head = op->next;
			if (!s->op_head)
				s->op_tail = NULL;
			pthread_mutex_unlock(&s->wq_lock);
			rc = op->fn(s, op);
			s->w->bg_more = 1;
			pthread_mutex_lock(&s->wq_lock);
			op->rc = rc;
			op->done = 1;
			pthread_cond_broadcast(&s->op_cond);
			continue;
		}
		if (s->stop)
			break;
		if (s->w->bg_more) {
			int did;

			pthread_mutex_unlock(&s->wq_lock);
			did = writer_background(s);
			pthread_mutex_lock(&s->wq_lock);
			if (!did)
				s->w->bg_more = 0;
			continue;
		}
		pthread_cond_wait(&s->wq_cond, &s->wq_lock);
	}
	pthread_mutex_unlock(&s->wq_lock);
	return NULL;
}

int writer_start(struct dedup_store *s)
{
	MDB_txn *txn;
	MDB_stat st;
	int rc;

	s->w = calloc(1, sizeof(*s->w));
	if (!s->w)
		return -ENOMEM;
	rc = dedup_mdb_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn));
	if (rc)
		goto err_free;
	rc = dedup_mdb_err(mdb_stat(txn, s->dbi_rq, &st));
	mdb_txn_abort(txn);
	if (rc)
		goto err_free;
	s->w->rq_len = st.ms_entries;
	s->w->bg_more = 1;
	rc = -pthread_create(&s->writer, NULL, writer_main, s);
	if (rc)
		goto err_free;
	s->writer_running = 1;
	return 0;

err_free:
	free(s->w);
	s->w = NULL;
	return rc;
}

void writer_stop(struct dedup_store *s)
{
	if (!s->writer_running)
		return;
	pthread_mutex_lock(&s->wq_lock);
	s->stop = 1;
	pthread_cond_signal(&s->wq_cond);
	pthread_mutex_unlock(&s->wq_lock);
	pthread_join(s->writer, NULL);
	s->writer_running = 0;
	wtx_free(&s->w->w);
	free(s->w->batch);
	free(s->w->syncs);
	free(s->w);
	s->w = NULL;
}

/* ---- admin operations ---------------------------------------------------------------------- */

int writer_call(struct dedup_store *s, struct wop *op, dedup_progress_fn fn, void *arg)
{
	uint64_t seen = 0;

	op->done = 0;
	op->cancel = 0;
	op->prog_seq = 0;
	op->prog_ack = 0;
	op->has_fn = fn != NULL;
	op->next = NULL;
	pthread_mutex_lock(&s->wq_lock);
	if (s->stop) {
		pthread_mutex_unlock(&s->wq_lock);
		return -ESHUTDOWN;
	}
	if (s->op_tail)
		s->op_tail->next = op;
	else
		s->op_head = op;
	s->op_tail = op;
	pthread_cond_signal(&s->wq_cond);
	for (;;) {
		if (fn && op->prog_seq != seen) {
			/* report outside the lock: the callback may be slow (a terminal) */
			struct dedup_progress p = op->prog;
			int done = op->done;

			seen = op->prog_seq;
			pthread_mutex_unlock(&s->wq_lock);
			int stop = fn(&p, arg);

			pthread_mutex_lock(&s->wq_lock);
			if (stop)
				op->cancel = 1;
			op->prog_ack = seen;
			pthread_cond_broadcast(&s->op_cond);
			if (done)
				break;
			continue;
		}
		if (op->done)
			break;
		pthread_cond_wait(&s->op_cond, &s->wq_lock);
	}
	pthread_mutex_unlock(&s->wq_lock);
	return op->rc;
}

/*
 * Report progress and wait for the caller's callback to return: a cancel answered to this
 * report is then seen before the next step (callbacks are cheap: a progress bar).
 */
void writer_progress(struct dedup_store *s, struct wop *op, const struct dedup_progress *p)
{
	pthread_mutex_lock(&s->wq_lock);
	op->prog = *p;
	op->prog_seq++;
	pthread_cond_broadcast(&s->op_cond);
	while (op->has_fn && op->prog_ack != op->prog_seq)
		pthread_cond_wait(&s->op_cond, &s->wq_lock);
	pthread_mutex_unlock(&s->wq_lock);
}

int writer_cancelled(struct dedup_store *s, struct wop *op)
{
	int c;

	pthread_mutex_lock(&s->wq_lock);
	c = op->cancel;
	pthread_mutex_unlock(&s->wq_lock);
	return c;
}

static int op_reclaim(struct dedup_store *s, struct wop *op)
{
	(void)op;
	for (;;) {
		int rc = writer_reclaim(s, RQ_SLICE);

		if (rc <= 0) {
			if (rc == 0)
				s->w->rq_len = 0;
			return rc;
		}
		writer_service_io(s);
	}
}

/* Drain the reclaim queue from the writer thread (gc and fsck start with this). */
int writer_drain_reclaim(struct dedup_store *s)
{
	return op_reclaim(s, NULL);
}

int dedup_store_reclaim(struct dedup_store *s)
{
	struct wop op = { .fn = op_reclaim };

	return writer_call(s, &op, NULL, NULL);
}

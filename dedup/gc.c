/*
 * gc.c - the collector: empties containers whose blocks died and deletes their files.
 *
 * Containers need no reverse map: every block names itself. The collector reads a container,
 * hashes each slot and asks the index: the slot is live if the index entry for that hash points
 * at exactly this slot with refs > 0 (copy it to the open container and repoint the entry), a
 * zombie if refs == 0 (delete the entry), dead otherwise (an overwritten duplicate, a torn
 * write that never committed). Then, in one transaction after the copies are synced: repoint,
 * delete, drop the container record. Only after that commit is the file deleted (ctr_retire).
 *
 * Before starting, the container is marked retiring under rd_lock held exclusively, so no new
 * duplicate hit can take a reference into it, and the collector waits for the hits and appends
 * already prepared (the inflight count) to complete: nothing uncommitted can point into it.
 */
#define LOG_TAG "dedup"
#include "common/log.h"
#include "dedup/dedup_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GC_CHUNK_BLK 256 /* 1 MiB reads and writes */
#define GC_BUSY_ROUNDS 64

struct gc_cand {
	uint64_t cid;
	uint32_t used;
	uint32_t live;
};

struct gc_state {
	struct dedup_store *s;
	struct gc_cand cand;
	struct ctr *src;
	EVP_MD_CTX *md;
	uint8_t *in;            /* GC_CHUNK_BLK blocks read from the source */
	uint8_t *out;           /* staged copies for one destination run */
	struct ctr *out_ctr;
	uint32_t out_slot, out_n;
	struct ctr **dst;       /* destination containers: inflight held until commit */
	uint32_t *dst_cnt;
	size_t ndst, cap_dst;
	uint64_t moved, zombies, dead;
};

static int dst_note(struct gc_state *g, struct ctr *c, uint32_t n)
{
	for (size_t i = 0; i < g->ndst; i++) {
		if (g->dst[i] == c) {
			g->dst_cnt[i] += n;
			return 0;
		}
	}
	if (g->ndst == g->cap_dst) {
		size_t cap = g->cap_dst ? g->cap_dst * 2 : 4;
		struct ctr **d = realloc(g->dst, cap * sizeof(*d));
		uint32_t *cnt;

		if (!d)
			return -ENOMEM;
		g->dst = d;
		cnt = realloc(g->dst_cnt, cap * sizeof(*cnt));
		if (!cnt)
			return -ENOMEM;
		g->dst_cnt = cnt;
		g->cap_dst = cap;
	}
	g->dst[g->ndst] = c;
	g->dst_cnt[g->ndst++] = n;
	return 0;
}

static void dst_release(struct gc_state *g)
{
	for (size_t i = 0; i < g->ndst; i++)
		atomic_fetch_sub_explicit(&g->dst[i]->inflight, g->dst_cnt[i],
					  memory_order_release);
	g->ndst = 0;
}

static int out_flush(struct gc_state *g)
{
	size_t len = (size_t)g->out_n * DEDUP_BLOCK_BYTES, done = 0;
	off_t off = (off_t)g->out_slot * DEDUP_BLOCK_BYTES;

	while (done < len) {
		ssize_t n = pwrite(g->out_ctr->fd, g->out + done, len - done, off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	g->out_n = 0;
	return 0;
}

/* Copy one live block to the open container; returns its new location in *loc. */
static int gc_copy(struct gc_state *g, const uint8_t *data, uint64_t *loc)
{
	struct ctr *c;
	uint32_t slot, got;
	int rc;

	rc = ctr_alloc(g->s, 1, &c, &slot, &got);
	if (rc)
		return rc;
	rc = dst_note(g, c, 1);
	if (rc) {
		atomic_fetch_sub(&c->inflight, 1);
		return rc;
	}
	if (g->out_n && (c != g->out_ctr || slot != g->out_slot + g->out_n ||
			 g->out_n == GC_CHUNK_BLK)) {
		rc = out_flush(g);
		if (rc)
			return rc;
	}
	if (!g->out_n) {
		g->out_ctr = c;
		g->out_slot = slot;
	}
	memcpy(g->out + (size_t)g->out_n * DEDUP_BLOCK_BYTES, data, DEDUP_BLOCK_BYTES);
	g->out_n++;
	*loc = LOC_MAKE(c->cid, slot);
	return 0;
}

static int read_full(int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

static int gc_tx(struct wtx *w, void *arg)
{
	struct gc_state *g = arg;
	struct dedup_store *s = g->s;
	struct ctr_delta *cd;
	int rc;

	/* a retried transaction starts over; copies of the failed try are garbage */
	g->moved = g->zombies = g->dead = 0;
	g->out_n = 0;
	/*
	 * The counts as of this transaction: groups committed since the candidate list was made
	 * may have appended to the container before it was sealed.
	 */
	{
		uint64_t cid = g->cand.cid;
		MDB_val k = { sizeof(cid), &cid }, d;
		struct ctr_rec cr;

		rc = mdb_get(w->txn, s->dbi_ctrs, &k, &d);
		if (rc)
			return rc == MDB_NOTFOUND ? -ENOENT : dedup_mdb_err(rc);
		if (d.mv_size != sizeof(cr))
			return -EIO;
		memcpy(&cr, d.mv_data, sizeof(cr));
		g->cand.used = cr.used;
		g->cand.live = cr.live;
	}
	for (uint32_t base = 0; base < g->cand.used; base += GC_CHUNK_BLK) {
		uint32_t left = g->cand.used - base;
		uint32_t n = left < GC_CHUNK_BLK ? left : GC_CHUNK_BLK;

		rc = read_full(g->src->fd, g->in, (size_t)n * DEDUP_BLOCK_BYTES,
			       (off_t)base * DEDUP_BLOCK_BYTES);
		if (rc)
			return rc;
		for (uint32_t i = 0; i < n; i++) {
			const uint8_t *data = g->in + (size_t)i * DEDUP_BLOCK_BYTES;
			uint64_t here = LOC_MAKE(g->cand.cid, base + i), nloc;
			uint8_t h[HASH_BYTES];
			struct content_val v;

			if (dedup_block_is_zero(data)) {
				g->dead++;
				continue;
			}
			dedup_sha256(g->md, s->sha256, data, h);
			rc = content_get(w->txn, s, h, &v);
			if (rc == -ENOENT || (rc == 0 && v.loc != here)) {
				g->dead++;
				continue;
			}
			if (rc)
				return rc;
			if (v.refs == 0) {
				rc = content_del(w, h);
				if (rc)
					return rc;
				if (w->zombies)
					w->zombies--;
				g->zombies++;
				continue;
			}
			rc = gc_copy(g, data, &nloc);
			if (rc)
				return rc;
			v.loc = nloc;
			rc = content_put(w, h, &v);
			if (rc)
				return rc;
			cd = ctr_delta_get(w, LOC_CID(nloc));
			if (!cd)
				return -ENOMEM;
			cd->live++;
			ctr_used_bump(w, nloc);
			g->moved++;
		}
	}
	if (g->moved < g->cand.live) {
		/* Live blocks that do not hash to their name: copying the rest and deleting the
		 * file would lose them. Leave the container alone for fsck --verify to explain. */
		log_err("container %016" PRIx64 ": %" PRIu64 " of %u live blocks unreadable or "
			"corrupt; not collected",
			g->cand.cid, g->cand.live - g->moved, g->cand.live);
		return -EIO;
	}
	if (g->out_n) {
		rc = out_flush(g);
		if (rc)
			return rc;
	}
	for (size_t i = 0; i < g->ndst; i++)
		if (fdatasync(g->dst[i]->fd) < 0)
			return -errno;
	cd = ctr_delta_get(w, g->cand.cid);
	if (!cd)
		return -ENOMEM;
	cd->remove = 1;
	return 0;
}

/*
 * Empty container @cand. Returns 0 (*freed_bytes set), -EAGAIN (I/O still in flight into it:
 * try later), -EIO (not collectable) or -errno.
 */
static int gc_container(struct dedup_store *s, struct gc_state *g, const struct gc_cand *cand,
			uint64_t *freed_bytes)
{
	struct ctr *c = ctr_lookup(s, cand->cid);
	int rc;

	*freed_bytes = 0;
	if (!c)
		return -EIO; /* its file is missing: fsck reports it */
	ctr_seal_active(s, cand->cid);
	if (!atomic_load(&c->retiring)) {
		/* exclusive: no prepare is between its retiring check and its inflight count */
		pthread_rwlock_wrlock(&s->rd_lock);
		atomic_store(&c->retiring, 1);
		pthread_rwlock_unlock(&s->rd_lock);
	}
	if (atomic_load_explicit(&c->inflight, memory_order_acquire))
		return -EAGAIN;
	g->cand = *cand;
	g->src = c;
	rc = writer_txn(s, gc_tx, g);
	dst_release(g);
	if (rc)
		return rc;
	log_debug("container %016" PRIx64 ": %" PRIu64 " moved, %" PRIu64 " zombies, %" PRIu64
		  " dead",
		  cand->cid, g->moved, g->zombies, g->dead);
	ctr_retire(s, c);
	*freed_bytes = s->ctr_bytes;
	return 0;
}

/* Containers worth collecting: any dead block (force), or full and at least pct% dead, or
 * already marked retiring. */
static int gc_list(struct dedup_store *s, int force, struct gc_cand **out, size_t *n)
{
	struct gc_cand *arr = NULL;
	size_t cnt = 0, cap = 0;
	MDB_cursor *cur;
	MDB_txn *txn;
	MDB_val k, d;
	int rc;

	rc = dedup_mdb_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn));
	if (rc)
		return rc;
	rc = dedup_mdb_err(mdb_cursor_open(txn, s->dbi_ctrs, &cur));
	if (rc)
		goto out_abort;
	while ((rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) == 0) {
		struct ctr_rec cr;
		struct gc_cand c;
		struct ctr *ct;
		uint32_t dead;
		int want;

		if (d.mv_size != sizeof(cr))
			continue;
		memcpy(&cr, d.mv_data, sizeof(cr));
		memcpy(&c.cid, k.mv_data, sizeof(c.cid));
		c.used = cr.used;
		c.live = cr.live;
		dead = cr.used > cr.live ? cr.used - cr.live : 0;
		ct = ctr_lookup(s, c.cid);
		if (!ct)
			continue;
		if (force)
			want = dead > 0 || atomic_load(&ct->retiring);
		else
			want = atomic_load(&ct->retiring) ||
			       (cr.used == s->ctr_slots && s->gc_dead_pct &&
				(uint64_t)dead * 100 >= (uint64_t)s->gc_dead_pct * cr.used);
		if (!want)
			continue;
		if (cnt == cap) {
			struct gc_cand *a;

			cap = cap ? cap * 2 : 16;
			a = realloc(arr, cap * sizeof(*a));
			if (!a) {
				rc = -ENOMEM;
				break;
			}
			arr = a;
		}
		arr[cnt++] = c;
	}
	mdb_cursor_close(cur);
	rc = rc == MDB_NOTFOUND ? 0 : rc == -ENOMEM ? rc : dedup_mdb_err(rc);
out_abort:
	mdb_txn_abort(txn);
	if (rc) {
		free(arr);
		return rc;
	}
	*out = arr;
	*n = cnt;
	return 0;
}

static int gc_state_init(struct dedup_store *s, struct gc_state *g)
{
	memset(g, 0, sizeof(*g));
	g->s = s;
	g->md = EVP_MD_CTX_new();
	if (!g->md)
		return -ENOMEM;
	if (posix_memalign((void **)&g->in, DEDUP_BLOCK_BYTES,
			   (size_t)GC_CHUNK_BLK * DEDUP_BLOCK_BYTES) ||
	    posix_memalign((void **)&g->out, DEDUP_BLOCK_BYTES,
			   (size_t)GC_CHUNK_BLK * DEDUP_BLOCK_BYTES)) {
		free(g->in);
		EVP_MD_CTX_free(g->md);
		return -ENOMEM;
	}
	return 0;
}

static void gc_state_free(struct gc_state *g)
{
	free(g->in);
	free(g->out);
	free(g->dst);
	free(g->dst_cnt);
	EVP_MD_CTX_free(g->md);
}

int gc_run(struct dedup_store *s, struct wop *op, int force)
{
	struct dedup_progress p = { 0 };
	struct gc_cand *cand = NULL;
	struct gc_state g;
	size_t n = 0, busy;
	int rc;

	rc = writer_drain_reclaim(s);
	if (rc)
		return rc;
	rc = gc_list(s, force, &cand, &n);
	if (rc)
		return rc;
	rc = gc_state_init(s, &g);
	if (rc)
		goto out_free;
	for (size_t i = 0; i < n; i++)
		p.total += (uint64_t)cand[i].used * DEDUP_BLOCK_BYTES;
	if (op)
		writer_progress(s, op, &p);
	for (unsigned round = 0; n && round < GC_BUSY_ROUNDS; round++) {
		busy = 0;
		for (size_t i = 0; i < n; i++) {
			uint64_t freed;

			if (op && writer_cancelled(s, op)) {
				rc = -ECANCELED;
				goto out_state;
			}
			rc = gc_container(s, &g, &cand[i], &freed);
			if (rc == -EAGAIN) {
				cand[busy++] = cand[i]; /* retried after I/O drains */
				continue;
			}
			if (rc && rc != -EIO && rc != -ENOENT)
				goto out_state;
			p.done += (uint64_t)cand[i].used * DEDUP_BLOCK_BYTES;
			p.freed_bytes += freed;
			if (op)
				writer_progress(s, op, &p);
			/* let queued I/O commit between containers */
			writer_service_io(s);
		}
		n = busy;
		rc = 0;
		if (n)
			writer_service_io(s);
	}
	if (n)
		log_info("gc: %zu containers still busy; left for the next run", n);
out_state:
	gc_state_free(&g);
out_free:
	free(cand);
	return rc;
}

/* One container per call, when idle. Returns 1 if it collected one, 0 if nothing to do. */
int gc_background(struct dedup_store *s)
{
	struct gc_cand *cand = NULL;
	struct gc_state g;
	size_t n = 0;
	int rc, did = 0;

	if (gc_list(s, 0, &cand, &n) || !n)
		goto out_free;
	if (gc_state_init(s, &g))
		goto out_free;
	for (size_t i = 0; i < n && !did; i++) {
		uint64_t freed;

		rc = gc_container(s, &g, &cand[i], &freed);
		did = rc == 0;
	}
	gc_state_free(&g);
out_free:
	free(cand);
	return did;
}

static int op_gc(struct dedup_store *s, struct wop *op)
{
	return gc_run(s, op, 1);
}

int dedup_store_gc(struct dedup_store *s, dedup_progress_fn fn, void *arg)
{
	struct wop op = { .fn = op_gc };

	return writer_call(s, &op, fn, arg);
}

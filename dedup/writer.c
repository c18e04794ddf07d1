/*
 * writer.c - the writer thread: the store's only LMDB writer.
 *
 * Callers' threads queue prepared writes, discards and flushes (their container data already
 * written); the writer takes everything queued (up to group_max_blk blocks) as one group and
 *
 *   1. applies it to its open LMDB write transaction (kept open across groups),
 *   2. appends one journal entry per request with a single write (in the kernel on return:
 *      this is what makes the acknowledgement survive kill -9),
 *   3. publishes the new blocks in the overlay (readers see them before the commit),
 *   4. for a FLUSH in the group: fdatasyncs the containers written since their last sync, then
 *      the journal (power-loss durability of everything acknowledged before),
 *   5. completes every request to its context's queue.
 *
 * A checkpoint commits the open transaction: after 32768 blocks, when writes pause for 20 ms,
 * after a second (checkpoint_ms and 1/50 of it), before any other transaction (volume
 * operations, reclaim, the collector, fsck) and at close. It fdatasyncs the containers first
 * (data durable before the index that points at it), commits and syncs the index, and only then
 * empties the journal and the overlay.
 * LMDB commits are therefore one per thousands of blocks when the load is high, and never one
 * per 4 KiB write; ack latency has no fsync in it.
 *
 * If the open transaction has to be abandoned (the LMDB map is full, an I/O error), it is
 * rebuilt by replaying the journal, which holds exactly what it held. At open the journal is
 * replayed the same way, checking that each new block's data hashes to its name (after a
 * power loss the journal may hold writes whose data never reached the disk: they are dropped,
 * as an unflushed write may be).
 */
#define LOG_TAG "dedup"
#include "common/log.h"
#include "common/util.h"
#include "dedup/dedup_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CKPT_MAX_BLK 32768          /* blocks applied before a checkpoint */
#define CKPT_MAX_TOMB 64            /* discarded ranges in the overlay */
#define TIGHT_BLK 1024              /* below this much room the map is "tight" */
#define RQ_SLICE 4096               /* reclaim items per background transaction */
#define RQ_BACKLOG 65536            /* above this, reclaim also runs between busy groups */
#define RQ_BUSY_SLICE 1024

struct wstate {
	struct wtx w;
	int txn_open;
	int broken;             /**< the open transaction could not be rebuilt: refuse updates */
	uint64_t txn_blocks;    /**< blocks applied since the last checkpoint */
	uint64_t txn_budget;    /**< checkpoint at this many: what the map has room for */
	int tight;              /**< the map is at its limit and nearly full: commit every group
				     before acknowledging it */
	uint64_t txn_open_ns;
	uint64_t last_group_ns;
	uint64_t gen;           /**< journal generation being written */
	uint64_t joff;          /**< journal bytes of this generation */
	struct jbuf jb;
	struct ctr **dirty;     /**< containers with data written since their last fdatasync */
	size_t ndirty, cap_dirty;
	uint64_t rq_len;        /**< items in the reclaim queue */
	int bg_more;            /**< background work may be possible */
	EVP_MD_CTX *md;         /**< replay's data check */
	void *blkbuf;           /**< its block buffer (aligned for O_DIRECT containers) */
	struct dedup_req **batch;
	size_t cap_batch;
};

static const uint8_t zero_hash[HASH_BYTES];

/* ---- completions --------------------------------------------------------------------------- */

void req_release_ctrs(struct dedup_req *r)
{
	for (uint64_t i = 0; i < r->nr_blk && r->kind == REQ_WRITE; i++) {
		if (r->blk[i].ctr) {
			atomic_fetch_sub_explicit(&r->blk[i].ctr->inflight, 1,
						  memory_order_release);
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

/* ---- containers awaiting a sync ------------------------------------------------------------ */

static int dirty_add(struct wstate *ws, struct ctr *c)
{
	for (size_t i = 0; i < ws->ndirty; i++)
		if (ws->dirty[i] == c)
			return 0;
	if (ws->ndirty == ws->cap_dirty) {
		size_t cap = ws->cap_dirty ? ws->cap_dirty * 2 : 8;
		struct ctr **d = realloc(ws->dirty, cap * sizeof(*d));

		if (!d)
			return -ENOMEM;
		ws->dirty = d;
		ws->cap_dirty = cap;
	}
	/* a reference: the collector may retire it before the sync */
	atomic_fetch_add(&c->refs, 1);
	ws->dirty[ws->ndirty++] = c;
	return 0;
}

static int dirty_sync(struct wstate *ws)
{
	for (size_t i = 0; i < ws->ndirty; i++) {
		if (fdatasync(ws->dirty[i]->fd) < 0) {
			int err = -errno;

			log_err("container %llx: fdatasync: %s",
				(unsigned long long)ws->dirty[i]->cid, strerror(-err));
			return err;
		}
	}
	for (size_t i = 0; i < ws->ndirty; i++)
		ctr_put(ws->dirty[i]);
	ws->ndirty = 0;
	return 0;
}

/* ---- applying ------------------------------------------------------------------------------ */

/* Replay at open: does the slot hold the data the journal says it does? */
static int replay_data_ok(struct dedup_store *s, const struct req_blk *b)
{
	struct ctr *c = ctr_lookup(s, LOC_CID(b->loc));
	uint8_t h[HASH_BYTES];

	if (!c || LOC_SLOT(b->loc) >= s->ctr_slots ||
	    pread(c->fd, s->w->blkbuf, DEDUP_BLOCK_BYTES,
		  (off_t)LOC_SLOT(b->loc) * DEDUP_BLOCK_BYTES) != DEDUP_BLOCK_BYTES)
		return 0;
	dedup_sha256(s->w->md, s->sha256, s->w->blkbuf, h);
	return memcmp(h, b->hash, HASH_BYTES) == 0;
}

enum apply_mode { APPLY_LIVE, APPLY_REBUILD, APPLY_OPEN };

static int apply_write(struct wtx *w, const struct wrec *rec, enum apply_mode mode, int *st)
{
	struct dedup_store *s = w->s;
	struct wvol *wv;
	struct vol_rec *vr;
	int rc;

	rc = wvol_get(w, rec->name, &wv);
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
	if (rec->first_blk + rec->nr_blk > vr->size_bytes / DEDUP_BLOCK_BYTES) {
		*st = -EINVAL; /* the volume shrank after the write was prepared */
		return 0;
	}
	for (uint64_t i = 0; i < rec->nr_blk; i++) {
		struct req_blk *b = &rec->blk[i];
		const uint8_t *nh = b->kind == BLK_ZERO ? zero_hash : b->hash;
		uint64_t lba = rec->first_blk + i;
		uint8_t old[HASH_BYTES];
		int old_zero, new_zero = b->kind == BLK_ZERO, indexed = 0;

		b->indexed = 0;
		if (b->kind == BLK_NEW) {
			if (mode == APPLY_OPEN && !replay_data_ok(s, b)) {
				log_info("%s: block %llu: its data never reached the disk: dropped",
					 rec->name, (unsigned long long)lba);
				continue;
			}
			ctr_used_bump(w, b->loc);
			if (mode == APPLY_OPEN && dirty_add(s->w, ctr_lookup(s, LOC_CID(b->loc))))
				return -ENOMEM;
		}
		if (new_zero)
			w->zero_writes++;
		rc = map_get(w, vr, lba, old);
		if (rc)
			return rc;
		if (memcmp(old, nh, HASH_BYTES) == 0)
			continue; /* rewriting the same content changes nothing */
		old_zero = dedup_hash_is_zero(old);
		if (b->kind == BLK_NEW) {
			rc = content_add_new(w, nh, b->loc, &indexed);
			b->indexed = (uint8_t)indexed;
		} else if (!new_zero) {
			/* a duplicate hit: the container's inflight count kept the collector
			 * from deleting the entry since prepare, so it must be there */
			rc = content_incref(w, nh);
			if (rc == -ENOENT && mode != APPLY_LIVE) {
				/* its new copy was dropped by this replay */
				continue;
			}
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

static int apply_discard(struct wtx *w, const struct wrec *rec, int *st)
{
	struct wvol *wv;
	struct vol_rec *vr;
	uint64_t nr_vol, n, removed = 0;
	int rc;

	rc = wvol_get(w, rec->name, &wv);
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
	if (rec->first_blk >= nr_vol)
		return 0; /* shrunk away meanwhile: nothing left to discard */
	n = rec->nr_blk > nr_vol - rec->first_blk ? nr_vol - rec->first_blk : rec->nr_blk;
	rc = map_discard(w, vr, rec->first_blk, n, &removed);
	if (rc)
		return rc;
	vr->nonzero -= removed <= vr->nonzero ? removed : vr->nonzero;
	wv->dirty = 1;
	return 0;
}

static int apply_rec(struct wtx *w, const struct wrec *rec, enum apply_mode mode, int *st)
{
	return rec->type == JENT_WRITE ? apply_write(w, rec, mode, st)
				       : apply_discard(w, rec, st);
}

static void rec_of(const struct dedup_req *r, struct wrec *rec)
{
	rec->type = r->kind == REQ_WRITE ? JENT_WRITE : JENT_DISCARD;
	rec->name = r->vol->name;
	rec->first_blk = r->first_blk;
	rec->nr_blk = r->nr_blk;
	rec->blk = r->blk;
}

/* ---- the open transaction ------------------------------------------------------------------ */

static int txn_ensure(struct dedup_store *s)
{
	struct wstate *ws = s->w;
	int rc;

	if (ws->txn_open)
		return 0;
	rc = wtx_begin(s, &ws->w);
	if (rc)
		return rc;
	ws->txn_open = 1;
	ws->txn_blocks = 0;
	ws->txn_open_ns = util_now_ns();
	return 0;
}

static void txn_drop(struct dedup_store *s)
{
	wtx_abort(&s->w->w);
	s->w->txn_open = 0;
}

struct replay_arg {
	struct dedup_store *s;
	enum apply_mode mode;
	uint64_t entries;
};

static int replay_one(const struct wrec *rec, void *arg)
{
	struct replay_arg *ra = arg;
	struct wtx *w = &ra->s->w->w;
	int st, rc;

	rc = apply_rec(w, rec, ra->mode, &st);
	if (rc)
		return rc;
	if (st)
		log_info("journal: %s on %s skipped (%s)",
			 rec->type == JENT_WRITE ? "write" : "discard", rec->name, strerror(-st));
	ra->s->w->txn_blocks += rec->type == JENT_WRITE ? rec->nr_blk : 1;
	ra->entries++;
	/* bounded transaction memory: the node cache goes into LMDB as it fills */
	return ra->entries % 256 == 0 ? wtx_flush(w) : 0;
}

/*
 * Abandon the open transaction and rebuild it from the journal (@grow: the map was full; remap
 * larger first). If that fails the journal still holds every acknowledged write, but this
 * process cannot add to it consistently: updates are refused until the store is reopened.
 */
static int txn_rebuild(struct dedup_store *s, int grow)
{
	struct wstate *ws = s->w;
	struct replay_arg ra = { s, APPLY_REBUILD, 0 };
	uint64_t end;
	int rc, grc = 0;

	txn_drop(s);
	if (grow)
		grc = dedup_map_grow(s);
	if (!ws->joff)
		return grc;
	rc = txn_ensure(s);
	if (rc == 0)
		rc = jnl_replay(s, ws->gen, ws->joff, replay_one, &ra, &end);
	if (rc == 0 && end != ws->joff)
		rc = -EIO; /* the journal no longer reads back as written */
	if (rc == 0)
		rc = wtx_flush(&ws->w);
	if (rc) {
		txn_drop(s);
		log_err("cannot rebuild the index transaction (%s): updates refused until reopened",
			strerror(-rc));
		ws->broken = rc;
		return rc;
	}
	return grc;
}

/*
 * How many blocks the next transaction may apply before a checkpoint: what the free end of the
 * map holds at about four dirty pages per block (map leaf, index leaf, their branches), at most
 * CKPT_MAX_BLK. With no transaction open, a map more than half used is grown first, so a full
 * map inside a transaction stays the exception.
 */
static void budget_update(struct dedup_store *s)
{
	struct wstate *ws = s->w;
	MDB_envinfo ei;
	MDB_stat es;
	uint64_t pages, used, room;

	if (mdb_env_info(s->env, &ei) || mdb_env_stat(s->env, &es))
		return;
	pages = ei.me_mapsize / es.ms_psize;
	used = ei.me_last_pgno + 1;
	if (used * 2 > pages && !ws->txn_open && dedup_map_grow(s) == 0 &&
	    mdb_env_info(s->env, &ei) == 0)
		pages = ei.me_mapsize / es.ms_psize;
	room = pages > used + 64 ? (pages - used - 64) / 4 : 0;
	ws->txn_budget = room < CKPT_MAX_BLK ? (room ? room : 1) : CKPT_MAX_BLK;
	/* room counts only the map's unused end, not pages freed inside it: conservative */
	ws->tight = room < TIGHT_BLK;
}

/*
 * Commit the open transaction: container data synced first, then the commit and the index's
 * meta page synced, and only then may the journal and the overlay forget what it held.
 */
int writer_checkpoint(struct dedup_store *s)
{
	struct wstate *ws = s->w;
	int rc;

	if (!ws->txn_open)
		return 0;
	if (ws->broken)
		return ws->broken;
	for (int attempt = 0;; attempt++) {
		rc = dirty_sync(ws);
		if (rc) {
			/* the data is not durable: keep everything and try again later */
			return rc;
		}
		rc = meta_put_u64(ws->w.txn, s->dbi_meta, META_CKPT_GEN, ws->gen);
		if (rc == 0)
			rc = wtx_commit(&ws->w);
		else
			wtx_abort(&ws->w);
		ws->txn_open = 0;
		if (rc == 0)
			break;
		if (attempt || txn_rebuild(s, rc == -ENOSPC))
			return rc;
	}
	ws->rq_len += (uint64_t)ws->w.rq_delta;
	rc = dedup_mdb_err(mdb_env_sync(s->env, 1));
	if (rc) {
		/* The commit may not be durable: the journal must stay as it is, so nothing may
		 * be appended to it any more. */
		log_err("checkpoint: index sync: %s; updates refused until reopened",
			strerror(-rc));
		ws->broken = rc;
		return rc;
	}
	rc = jnl_truncate(s);
	if (rc)
		log_err("checkpoint: journal truncate: %s", strerror(-rc)); /* old generation */
	ws->gen++;
	ws->joff = 0;
	pthread_rwlock_wrlock(&s->rd_lock);
	ovl_clear(s);
	pthread_rwlock_unlock(&s->rd_lock);
	ws->bg_more = 1;
	budget_update(s);
	return rc;
}

/* ---- standalone transactions ------------------------------------------------------------- */

/*
 * Run @fn in a transaction of its own after a checkpoint, commit it and sync the index (volume
 * operations, reclaim, the collector: what follows may depend on it being durable, such as a
 * container file deleted after the commit that emptied it). A full map is grown and @fn redone.
 */
int writer_txn(struct dedup_store *s, int (*fn)(struct wtx *w, void *arg), void *arg)
{
	struct wtx *w = &s->w->w;
	int rc;

	rc = writer_checkpoint(s);
	if (rc)
		return rc;
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
			budget_update(s);
			return dedup_mdb_err(mdb_env_sync(s->env, 1));
		}
		if (rc != -ENOSPC || dedup_map_grow(s))
			return rc;
	}
}

/* ---- groups -------------------------------------------------------------------------------- */

struct group {
	struct dedup_req **reqs;
	size_t n;
};

/* Room in the overlay for what the group may add, before anything is applied. */
static void group_reserve(struct dedup_store *s, struct group *g)
{
	uint32_t news = 0, total = 0;
	int rc = 0;

	/* each volume gets room for the whole group: the tables must never fill up */
	for (size_t i = 0; i < g->n; i++)
		if (g->reqs[i]->kind == REQ_WRITE)
			total += (uint32_t)g->reqs[i]->nr_blk;
	pthread_rwlock_wrlock(&s->rd_lock);
	for (size_t i = 0; i < g->n; i++) {
		struct dedup_req *r = g->reqs[i];

		if (r->kind != REQ_WRITE || r->prefail)
			continue;
		rc = ovl_reserve_blk(r->vol->vs, total);
		if (rc) {
			r->prefail = rc;
			continue;
		}
		for (uint64_t b = 0; b < r->nr_blk; b++)
			news += r->blk[b].kind == BLK_NEW;
	}
	rc = ovl_reserve_content(s, news);
	pthread_rwlock_unlock(&s->rd_lock);
	for (size_t i = 0; rc && i < g->n; i++)
		if (g->reqs[i]->kind == REQ_WRITE && !g->reqs[i]->prefail)
			g->reqs[i]->prefail = rc;
}

static int group_apply_once(struct dedup_store *s, struct group *g)
{
	struct wtx *w = &s->w->w;
	int rc = txn_ensure(s);

	for (size_t i = 0; rc == 0 && i < g->n; i++) {
		struct dedup_req *r = g->reqs[i];
		struct wrec rec;

		r->status = r->prefail;
		if (r->kind == REQ_FLUSH || r->prefail)
			continue;
		rec_of(r, &rec);
		rc = apply_rec(w, &rec, APPLY_LIVE, &r->status);
	}
	return rc ? rc : wtx_flush(w);
}

/* Apply the group to the open transaction; on failure the transaction is as before it. */
static int group_apply(struct dedup_store *s, struct group *g)
{
	int rc = group_apply_once(s, g);

	if (rc == 0)
		return 0;
	if (rc == -ENOSPC) {
		/* map full: grow it, or at its limit commit what is there so that pages freed by
		 * earlier commits can be reused; then try once more */
		int grew = txn_rebuild(s, 1) == 0;

		if (!s->w->broken && (grew || writer_checkpoint(s) == 0)) {
			rc = group_apply_once(s, g);
			if (rc == 0)
				return 0;
		}
	}
	if (!s->w->broken)
		txn_rebuild(s, 0);
	return rc;
}

static int group_journal(struct dedup_store *s, struct group *g)
{
	struct wstate *ws = s->w;
	int rc = 0;

	ws->jb.len = 0;
	for (size_t i = 0; rc == 0 && i < g->n; i++) {
		struct dedup_req *r = g->reqs[i];
		struct wrec rec;

		if (r->kind == REQ_FLUSH || r->status)
			continue;
		rec_of(r, &rec);
		rc = jnl_encode(&ws->jb, ws->gen, &rec);
	}
	if (rc == 0 && ws->jb.len)
		rc = jnl_append(s, &ws->joff, ws->jb.buf, ws->jb.len);
	return rc;
}

/* Readers see the group from now on. */
static void group_publish(struct dedup_store *s, struct group *g)
{
	struct wstate *ws = s->w;

	pthread_rwlock_wrlock(&s->rd_lock);
	for (size_t i = 0; i < g->n; i++) {
		struct dedup_req *r = g->reqs[i];

		if (r->kind == REQ_FLUSH || r->status)
			continue;
		if (r->kind == REQ_DISCARD) {
			/* an allocation failure here leaves old data visible until the
			 * checkpoint, which is forced below */
			if (ovl_discard(r->vol->vs, r->first_blk, r->first_blk + r->nr_blk))
				ws->txn_blocks = CKPT_MAX_BLK;
			continue;
		}
		for (uint64_t b = 0; b < r->nr_blk; b++) {
			struct req_blk *k = &r->blk[b];

			ovl_set_blk(r->vol->vs, r->first_blk + b,
				    k->kind == BLK_ZERO ? zero_hash : k->hash);
			if (k->kind == BLK_NEW && k->indexed)
				ovl_add_content(s, k->hash, k->loc);
		}
	}
	pthread_rwlock_unlock(&s->rd_lock);
	for (size_t i = 0; i < g->n; i++) {
		struct dedup_req *r = g->reqs[i];

		if (r->kind == REQ_DISCARD && !r->status &&
		    ovl_tombstones(r->vol->vs) >= CKPT_MAX_TOMB)
			ws->txn_blocks = CKPT_MAX_BLK;
		if (r->kind != REQ_WRITE || r->status)
			continue;
		ws->txn_blocks += r->nr_blk;
		for (uint64_t b = 0; b < r->nr_blk; b++)
			if (r->blk[b].kind == BLK_NEW && dirty_add(ws, r->blk[b].ctr))
				ws->txn_blocks = CKPT_MAX_BLK; /* the checkpoint syncs it anyway */
	}
}

static void process_group(struct dedup_store *s, struct group *g)
{
	struct wstate *ws = s->w;
	int updates = 0, flushes = 0, rc;

	for (size_t i = 0; i < g->n; i++) {
		g->reqs[i]->status = g->reqs[i]->prefail = 0;
		if (g->reqs[i]->kind == REQ_FLUSH)
			flushes = 1;
		else
			updates = 1;
	}
	if (updates) {
		uint64_t joff0 = 0;

		group_reserve(s, g);
		rc = ws->broken ? ws->broken : group_apply(s, g);
		if (rc == 0) {
			/* after group_apply: it may have checkpointed, emptying the journal */
			joff0 = ws->joff;
			rc = group_journal(s, g);
			if (rc) {
				/* Not acknowledged, so not in the transaction either; and not left
				 * half in the file, where a replay at open could find parts of it
				 * behind entries appended later. */
				log_err("journal append: %s", strerror(-rc));
				if (ftruncate(s->jfd, (off_t)joff0) < 0)
					ws->broken = -errno;
				else
					txn_rebuild(s, 0);
			}
		}
		if (rc == 0 && ws->tight) {
			/* no room to spare: acknowledge only what is committed */
			rc = writer_checkpoint(s);
			if (rc && !ws->broken) {
				/* forget the group: out of the journal (file too, or a replay at
				 * open would bring it back) and out of the transaction */
				ws->joff = joff0;
				if (ftruncate(s->jfd, (off_t)joff0) < 0)
					ws->broken = -errno;
				else
					txn_rebuild(s, 0);
			}
		}
		if (rc) {
			for (size_t i = 0; i < g->n; i++)
				if (g->reqs[i]->kind != REQ_FLUSH && !g->reqs[i]->status)
					g->reqs[i]->status = rc;
			if (rc != -ENOSPC)
				log_err("%zu requests failed: %s", g->n, strerror(-rc));
		} else {
			group_publish(s, g);
		}
		ws->last_group_ns = util_now_ns();
	}
	if (flushes) {
		/* everything completed before the flush is journaled: make the journal and the
		 * data it names durable */
		rc = dirty_sync(ws);
		if (rc == 0 && fdatasync(s->jfd) < 0)
			rc = -errno;
		for (size_t i = 0; i < g->n; i++)
			if (g->reqs[i]->kind == REQ_FLUSH)
				g->reqs[i]->status = rc;
	}
	for (size_t i = 0; i < g->n; i++)
		req_complete(g->reqs[i], g->reqs[i]->status);
	if (ws->txn_blocks >= ws->txn_budget) {
		rc = writer_checkpoint(s);
		if (rc)
			log_err("checkpoint: %s", strerror(-rc));
	}
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

/* Take and apply one group. Returns 1 if there was one. */
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
				break; /* apply what we have; the rest waits */
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

/* Apply everything queued now (long operations call this between their steps). */
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

static void deadline_ts(uint64_t ns, struct timespec *ts)
{
	/* the condition variable waits on CLOCK_MONOTONIC, like util_now_ns */
	ts->tv_sec = (time_t)(ns / 1000000000ull);
	ts->tv_nsec = (long)(ns % 1000000000ull);
}

static void *writer_main(void *arg)
{
	struct dedup_store *s = arg;
	struct wstate *ws = s->w;

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
			ws->bg_more = 1;
			pthread_mutex_lock(&s->wq_lock);
			op->rc = rc;
			op->done = 1;
			pthread_cond_broadcast(&s->op_cond);
			continue;
		}
		if (s->stop)
			break;
		if (ws->txn_open && !ws->broken) {
			/* checkpoint once writes pause, or when the transaction gets old */
			uint64_t now = util_now_ns();
			uint64_t due = ws->last_group_ns + s->ckpt_age_ns / 50;
			struct timespec ts;

			if (due > ws->txn_open_ns + s->ckpt_age_ns)
				due = ws->txn_open_ns + s->ckpt_age_ns;
			if (now >= due) {
				pthread_mutex_unlock(&s->wq_lock);
				if (writer_checkpoint(s))
					ws->last_group_ns = util_now_ns(); /* retry later */
				pthread_mutex_lock(&s->wq_lock);
				continue;
			}
			deadline_ts(due, &ts);
			pthread_cond_timedwait(&s->wq_cond, &s->wq_lock, &ts);
			continue;
		}
		if (ws->bg_more) {
			int did;

			pthread_mutex_unlock(&s->wq_lock);
			did = writer_background(s);
			pthread_mutex_lock(&s->wq_lock);
			if (!did)
				ws->bg_more = 0;
			continue;
		}
		pthread_cond_wait(&s->wq_cond, &s->wq_lock);
	}
	pthread_mutex_unlock(&s->wq_lock);
	if (writer_checkpoint(s))
		log_err("close: the journal keeps what the last checkpoint could not commit");
	return NULL;
}

/*
 * Replay the journal left by the last run into a transaction, check each new block's data,
 * and commit it as a checkpoint; then drop what the index does not know.
 */
static int writer_recover(struct dedup_store *s)
{
	struct wstate *ws = s->w;
	struct replay_arg ra = { s, APPLY_OPEN, 0 };
	MDB_txn *txn;
	uint64_t ckpt, end;
	int rc;

	rc = dedup_mdb_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn));
	if (rc)
		return rc;
	rc = meta_get_u64(txn, s->dbi_meta, META_CKPT_GEN, &ckpt, 0);
	mdb_txn_abort(txn);
	if (rc)
		return rc;
	ws->gen = ckpt + 1;
	for (;;) {
		rc = txn_ensure(s);
		if (rc == 0)
			rc = jnl_replay(s, ws->gen, UINT64_MAX, replay_one, &ra, &end);
		if (rc == 0)
			rc = wtx_flush(&ws->w);
		if (rc != -ENOSPC)
			break;
		txn_drop(s);
		ra.entries = 0;
		if (dedup_map_grow(s))
			break;
	}
	if (rc) {
		txn_drop(s);
		return rc;
	}
	if (ra.entries) {
		log_info("journal: %llu requests replayed", (unsigned long long)ra.entries);
		ws->joff = end;
		rc = writer_checkpoint(s);
		if (rc)
			return rc;
	} else {
		txn_drop(s);
		rc = jnl_truncate(s);
		if (rc)
			return rc;
	}
	return ctr_table_finish(s);
}

int writer_start(struct dedup_store *s)
{
	MDB_txn *txn;
	MDB_stat st;
	int rc;

	s->w = calloc(1, sizeof(*s->w));
	if (!s->w)
		return -ENOMEM;
	s->w->md = EVP_MD_CTX_new();
	if (!s->w->md || posix_memalign(&s->w->blkbuf, DEDUP_BLOCK_BYTES, DEDUP_BLOCK_BYTES)) {
		rc = -ENOMEM;
		goto err_free;
	}
	rc = dedup_mdb_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn));
	if (rc)
		goto err_free;
	rc = dedup_mdb_err(mdb_stat(txn, s->dbi_rq, &st));
	mdb_txn_abort(txn);
	if (rc)
		goto err_free;
	s->w->rq_len = st.ms_entries;
	budget_update(s);
	rc = writer_recover(s);
	if (rc)
		goto err_free;
	s->w->bg_more = 1;
	rc = -pthread_create(&s->writer, NULL, writer_main, s);
	if (rc)
		goto err_free;
	s->writer_running = 1;
	return 0;

err_free:
	wtx_free(&s->w->w);
	dirty_sync(s->w);
	free(s->w->dirty);
	free(s->w->blkbuf);
	EVP_MD_CTX_free(s->w->md);
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
	for (size_t i = 0; i < s->w->ndirty; i++)
		ctr_put(s->w->dirty[i]);
	free(s->w->dirty);
	free(s->w->batch);
	free(s->w->jb.buf);
	free(s->w->blkbuf);
	EVP_MD_CTX_free(s->w->md);
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

/* Drain the reclaim queue from the writer thread (gc and fsck start with this). */
int writer_drain_reclaim(struct dedup_store *s)
{
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

static int op_reclaim(struct dedup_store *s, struct wop *op)
{
	(void)op;
	return writer_drain_reclaim(s);
}

int dedup_store_reclaim(struct dedup_store *s)
{
	struct wop op = { .fn = op_reclaim };

	return writer_call(s, &op, NULL, NULL);
}

static int op_checkpoint(struct dedup_store *s, struct wop *op)
{
	(void)op;
	return writer_checkpoint(s);
}

/* Commit what is pending now (for readers of committed state: stats, volume info, share). */
int writer_checkpoint_call(struct dedup_store *s)
{
	struct wop op = { .fn = op_checkpoint };

	return writer_call(s, &op, NULL, NULL);
}

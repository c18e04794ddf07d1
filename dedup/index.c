/*
 * index.c - the content index (SHA-256 -> location and refcount), per-container live counts,
 * and the reclaim queue, as the writer changes them inside one transaction.
 *
 * An entry whose refcount reaches 0 is not deleted: it stays as a "zombie" naming data that is
 * still in its container, so a write of the same content before the collector runs simply
 * revives it, and a duplicate hit prepared against it can never lose its data. Only the
 * collector deletes zombies, when it empties their container.
 */
#define LOG_TAG "dedup"
#include "common/log.h"
#include "dedup/dedup_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static struct log_ratelimit refs_rl;

int content_get(MDB_txn *txn, struct dedup_store *s, const uint8_t *h, struct content_val *v)
{
	MDB_val k = { HASH_BYTES, (void *)h }, d;
	int rc = mdb_get(txn, s->dbi_content, &k, &d);

	if (rc)
		return dedup_mdb_err(rc);
	if (d.mv_size != sizeof(*v))
		return -EIO;
	memcpy(v, d.mv_data, sizeof(*v));
	return 0;
}

int content_put(struct wtx *w, const uint8_t *h, const struct content_val *v)
{
	MDB_val k = { HASH_BYTES, (void *)h }, d = { sizeof(*v), (void *)v };

	return dedup_mdb_err(mdb_put(w->txn, w->s->dbi_content, &k, &d, 0));
}

int content_del(struct wtx *w, const uint8_t *h)
{
	MDB_val k = { HASH_BYTES, (void *)h };

	return dedup_mdb_err(mdb_del(w->txn, w->s->dbi_content, &k, NULL));
}

struct ctr_delta *ctr_delta_get(struct wtx *w, uint64_t cid)
{
	for (unsigned i = 0; i < w->ncd; i++)
		if (w->cd[i].cid == cid)
			return &w->cd[i];
	if (w->ncd == w->cap_cd) {
		unsigned cap = w->cap_cd ? w->cap_cd * 2 : 16;
		struct ctr_delta *cd = realloc(w->cd, cap * sizeof(*cd));

		if (!cd)
			return NULL;
		w->cd = cd;
		w->cap_cd = cap;
	}
	memset(&w->cd[w->ncd], 0, sizeof(w->cd[0]));
	w->cd[w->ncd].cid = cid;
	return &w->cd[w->ncd++];
}

static int ctr_live_add(struct wtx *w, uint64_t loc, int64_t delta)
{
	struct ctr_delta *cd = ctr_delta_get(w, LOC_CID(loc));

	if (!cd)
		return -ENOMEM;
	cd->live += delta;
	return 0;
}

void ctr_used_bump(struct wtx *w, uint64_t loc)
{
	struct ctr_delta *cd = ctr_delta_get(w, LOC_CID(loc));

	/* Without memory for the delta the slot simply stays uncounted: it is garbage that the
	 * next commit into the container, or fsck, accounts for. */
	if (cd && LOC_SLOT(loc) + 1 > cd->used_max)
		cd->used_max = LOC_SLOT(loc) + 1;
}

static int incref_val(struct wtx *w, struct content_val *v)
{
	if (v->refs == 0) {
		/* revive a zombie */
		if (w->zombies)
			w->zombies--;
		int rc = ctr_live_add(w, v->loc, 1);

		if (rc)
			return rc;
	}
	if (v->refs != REFS_STICKY)
		v->refs++;
	return 0;
}

/* One more reference to existing content. Returns 0, -ENOENT or -errno. */
int content_incref(struct wtx *w, const uint8_t *h)
{
	struct content_val v;
	int rc = content_get(w->txn, w->s, h, &v);

	if (rc)
		return rc;
	rc = incref_val(w, &v);
	if (rc)
		return rc;
	return content_put(w, h, &v);
}

/*
 * A block just written at @loc with content @h: index it (*indexed = 1), or, when the content
 * got indexed meanwhile (a concurrent identical write), take a reference to that copy and leave
 * the new slot as garbage (*indexed = 0). Returns 0 or -errno.
 */
int content_add_new(struct wtx *w, const uint8_t *h, uint64_t loc, int *indexed)
{
	struct content_val v;
	int rc = content_get(w->txn, w->s, h, &v);

	*indexed = 0;
	if (rc == 0) {
		rc = incref_val(w, &v);
		return rc ? rc : content_put(w, h, &v);
	}
	if (rc != -ENOENT)
		return rc;
	v.loc = loc;
	v.refs = 1;
	rc = ctr_live_add(w, loc, 1);
	if (rc == 0)
		rc = content_put(w, h, &v);
	*indexed = rc == 0;
	return rc;
}

/* Drop one reference (reclaim). Inconsistencies are logged and left to fsck. */
int content_decref(struct wtx *w, const uint8_t *h)
{
	struct content_val v;
	int rc = content_get(w->txn, w->s, h, &v);

	if (rc == -ENOENT || (rc == 0 && v.refs == 0)) {
		LOG_RATELIMITED(&refs_rl, LOG_LVL_WARN,
				"reference drop for content %s (fsck repairs refcounts)",
				rc ? "not in the index" : "with no references");
		return 0;
	}
	if (rc)
		return rc;
	if (v.refs == REFS_STICKY)
		return 0;
	if (--v.refs == 0) {
		w->zombies++;
		rc = ctr_live_add(w, v.loc, -1);
		if (rc)
			return rc;
	}
	return content_put(w, h, &v);
}

/* ---- reclaim queue ------------------------------------------------------------------------- */

static int rq_push(struct wtx *w, const void *item, size_t len)
{
	uint64_t seq = w->rq_next;
	MDB_val k = { sizeof(seq), &seq }, d = { len, (void *)item };
	int rc = mdb_put(w->txn, w->s->dbi_rq, &k, &d, MDB_APPEND);

	if (rc)
		return dedup_mdb_err(rc);
	w->rq_next++;
	w->rq_delta++;
	return 0;
}

int rq_push_hash(struct wtx *w, const uint8_t *h)
{
	uint8_t item[1 + HASH_BYTES];

	item[0] = RQ_HASH;
	memcpy(item + 1, h, HASH_BYTES);
	return rq_push(w, item, sizeof(item));
}

int rq_push_node(struct wtx *w, uint64_t id)
{
	uint8_t item[1 + sizeof(id)];

	item[0] = RQ_NODE;
	memcpy(item + 1, &id, sizeof(id));
	return rq_push(w, item, sizeof(item));
}

static int hash_cmp(const void *a, const void *b)
{
	return memcmp(a, b, HASH_BYTES);
}

struct rq_scratch {
	uint8_t *hashes;
	size_t n, cap;
};

static int scratch_room(struct rq_scratch *sc, size_t more)
{
	if (sc->n + more <= sc->cap)
		return 0;
	size_t cap = sc->cap ? sc->cap * 2 : 4096;

	while (cap < sc->n + more)
		cap *= 2;
	uint8_t *p = realloc(sc->hashes, cap * HASH_BYTES);

	if (!p)
		return -ENOMEM;
	sc->hashes = p;
	sc->cap = cap;
	return 0;
}

/*
 * Apply up to @budget queued drops in this transaction: pop them, free nodes whose count
 * reaches zero (their children are queued behind), and drop content references in hash order
 * so consecutive updates land on neighbouring index pages. *done = items popped.
 */
int rq_process(struct wtx *w, unsigned budget, unsigned *done)
{
	struct rq_scratch sc = { 0 };
	uint64_t *nodes = NULL;
	size_t nnodes = 0;
	MDB_cursor *cur;
	MDB_val k, d;
	int rc;

	*done = 0;
	nodes = malloc(budget * sizeof(*nodes));
	if (!nodes)
		return -ENOMEM;
	rc = dedup_mdb_err(mdb_cursor_open(w->txn, w->s->dbi_rq, &cur));
	if (rc)
		goto out_free;
	while (*done < budget) {
		const uint8_t *item;
		int mrc = mdb_cursor_get(cur, &k, &d, MDB_FIRST);

		if (mrc) {
			rc = mrc == MDB_NOTFOUND ? 0 : dedup_mdb_err(mrc);
			break;
		}
		item = d.mv_data;
		if (d.mv_size == 1 + HASH_BYTES && item[0] == RQ_HASH) {
			rc = scratch_room(&sc, 1);
			if (rc)
				break;
			memcpy(sc.hashes + sc.n++ * HASH_BYTES, item + 1, HASH_BYTES);
		} else if (d.mv_size == 1 + sizeof(uint64_t) && item[0] == RQ_NODE) {
			memcpy(&nodes[nnodes++], item + 1, sizeof(uint64_t));
		} else {
			log_err("reclaim queue: bad item of %zu bytes dropped", d.mv_size);
		}
		mrc = mdb_cursor_del(cur, 0);
		if (mrc) {
			rc = dedup_mdb_err(mrc);
			break;
		}
		(*done)++;
		w->rq_delta--;
	}
	mdb_cursor_close(cur);
	if (rc)
		goto out_free;
	for (size_t i = 0; i < nnodes; i++) {
		unsigned nh;

		rc = scratch_room(&sc, LEAF_FANOUT);
		if (rc)
			goto out_free;
		rc = map_node_decref(w, nodes[i], sc.hashes + sc.n * HASH_BYTES, &nh);
		if (rc)
			goto out_free;
		sc.n += nh;
	}
	if (sc.n > 1)
		qsort(sc.hashes, sc.n, HASH_BYTES, hash_cmp);
	for (size_t i = 0; i < sc.n; i++) {
		rc = content_decref(w, sc.hashes + i * HASH_BYTES);
		if (rc)
			goto out_free;
	}
out_free:
	free(sc.hashes);
	free(nodes);
	return rc;
}

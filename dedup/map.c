/*
 * map.c - the block map: one copy-on-write radix tree per volume (Parallax's design), stored as
 * fixed-size records in LMDB (two nodes per page), and the writer's transaction state around it.
 *
 * Ownership rule (what replaces Parallax's per-pointer writable bit): a node's refcount counts
 * its parents (interior nodes and volume records) and queued drops. A write walks from the
 * root and copies every node whose refcount is above 1 before changing it; copying adds a
 * reference to each child (interior) or content hash (leaf) and drops one from the original.
 * A node reached through copied or refcount-1 nodes only belongs to this volume, so it is
 * changed in place (inside the LMDB transaction, which is itself copy-on-write). Snapshots
 * and clones are then one more reference on the root: O(1).
 *
 * Refcounts of 1 are implicit (no record in the noderef database), so a volume without
 * snapshots pays nothing for them.
 *
 * All of this runs on the writer thread only.
 */
#define LOG_TAG "dedup"
#include "common/log.h"
#include "dedup/dedup_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define NC_KEEP_FREE 65536 /* recycled node buffers kept between transactions */

/* ---- node cache ---------------------------------------------------------------------------- */

static uint32_t nc_slot(uint64_t id, uint32_t cap)
{
	/* ids are sequential: a multiplicative hash spreads them over the table */
	return (uint32_t)((id * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);
}

static struct ncent *nc_find(struct wtx *w, uint64_t id)
{
	if (!w->tab_cap)
		return NULL;
	for (uint32_t i = nc_slot(id, w->tab_cap);; i = (i + 1) & (w->tab_cap - 1)) {
		struct ncent *e = w->tab[i];

		if (!e)
			return NULL;
		if (e->id == id)
			return e;
	}
}

static int nc_grow(struct wtx *w)
{
	uint32_t cap = w->tab_cap ? w->tab_cap * 2 : 1024;
	struct ncent **tab = calloc(cap, sizeof(*tab));

	if (!tab)
		return -ENOMEM;
	for (uint32_t i = 0; i < w->nlist; i++) {
		uint32_t j = nc_slot(w->list[i]->id, cap);

		while (tab[j])
			j = (j + 1) & (cap - 1);
		tab[j] = w->list[i];
	}
	free(w->tab);
	w->tab = tab;
	w->tab_cap = cap;
	return 0;
}

static int nc_insert(struct wtx *w, struct ncent *e)
{
	uint32_t i;

	if ((w->nlist + 1) * 2 > w->tab_cap && nc_grow(w))
		return -ENOMEM;
	if (w->nlist == w->cap_list) {
		uint32_t cap = w->cap_list ? w->cap_list * 2 : 1024;
		struct ncent **l = realloc(w->list, cap * sizeof(*l));

		if (!l)
			return -ENOMEM;
		w->list = l;
		w->cap_list = cap;
	}
	w->list[w->nlist++] = e;
	for (i = nc_slot(e->id, w->tab_cap); w->tab[i]; i = (i + 1) & (w->tab_cap - 1))
		;
	w->tab[i] = e;
	return 0;
}

static struct ncent *nc_alloc(struct wtx *w)
{
	struct ncent *e = w->free_ents;

	if (e) {
		w->free_ents = e->free_next;
		w->nfree--;
	} else {
		e = malloc(sizeof(*e));
		if (!e)
			return NULL;
	}
	e->dirty = e->excl = e->isnew = e->deleted = 0;
	return e;
}

static void nc_recycle(struct wtx *w, struct ncent *e)
{
	if (w->nfree >= NC_KEEP_FREE) {
		free(e);
		return;
	}
	e->free_next = w->free_ents;
	w->free_ents = e;
	w->nfree++;
}

static void nc_clear(struct wtx *w)
{
	for (uint32_t i = 0; i < w->nlist; i++)
		nc_recycle(w, w->list[i]);
	w->nlist = 0;
	if (w->tab)
		memset(w->tab, 0, w->tab_cap * sizeof(*w->tab));
}

/* ---- transactions -------------------------------------------------------------------------- */

int wtx_begin(struct dedup_store *s, struct wtx *w)
{
	int rc;

	w->s = s;
	w->ncd = 0;
	w->nvols = 0;
	w->rq_delta = 0;
	rc = dedup_mdb_err(mdb_txn_begin(s->env, NULL, 0, &w->txn));
	if (rc)
		return rc;
	if ((rc = meta_get_u64(w->txn, s->dbi_meta, META_NEXT_NODE, &w->next_node, 1)) ||
	    (rc = meta_get_u64(w->txn, s->dbi_meta, META_RQ_NEXT, &w->rq_next, 1)) ||
	    (rc = meta_get_u64(w->txn, s->dbi_meta, META_ZOMBIES, &w->zombies, 0)) ||
	    (rc = meta_get_u64(w->txn, s->dbi_meta, META_ZERO_WRITES, &w->zero_writes, 0))) {
		mdb_txn_abort(w->txn);
		w->txn = NULL;
		return rc;
	}
	return 0;
}

void wtx_abort(struct wtx *w)
{
	if (w->txn)
		mdb_txn_abort(w->txn);
	w->txn = NULL;
	nc_clear(w);
	w->ncd = 0;
	w->nvols = 0;
}

void wtx_free(struct wtx *w)
{
	struct ncent *e;

	wtx_abort(w);
	while ((e = w->free_ents)) {
		w->free_ents = e->free_next;
		free(e);
	}
	w->nfree = 0;
	free(w->tab);
	free(w->list);
	free(w->cd);
	free(w->vols);
	w->tab = NULL;
	w->list = NULL;
	w->cd = NULL;
	w->vols = NULL;
	w->tab_cap = w->cap_list = 0;
	w->cap_cd = w->cap_vols = 0;
}

static int ncent_cmp(const void *a, const void *b)
{
	const struct ncent *x = *(const struct ncent *const *)a;
	const struct ncent *y = *(const struct ncent *const *)b;

	return x->id < y->id ? -1 : x->id > y->id;
}

static int writeback_nodes(struct wtx *w)
{
	struct dedup_store *s = w->s;
	int rc;

	/* In id order: new ids are above every stored one, so they go in with MDB_APPEND and
	 * fill the node index's pages completely. */
	if (w->nlist > 1)
		qsort(w->list, w->nlist, sizeof(*w->list), ncent_cmp);
	for (uint32_t i = 0; i < w->nlist; i++) {
		struct ncent *e = w->list[i];
		MDB_val k = { sizeof(e->id), &e->id };

		if (e->deleted) {
			if (e->isnew)
				continue;
			rc = mdb_del(w->txn, s->dbi_nodes, &k, NULL);
			if (rc && rc != MDB_NOTFOUND)
				return dedup_mdb_err(rc);
			rc = mdb_del(w->txn, s->dbi_noderef, &k, NULL);
			if (rc && rc != MDB_NOTFOUND)
				return dedup_mdb_err(rc);
		} else if (e->dirty) {
			MDB_val d = { NODE_BYTES, &e->n };

			rc = mdb_put(w->txn, s->dbi_nodes, &k, &d, e->isnew ? MDB_APPEND : 0);
			/* APPEND refuses a key below the last one: only a foreign higher id (a
			 * damaged store) does that; place it normally, never over a live node */
			if (rc == MDB_KEYEXIST && e->isnew)
				rc = mdb_put(w->txn, s->dbi_nodes, &k, &d, MDB_NOOVERWRITE);
			if (rc == MDB_KEYEXIST) {
				log_err("map node %" PRIu64 " already exists", e->id);
				return -EIO;
			}
			if (rc)
				return dedup_mdb_err(rc);
		}
	}
	return 0;
}

static int writeback_ctrs(struct wtx *w)
{
	struct dedup_store *s = w->s;

	for (unsigned i = 0; i < w->ncd; i++) {
		struct ctr_delta *cd = &w->cd[i];
		MDB_val k = { sizeof(cd->cid), &cd->cid }, d;
		struct ctr_rec cr = { 0 };
		int64_t live;
		int rc;

		if (cd->remove) {
			rc = mdb_del(w->txn, s->dbi_ctrs, &k, NULL);
			if (rc && rc != MDB_NOTFOUND)
				return dedup_mdb_err(rc);
			continue;
		}
		rc = mdb_get(w->txn, s->dbi_ctrs, &k, &d);
		if (rc == 0 && d.mv_size == sizeof(cr))
			memcpy(&cr, d.mv_data, sizeof(cr));
		else if (rc && rc != MDB_NOTFOUND)
			return dedup_mdb_err(rc);
		else if (rc == MDB_NOTFOUND && !cd->used_max && !cd->live)
			continue; /* nothing committed into it yet */
		live = (int64_t)cr.live + cd->live;
		if (live < 0) {
			log_err("container %016" PRIx64 ": live count below zero (fsck repairs it)",
				cd->cid);
			live = 0;
		}
		cr.live = (uint32_t)live;
		if (cd->used_max > cr.used)
			cr.used = cd->used_max;
		cr.flags |= cd->set_flags;
		d.mv_size = sizeof(cr);
		d.mv_data = &cr;
		rc = mdb_put(w->txn, s->dbi_ctrs, &k, &d, 0);
		if (rc)
			return dedup_mdb_err(rc);
	}
	return 0;
}

static int writeback_vols(struct wtx *w)
{
	struct dedup_store *s = w->s;

	for (unsigned i = 0; i < w->nvols; i++) {
		struct wvol *wv = &w->vols[i];
		MDB_val k = { strlen(wv->name), wv->name }, d = { sizeof(wv->rec), &wv->rec };
		int rc;

		if (!wv->dirty)
			continue;
		if (wv->deleted)
			rc = wv->exists ? mdb_del(w->txn, s->dbi_vols, &k, NULL) : 0;
		else
			rc = mdb_put(w->txn, s->dbi_vols, &k, &d, 0);
		if (rc && rc != MDB_NOTFOUND)
			return dedup_mdb_err(rc);
	}
	return 0;
}

/*
 * Write the transaction's cached changes (nodes, container counts, volume records, counters)
 * into it without committing: the writer keeps one transaction open across many groups.
 */
int wtx_flush(struct wtx *w)
{
	struct dedup_store *s = w->s;
	int rc;

	if ((rc = writeback_nodes(w)) || (rc = writeback_ctrs(w)) || (rc = writeback_vols(w)) ||
	    (rc = meta_put_u64(w->txn, s->dbi_meta, META_NEXT_NODE, w->next_node)) ||
	    (rc = meta_put_u64(w->txn, s->dbi_meta, META_RQ_NEXT, w->rq_next)) ||
	    (rc = meta_put_u64(w->txn, s->dbi_meta, META_ZOMBIES, w->zombies)) ||
	    (rc = meta_put_u64(w->txn, s->dbi_meta, META_ZERO_WRITES, w->zero_writes)))
		return rc;
	nc_clear(w);
	w->ncd = 0;
	w->nvols = 0;
	return 0;
}

int wtx_commit(struct wtx *w)
{
	int rc = wtx_flush(w);

	if (rc) {
		wtx_abort(w);
		return rc;
	}
	rc = dedup_mdb_err(mdb_txn_commit(w->txn));
	w->txn = NULL;
	return rc;
}

/* ---- volumes in a transaction ---------------------------------------------------------------- */

int wvol_get(struct wtx *w, const char *name, struct wvol **out)
{
	MDB_val k = { strlen(name), (void *)name }, d;
	struct wvol *wv;
	int rc;

	for (unsigned i = 0; i < w->nvols; i++) {
		if (strcmp(w->vols[i].name, name) == 0) {
			*out = &w->vols[i];
			return 0;
		}
	}
	if (w->nvols == w->cap_vols) {
		unsigned cap = w->cap_vols ? w->cap_vols * 2 : 8;
		struct wvol *v = realloc(w->vols, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		w->vols = v;
		w->cap_vols = cap;
	}
	wv = &w->vols[w->nvols];
	memset(wv, 0, sizeof(*wv));
	snprintf(wv->name, sizeof(wv->name), "%s", name);
	rc = mdb_get(w->txn, w->s->dbi_vols, &k, &d);
	if (rc == 0) {
		if (d.mv_size != sizeof(wv->rec))
			return -EIO;
		memcpy(&wv->rec, d.mv_data, sizeof(wv->rec));
		if (wv->rec.magic != VOL_MAGIC || wv->rec.levels < 1 ||
		    wv->rec.levels > MAP_MAX_LEVELS)
			return -EIO;
		wv->exists = 1;
	} else if (rc != MDB_NOTFOUND) {
		return dedup_mdb_err(rc);
	}
	w->nvols++;
	*out = wv;
	return 0;
}

/* ---- nodes --------------------------------------------------------------------------------- */

int noderef_get(MDB_txn *txn, struct dedup_store *s, uint64_t id, uint32_t *ref)
{
	MDB_val k = { sizeof(id), &id }, d;
	int rc = mdb_get(txn, s->dbi_noderef, &k, &d);

	if (rc == MDB_NOTFOUND) {
		*ref = 1;
		return 0;
	}
	if (rc)
		return dedup_mdb_err(rc);
	if (d.mv_size != sizeof(*ref))
		return -EIO;
	memcpy(ref, d.mv_data, sizeof(*ref));
	return 0;
}

int noderef_set(struct wtx *w, uint64_t id, uint32_t ref)
{
	MDB_val k = { sizeof(id), &id }, d = { sizeof(ref), &ref };
	int rc;

	if (ref <= 1) {
		rc = mdb_del(w->txn, w->s->dbi_noderef, &k, NULL);
		return rc == MDB_NOTFOUND ? 0 : dedup_mdb_err(rc);
	}
	return dedup_mdb_err(mdb_put(w->txn, w->s->dbi_noderef, &k, &d, 0));
}

static int node_check(const struct node *n, uint64_t id, int level)
{
	if (n->h.magic != NODE_MAGIC || (level >= 0 && n->h.level != level) ||
	    n->h.count > (n->h.level ? INNER_FANOUT : LEAF_FANOUT)) {
		log_err("map node %" PRIu64 ": bad header (level %u, want %d)", id, n->h.level,
			level);
		return -EIO;
	}
	return 0;
}

/* Read-only view of a node: the cached copy, or LMDB's page (valid until the next update). */
int node_peek(struct wtx *w, uint64_t id, const struct node **out)
{
	struct ncent *e = nc_find(w, id);
	MDB_val k = { sizeof(id), &id }, d;
	int rc;

	if (e) {
		if (e->deleted)
			return -EIO;
		*out = &e->n;
		return 0;
	}
	rc = mdb_get(w->txn, w->s->dbi_nodes, &k, &d);
	if (rc == MDB_NOTFOUND) {
		log_err("map node %" PRIu64 " missing", id);
		return -EIO;
	}
	if (rc)
		return dedup_mdb_err(rc);
	if (!node_val_ok(d.mv_data, d.mv_size)) {
		log_err("map node %" PRIu64 ": bad record", id);
		return -EIO;
	}
	*out = d.mv_data;
	return 0;
}

/* Bring a node into the cache (to modify or free it). */
static int node_load(struct wtx *w, uint64_t id, int level, struct ncent **out)
{
	struct ncent *e = nc_find(w, id);
	const struct node *n;
	int rc;

	if (e) {
		if (e->deleted)
			return -EIO;
		*out = e;
		return node_check(&e->n, id, level);
	}
	rc = node_peek(w, id, &n);
	if (rc)
		return rc;
	rc = node_check(n, id, level);
	if (rc)
		return rc;
	e = nc_alloc(w);
	if (!e)
		return -ENOMEM;
	e->id = id;
	memcpy(&e->n, n, NODE_BYTES);
	rc = nc_insert(w, e);
	if (rc) {
		nc_recycle(w, e);
		return rc;
	}
	*out = e;
	return 0;
}

static int node_new(struct wtx *w, unsigned level, struct ncent **out)
{
	struct ncent *e = nc_alloc(w);
	int rc;

	if (!e)
		return -ENOMEM;
	e->id = w->next_node++;
	memset(&e->n, 0, NODE_BYTES);
	e->n.h.magic = NODE_MAGIC;
	e->n.h.level = (uint8_t)level;
	e->isnew = e->excl = e->dirty = 1;
	rc = nc_insert(w, e);
	if (rc) {
		nc_recycle(w, e);
		return rc;
	}
	*out = e;
	return 0;
}

/* Free an exclusively owned, empty node. */
static void node_drop(struct ncent *e)
{
	e->deleted = 1;
	e->dirty = 0;
}

/*
 * Make node @id (at @level, reached through an exclusive path) exclusive: itself if its
 * refcount is 1, else a copy that takes a reference on everything the original points to.
 */
static int node_cow(struct wtx *w, uint64_t id, unsigned level, struct ncent **out)
{
	struct ncent *e = nc_find(w, id), *ne;
	uint32_t ref;
	int rc;

	if (e && e->excl && !e->deleted) {
		*out = e;
		return 0;
	}
	rc = noderef_get(w->txn, w->s, id, &ref);
	if (rc)
		return rc;
	rc = node_load(w, id, (int)level, &e);
	if (rc)
		return rc;
	if (ref <= 1) {
		e->excl = 1;
		*out = e;
		return 0;
	}
	rc = node_new(w, level, &ne);
	if (rc)
		return rc;
	memcpy(&ne->n, &e->n, NODE_BYTES);
	if (level == 0) {
		for (unsigned i = 0; i < LEAF_FANOUT; i++) {
			if (dedup_hash_is_zero(e->n.hash[i]))
				continue;
			rc = content_incref(w, e->n.hash[i]);
			if (rc) {
				log_err("map node %" PRIu64 " names content missing from the index",
					id);
				return rc == -ENOENT ? -EIO : rc;
			}
		}
	} else {
		for (unsigned i = 0; i < INNER_FANOUT; i++) {
			uint64_t c = e->n.child[i];
			uint32_t cref;

			if (!c)
				continue;
			if ((rc = noderef_get(w->txn, w->s, c, &cref)) ||
			    (rc = noderef_set(w, c, cref + 1)))
				return rc;
		}
	}
	rc = noderef_set(w, id, ref - 1);
	if (rc)
		return rc;
	*out = ne;
	return 0;
}

static unsigned child_idx(uint64_t lba, unsigned level)
{
	return (unsigned)((lba / levels_span(level - 1)) % INNER_FANOUT);
}

int map_get(struct wtx *w, const struct vol_rec *vr, uint64_t lba, uint8_t out[HASH_BYTES])
{
	uint64_t id = vr->root;
	const struct node *n;
	int rc;

	for (unsigned l = vr->levels - 1; id && l > 0; l--) {
		rc = node_peek(w, id, &n);
		if (rc)
			return rc;
		rc = node_check(n, id, (int)l);
		if (rc)
			return rc;
		id = n->child[child_idx(lba, l)];
	}
	if (!id) {
		memset(out, 0, HASH_BYTES);
		return 0;
	}
	rc = node_peek(w, id, &n);
	if (rc)
		return rc;
	rc = node_check(n, id, 0);
	if (rc)
		return rc;
	memcpy(out, n->hash[lba % LEAF_FANOUT], HASH_BYTES);
	return 0;
}

/*
 * Point @lba at @nh (a zero name clears it). The caller has checked that the old name differs
 * and handles both names' references; copies made on the way take their own. Subtrees that
 * become empty are freed on the way back up.
 */
int map_set(struct wtx *w, struct vol_rec *vr, uint64_t lba, const uint8_t nh[HASH_BYTES])
{
	struct ncent *path[MAP_MAX_LEVELS], *e, *ce;
	unsigned pidx[MAP_MAX_LEVELS];
	unsigned top = vr->levels - 1, slot;
	int now_zero = dedup_hash_is_zero(nh), was_zero;
	int rc;

	if (!vr->root) {
		if (now_zero)
			return 0;
		rc = node_new(w, top, &e);
		if (rc)
			return rc;
	} else {
		rc = node_cow(w, vr->root, top, &e);
		if (rc)
			return rc;
	}
	vr->root = e->id;
	for (unsigned l = top; l > 0; l--) {
		unsigned idx = child_idx(lba, l);
		uint64_t c = e->n.child[idx];

		path[l] = e;
		pidx[l] = idx;
		if (!c) {
			if (now_zero)
				return 0;
			rc = node_new(w, l - 1, &ce);
			if (rc)
				return rc;
			e->n.child[idx] = ce->id;
			e->n.h.count++;
			e->dirty = 1;
		} else {
			rc = node_cow(w, c, l - 1, &ce);
			if (rc)
				return rc;
			if (ce->id != c) {
				e->n.child[idx] = ce->id;
				e->dirty = 1;
			}
		}
		e = ce;
	}
	slot = (unsigned)(lba % LEAF_FANOUT);
	was_zero = dedup_hash_is_zero(e->n.hash[slot]);
	memcpy(e->n.hash[slot], nh, HASH_BYTES);
	e->n.h.count = (uint16_t)(e->n.h.count + !now_zero - !was_zero);
	e->dirty = 1;
	for (unsigned l = 0; e->n.h.count == 0; l++) {
		node_drop(e);
		if (l == top) {
			vr->root = 0;
			break;
		}
		e = path[l + 1];
		e->n.child[pidx[l + 1]] = 0;
		e->n.h.count--;
		e->dirty = 1;
	}
	return 0;
}

/* Non-zero blocks under node @id (read only). */
int map_count(struct wtx *w, uint64_t id, unsigned level, uint64_t *nonzero)
{
	const struct node *n;
	uint64_t children[INNER_FANOUT];
	int rc;

	rc = node_peek(w, id, &n);
	if (rc)
		return rc;
	rc = node_check(n, id, (int)level);
	if (rc)
		return rc;
	if (level == 0) {
		*nonzero += n->h.count;
		return 0;
	}
	/* the page pointer dies with the next lookup below: copy the ids out first */
	memcpy(children, n->child, sizeof(children));
	for (unsigned i = 0; i < INNER_FANOUT; i++) {
		if (!children[i])
			continue;
		rc = map_count(w, children[i], level - 1, nonzero);
		if (rc)
			return rc;
	}
	return 0;
}

static int discard_rec(struct wtx *w, uint64_t id, unsigned level, uint64_t base, uint64_t lo,
		       uint64_t hi, uint64_t *newid, uint64_t *removed)
{
	uint64_t span = levels_span(level);
	uint64_t from = lo > base ? lo : base;
	uint64_t to = hi - base < span ? hi : base + span;
	struct ncent *e;
	int rc;

	if (from == base && to - base == span) {
		/* the whole subtree goes: one queued drop, whatever its size */
		rc = map_count(w, id, level, removed);
		if (rc == 0)
			rc = rq_push_node(w, id);
		*newid = 0;
		return rc;
	}
	rc = node_cow(w, id, level, &e);
	if (rc)
		return rc;
	if (level == 0) {
		for (uint64_t b = from; b < to; b++) {
			uint8_t *h = e->n.hash[b - base];

			if (dedup_hash_is_zero(h))
				continue;
			rc = rq_push_hash(w, h);
			if (rc)
				return rc;
			memset(h, 0, HASH_BYTES);
			e->n.h.count--;
			(*removed)++;
			e->dirty = 1;
		}
	} else {
		uint64_t cspan = levels_span(level - 1);
		unsigned first = (unsigned)((from - base) / cspan);
		unsigned last = (unsigned)((to - 1 - base) / cspan);

		for (unsigned i = first; i <= last; i++) {
			uint64_t c = e->n.child[i], nc;

			if (!c)
				continue;
			rc = discard_rec(w, c, level - 1, base + i * cspan, lo, hi, &nc, removed);
			if (rc)
				return rc;
			if (nc != c) {
				e->n.child[i] = nc;
				if (!nc)
					e->n.h.count--;
				e->dirty = 1;
			}
		}
	}
	if (e->n.h.count == 0) {
		node_drop(e);
		*newid = 0;
	} else {
		*newid = e->id;
	}
	return 0;
}

/* Clear blocks [lba, lba + n) (clipped to the tree); *removed += non-zero blocks cleared. */
int map_discard(struct wtx *w, struct vol_rec *vr, uint64_t lba, uint64_t n, uint64_t *removed)
{
	uint64_t span = levels_span(vr->levels - 1), hi, nr;
	int rc;

	if (!vr->root || n == 0 || lba >= span)
		return 0;
	hi = n > span - lba ? span : lba + n;
	rc = discard_rec(w, vr->root, vr->levels - 1, 0, lba, hi, &nr, removed);
	if (rc)
		return rc;
	vr->root = nr;
	return 0;
}

/* Add levels until the tree covers @new_blocks: the old root becomes child 0 of a new one. */
int map_grow(struct wtx *w, struct vol_rec *vr, uint64_t new_blocks)
{
	while (vr->levels < MAP_MAX_LEVELS && levels_span(vr->levels - 1) < new_blocks) {
		if (vr->root) {
			struct ncent *e;
			int rc = node_new(w, vr->levels, &e);

			if (rc)
				return rc;
			e->n.child[0] = vr->root;
			e->n.h.count = 1;
			vr->root = e->id;
		}
		vr->levels++;
	}
	return levels_span(vr->levels - 1) < new_blocks ? -EFBIG : 0;
}

/*
 * Drop one reference to node @id (reclaim). At zero the node is freed: an interior node queues
 * a drop for each child, a leaf appends its content names to @hashes (the caller drops them in
 * sorted order). @hashes has room for LEAF_FANOUT names.
 */
int map_node_decref(struct wtx *w, uint64_t id, uint8_t *hashes, unsigned *nhashes)
{
	struct ncent *e;
	uint32_t ref;
	int rc;

	*nhashes = 0;
	rc = noderef_get(w->txn, w->s, id, &ref);
	if (rc)
		return rc;
	if (ref > 1)
		return noderef_set(w, id, ref - 1);
	rc = node_load(w, id, -1, &e);
	if (rc)
		return rc;
	if (e->n.h.level == 0) {
		for (unsigned i = 0; i < LEAF_FANOUT; i++) {
			if (dedup_hash_is_zero(e->n.hash[i]))
				continue;
			memcpy(hashes + (size_t)*nhashes * HASH_BYTES, e->n.hash[i], HASH_BYTES);
			(*nhashes)++;
		}
	} else {
		for (unsigned i = 0; i < INNER_FANOUT; i++) {
			if (!e->n.child[i])
				continue;
			rc = rq_push_node(w, e->n.child[i]);
			if (rc)
				return rc;
		}
	}
	node_drop(e);
	return 0;
}

/*
 * fsck.c - check the block maps, the content index, the refcounts and the containers against
 * each other, and repair what can be repaired.
 *
 * Runs on the writer (writes pause). After draining the reclaim queue:
 *   1. walk every volume's tree and count, in two scratch LMDB databases (so memory does not
 *      grow with the store), how many parents each node has and how many leaf entries name
 *      each hash: the refcounts the invariants demand;
 *   2. on one read snapshot, compare them with the stored node refcounts, the index refcounts,
 *      the container live/used counts, the volume block counts and the zombie counter,
 *      collecting fixes (and, with DEDUP_FSCK_VERIFY, re-hash every live block);
 *   3. apply the fixes in chunked transactions; delete container files nothing knows.
 * Lost data (a map naming a hash the index lacks, an entry pointing nowhere) is reported, not
 * invented.
 */
#define LOG_TAG "dedup"
#include "common/log.h"
#include "dedup/dedup_internal.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FK_TXN_OPS 20000

struct fnode {
	uint32_t ref;      /**< parents seen */
	uint16_t level;
	uint8_t unusable;  /**< missing or bad header: not descended */
	uint8_t badcount;  /**< header count differs from the entries */
	uint64_t nonzero;  /**< non-zero blocks under it */
};

enum fix_kind {
	FIX_DEL_NODE = 1,
	FIX_NODEREF,
	FIX_DEL_NODEREF,
	FIX_NODE_COUNT,
	FIX_REFS,
	FIX_CTR,
	FIX_VOL_NONZERO,
	FIX_ZOMBIES,
};

struct fix {
	enum fix_kind kind;
	uint8_t key[HASH_BYTES]; /**< hash, or the u64 id / cid in the first 8 bytes */
	char name[DEDUP_NAME_MAX + 1];
	uint64_t a, b;
};

struct fixes {
	struct fix *v;
	size_t n, cap;
};

struct ctr_chk {
	uint64_t cid;
	struct ctr_rec rec;
	uint64_t exp_live;
	uint32_t max_used;
};

struct fk {
	struct dedup_store *s;
	MDB_txn *txn;
	MDB_dbi dh, dn;
	unsigned ops;
	unsigned flags;
	struct dedup_fsck_report *r;
	struct fixes fx;
	struct ctr_chk *ctrs;
	size_t nctrs;
	EVP_MD_CTX *md;
	void *blk;
};

static int fix_add(struct fk *f, enum fix_kind kind, const void *key, size_t klen, uint64_t a,
		   uint64_t b)
{
	struct fix *x;

	if (f->fx.n == f->fx.cap) {
		size_t cap = f->fx.cap ? f->fx.cap * 2 : 64;
		struct fix *v = realloc(f->fx.v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		f->fx.v = v;
		f->fx.cap = cap;
	}
	x = &f->fx.v[f->fx.n++];
	memset(x, 0, sizeof(*x));
	x->kind = kind;
	if (kind == FIX_VOL_NONZERO)
		snprintf(x->name, sizeof(x->name), "%.*s", (int)klen, (const char *)key);
	else if (key)
		memcpy(x->key, key, klen);
	x->a = a;
	x->b = b;
	return 0;
}

/* ---- phase 1: expected counts ---------------------------------------------------------------- */

static int fk_tick(struct fk *f)
{
	int rc;

	if (++f->ops < FK_TXN_OPS)
		return 0;
	f->ops = 0;
	rc = mdb_txn_commit(f->txn);
	f->txn = NULL;
	if (rc)
		return dedup_mdb_err(rc);
	return dedup_mdb_err(mdb_txn_begin(f->s->env, NULL, 0, &f->txn));
}

static int fk_hash_inc(struct fk *f, const uint8_t *h)
{
	MDB_val k = { HASH_BYTES, (void *)h }, d;
	uint32_t cnt = 0;
	int rc = mdb_get(f->txn, f->dh, &k, &d);

	if (rc == 0 && d.mv_size == sizeof(cnt))
		memcpy(&cnt, d.mv_data, sizeof(cnt));
	else if (rc && rc != MDB_NOTFOUND)
		return dedup_mdb_err(rc);
	if (cnt != UINT32_MAX)
		cnt++;
	d.mv_size = sizeof(cnt);
	d.mv_data = &cnt;
	return dedup_mdb_err(mdb_put(f->txn, f->dh, &k, &d, 0));
}

static int fn_get(struct fk *f, uint64_t id, struct fnode *fn)
{
	MDB_val k = { sizeof(id), &id }, d;
	int rc = mdb_get(f->txn, f->dn, &k, &d);

	if (rc)
		return dedup_mdb_err(rc);
	memcpy(fn, d.mv_data, sizeof(*fn));
	return 0;
}

static int fn_put(struct fk *f, uint64_t id, const struct fnode *fn)
{
	MDB_val k = { sizeof(id), &id }, d = { sizeof(*fn), (void *)fn };

	return dedup_mdb_err(mdb_put(f->txn, f->dn, &k, &d, 0));
}

static int fk_node(struct fk *f, uint64_t id, unsigned level, uint64_t *nonzero)
{
	MDB_val k = { sizeof(id), &id }, d;
	struct node n;
	struct fnode fn;
	uint64_t sum = 0;
	unsigned cnt = 0;
	int rc;

	rc = fn_get(f, id, &fn);
	if (rc == 0) {
		/* shared: one more parent, no second descent */
		if (fn.ref != UINT32_MAX)
			fn.ref++;
		*nonzero += fn.nonzero;
		return fn_put(f, id, &fn);
	}
	if (rc != -ENOENT)
		return rc;
	memset(&fn, 0, sizeof(fn));
	fn.ref = 1;
	fn.level = (uint16_t)level;
	rc = mdb_get(f->txn, f->s->dbi_nodes, &k, &d);
	if (rc && rc != MDB_NOTFOUND)
		return dedup_mdb_err(rc);
	if (rc == MDB_NOTFOUND) {
		f->r->missing_nodes++;
		fn.unusable = 1;
		return fn_put(f, id, &fn);
	}
	if (d.mv_size == NODE_BYTES)
		memcpy(&n, d.mv_data, sizeof(n));
	if (d.mv_size != NODE_BYTES || n.h.magic != NODE_MAGIC || n.h.level != level) {
		f->r->bad_nodes++;
		fn.unusable = 1;
		return fn_put(f, id, &fn);
	}
	f->r->nodes++;
	/* mark visited before descending, so a corrupt cycle ends here */
	rc = fn_put(f, id, &fn);
	if (rc)
		return rc;
	if (level == 0) {
		for (unsigned i = 0; i < LEAF_FANOUT; i++) {
			if (dedup_hash_is_zero(n.hash[i]))
				continue;
			cnt++;
			rc = fk_hash_inc(f, n.hash[i]);
			if (rc)
				return rc;
		}
		sum = cnt;
	} else {
		for (unsigned i = 0; i < INNER_FANOUT; i++) {
			if (!n.child[i])
				continue;
			cnt++;
			rc = fk_node(f, n.child[i], level - 1, &sum);
			if (rc)
				return rc;
		}
	}
	rc = fn_get(f, id, &fn); /* descendants may have committed or bumped it */
	if (rc)
		return rc;
	fn.nonzero = sum;
	if (cnt != n.h.count) {
		fn.badcount = 1;
		f->r->bad_nodes++;
	}
	rc = fn_put(f, id, &fn);
	if (rc)
		return rc;
	*nonzero += sum;
	return fk_tick(f);
}

struct vol_ent {
	char name[DEDUP_NAME_MAX + 1];
	struct vol_rec rec;
};

static int fk_walk(struct fk *f)
{
	struct vol_ent *vols = NULL;
	size_t n = 0, cap = 0;
	MDB_cursor *cur;
	MDB_val k, d;
	int rc;

	rc = dedup_mdb_err(mdb_cursor_open(f->txn, f->s->dbi_vols, &cur));
	if (rc)
		return rc;
	while ((rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) == 0) {
		if (n == cap) {
			struct vol_ent *v;

			cap = cap ? cap * 2 : 16;
			v = realloc(vols, cap * sizeof(*v));
			if (!v) {
				rc = -ENOMEM;
				break;
			}
			vols = v;
		}
		memset(&vols[n], 0, sizeof(vols[n]));
		memcpy(vols[n].name, k.mv_data,
		       k.mv_size > DEDUP_NAME_MAX ? DEDUP_NAME_MAX : k.mv_size);
		if (d.mv_size != sizeof(struct vol_rec)) {
			f->r->counter_errors++;
			continue;
		}
		memcpy(&vols[n].rec, d.mv_data, sizeof(struct vol_rec));
		n++;
	}
	mdb_cursor_close(cur);
	rc = rc == MDB_NOTFOUND ? 0 : rc == -ENOMEM ? rc : dedup_mdb_err(rc);
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct vol_rec *vr = &vols[i].rec;
		uint64_t nz = 0;

		f->r->volumes++;
		if (vr->magic != VOL_MAGIC || vr->levels < 1 || vr->levels > MAP_MAX_LEVELS) {
			f->r->counter_errors++;
			continue;
		}
		if (vr->root) {
			rc = fk_node(f, vr->root, vr->levels - 1, &nz);
			if (rc)
				break;
		}
		if (nz != vr->nonzero) {
			f->r->counter_errors++;
			rc = fix_add(f, FIX_VOL_NONZERO, vols[i].name, strlen(vols[i].name), nz, 0);
		}
	}
	free(vols);
	return rc;
}

/* ---- phase 2: compare ------------------------------------------------------------------------ */

static struct ctr_chk *ctr_find(struct fk *f, uint64_t cid)
{
	size_t lo = 0, hi = f->nctrs;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (f->ctrs[mid].cid == cid)
			return &f->ctrs[mid];
		if (f->ctrs[mid].cid < cid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int fk_load_ctrs(struct fk *f, MDB_txn *txn)
{
	size_t cap = 0;
	MDB_cursor *cur;
	MDB_val k, d;
	int rc;

	rc = dedup_mdb_err(mdb_cursor_open(txn, f->s->dbi_ctrs, &cur));
	if (rc)
		return rc;
	while ((rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) == 0) {
		struct ctr_chk *c;

		if (f->nctrs == cap) {
			cap = cap ? cap * 2 : 64;
			c = realloc(f->ctrs, cap * sizeof(*c));
			if (!c) {
				rc = -ENOMEM;
				break;
			}
			f->ctrs = c;
		}
		c = &f->ctrs[f->nctrs++];
		memset(c, 0, sizeof(*c));
		memcpy(&c->cid, k.mv_data, sizeof(c->cid));
		if (d.mv_size == sizeof(c->rec))
			memcpy(&c->rec, d.mv_data, sizeof(c->rec));
		else
			f->r->container_errors++;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc == -ENOMEM ? rc : dedup_mdb_err(rc);
}

static int fk_nodes(struct fk *f, MDB_txn *txn)
{
	MDB_cursor *cur;
	MDB_val k, d;
	int rc = 0, mrc;

	mrc = mdb_cursor_open(txn, f->s->dbi_nodes, &cur);
	if (mrc)
		return dedup_mdb_err(mrc);
	while (rc == 0 && (mrc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) == 0) {
		MDB_val dd;
		struct fnode fn;
		uint64_t id;
		uint32_t ref;

		memcpy(&id, k.mv_data, sizeof(id));
		mrc = mdb_get(txn, f->dn, &k, &dd);
		if (mrc == MDB_NOTFOUND) {
			f->r->leaked_nodes++;
			rc = fix_add(f, FIX_DEL_NODE, &id, sizeof(id), 0, 0);
			continue;
		}
		if (mrc)
			break;
		memcpy(&fn, dd.mv_data, sizeof(fn));
		rc = noderef_get(txn, f->s, id, &ref);
		if (rc == 0 && ref != fn.ref) {
			f->r->node_ref_errors++;
			rc = fix_add(f, FIX_NODEREF, &id, sizeof(id), fn.ref, 0);
		}
		if (rc == 0 && fn.badcount)
			rc = fix_add(f, FIX_NODE_COUNT, &id, sizeof(id), 0, 0);
	}
	mdb_cursor_close(cur);
	if (rc)
		return rc;
	if (mrc != MDB_NOTFOUND)
		return dedup_mdb_err(mrc);
	/* refcount records of nodes that do not exist */
	mrc = mdb_cursor_open(txn, f->s->dbi_noderef, &cur);
	if (mrc)
		return dedup_mdb_err(mrc);
	while (rc == 0 && (mrc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) == 0) {
		MDB_val dd;

		if (mdb_get(txn, f->s->dbi_nodes, &k, &dd) == MDB_NOTFOUND) {
			f->r->node_ref_errors++;
			rc = fix_add(f, FIX_DEL_NODEREF, k.mv_data, sizeof(uint64_t), 0, 0);
		}
	}
	mdb_cursor_close(cur);
	if (rc)
		return rc;
	return mrc == MDB_NOTFOUND ? 0 : dedup_mdb_err(mrc);
}

static void fk_verify(struct fk *f, const uint8_t *h, uint64_t loc)
{
	struct ctr *c = ctr_lookup(f->s, LOC_CID(loc));
	uint8_t got[HASH_BYTES];

	if (!c)
		return; /* reported as a missing container */
	if (pread(c->fd, f->blk, DEDUP_BLOCK_BYTES, (off_t)LOC_SLOT(loc) * DEDUP_BLOCK_BYTES) !=
	    DEDUP_BLOCK_BYTES) {
		f->r->verify_errors++;
		return;
	}
	dedup_sha256(f->md, f->s->sha256, f->blk, got);
	if (memcmp(got, h, HASH_BYTES) != 0)
		f->r->verify_errors++;
}

static int fk_content(struct fk *f, MDB_txn *txn, uint64_t stored_zombies)
{
	uint64_t zombies = 0;
	MDB_cursor *cur;
	MDB_val k, d;
	int rc = 0, mrc;

	mrc = mdb_cursor_open(txn, f->s->dbi_content, &cur);
	if (mrc)
		return dedup_mdb_err(mrc);
	while (rc == 0 && (mrc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) == 0) {
		struct content_val v;
		struct ctr_chk *c;
		uint32_t want = 0, final;
		MDB_val dd;

		f->r->index_entries++;
		if (d.mv_size != sizeof(v) || k.mv_size != HASH_BYTES) {
			f->r->bad_locations++;
			continue;
		}
		memcpy(&v, d.mv_data, sizeof(v));
		mrc = mdb_get(txn, f->dh, &k, &dd);
		if (mrc == 0)
			memcpy(&want, dd.mv_data, sizeof(want));
		else if (mrc != MDB_NOTFOUND)
			break;
		mrc = 0;
		/* the counters below are checked against the correct refcounts */
		final = want;
		if (v.refs != want && !(v.refs == REFS_STICKY && want == UINT32_MAX)) {
			if (v.refs > want) {
				f->r->ref_too_high++;
				if (want == 0)
					f->r->leaked_blocks++;
			} else {
				f->r->ref_too_low++;
			}
			rc = fix_add(f, FIX_REFS, k.mv_data, HASH_BYTES, want, 0);
		}
		if (final == 0)
			zombies++;
		c = ctr_find(f, LOC_CID(v.loc));
		if (!c || LOC_SLOT(v.loc) >= f->s->ctr_slots) {
			f->r->bad_locations++;
			continue;
		}
		if (LOC_SLOT(v.loc) + 1 > c->max_used)
			c->max_used = LOC_SLOT(v.loc) + 1;
		if (final)
			c->exp_live++;
		if ((f->flags & DEDUP_FSCK_VERIFY) && final)
			fk_verify(f, k.mv_data, v.loc);
	}
	mdb_cursor_close(cur);
	if (rc)
		return rc;
	if (mrc != MDB_NOTFOUND)
		return dedup_mdb_err(mrc);
	/* names the maps use that the index lacks */
	mrc = mdb_cursor_open(txn, f->dh, &cur);
	if (mrc)
		return dedup_mdb_err(mrc);
	while ((mrc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) == 0) {
		MDB_val dd;

		if (mdb_get(txn, f->s->dbi_content, &k, &dd) == MDB_NOTFOUND)
			f->r->missing_blocks++;
	}
	mdb_cursor_close(cur);
	if (mrc != MDB_NOTFOUND)
		return dedup_mdb_err(mrc);
	if (zombies != stored_zombies) {
		f->r->counter_errors++;
		return fix_add(f, FIX_ZOMBIES, NULL, 0, zombies, 0);
	}
	return 0;
}

static int fk_ctrs(struct fk *f)
{
	int rc;

	for (size_t i = 0; i < f->nctrs; i++) {
		struct ctr_chk *c = &f->ctrs[i];
		uint32_t used = c->rec.used > c->max_used ? c->rec.used : c->max_used;

		if (!ctr_lookup(f->s, c->cid))
			f->r->missing_containers++;
		if (c->rec.live == c->exp_live && c->rec.used == used)
			continue;
		f->r->container_errors++;
		rc = fix_add(f, FIX_CTR, &c->cid, sizeof(c->cid), c->exp_live, used);
		if (rc)
			return rc;
	}
	return 0;
}

/* Container files neither the index nor the open store knows. */
static int fk_orphans(struct fk *f)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/containers", f->s->dir);
	d = opendir(path);
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		char *end;
		uint64_t cid;

		if (strlen(de->d_name) != 20 || strcmp(de->d_name + 16, ".ctr"))
			continue;
		cid = strtoull(de->d_name, &end, 16);
		if (end != de->d_name + 16 || ctr_find(f, cid) || ctr_lookup(f->s, cid))
			continue;
		f->r->orphan_containers++;
		if ((f->flags & DEDUP_FSCK_REPAIR) &&
		    ctr_path(f->s, cid, path, sizeof(path)) == 0 && unlink(path) == 0)
			f->r->repaired++;
	}
	closedir(d);
	return 0;
}

/* ---- phase 3: repair ------------------------------------------------------------------------- */

static int fix_apply(struct fk *f, MDB_txn *txn, const struct fix *x)
{
	struct dedup_store *s = f->s;
	uint64_t id;
	MDB_val k = { sizeof(id), &id }, d;
	int rc = 0;

	memcpy(&id, x->key, sizeof(id));
	switch (x->kind) {
	case FIX_DEL_NODE:
		rc = mdb_del(txn, s->dbi_nodes, &k, NULL);
		if (rc == 0 || rc == MDB_NOTFOUND)
			rc = mdb_del(txn, s->dbi_noderef, &k, NULL);
		break;
	case FIX_NODEREF: {
		uint32_t ref = (uint32_t)x->a;

		d.mv_size = sizeof(ref);
		d.mv_data = &ref;
		rc = ref <= 1 ? mdb_del(txn, s->dbi_noderef, &k, NULL)
			      : mdb_put(txn, s->dbi_noderef, &k, &d, 0);
		break;
	}
	case FIX_DEL_NODEREF:
		rc = mdb_del(txn, s->dbi_noderef, &k, NULL);
		break;
	case FIX_NODE_COUNT: {
		struct node n;
		unsigned cnt = 0;

		rc = mdb_get(txn, s->dbi_nodes, &k, &d);
		if (rc || d.mv_size != NODE_BYTES)
			break;
		memcpy(&n, d.mv_data, sizeof(n));
		for (unsigned i = 0; i < (n.h.level ? INNER_FANOUT : LEAF_FANOUT); i++)
			cnt += n.h.level ? !!n.child[i] : !dedup_hash_is_zero(n.hash[i]);
		n.h.count = (uint16_t)cnt;
		d.mv_data = &n;
		rc = mdb_put(txn, s->dbi_nodes, &k, &d, 0);
		break;
	}
	case FIX_REFS: {
		MDB_val hk = { HASH_BYTES, (void *)x->key };
		struct content_val v;

		rc = mdb_get(txn, s->dbi_content, &hk, &d);
		if (rc || d.mv_size != sizeof(v))
			break;
		memcpy(&v, d.mv_data, sizeof(v));
		v.refs = x->a >= REFS_STICKY ? REFS_STICKY : (uint32_t)x->a;
		d.mv_data = &v;
		rc = mdb_put(txn, s->dbi_content, &hk, &d, 0);
		break;
	}
	case FIX_CTR: {
		struct ctr_rec cr = { 0 };

		rc = mdb_get(txn, s->dbi_ctrs, &k, &d);
		if (rc == 0 && d.mv_size == sizeof(cr))
			memcpy(&cr, d.mv_data, sizeof(cr));
		cr.live = (uint32_t)x->a;
		cr.used = (uint32_t)x->b;
		d.mv_size = sizeof(cr);
		d.mv_data = &cr;
		rc = mdb_put(txn, s->dbi_ctrs, &k, &d, 0);
		break;
	}
	case FIX_VOL_NONZERO: {
		MDB_val vk = { strlen(x->name), (void *)x->name };
		struct vol_rec vr;

		rc = mdb_get(txn, s->dbi_vols, &vk, &d);
		if (rc || d.mv_size != sizeof(vr))
			break;
		memcpy(&vr, d.mv_data, sizeof(vr));
		vr.nonzero = x->a;
		d.mv_data = &vr;
		rc = mdb_put(txn, s->dbi_vols, &vk, &d, 0);
		break;
	}
	case FIX_ZOMBIES:
		return meta_put_u64(txn, s->dbi_meta, META_ZOMBIES, x->a);
	}
	return rc == MDB_NOTFOUND ? 0 : dedup_mdb_err(rc);
}

static int fk_repair(struct fk *f)
{
	MDB_txn *txn = NULL;
	int rc = 0;

	for (size_t i = 0; i < f->fx.n; i++) {
		if (!txn) {
			rc = dedup_mdb_err(mdb_txn_begin(f->s->env, NULL, 0, &txn));
			if (rc)
				return rc;
		}
		rc = fix_apply(f, txn, &f->fx.v[i]);
		if (rc)
			break;
		f->r->repaired++;
		if ((i + 1) % FK_TXN_OPS == 0 || i + 1 == f->fx.n) {
			rc = dedup_mdb_err(mdb_txn_commit(txn));
			txn = NULL;
			if (rc)
				return rc;
		}
	}
	if (txn)
		mdb_txn_abort(txn);
	return rc;
}

/* ---- driver ---------------------------------------------------------------------------------- */

static int scratch_open(struct fk *f, int drop)
{
	MDB_txn *txn;
	int rc;

	rc = dedup_mdb_err(mdb_txn_begin(f->s->env, NULL, 0, &txn));
	if (rc)
		return rc;
	rc = dedup_mdb_err(mdb_dbi_open(txn, "fsck_hash", MDB_CREATE, &f->dh));
	if (rc == 0)
		rc = dedup_mdb_err(mdb_dbi_open(txn, "fsck_node", MDB_CREATE | MDB_INTEGERKEY,
						&f->dn));
	/* empty at start (a previous run may have died), deleted at the end */
	if (rc == 0)
		rc = dedup_mdb_err(mdb_drop(txn, f->dh, drop));
	if (rc == 0)
		rc = dedup_mdb_err(mdb_drop(txn, f->dn, drop));
	if (rc) {
		mdb_txn_abort(txn);
		return rc;
	}
	return dedup_mdb_err(mdb_txn_commit(txn));
}

static int fsck_once(struct dedup_store *s, unsigned flags, struct dedup_fsck_report *r)
{
	struct fk f = { .s = s, .flags = flags, .r = r };
	uint64_t zombies;
	MDB_txn *txn;
	int rc;

	memset(r, 0, sizeof(*r));
	rc = scratch_open(&f, 0);
	if (rc)
		return rc;
	rc = dedup_mdb_err(mdb_txn_begin(s->env, NULL, 0, &f.txn));
	if (rc)
		goto out_scratch;
	rc = fk_walk(&f);
	if (rc == 0)
		rc = dedup_mdb_err(mdb_txn_commit(f.txn));
	else if (f.txn)
		mdb_txn_abort(f.txn);
	f.txn = NULL;
	if (rc)
		goto out_scratch;

	f.md = EVP_MD_CTX_new();
	if (!f.md || posix_memalign(&f.blk, DEDUP_BLOCK_BYTES, DEDUP_BLOCK_BYTES)) {
		rc = -ENOMEM;
		goto out_free;
	}
	rc = dedup_mdb_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn));
	if (rc)
		goto out_free;
	if ((rc = meta_get_u64(txn, s->dbi_meta, META_ZOMBIES, &zombies, 0)) == 0 &&
	    (rc = fk_load_ctrs(&f, txn)) == 0 && (rc = fk_nodes(&f, txn)) == 0 &&
	    (rc = fk_content(&f, txn, zombies)) == 0)
		rc = fk_ctrs(&f);
	mdb_txn_abort(txn);
	if (rc == 0)
		rc = fk_orphans(&f);
	if (rc == 0 && (flags & DEDUP_FSCK_REPAIR))
		rc = fk_repair(&f);
out_free:
	free(f.blk);
	EVP_MD_CTX_free(f.md);
	free(f.fx.v);
	free(f.ctrs);
out_scratch:
	if (scratch_open(&f, 1) && rc == 0)
		rc = -EIO;
	return rc;
}

int fsck_run(struct dedup_store *s, struct wop *op)
{
	int rc;

	rc = writer_drain_reclaim(s);
	if (rc)
		return rc;
	for (;;) {
		rc = fsck_once(s, (unsigned)op->u, op->out);
		if (rc != -ENOSPC || dedup_map_grow(s))
			break;
	}
	if (rc == 0) {
		struct dedup_fsck_report *r = op->out;

		log_debug("fsck: %" PRIu64 " volumes, %" PRIu64 " nodes, %" PRIu64
			 " index entries; %s, %" PRIu64 " repaired",
			 r->volumes, r->nodes, r->index_entries,
			 dedup_fsck_clean(r) ? "clean" : "problems found", r->repaired);
	}
	return rc;
}

int dedup_fsck_clean(const struct dedup_fsck_report *r)
{
	return !(r->ref_too_high | r->ref_too_low | r->missing_blocks | r->bad_locations |
		 r->node_ref_errors | r->leaked_nodes | r->missing_nodes | r->bad_nodes |
		 r->container_errors | r->orphan_containers | r->missing_containers |
		 r->counter_errors | r->verify_errors);
}

static int op_fsck(struct dedup_store *s, struct wop *op)
{
	return fsck_run(s, op);
}

int dedup_store_fsck(struct dedup_store *s, unsigned flags, struct dedup_fsck_report *r)
{
	struct wop op = { .fn = op_fsck, .u = flags, .out = r };

	return writer_call(s, &op, NULL, NULL);
}

/*
 * vol.c - volumes and snapshots: create, snapshot, clone, delete, resize (writer operations),
 * lookups and the share walk (read snapshots), and I/O handles.
 */
#define LOG_TAG "dedup"
#include "common/log.h"
#include "dedup/dedup_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int rtxn_begin(struct dedup_store *s, MDB_txn **txn)
{
	int rc;

	pthread_rwlock_rdlock(&s->rd_lock);
	rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
	if (rc) {
		pthread_rwlock_unlock(&s->rd_lock);
		return dedup_mdb_err(rc);
	}
	return 0;
}

static void rtxn_end(struct dedup_store *s, MDB_txn *txn)
{
	mdb_txn_abort(txn);
	pthread_rwlock_unlock(&s->rd_lock);
}

int vol_rec_read(MDB_txn *txn, struct dedup_store *s, const char *name, struct vol_rec *vr)
{
	MDB_val k = { strlen(name), (void *)name }, d;
	int rc = mdb_get(txn, s->dbi_vols, &k, &d);

	if (rc)
		return dedup_mdb_err(rc);
	if (d.mv_size != sizeof(*vr))
		return -EIO;
	memcpy(vr, d.mv_data, sizeof(*vr));
	if (vr->magic != VOL_MAGIC || vr->levels < 1 || vr->levels > MAP_MAX_LEVELS)
		return -EIO;
	return 0;
}

static int size_ok(uint64_t size_bytes)
{
	if (size_bytes == 0 || size_bytes % DEDUP_BLOCK_BYTES)
		return -EINVAL;
	if (levels_span(MAP_MAX_LEVELS - 1) < size_bytes / DEDUP_BLOCK_BYTES)
		return -EFBIG;
	return 0;
}

/* Open handles see size changes once they are committed. */
static void handles_set_size(struct dedup_store *s, const char *name, uint64_t size_bytes)
{
	pthread_mutex_lock(&s->vol_lock);
	for (struct dedup_vol *v = s->vols; v; v = v->next)
		if (strcmp(v->name, name) == 0)
			atomic_store(&v->size_bytes, size_bytes);
	pthread_mutex_unlock(&s->vol_lock);
}

static int handles_open(struct dedup_store *s, const char *name)
{
	int n = 0;

	pthread_mutex_lock(&s->vol_lock);
	for (struct dedup_vol *v = s->vols; v; v = v->next)
		n += strcmp(v->name, name) == 0;
	pthread_mutex_unlock(&s->vol_lock);
	return n;
}

/* ---- writer operations --------------------------------------------------------------------- */

static int tx_create(struct wtx *w, void *arg)
{
	struct wop *op = arg;
	struct wvol *wv;
	int rc = wvol_get(w, op->a, &wv);

	if (rc)
		return rc;
	if (wv->exists)
		return -EEXIST;
	memset(&wv->rec, 0, sizeof(wv->rec));
	wv->rec.magic = VOL_MAGIC;
	wv->rec.size_bytes = op->u;
	wv->rec.levels = levels_for(op->u / DEDUP_BLOCK_BYTES);
	wv->rec.created = time(NULL);
	wv->dirty = 1;
	return 0;
}

static int op_create(struct dedup_store *s, struct wop *op)
{
	return writer_txn(s, tx_create, op);
}

int dedup_vol_create(struct dedup_store *s, const char *name, uint64_t size_bytes)
{
	struct wop op = { .fn = op_create, .a = name, .u = size_bytes };
	int rc;

	if (!dedup_name_ok(name))
		return -EINVAL;
	rc = size_ok(size_bytes);
	if (rc)
		return rc;
	return writer_call(s, &op, NULL, NULL);
}

/* op->u: 1 = read-only snapshot, 0 = writable clone */
static int tx_share(struct wtx *w, void *arg)
{
	struct wop *op = arg;
	struct wvol *wv;
	struct vol_rec src;
	int rc;

	rc = wvol_get(w, op->a, &wv);
	if (rc)
		return rc;
	if (!wv->exists || wv->deleted)
		return -ENOENT;
	src = wv->rec; /* copy: the next wvol_get may move the array */
	rc = wvol_get(w, op->b, &wv);
	if (rc)
		return rc;
	if (wv->exists && !wv->deleted)
		return -EEXIST;
	wv->rec = src;
	wv->rec.flags = op->u ? (src.flags | VOL_READONLY) : (src.flags & ~VOL_READONLY);
	wv->rec.created = time(NULL);
	snprintf(wv->rec.origin, sizeof(wv->rec.origin), "%s", op->a);
	wv->deleted = 0;
	wv->dirty = 1;
	if (src.root) {
		/* the whole map is shared: one more reference on its root */
		uint32_t ref;

		rc = noderef_get(w->txn, w->s, src.root, &ref);
		if (rc == 0)
			rc = noderef_set(w, src.root, ref + 1);
	}
	return rc;
}

static int op_share(struct dedup_store *s, struct wop *op)
{
	return writer_txn(s, tx_share, op);
}

static int share(struct dedup_store *s, const char *src, const char *dst, int readonly)
{
	struct wop op = { .fn = op_share, .a = src, .b = dst, .u = (uint64_t)readonly };

	if (!dedup_name_ok(src) || !dedup_name_ok(dst))
		return -EINVAL;
	return writer_call(s, &op, NULL, NULL);
}

int dedup_vol_snapshot(struct dedup_store *s, const char *vol, const char *snap)
{
	return share(s, vol, snap, 1);
}

int dedup_vol_clone(struct dedup_store *s, const char *src, const char *newvol)
{
	return share(s, src, newvol, 0);
}

static int tx_delete(struct wtx *w, void *arg)
{
	struct wop *op = arg;
	struct wvol *wv;
	int rc = wvol_get(w, op->a, &wv);

	if (rc)
		return rc;
	if (!wv->exists || wv->deleted)
		return -ENOENT;
	if (wv->rec.root) {
		/* the tree and its content references are dropped by the reclaimer */
		rc = rq_push_node(w, wv->rec.root);
		if (rc)
			return rc;
	}
	wv->deleted = 1;
	wv->dirty = 1;
	return 0;
}

static int op_delete(struct dedup_store *s, struct wop *op)
{
	/* checked on the writer: nothing can commit for this name between check and delete */
	if (handles_open(s, op->a))
		return -EBUSY;
	return writer_txn(s, tx_delete, op);
}

int dedup_vol_delete(struct dedup_store *s, const char *name)
{
	struct wop op = { .fn = op_delete, .a = name };

	if (!dedup_name_ok(name))
		return -EINVAL;
	return writer_call(s, &op, NULL, NULL);
}

static int tx_resize(struct wtx *w, void *arg)
{
	struct wop *op = arg;
	struct wvol *wv;
	struct vol_rec *vr;
	uint64_t old_blk, new_blk = op->u / DEDUP_BLOCK_BYTES;
	int rc = wvol_get(w, op->a, &wv);

	if (rc)
		return rc;
	if (!wv->exists || wv->deleted)
		return -ENOENT;
	vr = &wv->rec;
	if (vr->flags & VOL_READONLY)
		return -EROFS;
	old_blk = vr->size_bytes / DEDUP_BLOCK_BYTES;
	if (new_blk > old_blk) {
		rc = map_grow(w, vr, new_blk);
	} else if (new_blk < old_blk) {
		uint64_t removed = 0;

		rc = map_discard(w, vr, new_blk, old_blk - new_blk, &removed);
		vr->nonzero -= removed <= vr->nonzero ? removed : vr->nonzero;
	}
	if (rc)
		return rc;
	vr->size_bytes = op->u;
	wv->dirty = 1;
	return 0;
}

static int op_resize(struct dedup_store *s, struct wop *op)
{
	int rc = writer_txn(s, tx_resize, op);

	if (rc == 0)
		handles_set_size(s, op->a, op->u);
	return rc;
}

int dedup_vol_resize(struct dedup_store *s, const char *name, uint64_t size_bytes)
{
	struct wop op = { .fn = op_resize, .a = name, .u = size_bytes };
	int rc;

	if (!dedup_name_ok(name))
		return -EINVAL;
	rc = size_ok(size_bytes);
	if (rc)
		return rc;
	return writer_call(s, &op, NULL, NULL);
}

/* ---- lookups ------------------------------------------------------------------------------- */

static void info_fill(struct dedup_vol_info *info, const char *name, size_t nlen,
		      const struct vol_rec *vr)
{
	memset(info, 0, sizeof(*info));
	if (nlen > DEDUP_NAME_MAX)
		nlen = DEDUP_NAME_MAX;
	memcpy(info->name, name, nlen);
	snprintf(info->origin, sizeof(info->origin), "%s", vr->origin);
	info->size_bytes = vr->size_bytes;
	info->mapped_bytes = vr->nonzero * DEDUP_BLOCK_BYTES;
	info->created = vr->created;
	info->readonly = !!(vr->flags & VOL_READONLY);
}

int dedup_vol_get(struct dedup_store *s, const char *name, struct dedup_vol_info *info)
{
	struct vol_rec vr;
	MDB_txn *txn;
	int rc;

	if (!dedup_name_ok(name))
		return -EINVAL;
	rc = writer_checkpoint_call(s); /* block counts of committed state */
	if (rc == 0)
		rc = rtxn_begin(s, &txn);
	if (rc)
		return rc;
	rc = vol_rec_read(txn, s, name, &vr);
	rtxn_end(s, txn);
	if (rc == 0)
		info_fill(info, name, strlen(name), &vr);
	return rc;
}

int dedup_vol_list(struct dedup_store *s, struct dedup_vol_info **out, unsigned *count)
{
	struct dedup_vol_info *arr = NULL;
	unsigned n = 0, cap = 0;
	MDB_cursor *cur;
	MDB_txn *txn;
	MDB_val k, d;
	int rc;

	rc = writer_checkpoint_call(s);
	if (rc == 0)
		rc = rtxn_begin(s, &txn);
	if (rc)
		return rc;
	rc = dedup_mdb_err(mdb_cursor_open(txn, s->dbi_vols, &cur));
	if (rc)
		goto out_end;
	while ((rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) == 0) {
		struct vol_rec vr;

		if (d.mv_size != sizeof(vr))
			continue;
		memcpy(&vr, d.mv_data, sizeof(vr));
		if (n == cap) {
			struct dedup_vol_info *a;

			cap = cap ? cap * 2 : 16;
			a = realloc(arr, cap * sizeof(*a));
			if (!a) {
				rc = -ENOMEM;
				break;
			}
			arr = a;
		}
		info_fill(&arr[n++], k.mv_data, k.mv_size, &vr);
	}
	mdb_cursor_close(cur);
	rc = rc == MDB_NOTFOUND ? 0 : rc == -ENOMEM ? rc : dedup_mdb_err(rc);
out_end:
	rtxn_end(s, txn);
	if (rc) {
		free(arr);
		return rc;
	}
	*out = arr;
	*count = n;
	return 0;
}

static int share_walk(struct dedup_store *s, MDB_txn *txn, uint64_t id, unsigned level,
		      double factor, double *acc)
{
	MDB_val k = { sizeof(id), &id }, d;
	const struct node *n;
	uint32_t ref;
	int rc;

	rc = noderef_get(txn, s, id, &ref);
	if (rc)
		return rc;
	factor /= ref ? ref : 1;
	rc = mdb_get(txn, s->dbi_nodes, &k, &d);
	if (rc)
		return rc == MDB_NOTFOUND ? -EIO : dedup_mdb_err(rc);
	if (!node_val_ok(d.mv_data, d.mv_size))
		return -EIO;
	n = d.mv_data; /* valid for the whole read transaction */
	if (n->h.magic != NODE_MAGIC || n->h.level != level)
		return -EIO;
	if (level == 0) {
		for (unsigned i = 0; i < LEAF_FANOUT; i++) {
			struct content_val v;

			if (dedup_hash_is_zero(n->hash[i]))
				continue;
			rc = content_get(txn, s, n->hash[i], &v);
			if (rc)
				return rc == -ENOENT ? -EIO : rc;
			*acc += factor * DEDUP_BLOCK_BYTES / (v.refs ? v.refs : 1);
		}
		return 0;
	}
	for (unsigned i = 0; i < INNER_FANOUT; i++) {
		if (!n->child[i])
			continue;
		rc = share_walk(s, txn, n->child[i], level - 1, factor, acc);
		if (rc)
			return rc;
	}
	return 0;
}

int dedup_vol_share(struct dedup_store *s, const char *name, uint64_t *share_bytes)
{
	struct vol_rec vr;
	MDB_txn *txn;
	double acc = 0;
	int rc;

	if (!dedup_name_ok(name))
		return -EINVAL;
	rc = writer_checkpoint_call(s);
	if (rc == 0)
		rc = rtxn_begin(s, &txn);
	if (rc)
		return rc;
	rc = vol_rec_read(txn, s, name, &vr);
	if (rc == 0 && vr.root)
		rc = share_walk(s, txn, vr.root, vr.levels - 1, 1.0, &acc);
	rtxn_end(s, txn);
	if (rc == 0)
		*share_bytes = (uint64_t)(acc + 0.5);
	return rc;
}

/* ---- handles ------------------------------------------------------------------------------- */

int dedup_vol_open(struct dedup_store *s, const char *name, struct dedup_vol **out)
{
	struct dedup_vol *v;
	struct vol_rec vr;
	MDB_txn *txn;
	int rc;

	if (!dedup_name_ok(name))
		return -EINVAL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->s = s;
	snprintf(v->name, sizeof(v->name), "%s", name);
	/*
	 * Read the size and register under vol_lock: a resize updates handles under it after its
	 * commit, so this handle either reads the new size or gets updated.
	 */
	pthread_mutex_lock(&s->vol_lock);
	v->vs = ovl_vstate(s, name);
	rc = v->vs ? rtxn_begin(s, &txn) : -ENOMEM;
	if (rc == 0) {
		rc = vol_rec_read(txn, s, name, &vr);
		rtxn_end(s, txn);
	}
	if (rc == 0) {
		v->readonly = !!(vr.flags & VOL_READONLY);
		atomic_store(&v->size_bytes, vr.size_bytes);
		v->next = s->vols;
		s->vols = v;
	}
	pthread_mutex_unlock(&s->vol_lock);
	if (rc) {
		free(v);
		return rc;
	}
	*out = v;
	return 0;
}

void dedup_vol_close(struct dedup_vol *v)
{
	struct dedup_store *s;

	if (!v)
		return;
	s = v->s;
	pthread_mutex_lock(&s->vol_lock);
	for (struct dedup_vol **p = &s->vols; *p; p = &(*p)->next) {
		if (*p == v) {
			*p = v->next;
			break;
		}
	}
	pthread_mutex_unlock(&s->vol_lock);
	free(v);
}

uint64_t dedup_vol_size(const struct dedup_vol *v)
{
	return atomic_load(&((struct dedup_vol *)v)->size_bytes);
}

int dedup_vol_readonly(const struct dedup_vol *v)
{
	return v->readonly;
}

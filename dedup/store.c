/*
 * store.c - opening and closing a store: the directory lock, the LMDB environment and its
 * databases, the meta counters, map growth, pool statistics, and the small helpers every file
 * uses (LMDB error translation, SHA-256, zero detection).
 */
#define LOG_TAG "dedup"
#include "common/log.h"
#include "dedup/dedup_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_CTR_BYTES (64ull << 20)
#define DEFAULT_MAP_BYTES (4ull << 30)
#define DEFAULT_MAP_MAX (4ull << 40)
#define DEFAULT_GROUP_MAX 8192u
#define MAX_READERS 1022

int dedup_mdb_err(int rc)
{
	switch (rc) {
	case MDB_SUCCESS:
		return 0;
	case MDB_NOTFOUND:
		return -ENOENT;
	case MDB_KEYEXIST:
		return -EEXIST;
	case MDB_MAP_FULL:
		return -ENOSPC;
	case MDB_TXN_FULL:
	case MDB_CURSOR_FULL:
	case MDB_PAGE_FULL:
	case MDB_TLS_FULL:
		return -ENOMEM;
	case MDB_READERS_FULL:
		return -EUSERS;
	case MDB_DBS_FULL:
		return -EMFILE;
	case MDB_MAP_RESIZED:
		return -EAGAIN;
	case MDB_PAGE_NOTFOUND:
	case MDB_CORRUPTED:
	case MDB_PANIC:
		return -EIO;
	case MDB_VERSION_MISMATCH:
	case MDB_INVALID:
	case MDB_INCOMPATIBLE:
	case MDB_BAD_RSLOT:
	case MDB_BAD_TXN:
	case MDB_BAD_VALSIZE:
	case MDB_BAD_DBI:
		return -EINVAL;
	default:
		/* LMDB passes system errors through as positive errno values. */
		return rc > 0 ? -rc : -EIO;
	}
}

int dedup_name_ok(const char *name)
{
	size_t n;

	if (!name)
		return 0;
	n = strlen(name);
	if (n == 0 || n > DEDUP_NAME_MAX || name[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-'))
			return 0;
	}
	return 1;
}

int meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t *v, uint64_t dflt)
{
	MDB_val k = { strlen(key), (void *)key }, d;
	int rc = mdb_get(txn, dbi, &k, &d);

	if (rc == MDB_NOTFOUND) {
		*v = dflt;
		return 0;
	}
	if (rc)
		return dedup_mdb_err(rc);
	if (d.mv_size != sizeof(*v))
		return -EIO;
	memcpy(v, d.mv_data, sizeof(*v));
	return 0;
}

int meta_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t v)
{
	MDB_val k = { strlen(key), (void *)key }, d = { sizeof(v), &v };

	return dedup_mdb_err(mdb_put(txn, dbi, &k, &d, 0));
}

void dedup_sha256(EVP_MD_CTX *md, const EVP_MD *alg, const void *blk, uint8_t out[HASH_BYTES])
{
	unsigned len = 0;

	/*
	 * Re-initialising a context with the same fetched digest reuses its provider state, so
	 * hashing a block allocates nothing. These calls cannot fail for SHA-256 on valid
	 * arguments; a failure would leave garbage in out, so make it all ones (never a zero
	 * name, never silently matching real content) and say so.
	 */
	if (!EVP_DigestInit_ex2(md, alg, NULL) || !EVP_DigestUpdate(md, blk, DEDUP_BLOCK_BYTES) ||
	    !EVP_DigestFinal_ex(md, out, &len) || len != HASH_BYTES) {
		log_err("SHA-256 failed");
		memset(out, 0xff, HASH_BYTES);
	}
}

int dedup_block_is_zero(const void *blk)
{
	const unsigned char *p = blk;

	/* The first byte rejects nearly all data at once; memcmp with itself shifted by one
	 * compares the rest with the fastest loop libc has. */
	return p[0] == 0 && memcmp(p, p + 1, DEDUP_BLOCK_BYTES - 1) == 0;
}

int dedup_hash_is_zero(const uint8_t *h)
{
	static const uint8_t zero[HASH_BYTES];

	return memcmp(h, zero, HASH_BYTES) == 0;
}

uint64_t levels_span(unsigned level)
{
	uint64_t span = LEAF_FANOUT;

	for (unsigned i = 0; i < level; i++) {
		if (span > UINT64_MAX / INNER_FANOUT)
			return UINT64_MAX;
		span *= INNER_FANOUT;
	}
	return span;
}

unsigned levels_for(uint64_t nr_blk)
{
	unsigned l = 1;

	while (l < MAP_MAX_LEVELS && levels_span(l - 1) < nr_blk)
		l++;
	return l;
}

/*
 * Called by the writer after MDB_MAP_FULL with no write transaction open. Readers hold rd_lock
 * shared for as long as they use a snapshot, so holding it exclusively guarantees the remap
 * (which moves the whole map) happens while nobody holds a pointer into it.
 */
int dedup_map_grow(struct dedup_store *s)
{
	uint64_t want;
	int rc;

	if (s->map_bytes >= s->map_max_bytes)
		return -ENOSPC;
	want = s->map_bytes * 2;
	if (want > s->map_max_bytes)
		want = s->map_max_bytes;
	pthread_rwlock_wrlock(&s->rd_lock);
	rc = mdb_env_set_mapsize(s->env, want);
	pthread_rwlock_unlock(&s->rd_lock);
	if (rc)
		return dedup_mdb_err(rc);
	log_info("index map grown to %llu KiB", (unsigned long long)(want >> 10));
	s->map_bytes = want;
	return 0;
}

static int open_dbs(struct dedup_store *s, int create)
{
	MDB_txn *txn;
	unsigned cf = create ? MDB_CREATE : 0;
	uint64_t fmt, ctr_bytes;
	int rc;

	rc = mdb_txn_begin(s->env, NULL, 0, &txn);
	if (rc)
		return dedup_mdb_err(rc);
	if ((rc = mdb_dbi_open(txn, "meta", cf, &s->dbi_meta)) ||
	    (rc = mdb_dbi_open(txn, "vols", cf, &s->dbi_vols)) ||
	    (rc = mdb_dbi_open(txn, "nodes", cf | MDB_INTEGERKEY, &s->dbi_nodes)) ||
	    (rc = mdb_dbi_open(txn, "noderef", cf | MDB_INTEGERKEY, &s->dbi_noderef)) ||
	    (rc = mdb_dbi_open(txn, "content", cf, &s->dbi_content)) ||
	    (rc = mdb_dbi_open(txn, "ctrs", cf | MDB_INTEGERKEY, &s->dbi_ctrs)) ||
	    (rc = mdb_dbi_open(txn, "rq", cf | MDB_INTEGERKEY, &s->dbi_rq))) {
		rc = rc == MDB_NOTFOUND ? -ENOENT : dedup_mdb_err(rc);
		goto err_abort;
	}
	rc = meta_get_u64(txn, s->dbi_meta, META_FORMAT, &fmt, 0);
	if (rc)
		goto err_abort;
	if (fmt == 0) {
		if (!create) {
			rc = -ENOENT;
			goto err_abort;
		}
		if ((rc = meta_put_u64(txn, s->dbi_meta, META_FORMAT, DEDUP_FORMAT)) ||
		    (rc = meta_put_u64(txn, s->dbi_meta, META_CTR_BYTES, s->ctr_bytes)) ||
		    (rc = meta_put_u64(txn, s->dbi_meta, META_NEXT_NODE, 1)) ||
		    (rc = meta_put_u64(txn, s->dbi_meta, META_RQ_NEXT, 1)))
			goto err_abort;
	} else if (fmt != DEDUP_FORMAT) {
		log_err("%s: unknown store format %llu", s->dir, (unsigned long long)fmt);
		rc = -EINVAL;
		goto err_abort;
	}
	rc = meta_get_u64(txn, s->dbi_meta, META_CTR_BYTES, &ctr_bytes, 0);
	if (rc)
		goto err_abort;
	if (ctr_bytes < (64u << 10) || ctr_bytes > (4ull << 30) || ctr_bytes % DEDUP_BLOCK_BYTES) {
		rc = -EIO;
		goto err_abort;
	}
	s->ctr_bytes = ctr_bytes;
	s->ctr_slots = (uint32_t)(ctr_bytes / DEDUP_BLOCK_BYTES);
	rc = mdb_txn_commit(txn);
	return dedup_mdb_err(rc);

err_abort:
	mdb_txn_abort(txn);
	return rc;
}

static int open_env(struct dedup_store *s, int create)
{
	char path[PATH_MAX];
	MDB_envinfo info;
	struct stat st;
	int rc;

	if (snprintf(path, sizeof(path), "%s/index.mdb", s->dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	if (!create && stat(path, &st) < 0)
		return -errno;
	rc = mdb_env_create(&s->env);
	if (rc)
		return dedup_mdb_err(rc);
	if ((rc = mdb_env_set_maxdbs(s->env, 16)) ||
	    (rc = mdb_env_set_maxreaders(s->env, MAX_READERS)) ||
	    (rc = mdb_env_set_mapsize(s->env, s->map_bytes))) {
		rc = dedup_mdb_err(rc);
		goto err_close;
	}
	/*
	 * NOMETASYNC: each commit syncs the data pages but not the meta page, so a commit costs one
	 * fdatasync; the meta page is in the kernel at once (survives kill -9) and is synced by the
	 * next commit or by a FLUSH (mdb_env_sync). After power loss the last unflushed commit may
	 * be undone, never corrupted. NOTLS: read transactions belong to contexts, not threads.
	 * NORDAHEAD: the index is read at random; readahead would only evict hot pages.
	 */
	rc = mdb_env_open(s->env, path, MDB_NOSUBDIR | MDB_NOMETASYNC | MDB_NOTLS | MDB_NORDAHEAD,
			  0600);
	if (rc) {
		rc = dedup_mdb_err(rc);
		goto err_close;
	}
	mdb_reader_check(s->env, NULL); /* slots of a killed process */
	if (mdb_env_info(s->env, &info) == 0 && info.me_mapsize > s->map_bytes)
		s->map_bytes = info.me_mapsize;
	rc = open_dbs(s, create);
	if (rc)
		goto err_close;
	return 0;

err_close:
	mdb_env_close(s->env);
	s->env = NULL;
	return rc;
}

static int opts_check(const struct dedup_opts *o)
{
	if (o->container_bytes &&
	    (o->container_bytes % DEDUP_BLOCK_BYTES || o->container_bytes < (64u << 10) ||
	     o->container_bytes > (4ull << 30)))
		return -EINVAL;
	if (o->map_bytes && o->map_max_bytes && o->map_bytes > o->map_max_bytes)
		return -EINVAL;
	if (o->gc_dead_pct > 100)
		return -EINVAL;
	return 0;
}

int dedup_store_open(const char *dir, const struct dedup_opts *o, struct dedup_store **out)
{
	static const struct dedup_opts dflt;
	struct dedup_store *s;
	char path[PATH_MAX];
	pthread_rwlockattr_t ra;
	pthread_condattr_t ca;
	int rc;

	if (!o)
		o = &dflt;
	rc = opts_check(o);
	if (rc)
		return rc;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->lock_fd = -1;
	s->jfd = -1;
	s->dir = strdup(dir);
	if (!s->dir) {
		rc = -ENOMEM;
		goto err_free;
	}
	s->ctr_bytes = o->container_bytes ? o->container_bytes : DEFAULT_CTR_BYTES;
	s->map_max_bytes = o->map_max_bytes ? o->map_max_bytes : DEFAULT_MAP_MAX;
	s->map_bytes = o->map_bytes ? o->map_bytes : DEFAULT_MAP_BYTES;
	if (s->map_bytes > s->map_max_bytes)
		s->map_bytes = s->map_max_bytes;
	s->group_max_blk = o->group_max_blk ? o->group_max_blk : DEFAULT_GROUP_MAX;
	s->gc_dead_pct = o->gc_dead_pct;
	s->ckpt_age_ns = (uint64_t)(o->checkpoint_ms ? o->checkpoint_ms : 1000) * 1000000ull;
	s->direct = o->direct;

	if (o->create) {
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			rc = -errno;
			goto err_free;
		}
		snprintf(path, sizeof(path), "%s/containers", dir);
		if (mkdir(path, 0700) < 0 && errno != EEXIST) {
			rc = -errno;
			goto err_free;
		}
	}
	if (snprintf(path, sizeof(path), "%s/lock", dir) >= (int)sizeof(path)) {
		rc = -ENAMETOOLONG;
		goto err_free;
	}
	s->lock_fd = open(path, O_RDWR | O_CLOEXEC | (o->create ? O_CREAT : 0), 0600);
	if (s->lock_fd < 0) {
		rc = -errno;
		goto err_free;
	}
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		goto err_lockfd;
	}
	rc = open_env(s, o->create);
	if (rc)
		goto err_lockfd;
	s->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (!s->sha256) {
		rc = -ENOMEM;
		goto err_env;
	}
	pthread_rwlockattr_init(&ra);
	/* A steady stream of readers must not starve a map remap or a container retirement. */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&s->rd_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	pthread_mutex_init(&s->alloc_lock, NULL);
	pthread_mutex_init(&s->vol_lock, NULL);
	pthread_mutex_init(&s->wq_lock, NULL);
	/* the writer's idle-checkpoint deadline is on the monotonic clock */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->wq_cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&s->op_cond, NULL);
	rc = ovl_init(s);
	if (rc)
		goto err_locks;
	rc = jnl_open(s);
	if (rc)
		goto err_ovl;
	rc = ctr_table_load(s);
	if (rc)
		goto err_jnl;
	rc = writer_start(s);
	if (rc)
		goto err_ctrs;
	*out = s;
	return 0;

err_ctrs:
	ctr_table_free(s);
err_jnl:
	close(s->jfd);
err_ovl:
	ovl_free(s);
err_locks:
	pthread_cond_destroy(&s->op_cond);
	pthread_cond_destroy(&s->wq_cond);
	pthread_mutex_destroy(&s->wq_lock);
	pthread_mutex_destroy(&s->vol_lock);
	pthread_mutex_destroy(&s->alloc_lock);
	pthread_rwlock_destroy(&s->rd_lock);
	EVP_MD_free(s->sha256);
err_env:
	mdb_env_close(s->env);
err_lockfd:
	close(s->lock_fd);
err_free:
	free(s->dir);
	free(s);
	return rc;
}

void dedup_store_close(struct dedup_store *s)
{
	if (!s)
		return;
	writer_stop(s);
	mdb_env_sync(s->env, 1);
	ctr_table_free(s);
	close(s->jfd);
	ovl_free(s);
	mdb_env_close(s->env);
	EVP_MD_free(s->sha256);
	pthread_cond_destroy(&s->op_cond);
	pthread_cond_destroy(&s->wq_cond);
	pthread_mutex_destroy(&s->wq_lock);
	pthread_mutex_destroy(&s->vol_lock);
	pthread_mutex_destroy(&s->alloc_lock);
	pthread_rwlock_destroy(&s->rd_lock);
	close(s->lock_fd);
	free(s->dir);
	free(s);
}

static uint64_t db_pages(MDB_txn *txn, MDB_dbi dbi, uint64_t *entries)
{
	MDB_stat st;

	if (mdb_stat(txn, dbi, &st))
		return 0;
	if (entries)
		*entries = st.ms_entries;
	return st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
}

int dedup_store_stats(struct dedup_store *s, struct dedup_stats *st)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, d;
	MDB_stat es;
	uint64_t entries = 0, zombies, zero_writes, rq = 0, logical = 0, zero = 0;
	char path[PATH_MAX];
	struct stat fst;
	int rc;

	memset(st, 0, sizeof(*st));
	/* the numbers of committed state: commit what the writer holds first */
	rc = writer_checkpoint_call(s);
	if (rc)
		return rc;
	pthread_rwlock_rdlock(&s->rd_lock);
	rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
	if (rc) {
		rc = dedup_mdb_err(rc);
		goto out_unlock;
	}
	mdb_env_stat(s->env, &es);
	if ((rc = meta_get_u64(txn, s->dbi_meta, META_ZOMBIES, &zombies, 0)) ||
	    (rc = meta_get_u64(txn, s->dbi_meta, META_ZERO_WRITES, &zero_writes, 0)))
		goto out_abort;
	st->index_bytes = db_pages(txn, s->dbi_content, &entries) * es.ms_psize;
	st->map_bytes = (db_pages(txn, s->dbi_nodes, NULL) + db_pages(txn, s->dbi_noderef, NULL)) *
			es.ms_psize;
	db_pages(txn, s->dbi_rq, &rq);
	st->reclaim_pending = rq;
	st->unique_blocks = entries >= zombies ? entries - zombies : 0;
	st->zero_writes = zero_writes;

	rc = dedup_mdb_err(mdb_cursor_open(txn, s->dbi_vols, &cur));
	if (rc)
		goto out_abort;
	while ((rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) == 0) {
		struct vol_rec vr;

		if (d.mv_size != sizeof(vr))
			continue;
		memcpy(&vr, d.mv_data, sizeof(vr));
		logical += vr.nonzero;
		zero += vr.size_bytes / DEDUP_BLOCK_BYTES - vr.nonzero;
		if (vr.flags & VOL_READONLY)
			st->snapshots++;
		else
			st->volumes++;
	}
	mdb_cursor_close(cur);
	st->logical_bytes = logical * DEDUP_BLOCK_BYTES;
	st->zero_blocks = zero;
	st->stored_bytes = st->unique_blocks * DEDUP_BLOCK_BYTES;
	st->dedup_ratio = st->stored_bytes ? (double)st->logical_bytes / (double)st->stored_bytes
					   : 1.0;

	rc = dedup_mdb_err(mdb_cursor_open(txn, s->dbi_ctrs, &cur));
	if (rc)
		goto out_abort;
	while ((rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) == 0) {
		struct ctr_rec cr;

		if (d.mv_size != sizeof(cr))
			continue;
		memcpy(&cr, d.mv_data, sizeof(cr));
		st->dead_blocks += cr.used - (cr.live <= cr.used ? cr.live : cr.used);
		st->containers++;
	}
	mdb_cursor_close(cur);
	rc = 0;
	st->container_bytes = st->containers * s->ctr_bytes;
	snprintf(path, sizeof(path), "%s/index.mdb", s->dir);
	if (stat(path, &fst) == 0)
		st->meta_file_bytes = (uint64_t)fst.st_size;
out_abort:
	mdb_txn_abort(txn);
out_unlock:
	pthread_rwlock_unlock(&s->rd_lock);
	return rc;
}

/*
 * container.c - the container files that hold block data, and the in-memory table of them.
 *
 * A container is a preallocated file of ctr_bytes in DIR/containers/, named by a 64-bit id that
 * is never reused. Blocks are appended (one 4 KiB slot each) and never rewritten in place: a
 * slot's data changes only by the collector copying its live blocks elsewhere and deleting the
 * whole file. So a location read from any snapshot of the index stays valid for as long as the
 * file does, and the collector deletes a file only after no reader can hold such a location
 * (see ctr_retire).
 *
 * The table maps id -> struct ctr with lock-free lookups (a two-level array of atomic
 * pointers); entries are added under alloc_lock and removed by the writer under rd_lock held
 * exclusively.
 */
#define LOG_TAG "dedup"
#include "common/log.h"
#include "dedup/dedup_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int ctr_path(const struct dedup_store *s, uint64_t cid, char *buf, size_t len)
{
	if ((size_t)snprintf(buf, len, "%s/containers/%016" PRIx64 ".ctr", s->dir, cid) >= len)
		return -ENAMETOOLONG;
	return 0;
}

static int ctr_open_fd(struct dedup_store *s, uint64_t cid, int create)
{
	char path[PATH_MAX];
	int flags = O_RDWR | O_CLOEXEC | (s->direct ? O_DIRECT : 0);
	int fd, rc;

	rc = ctr_path(s, cid, path, sizeof(path));
	if (rc)
		return rc;
	if (create)
		flags |= O_CREAT | O_EXCL;
	fd = open(path, flags, 0600);
	if (fd < 0)
		return -errno;
	/*
	 * Blocks of a container are read one extent at a time in whatever order the volumes
	 * name them: readahead around a random 4 KiB read only multiplies the disk's work (2-3x
	 * the reads in bench-dedup's random read job). The collector's sequential reads are large
	 * and ask for what they need. Advice only: a failure changes nothing else.
	 */
	if (!s->direct)
		(void)posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
	if (create) {
		/* Preallocate so appends never extend the file: fdatasync then has no size
		 * change to journal, and the file system can keep the container contiguous. */
		rc = posix_fallocate(fd, 0, (off_t)s->ctr_bytes);
		if (rc == EOPNOTSUPP || rc == EINVAL)
			rc = ftruncate(fd, (off_t)s->ctr_bytes) < 0 ? errno : 0;
		if (rc) {
			close(fd);
			unlink(path);
			return -rc;
		}
	}
	return fd;
}

/* Make a new container's directory entry durable before any commit can point into it. */
static int ctr_sync_dir(struct dedup_store *s)
{
	char path[PATH_MAX];
	int fd, rc = 0;

	snprintf(path, sizeof(path), "%s/containers", s->dir);
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

static struct ctr *_Atomic *ctr_chunk(struct dedup_store *s, uint64_t cid, int create)
{
	struct ctr *_Atomic *chunk;

	if (cid / CTR_CHUNK >= CTR_DIR)
		return NULL;
	chunk = atomic_load_explicit(&s->ctr_dir[cid / CTR_CHUNK], memory_order_acquire);
	if (!chunk && create) {
		chunk = calloc(CTR_CHUNK, sizeof(*chunk));
		if (!chunk)
			return NULL;
		/* Release: a reader that sees the chunk pointer sees it zeroed. */
		atomic_store_explicit(&s->ctr_dir[cid / CTR_CHUNK], chunk, memory_order_release);
	}
	return chunk;
}

static int ctr_insert(struct dedup_store *s, uint64_t cid, int fd, struct ctr **out)
{
	struct ctr *_Atomic *chunk = ctr_chunk(s, cid, 1);
	struct ctr *c;

	if (!chunk)
		return cid / CTR_CHUNK >= CTR_DIR ? -ENOSPC : -ENOMEM;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cid = cid;
	c->fd = fd;
	atomic_init(&c->refs, 1);
	atomic_init(&c->inflight, 0);
	atomic_init(&c->retiring, 0);
	/* Release: lookups that find the pointer see the initialised entry. */
	atomic_store_explicit(&chunk[cid % CTR_CHUNK], c, memory_order_release);
	*out = c;
	return 0;
}

struct ctr *ctr_lookup(struct dedup_store *s, uint64_t cid)
{
	struct ctr *_Atomic *chunk = ctr_chunk(s, cid, 0);

	if (!chunk)
		return NULL;
	return atomic_load_explicit(&chunk[cid % CTR_CHUNK], memory_order_acquire);
}

void ctr_put(struct ctr *c)
{
	if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
		close(c->fd);
		free(c);
	}
}

static int cid_from_name(const char *name, uint64_t *cid)
{
	char *end;
	size_t n = strlen(name);

	if (n != 20 || strcmp(name + 16, ".ctr") != 0)
		return -EINVAL;
	errno = 0;
	*cid = strtoull(name, &end, 16);
	if (errno || end != name + 16)
		return -EINVAL;
	return 0;
}

/*
 * Open every container file the index does not know yet: the journal may name blocks in it
 * (written after the last checkpoint). ctr_table_finish() removes those still unknown after
 * the replay.
 */
static int ctr_open_unknown(struct dedup_store *s, uint64_t *max_cid)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int rc = 0;

	snprintf(path, sizeof(path), "%s/containers", s->dir);
	d = opendir(path);
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		uint64_t cid;
		struct ctr *c;
		int fd;

		if (cid_from_name(de->d_name, &cid) || ctr_lookup(s, cid))
			continue;
		fd = ctr_open_fd(s, cid, 0);
		if (fd < 0)
			continue;
		rc = ctr_insert(s, cid, fd, &c);
		if (rc) {
			close(fd);
			break;
		}
		if (cid > *max_cid)
			*max_cid = cid;
	}
	closedir(d);
	return rc;
}

/* O_DIRECT is a property of the file system: try it once on a scratch file. */
static void ctr_probe_direct(struct dedup_store *s)
{
	char path[PATH_MAX];
	int fd;

	if (!s->direct)
		return;
	snprintf(path, sizeof(path), "%s/containers/.direct-probe", s->dir);
	fd = open(path, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
	if (fd < 0) {
		log_info("%s: no O_DIRECT here (%s); containers use the page cache", s->dir,
			 strerror(errno));
		s->direct = 0;
		return;
	}
	close(fd);
	unlink(path);
}

int ctr_table_load(struct dedup_store *s)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, d;
	uint64_t max_cid = 0;
	int rc;

	ctr_probe_direct(s);
	rc = dedup_mdb_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn));
	if (rc)
		return rc;
	rc = dedup_mdb_err(mdb_cursor_open(txn, s->dbi_ctrs, &cur));
	if (rc)
		goto out_abort;
	while ((rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) == 0) {
		uint64_t cid;
		struct ctr *c;
		int fd;

		memcpy(&cid, k.mv_data, sizeof(cid));
		if (d.mv_size != sizeof(struct ctr_rec)) {
			rc = -EIO;
			goto out_cursor;
		}
		if (cid > max_cid)
			max_cid = cid;
		fd = ctr_open_fd(s, cid, 0);
		if (fd < 0) {
			/* fsck reports it; blocks in it read as errors meanwhile */
			log_err("container %016" PRIx64 ": %s", cid, strerror(-fd));
			continue;
		}
		rc = ctr_insert(s, cid, fd, &c);
		if (rc) {
			close(fd);
			goto out_cursor;
		}
	}
	rc = rc == MDB_NOTFOUND ? 0 : dedup_mdb_err(rc);
out_cursor:
	mdb_cursor_close(cur);
out_abort:
	mdb_txn_abort(txn);
	if (rc == 0)
		rc = ctr_open_unknown(s, &max_cid);
	s->next_cid = max_cid + 1;
	return rc;
}

/*
 * After the journal replay is committed: files the index still does not know are garbage
 * (containers made after the last commit that no surviving journal entry uses, or emptied by
 * the collector just before a crash); appends resume after the last committed slot of the
 * newest container.
 */
int ctr_table_finish(struct dedup_store *s)
{
	struct ctr_rec newest = { 0 };
	uint64_t newest_cid = 0;
	MDB_txn *txn;
	int rc;

	rc = dedup_mdb_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn));
	if (rc)
		return rc;
	for (uint64_t cid = 1; cid < s->next_cid; cid++) {
		struct ctr *c = ctr_lookup(s, cid);
		MDB_val k = { sizeof(cid), &cid }, d;
		int mrc;

		if (!c)
			continue;
		mrc = mdb_get(txn, s->dbi_ctrs, &k, &d);
		if (mrc == MDB_NOTFOUND) {
			log_info("removed container %016" PRIx64 " (not in the index)", cid);
			ctr_retire(s, c);
			continue;
		}
		if (mrc) {
			rc = dedup_mdb_err(mrc);
			break;
		}
		if (d.mv_size == sizeof(newest)) {
			memcpy(&newest, d.mv_data, sizeof(newest));
			newest_cid = cid;
		}
	}
	mdb_txn_abort(txn);
	if (rc)
		return rc;
	if (newest_cid && newest.used < s->ctr_slots) {
		s->active = ctr_lookup(s, newest_cid);
		s->active_next = newest.used;
	}
	return 0;
}

void ctr_table_free(struct dedup_store *s)
{
	for (uint64_t i = 0; i < CTR_DIR; i++) {
		struct ctr *_Atomic *chunk = atomic_load(&s->ctr_dir[i]);

		if (!chunk)
			continue;
		for (unsigned j = 0; j < CTR_CHUNK; j++) {
			struct ctr *c = atomic_load(&chunk[j]);

			if (c)
				ctr_put(c);
		}
		free(chunk);
		atomic_store(&s->ctr_dir[i], NULL);
	}
}

/*
 * Allocate up to @want consecutive slots in the open container (making a new one when it is
 * full): *ctr, *slot, *got. Each slot holds an inflight count on the container until its write
 * completes, which keeps the collector away. Returns 0, -ENOSPC (no room for a new file) or
 * -errno.
 */
int ctr_alloc(struct dedup_store *s, uint32_t want, struct ctr **ctr, uint32_t *slot,
	      uint32_t *got)
{
	struct ctr *c;
	int rc = 0;

	pthread_mutex_lock(&s->alloc_lock);
	if (!s->active) {
		uint64_t cid = s->next_cid;
		int fd = ctr_open_fd(s, cid, 1);

		if (fd == -EEXIST) {
			/* a leftover the orphan sweep could not remove: step over it */
			s->next_cid++;
			cid = s->next_cid;
			fd = ctr_open_fd(s, cid, 1);
		}
		if (fd < 0) {
			rc = fd;
			goto out_unlock;
		}
		rc = ctr_sync_dir(s);
		if (rc == 0)
			rc = ctr_insert(s, cid, fd, &c);
		if (rc) {
			char path[PATH_MAX];

			close(fd);
			if (ctr_path(s, cid, path, sizeof(path)) == 0)
				unlink(path);
			goto out_unlock;
		}
		s->next_cid = cid + 1;
		s->active = c;
		s->active_next = 0;
	}
	c = s->active;
	*ctr = c;
	*slot = s->active_next;
	*got = s->ctr_slots - s->active_next < want ? s->ctr_slots - s->active_next : want;
	s->active_next += *got;
	atomic_fetch_add_explicit(&c->inflight, *got, memory_order_relaxed);
	if (s->active_next == s->ctr_slots)
		s->active = NULL;
out_unlock:
	pthread_mutex_unlock(&s->alloc_lock);
	return rc;
}

/* Stop appending to container @cid (the collector is about to empty it). */
void ctr_seal_active(struct dedup_store *s, uint64_t cid)
{
	pthread_mutex_lock(&s->alloc_lock);
	if (s->active && s->active->cid == cid)
		s->active = NULL;
	pthread_mutex_unlock(&s->alloc_lock);
}

int ctr_is_active(struct dedup_store *s, uint64_t cid)
{
	int ret;

	pthread_mutex_lock(&s->alloc_lock);
	ret = s->active && s->active->cid == cid;
	pthread_mutex_unlock(&s->alloc_lock);
	return ret;
}

/*
 * Drop an emptied container whose removal is committed. Taking rd_lock exclusively waits out
 * every reader whose snapshot predates that commit (only they can hold a location in it);
 * readers that pinned it for an I/O keep the fd open until they finish.
 */
void ctr_retire(struct dedup_store *s, struct ctr *c)
{
	struct ctr *_Atomic *chunk = ctr_chunk(s, c->cid, 0);
	char path[PATH_MAX];

	pthread_rwlock_wrlock(&s->rd_lock);
	if (chunk)
		atomic_store_explicit(&chunk[c->cid % CTR_CHUNK], NULL, memory_order_release);
	pthread_rwlock_unlock(&s->rd_lock);
	if (ctr_path(s, c->cid, path, sizeof(path)) == 0 && unlink(path) < 0)
		log_warn("unlink %s: %s", path, strerror(errno));
	ctr_put(c);
}

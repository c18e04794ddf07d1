/*
 * target_raw.c - the raw target: a volume that is a regular file (sparse, in the pool) or a
 * block device, served with O_DIRECT where the file system allows it and asynchronous I/O
 * through an engine (ioeng.h: io_uring or libaio) per queue.
 *
 * Data moves with readv/writev straight between the caller's iovecs (mapped guest pages) and
 * the file: no bounce buffer. Each queue preallocates one slot per I/O it may hold, so the I/O
 * path allocates nothing. A slot carries what a short transfer needs to resume: the kernel may
 * move fewer bytes than asked (a read that meets the end of a file shrunk underneath it, a
 * write that runs out of space), and the remainder is reissued from where it stopped until the
 * request is complete or fails; a request never completes with 0 unless every byte moved.
 *
 * Operations an engine cannot do asynchronously (DISCARD on a block device is an ioctl, libaio
 * has no fallocate and not every file system has aio fdsync) are run synchronously by the
 * queue's thread at commit and completed by the next poll, so done() is still only called from
 * target_queue_poll() (or target_queue_close()).
 */
#define LOG_TAG "raw"

#include "blkback/target.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "blkback/ioeng.h"
#include "blkback/target_internal.h"
#include "common/log.h"
#include "common/util.h"

#define RAW_NONE UINT32_MAX
/** Transient errors (-EAGAIN, -EINTR) a request may see before it fails with them. */
#define RAW_MAX_RETRIES 8
/** How long a shrink waits for writes that were in flight when it started. */
#define RAW_SHRINK_DRAIN_NS (10ull * 1000 * 1000 * 1000)

struct raw_queue;

struct raw_target {
	struct target base; /**< first: the generic layer's view */
	int fd;
	int is_blkdev;
	const struct ioeng_ops *eng;
	struct target_info info; /**< fixed at open; size_bytes lives in size_bytes below */
	uint64_t size_bytes;	 /**< atomic: submit reads it per request, resize writes it */
	pthread_mutex_t lock;	 /**< queues list, and one resize at a time */
	struct raw_queue *queues;
	char path[128]; /**< for log lines (truncated) */
};

/** One I/O the queue holds, from submit until done() is called. */
struct raw_slot {
	struct target_io *io;
	uint32_t next;	     /**< free, sync or done list link */
	int status;	     /**< final status once on the done list */
	uint32_t iov_idx;    /**< first iovec not completely transferred */
	uint32_t iov_off;    /**< bytes of iov[iov_idx] already transferred */
	uint64_t done_bytes; /**< bytes transferred so far */
	struct iovec part;   /**< the rest of iov[iov_idx] when a transfer stopped inside it */
	uint8_t retries;
};

struct raw_queue {
	struct target_queue base; /**< first: the generic layer's view */
	struct raw_target *rt;
	const struct ioeng_ops *eng;
	struct ioeng *e;
	int efd;
	uint32_t depth;
	struct raw_slot *slots;
	uint32_t free_head;
	uint32_t sync_head, sync_tail; /**< to run synchronously at the next commit (FIFO) */
	uint32_t done_head, done_tail; /**< finished; done() called by the next poll (FIFO) */
	uint32_t eng_inflight;	       /**< slots handed to the engine and not yet reaped */
	/* Writes accepted and finished; single writer (this queue's thread), read by resize. */
	uint64_t wr_started, wr_finished;
	uint64_t wr_drain_to;	/**< resize's snapshot of wr_started, under rt->lock */
	struct raw_queue *next; /**< rt->queues, under rt->lock */
	struct log_ratelimit rl;
};

static const struct target_ops raw_ops;

static inline struct raw_target *raw_of(struct target *t)
{
	return (struct raw_target *)t;
}

static inline struct raw_queue *rq_of(struct target_queue *q)
{
	return (struct raw_queue *)q;
}

/* ---- open: what the file or device allows ---- */

static int raw_sysfs_read(dev_t dev, const char *attr, char *buf, size_t len)
{
	char path[128];
	ssize_t n;
	int fd;

	/* A partition has no queue/ directory of its own: its disk's is one level up. */
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/queue/%s", major(dev), minor(dev), attr);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/../queue/%s", major(dev),
			 minor(dev), attr);
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

static uint64_t raw_sysfs_u64(dev_t dev, const char *attr)
{
	char buf[64];

	if (raw_sysfs_read(dev, attr, buf, sizeof(buf)) < 0)
		return 0;
	return strtoull(buf, NULL, 10);
}

static int raw_probe_blkdev(struct raw_target *rt, const struct stat *st, int readonly)
{
	uint64_t size, max_discard, gran;
	unsigned int pbs;
	int lbs;
	char buf[64];

	if (ioctl(rt->fd, BLKGETSIZE64, &size) < 0 || ioctl(rt->fd, BLKSSZGET, &lbs) < 0)
		return -errno;
	if (ioctl(rt->fd, BLKPBSZGET, &pbs) < 0)
		pbs = (unsigned int)lbs;
	if (lbs < 512 || lbs > 4096 || (lbs & (lbs - 1)))
		return -EINVAL;
	rt->info.logical_block = (uint32_t)lbs;
	rt->info.physical_block = pbs >= (unsigned int)lbs ? pbs : (uint32_t)lbs;
	rt->info.size_bytes = size & ~(uint64_t)(lbs - 1);

	/* BLKDISCARD needs a writable fd and a device that takes discards at all. */
	max_discard = raw_sysfs_u64(st->st_rdev, "discard_max_bytes");
	gran = raw_sysfs_u64(st->st_rdev, "discard_granularity");
	if (!readonly && max_discard)
		rt->info.discard_granularity =
		    gran > (uint64_t)lbs && gran <= UINT32_MAX ? (uint32_t)gran : (uint32_t)lbs;

	/* A write-through device has nothing to flush; FLUSH still runs fdatasync (cheap). */
	rt->info.has_flush = 1;
	if (raw_sysfs_read(st->st_rdev, "write_cache", buf, sizeof(buf)) == 0 &&
	    strncmp(buf, "write through", 13) == 0)
		rt->info.has_flush = 0;
	return 0;
}

/*
 * The smallest offset/length/memory alignment O_DIRECT accepts on this file: statx's
 * STATX_DIOALIGN where the file system reports it, else a probe read at a 512-byte (not
 * 4096-byte) aligned offset into a 512-aligned buffer, else 4096. Returns the alignment, 0 when
 * direct I/O is not usable with page-sized segments, or -errno.
 */
static int raw_dio_align(int fd, const struct stat *st)
{
	struct statx sx;
	unsigned char *buf;
	uint32_t align = 4096;
	ssize_t n;

	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
	    (sx.stx_mask & STATX_DIOALIGN)) {
		if (sx.stx_dio_offset_align == 0)
			return 0; /* the file system says: no direct I/O on this file */
		align = sx.stx_dio_offset_align;
		if (sx.stx_dio_mem_align > align)
			align = sx.stx_dio_mem_align;
		if (align < 512)
			align = 512;
		return align <= 4096 ? (int)align : 0;
	}

	/* Probing needs data to read: reads at or past EOF succeed without checking alignment. */
	if (st->st_size < 8192)
		return 4096;
	if (posix_memalign((void **)&buf, 4096, 8192))
		return -ENOMEM;
	n = pread(fd, buf + 512, 512, 512);
	if (n == 512) {
		align = 512;
	} else if (n < 0 && errno == EINVAL) {
		n = pread(fd, buf, 4096, 4096);
		align = n == 4096 ? 4096 : 0;
	} else {
		align = 4096;
	}
	free(buf);
	return (int)align;
}

static int raw_probe_file(struct raw_target *rt, const struct stat *st, int readonly)
{
	uint32_t blksize = (uint32_t)st->st_blksize;
	int align;

	if (rt->info.direct) {
		align = raw_dio_align(rt->fd, st);
		if (align < 0)
			return align;
		if (align == 0)
			return -EINVAL; /* caller reopens buffered */
		rt->info.logical_block = (uint32_t)align;
	} else {
		rt->info.logical_block = 512;
	}
	/* The file system block is what the guest should align to, within sane bounds. */
	if (blksize < rt->info.logical_block || blksize > 65536 || (blksize & (blksize - 1)))
		blksize = rt->info.logical_block;
	rt->info.physical_block = blksize;
	if ((uint64_t)st->st_size % rt->info.logical_block)
		log_warn("%s: size %" PRIu64 " is not a multiple of %u; the tail is not served",
			 rt->path, (uint64_t)st->st_size, rt->info.logical_block);
	rt->info.size_bytes = (uint64_t)st->st_size & ~(uint64_t)(rt->info.logical_block - 1);
	rt->info.has_flush = 1;

	/*
	 * Punching a hole past EOF with KEEP_SIZE changes nothing but tells whether the file
	 * system can punch holes at all.
	 */
	if (!readonly) {
		off_t probe =
		    (off_t)(((uint64_t)st->st_size + blksize - 1) / blksize + 1) * blksize;

		if (fallocate(rt->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, probe, blksize) ==
		    0)
			rt->info.discard_granularity = blksize;
		else
			log_debug("%s: no punch hole (%d): discard off", rt->path, -errno);
	}
	return 0;
}

static const struct ioeng_ops *raw_engine(enum target_engine e)
{
	switch (e) {
	case TARGET_ENGINE_IO_URING:
		return &ioeng_uring_ops;
	case TARGET_ENGINE_LIBAIO:
		return &ioeng_aio_ops;
	default:
		return NULL;
	}
}

int target_raw_open(const char *path, const struct target_open_opts *o, struct target **out)
{
	struct raw_target *rt;
	struct stat st;
	int flags, rc;

	if (!path || !o || !out)
		return -EINVAL;
	if (!raw_engine(o->engine))
		return -EINVAL;
	/* Refuse FIFOs and the like before open() could block on them. */
	if (stat(path, &st) < 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return -EINVAL;

	rt = calloc(1, sizeof(*rt));
	if (!rt)
		return -ENOMEM;
	rt->base.ops = &raw_ops;
	rt->eng = raw_engine(o->engine);
	rt->fd = -1;
	snprintf(rt->path, sizeof(rt->path), "%s", path);
	rt->info.readonly = o->readonly ? 1 : 0;

	flags = O_CLOEXEC | (o->readonly ? O_RDONLY : O_RDWR);
	/* A device somebody has mounted (or another exclusive user) is not ours to serve. */
	if (S_ISBLK(st.st_mode))
		flags |= O_EXCL;
	rt->info.direct = o->no_direct ? 0 : 1;
reopen:
	if (rt->info.direct) {
		rt->fd = open(path, flags | O_DIRECT);
		if (rt->fd < 0 && errno == EINVAL) {
			log_info("%s: the file system refuses O_DIRECT, using buffered I/O", path);
			rt->info.direct = 0;
		}
	}
	if (!rt->info.direct)
		rt->fd = open(path, flags);
	if (rt->fd < 0) {
		rc = -errno;
		goto err_free;
	}
	if (fstat(rt->fd, &st) < 0) {
		rc = -errno;
		goto err_close;
	}
	rt->is_blkdev = S_ISBLK(st.st_mode);
	if (rt->is_blkdev) {
		rc = raw_probe_blkdev(rt, &st, o->readonly);
	} else if (S_ISREG(st.st_mode)) {
		rc = raw_probe_file(rt, &st, o->readonly);
		if (rc == -EINVAL && rt->info.direct) {
			log_info("%s: O_DIRECT alignment unusable, using buffered I/O", path);
			close(rt->fd);
			rt->fd = -1;
			rt->info.direct = 0;
			goto reopen;
		}
	} else {
		rc = -EINVAL; /* replaced by something else between stat and open */
	}
	if (rc < 0)
		goto err_close;
	rt->size_bytes = rt->info.size_bytes;

	rc = pthread_mutex_init(&rt->lock, NULL);
	if (rc) {
		rc = -rc;
		goto err_close;
	}
	log_debug("%s: %s %" PRIu64 " bytes, logical %u, physical %u, discard %u, %s, %s", path,
		  rt->is_blkdev ? "device" : "file", rt->size_bytes, rt->info.logical_block,
		  rt->info.physical_block, rt->info.discard_granularity,
		  rt->info.direct ? "direct" : "buffered", rt->eng->name);
	*out = &rt->base;
	return 0;

err_close:
	close(rt->fd);
err_free:
	free(rt);
	return rc;
}

static void raw_close(struct target *t)
{
	struct raw_target *rt = raw_of(t);

	if (rt->queues)
		log_err("%s: closed with queues still open", rt->path);
	pthread_mutex_destroy(&rt->lock);
	close(rt->fd);
	free(rt);
}

static int raw_info(struct target *t, struct target_info *info)
{
	struct raw_target *rt = raw_of(t);

	*info = rt->info;
	info->size_bytes = __atomic_load_n(&rt->size_bytes, __ATOMIC_ACQUIRE);
	return 0;
}

/* ---- resize ---- */

/*
 * Wait until every write that any queue had accepted when the new (smaller) size became
 * visible has finished, so none of them can extend the file again after the truncate. The
 * queues' own threads reap them; this only watches their counters.
 */
static void raw_drain_writes(struct raw_target *rt)
{
	uint64_t deadline = util_now_ns() + RAW_SHRINK_DRAIN_NS;
	struct raw_queue *q;

	for (q = rt->queues; q; q = q->next)
		q->wr_drain_to = __atomic_load_n(&q->wr_started, __ATOMIC_RELAXED);
	for (;;) {
		int busy = 0;

		for (q = rt->queues; q; q = q->next)
			if (__atomic_load_n(&q->wr_finished, __ATOMIC_ACQUIRE) < q->wr_drain_to)
				busy = 1;
		if (!busy)
			return;
		if (util_now_ns() > deadline) {
			log_warn("%s: shrinking with writes still in flight", rt->path);
			return;
		}
		nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
	}
}

static int raw_resize(struct target *t, uint64_t new_size)
{
	struct raw_target *rt = raw_of(t);
	uint64_t old, dev_size;
	int rc = 0;

	pthread_mutex_lock(&rt->lock);
	old = __atomic_load_n(&rt->size_bytes, __ATOMIC_RELAXED);
	if (rt->is_blkdev) {
		/* A device is resized by whoever owns it (lvresize, ...); we only pick it up. */
		if (ioctl(rt->fd, BLKGETSIZE64, &dev_size) < 0) {
			rc = -errno;
			goto out;
		}
		dev_size &= ~(uint64_t)(rt->info.logical_block - 1);
		__atomic_store_n(&rt->size_bytes, dev_size, __ATOMIC_SEQ_CST);
		rc = dev_size == new_size ? 0 : -EOPNOTSUPP;
		goto out;
	}
	if (rt->info.readonly) {
		rc = -EROFS;
		goto out;
	}
	if (new_size % rt->info.logical_block) {
		rc = -EINVAL;
		goto out;
	}
	if (new_size > (uint64_t)INT64_MAX) {
		rc = -EFBIG;
		goto out;
	}
	if (new_size >= old) {
		/*
		 * Cut to the old end first: bytes a stray write left past it would otherwise show
		 * through where the grown range must read as zeros.
		 */
		if (ftruncate(rt->fd, (off_t)old) < 0 || ftruncate(rt->fd, (off_t)new_size) < 0) {
			rc = -errno;
			goto out;
		}
		__atomic_store_n(&rt->size_bytes, new_size, __ATOMIC_SEQ_CST);
		goto out;
	}

	/*
	 * Shrink: publish the new end first so no new request can reach past it (pairs with the
	 * fence in raw_submit), let the writes already accepted finish, then truncate.
	 */
	__atomic_store_n(&rt->size_bytes, new_size, __ATOMIC_SEQ_CST);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	raw_drain_writes(rt);
	if (ftruncate(rt->fd, (off_t)new_size) < 0) {
		rc = -errno;
		/* Nothing was cut: the old end is still the truth. */
		__atomic_store_n(&rt->size_bytes, old, __ATOMIC_SEQ_CST);
	}
out:
	pthread_mutex_unlock(&rt->lock);
	if (rc == 0)
		log_debug("%s: size %" PRIu64 " -> %" PRIu64, rt->path, old, new_size);
	return rc;
}

/* ---- queues ---- */

static inline void raw_list_push(struct raw_queue *q, uint32_t *head, uint32_t *tail, uint32_t i)
{
	q->slots[i].next = RAW_NONE;
	if (*head == RAW_NONE)
		*head = i;
	else
		q->slots[*tail].next = i;
	*tail = i;
}

static inline void raw_finish(struct raw_queue *q, uint32_t tag, int status)
{
	q->slots[tag].status = status;
	raw_list_push(q, &q->done_head, &q->done_tail, tag);
}

/* Wake a thread sleeping on target_queue_fd() for completions no kernel event announces. */
static void raw_kick(struct raw_queue *q)
{
	if (eventfd_write(q->efd, 1) < 0)
		LOG_RATELIMITED(&q->rl, LOG_LVL_ERR, "%s: eventfd_write: %d", q->rt->path, -errno);
}

static int raw_queue_open(struct target *t, uint32_t depth, struct target_queue **out)
{
	struct raw_target *rt = raw_of(t);
	struct raw_queue *q;
	int rc;

	if (depth > TARGET_QUEUE_MAX_DEPTH)
		depth = TARGET_QUEUE_MAX_DEPTH;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->base.target = t;
	q->rt = rt;
	q->eng = rt->eng;
	q->depth = depth;
	q->sync_head = q->sync_tail = RAW_NONE;
	q->done_head = q->done_tail = RAW_NONE;
	q->slots = calloc(depth, sizeof(*q->slots));
	if (!q->slots) {
		rc = -ENOMEM;
		goto err_free;
	}
	for (uint32_t i = 0; i < depth; i++)
		q->slots[i].next = i + 1 < depth ? i + 1 : RAW_NONE;
	q->free_head = 0;
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->efd < 0) {
		rc = -errno;
		goto err_free;
	}
	rc = q->eng->open(rt->fd, q->efd, depth, &q->e);
	if (rc < 0)
		goto err_efd;

	pthread_mutex_lock(&rt->lock);
	q->next = rt->queues;
	rt->queues = q;
	pthread_mutex_unlock(&rt->lock);
	*out = &q->base;
	return 0;

err_efd:
	close(q->efd);
err_free:
	free(q->slots);
	free(q);
	return rc;
}

/* Run the operations the engine cannot do, in submission order. Returns how many ran. */
static int raw_run_sync(struct raw_queue *q)
{
	struct raw_target *rt = q->rt;
	int n = 0;

	while (q->sync_head != RAW_NONE) {
		uint32_t tag = q->sync_head;
		struct target_io *io = q->slots[tag].io;
		int rc = 0;

		q->sync_head = q->slots[tag].next;
		if (io->op == TARGET_OP_FLUSH) {
			if (fdatasync(rt->fd) < 0)
				rc = -errno;
		} else if (rt->is_blkdev) {
			uint64_t range[2] = {io->offset_bytes, io->len_bytes};

			if (ioctl(rt->fd, BLKDISCARD, range) < 0)
				rc = -errno;
		} else if (fallocate(rt->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				     (off_t)io->offset_bytes, (off_t)io->len_bytes) < 0) {
			rc = -errno;
		}
		raw_finish(q, tag, rc);
		n++;
	}
	q->sync_tail = RAW_NONE;
	return n;
}

/* Hand the (rest of the) transfer of slot @tag to the engine. */
static int raw_issue_rw(struct raw_queue *q, uint32_t tag)
{
	struct raw_slot *s = &q->slots[tag];
	struct target_io *io = s->io;
	enum ioeng_op op = io->op == TARGET_OP_READ ? IOENG_READV : IOENG_WRITEV;
	uint64_t off = io->offset_bytes + s->done_bytes;
	uint64_t len = io->len_bytes - s->done_bytes;

	if (s->iov_off == 0)
		return q->eng->prep(q->e, tag, op, io->iov + s->iov_idx, io->iovcnt - s->iov_idx,
				    off, len);
	/* Resume inside an iovec: its rest alone, the following ones on the next round. */
	s->part.iov_base = (char *)io->iov[s->iov_idx].iov_base + s->iov_off;
	s->part.iov_len = io->iov[s->iov_idx].iov_len - s->iov_off;
	return q->eng->prep(q->e, tag, op, &s->part, 1, off, s->part.iov_len);
}

static void raw_advance(struct raw_slot *s, uint64_t n)
{
	const struct iovec *iov = s->io->iov;

	s->done_bytes += n;
	while (n) {
		uint64_t avail = iov[s->iov_idx].iov_len - s->iov_off;

		if (n < avail) {
			s->iov_off += (uint32_t)n;
			return;
		}
		n -= avail;
		s->iov_idx++;
		s->iov_off = 0;
	}
	/* Skip empty iovecs so a resume never starts on one. */
	while (s->iov_idx < s->io->iovcnt && iov[s->iov_idx].iov_len == 0)
		s->iov_idx++;
}

/* The engine's completion of slot @tag: finish it or reissue what is left. */
static void raw_eng_done(void *arg, uint32_t tag, int64_t res)
{
	struct raw_queue *q = arg;
	struct raw_slot *s;
	struct target_io *io;
	uint64_t left;
	int rc;

	if (tag >= q->depth || !q->slots[tag].io) {
		LOG_RATELIMITED(&q->rl, LOG_LVL_ERR, "%s: completion for unknown tag %u",
				q->rt->path, tag);
		return;
	}
	s = &q->slots[tag];
	io = s->io;
	q->eng_inflight--;

	if ((res == -EAGAIN || res == -EINTR) && s->retries < RAW_MAX_RETRIES) {
		s->retries++;
		goto reissue;
	}
	if (res < 0) {
		LOG_RATELIMITED(&q->rl, LOG_LVL_WARN, "%s: op %d at %" PRIu64 "+%" PRIu64 ": %d",
				q->rt->path, io->op, io->offset_bytes, io->len_bytes, (int)res);
		raw_finish(q, tag, (int)res);
		return;
	}
	if (io->op != TARGET_OP_READ && io->op != TARGET_OP_WRITE) {
		raw_finish(q, tag, 0);
		return;
	}
	left = io->len_bytes - s->done_bytes;
	if ((uint64_t)res > left) {
		raw_finish(q, tag, -EIO);
		return;
	}
	if (res == 0 && left) {
		/*
		 * The file ends before the volume does: it was shrunk (or truncated by someone
		 * else) under this request. Zeros would be a lie about data that is gone.
		 */
		LOG_RATELIMITED(&q->rl, LOG_LVL_WARN,
				"%s: %s at %" PRIu64 " hit the end of the file", q->rt->path,
				io->op == TARGET_OP_READ ? "read" : "write",
				io->offset_bytes + s->done_bytes);
		raw_finish(q, tag, -EIO);
		return;
	}
	raw_advance(s, (uint64_t)res);
	if (s->done_bytes == io->len_bytes) {
		raw_finish(q, tag, 0);
		return;
	}
reissue:
	rc =
	    io->op == TARGET_OP_READ || io->op == TARGET_OP_WRITE
		? raw_issue_rw(q, tag)
		: q->eng->prep(q->e, tag, io->op == TARGET_OP_FLUSH ? IOENG_FDATASYNC : IOENG_PUNCH,
			       NULL, 0, io->offset_bytes, io->len_bytes);
	if (rc < 0) {
		raw_finish(q, tag, rc);
		return;
	}
	q->eng_inflight++;
}

/*
 * Reject what the target cannot or must not do. The range check against the live size is
 * done by the caller, after the write accounting that lets a shrink wait for writes.
 */
static int raw_check(const struct raw_target *rt, const struct target_io *io)
{
	uint64_t mask = rt->info.logical_block - 1;
	uint64_t sum = 0;

	switch (io->op) {
	case TARGET_OP_READ:
	case TARGET_OP_WRITE:
		if (io->op == TARGET_OP_WRITE && rt->info.readonly)
			return -EROFS;
		if (!io->iov || io->iovcnt == 0 || io->iovcnt > IOV_MAX)
			return -EINVAL;
		for (unsigned i = 0; i < io->iovcnt; i++) {
			if (io->iov[i].iov_len > UINT64_MAX - sum)
				return -EINVAL;
			sum += io->iov[i].iov_len;
		}
		if (sum != io->len_bytes || sum == 0)
			return -EINVAL;
		break;
	case TARGET_OP_DISCARD:
		if (rt->info.readonly)
			return -EROFS;
		if (!rt->info.discard_granularity)
			return -EOPNOTSUPP;
		if (io->len_bytes == 0)
			return -EINVAL;
		break;
	case TARGET_OP_FLUSH:
		return 0;
	default:
		return -EINVAL;
	}
	if ((io->offset_bytes | io->len_bytes) & mask)
		return -EINVAL;
	return 0;
}

static inline int raw_in_range(const struct raw_target *rt, const struct target_io *io)
{
	uint64_t size = __atomic_load_n(&rt->size_bytes, __ATOMIC_ACQUIRE);

	return io->offset_bytes <= size && io->len_bytes <= size - io->offset_bytes;
}

static int raw_submit(struct target_queue *tq, struct target_io *io)
{
	struct raw_queue *q = rq_of(tq);
	struct raw_target *rt = q->rt;
	struct raw_slot *s;
	uint32_t tag;
	int rc;

	if (!io || !io->done)
		return -EINVAL;
	rc = raw_check(rt, io);
	if (rc < 0)
		return rc;
	if (q->free_head == RAW_NONE)
		return -EAGAIN;

	if (io->op == TARGET_OP_WRITE) {
		/*
		 * Count the write before reading the size; a shrink stores the size before reading
		 * the counts. With a full fence on each side, either we see the new size or the
		 * shrink sees this write and waits for it.
		 */
		__atomic_store_n(&q->wr_started, q->wr_started + 1, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (!raw_in_range(rt, io)) {
			__atomic_store_n(&q->wr_finished, q->wr_finished + 1, __ATOMIC_RELEASE);
			return -EINVAL;
		}
	} else if (io->op != TARGET_OP_FLUSH && !raw_in_range(rt, io)) {
		return -EINVAL;
	}

	tag = q->free_head;
	s = &q->slots[tag];
	q->free_head = s->next;
	s->io = io;
	s->status = 0;
	s->iov_idx = 0;
	s->iov_off = 0;
	s->done_bytes = 0;
	s->retries = 0;

	switch (io->op) {
	case TARGET_OP_READ:
	case TARGET_OP_WRITE:
		raw_advance(s, 0);
		rc = raw_issue_rw(q, tag);
		break;
	case TARGET_OP_FLUSH:
		rc = q->eng->supports(q->e, IOENG_FDATASYNC)
			 ? q->eng->prep(q->e, tag, IOENG_FDATASYNC, NULL, 0, 0, 0)
			 : -EOPNOTSUPP;
		break;
	default: /* DISCARD: BLKDISCARD is an ioctl; files punch a hole */
		rc = !rt->is_blkdev && q->eng->supports(q->e, IOENG_PUNCH)
			 ? q->eng->prep(q->e, tag, IOENG_PUNCH, NULL, 0, io->offset_bytes,
					io->len_bytes)
			 : -EOPNOTSUPP;
		break;
	}
	if (rc == -EOPNOTSUPP && io->op != TARGET_OP_READ && io->op != TARGET_OP_WRITE) {
		raw_list_push(q, &q->sync_head, &q->sync_tail, tag);
	} else if (rc < 0) {
		s->io = NULL;
		s->next = q->free_head;
		q->free_head = tag;
		if (io->op == TARGET_OP_WRITE)
			__atomic_store_n(&q->wr_finished, q->wr_finished + 1, __ATOMIC_RELEASE);
		return rc;
	} else {
		q->eng_inflight++;
	}
	q->base.inflight++;
	return 0;
}

static int raw_commit(struct target_queue *tq)
{
	struct raw_queue *q = rq_of(tq);
	int n = 0, rc;

	if (q->sync_head != RAW_NONE)
		n += raw_run_sync(q);
	if (q->eng->pending(q->e)) {
		rc = q->eng->commit(q->e, raw_eng_done, q);
		if (rc >= 0)
			n += rc;
		else if (rc != -EAGAIN)
			LOG_RATELIMITED(&q->rl, LOG_LVL_ERR, "%s: submit: %d", q->rt->path, rc);
		/* -EAGAIN: the kernel is short of resources; what is queued goes next time. */
		if (rc < 0 && rc != -EAGAIN && n == 0)
			return rc;
	}
	if (q->done_head != RAW_NONE)
		raw_kick(q);
	return n;
}

/* Call done() for everything finished, in completion order. */
static int raw_deliver(struct raw_queue *q)
{
	uint32_t tag = q->done_head;
	int n = 0;

	/* Detached first: a done() callback may submit, and even commit, on this queue. */
	q->done_head = q->done_tail = RAW_NONE;
	while (tag != RAW_NONE) {
		struct raw_slot *s = &q->slots[tag];
		struct target_io *io = s->io;
		uint32_t next = s->next;
		int status = s->status;

		s->io = NULL;
		s->next = q->free_head;
		q->free_head = tag;
		q->base.inflight--;
		if (io->op == TARGET_OP_WRITE)
			__atomic_store_n(&q->wr_finished, q->wr_finished + 1, __ATOMIC_RELEASE);
		io->done(io, status);
		n++;
		tag = next;
	}
	return n;
}

static int raw_poll(struct target_queue *tq, int wait)
{
	struct raw_queue *q = rq_of(tq);
	eventfd_t cnt;
	int rc;

	/* Clear the eventfd before reaping, so a completion after the reap wakes the next wait. */
	(void)eventfd_read(q->efd, &cnt);
	if (q->sync_head != RAW_NONE)
		raw_run_sync(q);
	for (;;) {
		uint32_t pending = q->eng->pending(q->e);

		/* Reissued remainders (and anything the caller did not commit) go now. */
		if (pending) {
			rc = q->eng->commit(q->e, raw_eng_done, q);
			if (rc < 0 && rc != -EAGAIN)
				return rc;
			pending = q->eng->pending(q->e);
		}
		/* Wait only for what the kernel holds, and only while nothing is ready. */
		if (q->eng_inflight > pending) {
			rc = q->eng->reap(q->e, wait && q->done_head == RAW_NONE, raw_eng_done, q);
			if (rc < 0)
				return rc;
		} else if (wait && q->done_head == RAW_NONE) {
			break; /* nothing in the kernel: no completion can come */
		}
		/* Only reissued remainders came back: go round to send them and wait again. */
		if (!wait || q->done_head != RAW_NONE)
			break;
	}
	if (q->eng->pending(q->e)) {
		rc = q->eng->commit(q->e, raw_eng_done, q);
		if (rc < 0 && rc != -EAGAIN)
			return rc;
	}
	return raw_deliver(q);
}

static int raw_queue_fd(struct target_queue *tq)
{
	return rq_of(tq)->efd;
}

static void raw_queue_close(struct target_queue *tq)
{
	struct raw_queue *q = rq_of(tq);
	struct raw_target *rt = q->rt;
	struct raw_queue **pp;

	while (q->base.inflight) {
		int rc = raw_poll(tq, 1);

		if (rc < 0 && rc != -EINTR) {
			log_err("%s: %u I/Os lost at queue close: %d", rt->path, q->base.inflight,
				rc);
			break;
		}
	}
	pthread_mutex_lock(&rt->lock);
	for (pp = &rt->queues; *pp; pp = &(*pp)->next) {
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	}
	pthread_mutex_unlock(&rt->lock);
	q->eng->close(q->e);
	close(q->efd);
	free(q->slots);
	free(q);
}

static const struct target_ops raw_ops = {
    .name = "raw",
    .open = target_raw_open,
    .close = raw_close,
    .info = raw_info,
    .resize = raw_resize,
    .queue_open = raw_queue_open,
    .queue_close = raw_queue_close,
    .submit = raw_submit,
    .commit = raw_commit,
    .poll = raw_poll,
    .queue_fd = raw_queue_fd,
};

/*
 * target_dedup.c - the dedup target: a volume of the pool's dedup store (dedup/dedup.h) behind
 * the target interface, so blkbackd's ring threads serve it exactly like a raw volume.
 *
 * Each queue owns one dedup context (its SHA-256 state, LMDB read slot and completion queue),
 * one io_uring for the container data, and one preallocated dedup request per slot, so the I/O
 * path allocates nothing. Writes are hashed and deduplicated on the ring thread
 * (dedup_write_prepare); the new blocks' container extents go to the io_uring (the guest pages,
 * in place), and when the last of them has completed the request goes to the store's writer
 * thread, whose completion (journaled: it survives kill -9) comes back through the context's
 * eventfd. Reads resolve their extents at submit and read them through the io_uring; discards
 * and flushes go to the writer.
 *
 * Durability is unchanged by the asynchrony: dedup_write_submit() is called only once every
 * extent write has completed, and the writer only records a container as needing fdatasync
 * when it applies the request, so a checkpoint that syncs containers always comes after the
 * data it covers reached the file (docs/dedup.md, Durability).
 *
 * Requests that finish without container I/O (zero-only reads, duplicate-only writes handed on
 * at once, failed prepares) must still complete from target_queue_poll(): they wait in a
 * per-queue list and the queue eventfd is signalled. The io_uring signals the same eventfd
 * (io_uring_register_eventfd), and the queue's fd is an epoll fd over it and the context's, so
 * the ring thread polls one fd.
 */
#define LOG_TAG "dedup-target"

#include "blkback/target_dedup.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "blkback/target_internal.h"
#include "common/log.h"
#include "dedup/dedup.h"

#define DD_BLK DEDUP_BLOCK_BYTES

struct dd_target {
	struct target base; /**< first: the generic layer's view */
	struct dedup_store *store;
	struct dedup_vol *vol;
	char name[DEDUP_NAME_MAX + 1];
	int readonly;
};

struct dd_slot {
	struct dedup_req *req;
	struct target_io *io;
	enum target_op op;
	int status;	  /**< worst extent status; for deferred completions, theirs */
	uint32_t pending; /**< extent I/Os in the io_uring not yet reaped */
	void *bounce;	  /**< a write's private copy of the guest's data, until it completes */
	size_t bounce_cap; /**< its size; kept for the slot's next write up to DD_BOUNCE_KEEP */
};

/* Bounce buffers up to this size stay with their slot: no allocation per ordinary write. */
#define DD_BOUNCE_KEEP (64u << 10)

/* An extent's CQE tag: slot index and extent index (< DEDUP_REQ_MAX_BLK). */
#define DD_TAG(slot, ext) (((uint64_t)(slot) << 16) | (ext))
#define DD_TAG_SLOT(tag)  ((uint32_t)((tag) >> 16))
#define DD_TAG_EXT(tag)	  ((unsigned)((tag)&0xffff))

struct dd_queue {
	struct target_queue base; /**< first */
	struct dd_target *t;
	struct dedup_ctx *ctx;
	struct dd_slot *slots;
	uint32_t *free; /**< stack of free slot indexes */
	uint32_t nr_free;
	uint32_t *done; /**< FIFO of slots completed inside submit */
	uint32_t done_head, done_len;
	uint32_t depth;
	struct io_uring ring; /**< container data I/O */
	int ring_ok;	      /**< ring initialised */
	uint32_t sq_entries;  /**< extent I/Os the ring takes at once */
	uint32_t sq_used;     /**< extent I/Os queued or in flight (SQEs not yet reaped) */
	int efd;	      /**< signalled when done[] is not empty and by every CQE */
	int epfd;	      /**< efd + the context's fd: the queue's fd */
	struct log_ratelimit rl;
};

static const struct target_ops dd_ops;

static int dd_open_type(const char *path, const struct target_open_opts *o, struct target **out)
{
	(void)path;
	(void)o;
	(void)out;
	return -EOPNOTSUPP; /* a dedup volume needs its store: target_dedup_open() */
}

int target_dedup_open(struct dedup_store *s, const char *name, const struct target_open_opts *o,
		      struct target **out)
{
	struct dd_target *t;
	int rc;

	if (!s || !name || strlen(name) > DEDUP_NAME_MAX)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->base.ops = &dd_ops;
	t->store = s;
	snprintf(t->name, sizeof(t->name), "%s", name);
	rc = dedup_vol_open(s, name, &t->vol);
	if (rc < 0) {
		free(t);
		return rc;
	}
	t->readonly = (o && o->readonly) || dedup_vol_readonly(t->vol);
	*out = &t->base;
	return 0;
}

static void dd_close(struct target *base)
{
	struct dd_target *t = (struct dd_target *)base;

	dedup_vol_close(t->vol);
	free(t);
}

static int dd_info(struct target *base, struct target_info *info)
{
	struct dd_target *t = (struct dd_target *)base;

	memset(info, 0, sizeof(*info));
	info->size_bytes = dedup_vol_size(t->vol);
	info->logical_block = DD_BLK;
	info->physical_block = DD_BLK;
	info->discard_granularity = t->readonly ? 0 : DD_BLK;
	info->readonly = t->readonly;
	info->has_flush = 1;
	return 0;
}

static int dd_resize(struct target *base, uint64_t new_size_bytes)
{
	struct dd_target *t = (struct dd_target *)base;

	if (new_size_bytes == 0 || new_size_bytes % DD_BLK)
		return -EINVAL;
	if (t->readonly)
		return -EROFS;
	return dedup_vol_resize(t->store, t->name, new_size_bytes);
}

static void dd_queue_free(struct dd_queue *q)
{
	if (q->slots)
		for (uint32_t i = 0; i < q->depth; i++) {
			dedup_req_free(q->slots[i].req);
			free(q->slots[i].bounce);
		}
	if (q->ring_ok)
		io_uring_queue_exit(&q->ring);
	if (q->epfd >= 0)
		close(q->epfd);
	if (q->efd >= 0)
		close(q->efd);
	if (q->ctx)
		dedup_ctx_close(q->ctx);
	free(q->slots);
	free(q->free);
	free(q->done);
	free(q);
}

static int dd_queue_open(struct target *base, uint32_t depth, struct target_queue **out)
{
	struct dd_target *t = (struct dd_target *)base;
	struct epoll_event ev = {.events = EPOLLIN};
	struct dd_queue *q;
	int rc;

	if (depth > TARGET_QUEUE_MAX_DEPTH)
		depth = TARGET_QUEUE_MAX_DEPTH;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->base.target = base;
	q->t = t;
	q->depth = depth;
	q->efd = q->epfd = -1;
	q->slots = calloc(depth, sizeof(*q->slots));
	q->free = calloc(depth, sizeof(*q->free));
	q->done = calloc(depth, sizeof(*q->done));
	if (!q->slots || !q->free || !q->done) {
		rc = -ENOMEM;
		goto err;
	}
	for (uint32_t i = 0; i < depth; i++) {
		rc = dedup_req_alloc(DEDUP_REQ_MAX_BLK, &q->slots[i].req);
		if (rc < 0)
			goto err;
		dedup_req_set_priv(q->slots[i].req, &q->slots[i]);
		q->free[q->nr_free++] = depth - 1 - i;
	}
	rc = dedup_ctx_open(t->store, &q->ctx);
	if (rc < 0)
		goto err;
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	q->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (q->efd < 0 || q->epfd < 0) {
		rc = -errno;
		goto err;
	}
	/*
	 * Room for every slot's request at its largest (one extent per block at worst), bounded:
	 * a request that finds too few free entries is backpressure. With at most sq_entries
	 * operations unreaped, the CQ (twice the SQ) cannot overflow.
	 */
	q->sq_entries = depth * 8 < DEDUP_REQ_MAX_BLK ? DEDUP_REQ_MAX_BLK : depth * 8;
	if (q->sq_entries > 4096)
		q->sq_entries = 4096;
	/* SUBMIT_ALL: one SQE the kernel refuses does not hold back the rest (older kernels:
	 * without it; what stays queued goes at the next commit or poll). */
	rc = io_uring_queue_init(q->sq_entries, &q->ring, IORING_SETUP_SUBMIT_ALL);
	if (rc == -EINVAL)
		rc = io_uring_queue_init(q->sq_entries, &q->ring, 0);
	if (rc < 0) {
		log_err("io_uring_queue_init(%u): %s", q->sq_entries, strerror(-rc));
		goto err;
	}
	q->ring_ok = 1;
	q->sq_entries = q->ring.sq.ring_entries;
	rc = io_uring_register_eventfd(&q->ring, q->efd);
	if (rc < 0) {
		log_err("io_uring_register_eventfd: %s", strerror(-rc));
		goto err;
	}
	ev.data.fd = q->efd;
	if (epoll_ctl(q->epfd, EPOLL_CTL_ADD, q->efd, &ev) < 0) {
		rc = -errno;
		goto err;
	}
	ev.data.fd = dedup_ctx_fd(q->ctx);
	if (epoll_ctl(q->epfd, EPOLL_CTL_ADD, ev.data.fd, &ev) < 0) {
		rc = -errno;
		goto err;
	}
	*out = &q->base;
	return 0;

err:
	dd_queue_free(q);
	return rc;
}

/* Complete @slot from the next poll (it finished inside submit). */
static void dd_defer_done(struct dd_queue *q, struct dd_slot *slot, int status)
{
	uint64_t one = 1;

	slot->status = status;
	q->done[(q->done_head + q->done_len) % q->depth] = (uint32_t)(slot - q->slots);
	q->done_len++;
	if (q->done_len == 1 && write(q->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("cannot signal the queue eventfd: %s", strerror(errno));
}

/* Gather @io's iovecs (the guest's pages) into @dst. */
static void dd_copy_in(void *dst, const struct target_io *io)
{
	char *p = dst;

	for (unsigned i = 0; i < io->iovcnt; i++) {
		memcpy(p, io->iov[i].iov_base, io->iov[i].iov_len);
		p += io->iov[i].iov_len;
	}
}

/*
 * Move the bytes of one extent from byte @done on, synchronously: the rest of a short transfer
 * of the io_uring (a signal, a full disk), which is rare enough not to queue again.
 */
static int dd_extent_rest(const struct dedup_extent *e, int write_op, uint64_t done)
{
	uint64_t off = e->offset_bytes + done;

	for (unsigned i = 0; i < e->iovcnt; i++) {
		char *p = e->iov[i].iov_base;
		size_t len = e->iov[i].iov_len;

		if (done >= len) {
			done -= len;
			continue;
		}
		p += done;
		len -= done;
		done = 0;

		while (len) {
			ssize_t m = write_op ? pwrite(e->fd, p, len, (off_t)off)
					     : pread(e->fd, p, len, (off_t)off);

			if (m < 0 && errno == EINTR)
				continue;
			if (m < 0)
				return -errno;
			if (m == 0)
				return -EIO;
			p += m;
			len -= (size_t)m;
			off += (uint64_t)m;
		}
	}
	return 0;
}

/*
 * Queue one SQE per extent of @slot's request. The caller checked that the ring has room for
 * every one of them (sq_used + blocks <= sq_entries), so io_uring_get_sqe() cannot fail.
 */
static void dd_queue_extents(struct dd_queue *q, struct dd_slot *slot)
{
	uint32_t si = (uint32_t)(slot - q->slots);
	unsigned n = dedup_req_nr_extents(slot->req);

	slot->pending = n;
	slot->status = 0;
	for (unsigned i = 0; i < n; i++) {
		const struct dedup_extent *e = dedup_req_extent(slot->req, i);
		struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);

		if (slot->op == TARGET_OP_READ)
			io_uring_prep_readv(sqe, e->fd, e->iov, e->iovcnt, e->offset_bytes);
		else
			io_uring_prep_writev(sqe, e->fd, e->iov, e->iovcnt, e->offset_bytes);
		io_uring_sqe_set_data64(sqe, DD_TAG(si, i));
	}
	q->sq_used += n;
}

static int dd_submit(struct target_queue *base, struct target_io *io)
{
	struct dd_queue *q = (struct dd_queue *)base;
	struct dd_target *t = q->t;
	uint64_t first = io->offset_bytes / DD_BLK, nr = io->len_bytes / DD_BLK;
	struct dd_slot *slot;
	struct dedup_req *r;
	int rc = 0;

	if (io->op != TARGET_OP_FLUSH) {
		if ((io->offset_bytes | io->len_bytes) % DD_BLK)
			return -EINVAL;
		if (io->op != TARGET_OP_DISCARD && (nr == 0 || nr > DEDUP_REQ_MAX_BLK))
			return -EINVAL;
	}
	if (t->readonly && (io->op == TARGET_OP_WRITE || io->op == TARGET_OP_DISCARD))
		return -EROFS;
	if (!q->nr_free)
		return -EAGAIN;
	/* A request has at most one extent per block: make sure they all fit before preparing. */
	if ((io->op == TARGET_OP_READ || io->op == TARGET_OP_WRITE) &&
	    q->sq_used + nr > q->sq_entries)
		return -EAGAIN;
	slot = &q->slots[q->free[q->nr_free - 1]];
	r = slot->req;
	slot->op = io->op;

	switch (io->op) {
	case TARGET_OP_READ:
		rc =
		    dedup_read_prepare(q->ctx, t->vol, first, (uint32_t)nr, io->iov, io->iovcnt, r);
		if (rc < 0)
			return rc;
		if (dedup_req_nr_extents(r) == 0) {
			/* all zero blocks: filled in place already */
			dedup_read_finish(q->ctx, r);
			q->nr_free--;
			slot->io = io;
			q->base.inflight++;
			dd_defer_done(q, slot, 0);
			return 0;
		}
		dd_queue_extents(q, slot);
		break;
	case TARGET_OP_WRITE: {
		struct iovec copy;

		/*
		 * Hash and store a private copy: the guest may change its pages until the write is
		 * answered (blkfront does not ask for stable pages), and a container block must hold
		 * exactly what its SHA-256 names, since any volume may dedup to it later. A copy is
		 * an eighth of the hash's cost.
		 */
		if (io->len_bytes > slot->bounce_cap) {
			size_t cap = io->len_bytes > DD_BOUNCE_KEEP ? io->len_bytes : DD_BOUNCE_KEEP;

			free(slot->bounce);
			slot->bounce_cap = 0;
			if (posix_memalign(&slot->bounce, DD_BLK, cap)) {
				slot->bounce = NULL;
				return -ENOMEM;
			}
			slot->bounce_cap = cap;
		}
		dd_copy_in(slot->bounce, io);
		copy.iov_base = slot->bounce;
		copy.iov_len = io->len_bytes;
		rc = dedup_write_prepare(q->ctx, t->vol, first, (uint32_t)nr, &copy, 1, r);
		if (rc < 0)
			return rc;
		if (dedup_req_nr_extents(r) == 0)
			dedup_write_submit(q->ctx, r, 0); /* zeros and duplicates only */
		else
			dd_queue_extents(q, slot);
		break;
	}
	case TARGET_OP_DISCARD:
		rc = dedup_discard_submit(q->ctx, t->vol, first, nr, r);
		if (rc < 0)
			return rc;
		break;
	case TARGET_OP_FLUSH:
		rc = dedup_flush_submit(q->ctx, r);
		if (rc < 0)
			return rc;
		break;
	default:
		return -EINVAL;
	}
	q->nr_free--;
	slot->io = io;
	q->base.inflight++;
	return 0;
}

/* Hand every queued extent I/O to the kernel: one system call per pass over the blkif ring. */
static int dd_commit(struct target_queue *base)
{
	struct dd_queue *q = (struct dd_queue *)base;
	int rc;

	if (io_uring_sq_ready(&q->ring) == 0)
		return 0;
	do {
		rc = io_uring_submit(&q->ring);
	} while (rc == -EINTR);
	/*
	 * Short of kernel resources: the SQEs stay queued and the next commit or poll retries.
	 * Wake the ring thread for that poll: with nothing else in flight no completion would.
	 */
	if (rc == -EAGAIN || rc == -EBUSY) {
		uint64_t one = 1;

		if (write(q->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			log_warn("cannot signal the queue eventfd: %s", strerror(errno));
		return 0;
	}
	return rc;
}

static void dd_complete(struct dd_queue *q, struct dd_slot *slot, int status)
{
	struct target_io *io = slot->io;

	slot->io = NULL;
	if (slot->bounce_cap > DD_BOUNCE_KEEP) {
		/* A rare big write's buffer goes; the usual size stays for the next one. */
		free(slot->bounce);
		slot->bounce = NULL;
		slot->bounce_cap = 0;
	}
	q->free[q->nr_free++] = (uint32_t)(slot - q->slots);
	q->base.inflight--;
	io->done(io, status);
}

/*
 * One extent I/O completed with @res (bytes or -errno). When it was its request's last: a read
 * completes (after unpinning its containers), a write goes to the writer with the worst status,
 * which aborts it if any extent failed (nothing points at its slots then).
 * Returns 1 when a request completed here.
 */
static int dd_extent_done(struct dd_queue *q, uint64_t tag, int res)
{
	struct dd_slot *slot = &q->slots[DD_TAG_SLOT(tag)];
	const struct dedup_extent *e = dedup_req_extent(slot->req, DD_TAG_EXT(tag));
	int write_op = slot->op == TARGET_OP_WRITE;
	uint64_t want = (uint64_t)e->nr_blk * DD_BLK;

	q->sq_used--;
	/* Transient (the raw target retries these too): do the extent here instead of failing it. */
	if (res == -EAGAIN || res == -EINTR)
		res = dd_extent_rest(e, write_op, 0);
	else if (res >= 0 && (uint64_t)res < want)
		/* From the last whole block: an O_DIRECT container refuses an unaligned restart. */
		res = res == 0 && !write_op ? -EIO
					    : dd_extent_rest(e, write_op, (uint64_t)res & ~(DD_BLK - 1));
	if (res < 0) {
		if (!slot->status)
			slot->status = res;
		LOG_RATELIMITED(&q->rl, LOG_LVL_ERR, "%s: container %s failed: %s", q->t->name,
				write_op ? "write" : "read", strerror(-res));
	}
	if (--slot->pending)
		return 0;
	if (!write_op) {
		dedup_read_finish(q->ctx, slot->req);
		dd_complete(q, slot, slot->status);
		return 1;
	}
	dedup_write_submit(q->ctx, slot->req, slot->status);
	return 0;
}

static int dd_poll(struct target_queue *base, int wait)
{
	struct dd_queue *q = (struct dd_queue *)base;
	int n = 0;

	for (;;) {
		struct io_uring_cqe *cqe;
		struct dedup_req *r;
		uint64_t v;
		int status;

		/* Cleared before reaping: whatever completes after this signals it again. */
		if (read(q->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			return -errno;
		while (io_uring_peek_cqe(&q->ring, &cqe) == 0) {
			uint64_t tag = io_uring_cqe_get_data64(cqe);
			int res = cqe->res;

			io_uring_cqe_seen(&q->ring, cqe);
			n += dd_extent_done(q, tag, res);
		}
		while (q->done_len) {
			struct dd_slot *slot = &q->slots[q->done[q->done_head]];

			q->done_head = (q->done_head + 1) % q->depth;
			q->done_len--;
			dd_complete(q, slot, slot->status);
			n++;
		}
		while ((r = dedup_ctx_reap(q->ctx, &status))) {
			dd_complete(q, dedup_req_priv(r), status);
			n++;
		}
		if (n || !wait || !q->base.inflight) {
			/* SQEs a short submit left behind go now, not at the next request. */
			if (io_uring_sq_ready(&q->ring)) {
				int rc = dd_commit(base);

				if (rc < 0)
					return rc;
			}
			return n;
		}
		/* Waiting for extent I/Os nobody committed would wait forever. */
		if (io_uring_sq_ready(&q->ring)) {
			int rc = dd_commit(base);

			if (rc < 0)
				return rc;
		}
		struct pollfd pfd = {.fd = q->epfd, .events = POLLIN};

		if (poll(&pfd, 1, io_uring_sq_ready(&q->ring) ? 1 : -1) < 0 && errno != EINTR)
			return -errno;
	}
}

static int dd_queue_fd(struct target_queue *base)
{
	return ((struct dd_queue *)base)->epfd;
}

static void dd_queue_close(struct target_queue *base)
{
	struct dd_queue *q = (struct dd_queue *)base;
	int fails = 0;

	while (q->base.inflight) {
		int rc = dd_poll(base, 1);

		if (rc >= 0) {
			fails = 0;
			continue;
		}
		/*
		 * Freeing now would free buffers the kernel may still read into and requests the
		 * writer thread still holds: retry for a second, then leak the queue instead.
		 */
		if (++fails > 100) {
			log_err("%s: %u requests still in flight and their completions cannot be "
				"reaped (%s); leaking the queue rather than freeing memory in use",
				q->t->name, (unsigned)q->base.inflight, strerror(-rc));
			return;
		}
		usleep(10000);
	}
	dd_queue_free(q);
}

static const struct target_ops dd_ops = {
    .name = "dedup",
    .open = dd_open_type,
    .close = dd_close,
    .info = dd_info,
    .resize = dd_resize,
    .queue_open = dd_queue_open,
    .queue_close = dd_queue_close,
    .submit = dd_submit,
    .commit = dd_commit,
    .poll = dd_poll,
    .queue_fd = dd_queue_fd,
};

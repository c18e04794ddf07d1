/*
 * target_dedup.c - the dedup target: a volume of the pool's dedup store (dedup/dedup.h) behind
 * the target interface, so blkbackd's ring threads serve it exactly like a raw volume.
 *
 * Each queue owns one dedup context (its SHA-256 state, LMDB read slot and completion queue)
 * and one preallocated dedup request per slot, so the I/O path allocates nothing. Writes are
 * hashed and deduplicated on the ring thread (dedup_write_prepare), the new blocks' container
 * extents are written with pwrite, and the request goes to the store's writer thread; its
 * completion (journaled: it survives kill -9) comes back through the context's eventfd. Reads
 * resolve their extents and pread them at submit; discards and flushes go to the writer.
 *
 * Requests that finish inside submit (reads, refused or failed writes) must still complete from
 * target_queue_poll(): they wait in a per-queue list and a queue eventfd is signalled. The
 * queue's fd is an epoll fd over that eventfd and the context's, so the ring thread polls one fd.
 *
 * The data I/O is synchronous on the ring thread: the containers are buffered files (page cache),
 * so a write is a memory copy and a read of recent data a cache hit.
 */
#define LOG_TAG "dedup-target"

#include "blkback/target_dedup.h"

#include <errno.h>
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
	int status; /**< for completions made inside submit */
};

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
	int efd;   /**< signalled when done[] is not empty */
	int epfd;  /**< efd + the context's fd: the queue's fd */
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
		for (uint32_t i = 0; i < q->depth; i++)
			dedup_req_free(q->slots[i].req);
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
	struct epoll_event ev = { .events = EPOLLIN };
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

/* Move every byte of one extent; a short transfer (a signal, a full disk) is resumed. */
static int dd_extent_io(const struct dedup_extent *e, int write_op)
{
	uint64_t off = e->offset_bytes;

	for (unsigned i = 0; i < e->iovcnt; i++) {
		char *p = e->iov[i].iov_base;
		size_t len = e->iov[i].iov_len;

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
	slot = &q->slots[q->free[q->nr_free - 1]];
	r = slot->req;

	switch (io->op) {
	case TARGET_OP_READ:
		rc = dedup_read_prepare(q->ctx, t->vol, first, (uint32_t)nr, io->iov, io->iovcnt, r);
		if (rc < 0)
			return rc;
		for (unsigned i = 0; i < dedup_req_nr_extents(r) && rc == 0; i++)
			rc = dd_extent_io(dedup_req_extent(r, i), 0);
		dedup_read_finish(q->ctx, r);
		q->nr_free--;
		slot->io = io;
		q->base.inflight++;
		dd_defer_done(q, slot, rc);
		return 0;
	case TARGET_OP_WRITE:
		rc = dedup_write_prepare(q->ctx, t->vol, first, (uint32_t)nr, io->iov, io->iovcnt,
					 r);
		if (rc < 0)
			return rc;
		for (unsigned i = 0; i < dedup_req_nr_extents(r) && rc == 0; i++)
			rc = dd_extent_io(dedup_req_extent(r, i), 1);
		dedup_write_submit(q->ctx, r, rc);
		break;
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

static int dd_commit(struct target_queue *base)
{
	(void)base;
	return 0; /* everything was handed on at submit */
}

static void dd_complete(struct dd_queue *q, struct dd_slot *slot, int status)
{
	struct target_io *io = slot->io;

	slot->io = NULL;
	q->free[q->nr_free++] = (uint32_t)(slot - q->slots);
	q->base.inflight--;
	io->done(io, status);
}

static int dd_poll(struct target_queue *base, int wait)
{
	struct dd_queue *q = (struct dd_queue *)base;
	int n = 0;

	for (;;) {
		struct dedup_req *r;
		uint64_t v;
		int status;

		if (q->done_len && read(q->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			return -errno;
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
		if (n || !wait || !q->base.inflight)
			return n;
		struct pollfd pfd = { .fd = q->epfd, .events = POLLIN };

		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
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

	while (q->base.inflight)
		if (dd_poll(base, 1) < 0)
			break;
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

/*
 * ioeng_aio.c - the libaio engine (Linux native AIO), the selectable fallback to io_uring.
 *
 * One io_context per target queue, an iocb per tag preallocated at open, and one io_submit()
 * per commit for everything queued since the last. Native AIO is only truly asynchronous with
 * O_DIRECT; on a buffered file io_submit does the copy itself (still correct, just blocking).
 * It has no fallocate, and fdsync only where the file system provides it (probed at open), so
 * supports() tells the raw target which operations it must do synchronously.
 */
#define LOG_TAG "aio"

#include "blkback/ioeng.h"

#include <errno.h>
#include <libaio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

struct ioeng_aio {
	io_context_t ctx;
	int fd;
	int efd;
	uint32_t depth;
	uint32_t nqueued;	 /**< iocbs prepared, not yet accepted by io_submit */
	int has_fdsync;		 /**< IOCB_CMD_FDSYNC works on this file */
	struct iocb *iocbs;	 /**< [depth], indexed by tag */
	struct iocb **queue;	 /**< [depth] FIFO of prepared iocbs */
	struct io_event *events; /**< [depth] reap buffer */
};

/*
 * Native AIO fdsync needs the file system's fsync method reachable from aio; the kernel refuses
 * the iocb with -EINVAL where it is not. One real fdatasync at queue open tells us.
 */
static int aio_probe_fdsync(struct ioeng_aio *a)
{
	struct iocb cb;
	struct iocb *cbp = &cb;
	struct io_event ev;
	int rc;

	io_prep_fdsync(&cb, a->fd);
	rc = io_submit(a->ctx, 1, &cbp);
	if (rc != 1)
		return 0;
	do {
		rc = io_getevents(a->ctx, 1, 1, &ev, NULL);
	} while (rc == -EINTR);
	if (rc != 1) {
		/* The iocb is in the kernel and we cannot wait for it: io_destroy will. */
		log_warn("fdsync probe: io_getevents %d", rc);
		return -EIO;
	}
	return (long)ev.res == -EINVAL ? 0 : 1;
}

static int aio_open(int fd, int efd, uint32_t depth, struct ioeng **out)
{
	struct ioeng_aio *a;
	int rc;

	if (depth == 0 || depth > INT32_MAX / 2)
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->fd = fd;
	a->efd = efd;
	a->depth = depth;
	a->iocbs = calloc(depth, sizeof(*a->iocbs));
	a->queue = calloc(depth, sizeof(*a->queue));
	a->events = calloc(depth, sizeof(*a->events));
	if (!a->iocbs || !a->queue || !a->events) {
		rc = -ENOMEM;
		goto err_free;
	}
	rc = io_setup((int)depth, &a->ctx);
	if (rc < 0) {
		log_err("io_setup(%u): %d%s", depth, rc,
			rc == -EAGAIN ? " (fs.aio-max-nr reached)" : "");
		goto err_free;
	}
	rc = aio_probe_fdsync(a);
	if (rc < 0)
		goto err_destroy;
	a->has_fdsync = rc;
	*out = (struct ioeng *)a;
	return 0;

err_destroy:
	io_destroy(a->ctx);
err_free:
	free(a->events);
	free(a->queue);
	free(a->iocbs);
	free(a);
	return rc;
}

static void aio_close(struct ioeng *e)
{
	struct ioeng_aio *a = (struct ioeng_aio *)e;

	if (!a)
		return;
	/* io_destroy waits for anything still in the kernel before the iocbs go away. */
	io_destroy(a->ctx);
	free(a->events);
	free(a->queue);
	free(a->iocbs);
	free(a);
}

static int aio_supports(const struct ioeng *e, enum ioeng_op op)
{
	const struct ioeng_aio *a = (const struct ioeng_aio *)e;

	switch (op) {
	case IOENG_READV:
	case IOENG_WRITEV:
		return 1;
	case IOENG_FDATASYNC:
		return a->has_fdsync;
	default:
		return 0;
	}
}

static int aio_prep(struct ioeng *e, uint32_t tag, enum ioeng_op op, const struct iovec *iov,
		    unsigned iovcnt, uint64_t off, uint64_t len)
{
	struct ioeng_aio *a = (struct ioeng_aio *)e;
	struct iocb *cb;

	(void)len;
	if (tag >= a->depth)
		return -EINVAL;
	if (a->nqueued == a->depth)
		return -EAGAIN;
	cb = &a->iocbs[tag];
	switch (op) {
	case IOENG_READV:
		io_prep_preadv(cb, a->fd, iov, (int)iovcnt, (long long)off);
		break;
	case IOENG_WRITEV:
		io_prep_pwritev(cb, a->fd, iov, (int)iovcnt, (long long)off);
		break;
	case IOENG_FDATASYNC:
		if (!a->has_fdsync)
			return -EOPNOTSUPP;
		io_prep_fdsync(cb, a->fd);
		break;
	default:
		return -EOPNOTSUPP;
	}
	io_set_eventfd(cb, a->efd);
	cb->data = (void *)(uintptr_t)tag;
	a->queue[a->nqueued++] = cb;
	return 0;
}

static uint32_t aio_pending(const struct ioeng *e)
{
	return ((const struct ioeng_aio *)e)->nqueued;
}

static int aio_commit(struct ioeng *e, ioeng_cb_fn *cb, void *arg)
{
	struct ioeng_aio *a = (struct ioeng_aio *)e;
	uint32_t done = 0;
	int accepted = 0, rc = 0;

	while (done < a->nqueued) {
		rc = io_submit(a->ctx, (long)(a->nqueued - done), a->queue + done);
		if (rc > 0) {
			done += (uint32_t)rc;
			accepted += rc;
			continue;
		}
		if (rc == -EINTR)
			continue;
		if (rc == -EAGAIN || rc == 0)
			break;
		/* io_submit stops at the first iocb it refuses: complete that one, go on. */
		cb(arg, (uint32_t)(uintptr_t)a->queue[done]->data, rc);
		done++;
	}
	if (done) {
		memmove(a->queue, a->queue + done, (a->nqueued - done) * sizeof(*a->queue));
		a->nqueued -= done;
	}
	if (accepted == 0 && a->nqueued)
		return -EAGAIN;
	return accepted;
}

static int aio_reap(struct ioeng *e, int wait, ioeng_cb_fn *cb, void *arg)
{
	struct ioeng_aio *a = (struct ioeng_aio *)e;
	int rc;

	do {
		rc = io_getevents(a->ctx, wait ? 1 : 0, (long)a->depth, a->events, NULL);
	} while (rc == -EINTR && wait);
	if (rc == -EINTR)
		return 0;
	if (rc < 0)
		return rc;
	for (int i = 0; i < rc; i++) {
		/* res carries a byte count or a negative errno in an unsigned long. */
		cb(arg, (uint32_t)(uintptr_t)a->events[i].data, (int64_t)(long)a->events[i].res);
	}
	return rc;
}

const struct ioeng_ops ioeng_aio_ops = {
    .name = "libaio",
    .open = aio_open,
    .close = aio_close,
    .supports = aio_supports,
    .prep = aio_prep,
    .commit = aio_commit,
    .pending = aio_pending,
    .reap = aio_reap,
};
